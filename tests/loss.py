"""Counting lost, announced and duplicated trades: the stored stream of a topic walked against the trade ids the
(simulated) exchange sent, in order. Shared by the backpressure, suspension and chaos tests.

A gap with a ``dropped`` count accounts for exactly that many sent trades (announced); a stored trade that is not
the next one sent is looked for further on, and the skipped ones are lost (announced only when a gap without a
count precedes them). A stored trade never sent is ``unknown``; sent trades after the last stored one are in flight.
An identical entry (same trade id and ``ts_received``) stored twice is a duplicate.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Loss:
    """Counts of ``Aligner`` / ``align``; ``reasons`` lists the gaps' reasons in stream order."""

    stored: int = 0
    lost: int = 0
    announced: int = 0
    duplicates: int = 0
    unknown: int = 0
    in_flight: int = 0
    reasons: list[str] = field(default_factory=list)

    def __add__(self, other: Loss) -> Loss:
        return Loss(self.stored + other.stored, self.lost + other.lost, self.announced + other.announced,
                    self.duplicates + other.duplicates, self.unknown + other.unknown, self.in_flight + other.in_flight,
                    self.reasons + other.reasons)  # fmt: skip

    def line(self) -> str:
        return (f"stored {self.stored}, lost {self.lost} (announced {self.announced}), duplicated {self.duplicates}, "
                f"unknown {self.unknown}, in flight {self.in_flight}, gaps {self.reasons}")  # fmt: skip


class Aligner:
    """The walk, one stored event at a time (``feed``), so a long stream can be read in pages.

    ``window``: duplicates are looked for among the last ``window`` stored trades only (None: all), enough where a
    resent batch sits right after its original. ``resent_after_gap``: duplicates found after the first gap.
    """

    def __init__(self, sent: Sequence[int], window: int | None = None) -> None:
        self.sent, self.window = sent, window
        self.loss = Loss()
        self._seen: set[tuple[str, int]] = set()
        self._recent: deque[tuple[str, int]] = deque()
        self._i, self._pending = 0, False
        self._duplicates_before_gap: int | None = None

    def feed(self, event: dict[str, Any]) -> None:
        out = self.loss
        if event.get("type") == "gap":
            if self._duplicates_before_gap is None:
                self._duplicates_before_gap = out.duplicates
            out.reasons.append(event["reason"])
            dropped = event.get("dropped")
            if isinstance(dropped, int):
                out.lost += dropped
                out.announced += dropped
                self._i += dropped
            else:
                self._pending = True
            return
        key = (event["trade_id"], event["ts_received"])
        if key in self._seen:
            out.duplicates += 1
            return
        self._seen.add(key)
        if self.window is not None:
            self._recent.append(key)
            if len(self._recent) > self.window:
                self._seen.discard(self._recent.popleft())
        out.stored += 1
        sent, i = self.sent, self._i
        trade_id, j = int(event["trade_id"]), i
        while j < len(sent) and sent[j] != trade_id:
            j += 1
        if j == len(sent):
            out.unknown += 1
            return
        out.lost += j - i
        if self._pending:
            out.announced += j - i
        self._pending, self._i = False, j + 1

    def finish(self) -> Loss:
        """The counts, with the sent trades after the last stored one as in flight."""
        self.loss.in_flight = max(0, len(self.sent) - self._i)
        return self.loss

    @property
    def resent_after_gap(self) -> int:
        return 0 if self._duplicates_before_gap is None else self.loss.duplicates - self._duplicates_before_gap


def align(sent: Sequence[int], stored: Iterable[dict[str, Any]]) -> Loss:
    """The walk over a whole stored stream (see the module docstring)."""
    aligner = Aligner(sent)
    for event in stored:
        aligner.feed(event)
    return aligner.finish()


async def align_stream(sent: Sequence[int], events: AsyncIterable[dict[str, Any]]) -> tuple[Loss, int]:
    """``align`` over a streamed topic (duplicates looked for among the last 100,000 stored trades); also returns
    how many identical entries come after the first gap."""
    aligner = Aligner(sent, window=100_000)
    async for event in events:
        aligner.feed(event)
    return aligner.finish(), aligner.resent_after_gap
