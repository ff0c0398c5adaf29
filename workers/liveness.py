"""Peer liveness and publisher backpressure of one exchange socket (``workers.connection`` owns one per connection).

Two questions must not be confused (issue 10, defect 2):

- *Is the peer alive?* Judged only from what the peer sends: any frame (data, ack, app pong), read by our reader.
  The watchdogs (``ExchangeConnection._ticker``) compare ``silence``/``quiet`` against their bounds.
- *Can we take what it sends?* The publisher's queue reached its high-water mark (Redis slow or away). The reader
  then *holds*: it stops reading for at most ``hold_budget_s`` (TCP backpressure; a short Redis stall costs
  nothing). Time spent holding is ours, not the peer's: it never counts as silence, so a held reader never makes
  a healthy socket look dead. If the publisher is still congested when the budget runs out, the reader *sheds*:
  it reads on (pongs, acks, order-book updates and reconnect requests are handled as usual, so liveness keeps
  being judged from the peer) but drops the events it would publish until the publisher has room again
  (``Publisher.room``: below half the high-water mark). Every dropped event is counted, and each topic's loss is
  announced with one ``gap`` event, ``reason: "backpressure"`` (``BACKPRESSURE``), when it flows again.

A socket that ends right after a hold, before any frame was read since (the peer gave up on a client that was not
reading, or aiohttp's heartbeat missed the PONG still queued in the unread buffer), ended because of us: its kind
is ``backpressure`` too.

Times are the event loop's monotonic clock (seconds).
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Protocol

#: Why events were dropped or a socket ended: the worker deliberately stopped reading or publishing because its
#: publisher was congested (gap ``reason``; ``ExchangeConnection.reasons`` key).
BACKPRESSURE = "backpressure"

log = logging.getLogger(__name__)


class Congestible(Protocol):
    """What the reader needs of ``workers.publisher.Publisher``."""

    @property
    def congested(self) -> bool: ...

    async def room(self) -> None: ...


def hold_budget_s(ping_interval_s: float, pong_timeout_s: float) -> float:
    """Longest a reader may hold (not read) before it sheds: half of ``min(ping_interval_s, pong_timeout_s)``.

    Why this bound: while we do not read, aiohttp's read buffer fills and it stops reading the transport, so a
    PONG sits unread; aiohttp's heartbeat pings after ``ping_interval_s`` without inbound bytes and gives up
    ``ping_interval_s / 2`` later (stack-notes.md §9), and an app-ping exchange's PONG must be seen within
    ``pong_timeout_s`` (exchanges.md §1.4). Half the smaller of the two keeps both well inside their windows.
    Defaults (15 s, 10 s): 5 s.
    """
    return min(ping_interval_s, pong_timeout_s) / 2


class Liveness:
    """Peer liveness and backpressure state of one connection; ``opened`` starts each socket over.

    Counters (cumulative over sockets): ``holds`` (times the reader held), ``held_s`` (seconds held), ``sheds``
    (times shedding started), ``shed`` (events dropped while shedding).
    """

    __slots__ = (
        "_held_since",
        "active_at",
        "after_hold",
        "budget_s",
        "data_at",
        "frame_at",
        "held_s",
        "holds",
        "shed",
        "shedding",
        "sheds",
    )  # fmt: skip

    def __init__(self, budget_s: float) -> None:
        self.budget_s = budget_s
        #: Loop times of the last frame, the last data frame, and the first topic turning active on this socket.
        self.frame_at = self.data_at = self.active_at = 0.0
        self._held_since: float | None = None
        #: True when the reader held and has read no frame since (a socket ending now ended because of us); the
        #: reader clears it with every frame, next to ``frame_at``.
        self.after_hold = False
        self.shedding = False
        self.holds = self.sheds = self.shed = 0
        self.held_s = 0.0

    def opened(self, now: float) -> None:
        """A new socket: its peer has just answered the handshake; nothing is held or shed."""
        self.frame_at = self.data_at = now
        self.active_at = 0.0
        self._held_since, self.after_hold, self.shedding = None, False, False

    def frame(self, now: float) -> None:
        """A frame arrived (the reader's hot path sets the two attributes itself)."""
        self.frame_at = now
        self.after_hold = False

    @property
    def holding(self) -> bool:
        return self._held_since is not None

    def silence(self, now: float) -> float:
        """Seconds the peer has sent nothing, our holds excluded (0 while holding: the peer cannot be judged)."""
        return 0.0 if self._held_since is not None else now - self.frame_at

    def quiet(self, now: float) -> float:
        """Seconds without data since the later of the last data frame and the first activation; holds excluded."""
        return 0.0 if self._held_since is not None else now - max(self.data_at, self.active_at)

    def dead_at(self, dead_s: float) -> float:
        """Loop time at which ``silence`` reaches ``dead_s`` (inf while holding: the hold ends first)."""
        return math.inf if self._held_since is not None else self.frame_at + dead_s

    def quiet_at(self, stall_s: float) -> float:
        """Loop time at which ``quiet`` reaches ``stall_s`` (inf while holding)."""
        return math.inf if self._held_since is not None else max(self.data_at, self.active_at) + stall_s

    async def hold(self, publisher: Congestible, now: float) -> bool:
        """Wait (not reading) up to ``budget_s`` for the publisher to have room; True when it has, False when the
        budget ran out (the caller then sheds: ``start_shedding``). ``now``: loop time at the start; the hold's
        duration is credited to the peer: ``frame_at``, ``data_at`` and ``active_at`` move forward by it."""
        self._held_since = now
        self.holds += 1
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.budget_s):
                await publisher.room()
            return True
        except TimeoutError:
            return False
        finally:
            held = max(0.0, loop.time() - now)
            self.held_s += held
            self.frame_at += held
            self.data_at += held
            if self.active_at:
                self.active_at += held
            self._held_since = None
            self.after_hold = True

    def start_shedding(self, conn_id: str) -> None:
        """The hold budget ran out with the publisher still congested: read on, drop events (``shed`` counts them)."""
        self.shedding = True
        self.sheds += 1
        log.warning("%s: publisher still congested after %.1f s: reading on, dropping events until it has room "
                    "(announced as backpressure gaps)", conn_id, self.budget_s)  # fmt: skip

    def stop_shedding(self, conn_id: str) -> None:
        """The publisher has room again: events are published from now on."""
        self.shedding = False
        log.warning("%s: publisher has room again; %d events shed so far", conn_id, self.shed)

    def status(self) -> dict[str, float | int | bool]:
        """``{"holds", "held_s", "sheds", "shed", "shedding"}`` for the connection's status record."""
        return {"holds": self.holds, "held_s": round(self.held_s, 3), "sheds": self.sheds, "shed": self.shed,
                "shedding": self.shedding}  # fmt: skip

    def inherit(self, old: Liveness) -> None:
        """Carry the counters of the connection this one replaces (a lifetime roll)."""
        self.holds += old.holds
        self.held_s += old.held_s
        self.sheds += old.sheds
        self.shed += old.shed
