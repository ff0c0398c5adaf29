"""The publisher's bounded event queue and its loss records: what waits to be written, and what was lost.

``EventQueue`` holds the events ``workers.publisher.Publisher`` has accepted and not yet written, in publish
order, up to ``max_queue`` (plus the one batch in flight). Beyond the bound the OLDEST queued event is dropped.
At ``high_water`` queued events the queue turns *congested* (``room`` is cleared) until it drains below
``high_water // 2``: readers await ``room`` and so slow their sockets down instead of growing memory.

Losses are always announced. Every event that does not reach its stream is counted per topic and reason, and
a later batch starts with one gap event per (topic, reason), before any later event of that topic::

    {"type": "gap", "topic": T, "reason": R,
     "since": <ts_received of the first lost event>, "until": <ts_received of the last lost>,
     "dropped": <number of events lost>}

``reason``: ``redis_backlog_overflow`` (dropped from a full queue), ``lag`` (shed: waited longer than
``LAG_MAX_MS``, ``workers.lag_guard``), ``redis_error`` (Redis refused the event for
good: the whole batch failed with a non-transient error such as ``NOPERM``, or its XADD failed, e.g.
``WRONGTYPE`` on the stream key), ``unserializable`` (an adapter built an event orjson cannot encode). A gap
event Redis refuses in turn is kept (merged with later losses of the same topic and reason) and tried again
until it is written. Memory stays bounded at ``max_queue + 4 * max_batch`` events plus one small record per
(topic, reason) with losses.

Numbering. Events are numbered in publish order (``appended`` counts them, ``popped`` counts those taken off
the queue into a batch or dropped); ``done(n)`` tells whether every event numbered below ``n`` is written or
lost and announced, which is what ``Publisher.flush`` waits for.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from itertools import chain
from typing import Any

from workers.publish_script import Item

log = logging.getLogger(__name__)

#: ``reason`` of the gap event announcing events dropped because the queue hit ``max_queue``.
GAP_REASON_OVERFLOW = "redis_backlog_overflow"
#: ``reason`` of the gap event announcing events Redis refused for good (see the module docstring).
GAP_REASON_ERROR = "redis_error"
#: How many times ``max_batch`` one batch may hold while a deep backlog waits (``EventQueue.take``).
DEEP_BATCH_FACTOR = 4
#: ``reason`` of the gap event announcing an event that could not be serialized (an adapter bug).
GAP_REASON_UNSERIALIZABLE = "unserializable"


class Drops:
    """Events of one topic lost for one reason and not announced yet (its gap event is pending).

    ``first``: the number (in publish order) of the earliest event it covers; ``flush`` waits for the
    announcement of every loss numbered below its target."""

    __slots__ = ("conn", "count", "first", "reason", "since", "until")

    def __init__(self, reason: str, first: int) -> None:
        self.reason = reason
        self.first = first
        self.count = 0
        self.since: int | None = None
        self.until: int | None = None
        self.conn: str | None = None

    def add(self, ts: int | None, conn: str | None) -> None:
        """Count one more lost event (``ts``: its ``ts_received`` ms or None; ``conn``: its connection)."""
        self.count += 1
        if ts is not None:
            if self.since is None:
                self.since = ts
            self.until = ts
        self.conn = conn

    def absorb_older(self, older: Drops) -> None:
        """Merge ``older`` (losses before every one of these: a gap event Redis refused) into this record."""
        self.count += older.count
        self.first = min(self.first, older.first)
        if older.since is not None:
            self.since = older.since
            if self.until is None:
                self.until = older.until

    def event(self, topic: str) -> dict[str, Any]:
        """The gap event announcing these losses (``control.events.GapEvent`` plus ``dropped``)."""
        return {"type": "gap", "topic": topic, "reason": self.reason, "since": self.since,
                "until": self.until, "dropped": self.count}  # fmt: skip


#: Pending losses, keyed by (topic, reason).
Gaps = dict[tuple[str, str], Drops]


class EventQueue:
    """The bounded queue of events waiting for a batch, the batch in flight, and the pending losses.

    :param max_queue: most events held; appending beyond it drops the oldest (announced by a gap event).
    :param high_water: queue depth at which ``room`` is cleared (set again below ``high_water // 2``).

    The owner (one writer) takes batches with ``take``, then reports their fate with ``written`` or
    ``refused`` and ends them with ``settle``. Fields are public to the publisher, which reads them for
    its ``stats``; nothing else should touch them.
    """

    def __init__(self, max_queue: int, high_water: int) -> None:
        self.max_queue = max_queue
        self.high_water = high_water
        #: Set while the queue is below ``high_water``; readers await it (backpressure).
        self.room = asyncio.Event()
        self.room.set()
        self.items: deque[Item] = deque()
        #: (topic, reason) -> losses not yet announced; the next batch starts with their gap events.
        self.gaps: Gaps = {}
        self.inflight_gaps: Gaps = {}  # the gap events of the batch being written
        self.appended = 0  # events ever appended
        self.popped = 0  # events taken off the queue (into a batch, or dropped)
        self.inflight_start: int | None = None  # number of the first event of the batch being written
        self.inflight_oldest: float | None = None  # queued_at of the oldest event in flight
        self.inflight_n = 0
        self.dropped = 0
        self.dropped_by_topic: Counter[str] = Counter()
        self.dropped_by_reason: Counter[str] = Counter()
        self._drop_warned = False
        #: conn -> its events numbered below this are taken off unwritten (``discard``); ``discarded`` counts them.
        self.discard_before: dict[str, int] = {}
        self.discarded = 0

    # -- producer side (hot path: synchronous, no awaits) ----------------------------------------

    def append(self, item: Item) -> None:
        """Queue ``item``; drops (and records) the oldest event when ``max_queue`` are already queued."""
        items = self.items
        if len(items) >= self.max_queue:
            self._drop_oldest()
        items.append(item)
        self.appended += 1
        if len(items) >= self.high_water and self.room.is_set():
            self.room.clear()

    def lose_unqueued(self, topic: str, ts: int | None, conn: str | None, reason: str) -> None:
        """Record an event lost before it could be queued (unserializable); it is numbered like a queued event
        taken off at once, so ``done`` waits for its announcement."""
        self.appended += 1
        self.popped += 1
        self.lose(topic, ts, conn, reason, self.appended - 1)

    def shed(self, max_age_s: float, reason: str) -> int:
        """Drop every queued event (not the batch in flight) that has waited longer than ``max_age_s``; each is
        recorded as lost for ``reason`` (announced by a gap event). Returns how many were dropped."""
        items, cutoff, n = self.items, time.monotonic() - max_age_s, 0
        while items and items[0][4] < cutoff:
            topic, _, ts, conn, _ = items.popleft()
            self.lose(topic, ts, conn, reason, self.popped)
            self.popped += 1
            n += 1
        self.after_batch()
        return n

    def discard(self, conn: str) -> None:
        """The events of ``conn`` queued until now are not to be written: its lease moved to another worker, so the
        script would fence them. ``take`` skips them (a handed-over connection's backlog costs no more writes)."""
        self.discard_before[conn] = self.appended

    def _drop_oldest(self) -> None:
        topic, _, ts, conn, _ = self.items.popleft()
        self.lose(topic, ts, conn, GAP_REASON_OVERFLOW, self.popped)
        self.popped += 1
        if not self._drop_warned:
            self._drop_warned = True
            log.warning("publisher queue full (max_queue=%d): dropping the oldest events", self.max_queue)

    def lose(self, topic: str, ts: int | None, conn: str | None, reason: str, number: int) -> None:
        """Count event ``number`` (publish order) of ``topic`` as lost; its gap event goes out with a later batch."""
        self.dropped += 1
        self.dropped_by_topic[topic] += 1
        self.dropped_by_reason[reason] += 1
        drops = self.gaps.get((topic, reason))
        if drops is None:
            drops = self.gaps[(topic, reason)] = Drops(reason, number)
        drops.add(ts, conn)

    def requeue(self, key: tuple[str, str], drops: Drops) -> None:
        """A gap event Redis did not take: keep its losses pending (before any newer loss of that key)."""
        pending = self.gaps.get(key)
        if pending is None:
            self.gaps[key] = drops
        else:
            pending.absorb_older(drops)

    # -- writer side ----------------------------------------------------------------------------

    def take(self, max_batch: int) -> tuple[int, list[Item], Gaps]:
        """Start a batch: every pending gap event and up to ``max_batch`` of the oldest events (``DEEP_BATCH_FACTOR``
        times that while at least that many batches and a quarter of ``high_water`` wait), in flight until
        ``settle``. Returns ``(number of the first event, events, gap records)``."""
        # Gaps first: every event they announce is older than anything still queued.
        gaps, self.gaps = self.gaps, {}
        self.inflight_gaps = gaps
        items = self.items
        n = len(items)
        # A deep backlog (4 batches and a quarter of the high-water mark): each event waited longer already than a
        # longer script holds Redis, and fewer round trips drain it faster (README "Benchmark": the writer's one
        # batch in flight per round trip is what limits a saturated worker).
        deep = n >= max(DEEP_BATCH_FACTOR * max_batch, self.high_water // 4)
        n = min(n, max_batch * DEEP_BATCH_FACTOR if deep else max_batch)
        start = self.inflight_start = self.popped
        if self.discard_before:
            batch = self._take_kept(n)
        else:
            batch = [items.popleft() for _ in range(n)]
            self.popped += n
        self.inflight_n = len(batch)
        self.inflight_oldest = batch[0][4] if batch else None
        return start, batch, gaps

    def _take_kept(self, n: int) -> list[Item]:
        """Up to ``n`` events off the queue, skipping discarded ones (numbering stays in queue order: the batch's
        numbers are then at least ``start + i``, which keeps ``done`` on the safe side)."""
        items, skip = self.items, self.discard_before
        batch: list[Item] = []
        while items and len(batch) < n:
            item = items.popleft()
            if item[3] is not None and self.popped < skip.get(item[3], 0):
                self.discarded += 1
            else:
                batch.append(item)
            self.popped += 1
        self.discard_before = {c: k for c, k in skip.items() if k > self.popped}
        return batch

    def settle(self) -> None:
        """The batch in flight is over (written or refused): nothing is in flight any more."""
        self.inflight_start = self.inflight_oldest = None
        self.inflight_n = 0
        self.inflight_gaps = {}

    def written(self, batch: list[Item], start: int, gaps: Gaps, lost: list[int]) -> set[int]:
        """Account for a batch the script ran: ``lost`` are the 1-based numbers of the events (gap events first)
        whose XADD failed. Lost events become pending losses; refused gap events stay pending. Returns the
        indexes (in ``gaps``) of the gap events Redis refused."""
        refused: set[int] = set()
        if lost:
            n_gaps = len(gaps)
            pending = list(gaps.items())
            for number in lost:
                i = int(number) - 1
                if i < n_gaps:
                    refused.add(i)
                    self.requeue(*pending[i])
                else:
                    topic, _, ts, conn, _ = batch[i - n_gaps]
                    self.lose(topic, ts, conn, GAP_REASON_ERROR, start + i - n_gaps)
        return refused

    def refused(self, batch: list[Item], start: int, gaps: Gaps) -> None:
        """Redis refused the whole batch for good: its events are lost (announced later), its gap events wait
        for a later batch."""
        for key, drops in gaps.items():
            self.requeue(key, drops)
        for i, (topic, _, ts, conn, _) in enumerate(batch):
            self.lose(topic, ts, conn, GAP_REASON_ERROR, start + i)

    def after_batch(self) -> None:
        """Let readers go on once the queue has drained below ``high_water // 2``; log the end of an overflow."""
        if not self.room.is_set() and len(self.items) <= self.high_water // 2:
            self.room.set()
        if self._drop_warned and not self.items:
            self._drop_warned = False
            log.warning("publisher queue drained; %d events dropped so far", self.dropped)

    def done(self, target: int) -> bool:
        """True when every event numbered below ``target`` is written, or lost and announced."""
        start = self.inflight_start
        if self.popped < target or (start is not None and start < target):
            return False
        # Every loss among those events is announced (its gap event written).
        return all(d.first >= target for d in chain(self.gaps.values(), self.inflight_gaps.values()))

    def oldest_age_ms(self) -> int:
        """Age of the oldest unwritten event (in flight included), in ms; 0 when none."""
        oldest = self.inflight_oldest
        if oldest is None and self.items:
            oldest = self.items[0][4]
        return 0 if oldest is None else int((time.monotonic() - oldest) * 1000)

    @property
    def gaps_pending(self) -> int:
        """Gap events waiting to be written (pending and in flight)."""
        return len(self.gaps) + len(self.inflight_gaps)
