"""Continuity of one connection's output: standby buffer, freeze/promote, suspension and pending gaps.

Owned by ``workers.connection.ExchangeConnection`` (one per connection, ``conn.continuity``); the reader's fast
path publishes straight out while ``direct`` is true, everything else goes through ``emit``.

Each interruption of a public, non-depth topic is announced: once the next socket carries the topic again, a
``gap`` event ``{"reason": <kind>, "since": <ms of the last event before the drop>, "until": <ms of the first
event after>}`` goes out before that first event (or ``GAP_GRACE_S`` after the topic is active again when no event
comes, ``until`` then being the activation time). Books and private sessions announce their own gaps.

Make-before-break (``workers.runtime``): a connection built with ``standby=True`` buffers its events and writes no
state until ``promote(markers)``, which continues each topic right after its marker (``workers.stitch``).
``freeze()`` stops the output at once and returns the markers and unannounced gaps for a successor; ``suspend()``
freezes the output but keeps the socket; ``resume()`` announces the loss (``workers.suspend``).

Every event and state goes out with the connection's id (``Publisher.publish(topic, event, conn_id)``): a publisher
with a ``worker_id`` writes them only while this worker holds the lease. Books, kline closer and private session
publish through this object (``publish``/``set_state``) for the same reason.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from control.store import ACTIVE, PENDING
from workers.conn_reasons import LIFETIME
from workers.liveness import BACKPRESSURE
from workers.stitch import CatchUp
from workers.suspend import REDIS_UNAVAILABLE

if TYPE_CHECKING:
    from workers.connection import ExchangeConnection

log = logging.getLogger("workers.connection")

#: How long after a topic is active again its gap waits for a first event before going out with ``until`` = then.
GAP_GRACE_S = 1.0
#: Most events a standby socket buffers (the oldest go first, counted and logged at the switch; a standby socket
#: normally switches within milliseconds of its last acknowledgement, so this bound is a memory guard only).
STANDBY_BUFFER = 100_000

Markers = dict[str, dict[str, Any] | None]
Gaps = dict[str, tuple[str, int | None]]


@dataclass(slots=True, eq=False)
class PendingGap:
    """A gap of one topic waiting for the topic to flow again (see the module docstring)."""

    reason: str
    since: int | None
    active_ms: int | None = None
    timer: asyncio.TimerHandle | None = None
    dropped: int | None = None  # events shed (exact, ``backpressure`` only); None when unknown


def is_depth(topic: str) -> bool:
    """``exchange:depth:SYMBOL`` (cheap: no parsing)."""
    return topic.split(":", 2)[1:2] == ["depth"]


class Continuity:
    """What one connection publishes and still owes; see the module docstring. ``last``: topic -> last event
    published; ``pending``: topic -> gap not announced yet; ``direct``: the reader may publish straight out."""

    def __init__(self, conn: ExchangeConnection, *, standby: bool) -> None:
        self._conn, self._conn_id = conn, conn.conn_id
        self._publish = conn.publisher.publish
        self.standby, self.frozen = standby, False
        self.suspended = False  # output frozen, socket kept: see suspend() and workers.suspend
        self.buffer: deque[tuple[str, dict[str, Any], bool]] = deque(maxlen=STANDBY_BUFFER)
        self.buffer_overflow = 0
        self.held_states: dict[str, dict[str, Any]] = {}  # states withheld while in standby
        self.catchup: dict[str, CatchUp] = {}
        self.pending: dict[str, PendingGap] = {}
        self.last: dict[str, dict[str, Any]] = {}
        self.active_ms: dict[str, int] = {}  # topic -> when it became active on the current socket (ms)
        self.direct = not standby

    # -- the output the books, the kline closer and the private session publish through -----------

    def publish(self, topic: str, event: dict[str, Any]) -> None:
        """Publish an event that did not come from the socket itself (books, klines, private session)."""
        self.emit(topic, event, False)

    def set_state(self, name: str, record: dict[str, Any]) -> None:
        """Write a topic state record (withheld in standby, dropped once frozen)."""
        if self.frozen:
            return
        if self.standby:
            self.held_states[name] = record
        else:
            self._conn.publisher.set_state(name, record, conn_id=self._conn_id)

    def emit(self, name: str, event: dict[str, Any], counted: bool) -> bool:
        """Publish one event (slow path: standby, catch-up, pending gap, frozen); True when it went out.
        ``counted``: it came from the socket (books and private sessions publish their own)."""
        if self.frozen:
            return False
        if self.suspended:  # dropped and counted; resume() announces them
            if not self.announces(name):
                self._conn.suspension.drop_unannounced(name, event, self.last.get(name))
            elif self.drop(name, event, REDIS_UNAVAILABLE):
                self._conn.suspension.drop()
            return False
        if self.standby:
            if len(self.buffer) == STANDBY_BUFFER:
                self.buffer_overflow += 1
            self.buffer.append((name, event, counted))
            if event.get("type") == "depth":  # a book (re)synced: maybe ready now
                self._conn._check_ready()
            return False
        catchup = self.catchup.get(name)
        if catchup is not None:
            publish, done = catchup.admit(event)
            if done:
                del self.catchup[name]
                self.update_direct()
            if not publish:
                return False
        if name in self.pending and event.get("type") != "gap":
            self.announce(name, event.get("ts_received"))
        self._publish(name, event, self._conn_id)
        self.last[name] = event
        return True

    # -- pending gaps -----------------------------------------------------------------------------

    def announces(self, name: str) -> bool:
        """Whether this connection announces the gaps of ``name`` (books and private sessions do their own)."""
        return self._conn.private is None and not is_depth(name)

    def update_direct(self) -> None:
        self.direct = not (self.standby or self.frozen or self.suspended or self.catchup or self.pending)

    def announce(self, name: str, until: int | None) -> None:
        gap = self.pending.pop(name)
        if gap.timer is not None:
            gap.timer.cancel()
        self.update_direct()
        event = {"type": "gap", "topic": name, "reason": gap.reason, "since": gap.since, "until": until}
        if gap.dropped is not None:
            event["dropped"] = gap.dropped
        self._publish(name, event, self._conn_id)
        self._conn.gaps[gap.reason] += 1
        self._conn.events += 1
        log.info("%s: gap on %s announced (%s, %s..%s)", self._conn_id, name, gap.reason, gap.since, until)

    def drop_gap(self, name: str) -> None:
        gap = self.pending.pop(name, None)
        if gap is not None and gap.timer is not None:
            gap.timer.cancel()
        self.update_direct()

    def arm(self, name: str, gap: PendingGap) -> None:
        """``name`` is active again: announce its gap after ``GAP_GRACE_S`` unless an event does it first."""

        def fire() -> None:
            if self.pending.get(name) is gap and not (self.frozen or self.standby or self.suspended):
                self.announce(name, gap.active_ms)

        gap.timer = asyncio.get_running_loop().call_later(GAP_GRACE_S, fire)

    def arm_active(self, now_ms: int) -> None:
        """Arm the gap of every topic active on the socket whose gap is not armed yet (``until`` = ``now_ms``)."""
        live = self._conn.subs.live
        for name, gap in self.pending.items():
            if gap.timer is None and live.get(name) == ACTIVE:
                gap.active_ms = now_ms
                self.arm(name, gap)

    def cancel_timers(self) -> None:
        for gap in self.pending.values():
            if gap.timer is not None:
                gap.timer.cancel()

    def announce_gaps(self, reason: str, since: dict[str, int | None]) -> None:
        """See ``ExchangeConnection.announce_gaps``."""
        for name, since_ms in since.items():
            if self._conn.private is None and name not in self.pending:
                self.pending[name] = PendingGap(reason, since_ms)
        self.update_direct()

    def on_active(self, name: str, now_ms: int) -> None:
        """``name`` was acknowledged (or proved by data) on the socket: its gap's grace timer starts."""
        self.active_ms[name] = now_ms
        gap = self.pending.get(name)
        if gap is not None and gap.active_ms is None:
            gap.active_ms = now_ms
            if not (self.standby or self.frozen or self.suspended):
                self.arm(name, gap)

    def retain(self, desired: dict[str, Any]) -> None:
        """Forget the gaps and catch-ups of topics no longer desired."""
        for name in [n for n in self.pending if n not in desired]:
            self.drop_gap(name)
        for name in [n for n in self.catchup if n not in desired]:
            del self.catchup[name]
        self.update_direct()

    def on_disconnect(self, kind: str, was_live: set[str]) -> None:
        """The socket dropped: each public topic that was flowing gets a pending gap (``kind`` is its reason)."""
        active_ms, self.active_ms = self.active_ms, {}
        if self._conn._stopping or self._conn._auth_failed:
            return
        if not (self.standby or self.frozen):  # a standby socket's drop loses nothing: the old one still serves
            for name in self._conn._desired:
                if (gap := self.pending.get(name)) is not None:
                    gap.dropped = None  # its loss now runs on into this reconnect: no longer an exact count
                    continue
                if not self.announces(name):
                    continue
                last = self.last.get(name)
                catchup = self.catchup.get(name)
                if last is None and catchup is not None:
                    last = catchup.marker
                if last is not None:
                    since = last.get("ts_received")
                elif name in was_live:
                    since = active_ms.get(name)
                else:
                    continue  # never served here: nothing was interrupted
                self.pending[name] = PendingGap(kind, since)
            self.update_direct()
        for gap in self.pending.values():
            gap.active_ms = None
            if gap.timer is not None:
                gap.timer.cancel()
                gap.timer = None

    # -- publisher backpressure (``workers.liveness``) --------------------------------------------

    def shed(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        """Drop ``events`` while shedding: counted, and one pending ``backpressure`` gap per topic, announced by its
        next event after shedding (``stop_shedding``). Topics this connection does not announce itself (private
        sessions) still go to the publisher, whose bounded queue announces its own overflow."""
        if self.frozen:  # its output is stopped anyway; the successor announces what it lacks
            return
        conn = self._conn
        desired, live, subs = conn._desired, conn.liveness, conn.subs
        for name, event in events:
            if name not in desired:
                continue
            if subs.counts[PENDING] and subs.live.get(name) == PENDING:
                subs.mark(name, ACTIVE)  # data proves the subscription (Gate acks w/o id)
            if self.suspended or not self.announces(name):  # suspended: emit drops and counts it
                if self.emit(name, event, True):
                    conn.events += 1
                continue
            if self.drop(name, event, BACKPRESSURE):
                live.shed += 1
        self.update_direct()

    def drop(self, name: str, event: dict[str, Any], reason: str) -> bool:
        """Drop one event of ``name`` (a topic this connection announces), counted in its pending gap (a new one has
        ``reason``); False when it was no loss (a promoted socket's catch-up: stored already)."""
        catchup = self.catchup.get(name)
        if catchup is not None:  # just promoted: events up to the marker are stored already, not a loss
            publish, done = catchup.admit(event)
            if done:
                del self.catchup[name]
            if not publish:
                return False
        gap = self.pending.get(name)
        if gap is None:
            last = self.last.get(name) or (catchup.marker if catchup is not None else None)
            gap = self.pending[name] = PendingGap(reason, last.get("ts_received") if last else None, dropped=0)
            self.direct = False
        elif gap.timer is not None:  # a reconnect gap: its ``until`` must now come after these drops
            gap.timer.cancel()
            gap.timer = gap.active_ms = None
        if gap.dropped is not None:
            gap.dropped += 1
        return True

    def stop_shedding(self) -> None:
        """The publisher has room again: publish from this frame on; each shed topic's gap goes out with its next
        event, or ``GAP_GRACE_S`` from now (``until`` = now) if none comes."""
        conn = self._conn
        conn.liveness.stop_shedding(self._conn_id)
        if not (self.standby or self.frozen or self.suspended):
            self.arm_active(int(conn.clock() * 1000))

    # -- make-before-break and suspension ---------------------------------------------------------

    def promote(self, markers: Markers, gaps: Gaps | None) -> None:
        """See ``ExchangeConnection.promote`` (called once standby is left and counters are inherited)."""
        desired = self._conn._desired
        for name, marker in markers.items():
            if marker is not None and name in desired:
                self.catchup[name] = CatchUp(marker)
        for name, (reason, since) in (gaps or {}).items():
            if self.announces(name) and name not in self.pending:
                self.pending[name] = PendingGap(reason, since, self.active_ms.get(name))
        self.update_direct()
        buffered, self.buffer = self.buffer, deque(maxlen=STANDBY_BUFFER)
        if self.buffer_overflow:
            log.warning("%s: %d events dropped from the standby buffer before the switch", self._conn_id,
                        self.buffer_overflow)  # fmt: skip
        for name, event, counted in buffered:
            if name in desired and event.get("type") != "gap" and self.emit(name, event, counted) and counted:
                self._conn.events += 1
        for name, record in self.held_states.items():
            if name in desired:
                self.set_state(name, record)
        self.held_states.clear()
        for name, gap in self.pending.items():
            if gap.active_ms is not None and gap.timer is None:
                self.arm(name, gap)
        log.info("%s: publishing (%d buffered events, %d topics catching up)", self._conn_id, len(buffered),
                 len(self.catchup))  # fmt: skip

    def inherit(self, old: ExchangeConnection) -> None:
        """Carry ``old``'s counters over to this connection (lifetime roll) and count the roll."""
        conn = self._conn
        conn.reconnects += old.reconnects + 1
        conn.reasons.update(old.reasons)
        conn.reasons[LIFETIME] += 1
        conn.gaps.update(old.gaps)
        conn.messages_received += old.messages_received
        conn.events += old.events
        conn.malformed_frames += old.malformed_frames
        conn.unknown_frames += old.unknown_frames
        conn.reconnect_requests += old.reconnect_requests
        conn.connect_attempts += old.connect_attempts
        conn._parser_counts.update(old._parser_status())
        conn.liveness.inherit(old.liveness)
        conn.suspension.inherit(old.suspension)

    def freeze(self) -> tuple[Markers, Gaps]:
        """See ``ExchangeConnection.freeze``."""
        self.frozen, self.direct = True, False
        if self.suspended:  # given up while suspended (the lease is another worker's): no longer waiting to resume
            self.suspended = False
            self._conn.suspension.end(time.monotonic())
        markers: Markers = {}
        for name in self._conn._desired:
            catchup = self.catchup.get(name)
            markers[name] = self.last.get(name) or (catchup.marker if catchup is not None else None)
        gaps = {name: (gap.reason, gap.since) for name, gap in self.pending.items()}
        for name in list(self.pending):
            self.drop_gap(name)
        return markers, gaps

    def suspend(self) -> None:
        """See ``ExchangeConnection.suspend``."""
        if self.suspended or self.frozen:
            return
        self.suspended = True
        self._conn.suspension.begin(time.monotonic())
        for gap in self.pending.values():
            if gap.timer is not None:  # not announced while suspended: resume() arms it again
                gap.timer.cancel()
                gap.timer = gap.active_ms = None
            if gap.reason == BACKPRESSURE and gap.dropped is not None:  # the same outage: one exact count, one reason
                gap.reason = REDIS_UNAVAILABLE
        self.update_direct()
        log.warning("%s: suspended (output frozen, socket kept)", self._conn_id)

    def resume(self) -> None:
        """See ``ExchangeConnection.resume``."""
        if not self.suspended:
            return
        self.suspended = False
        conn = self._conn
        now_ms = int(conn.clock() * 1000)
        for name, (since, dropped, first, last) in conn.suspension.end(time.monotonic()).items():
            if name not in conn._desired:
                continue
            self._publish(name, {"type": "gap", "topic": name, "reason": REDIS_UNAVAILABLE, "since": since,
                                 "until": last if last is not None else now_ms, "dropped": dropped},
                          self._conn_id)  # fmt: skip
            conn.gaps[REDIS_UNAVAILABLE] += 1
            conn.events += 1
            log.info("%s: gap on %s announced (%s, %d dropped, %s..%s)", self._conn_id, name, REDIS_UNAVAILABLE,
                     dropped, first, last)  # fmt: skip
            if conn.private is not None and conn.subs.live.get(name) == ACTIVE:
                conn.private.want_snapshot(name)
        if not (conn.liveness.shedding or self.standby or self.frozen):  # shedding: stop_shedding arms them
            self.arm_active(now_ms)
        self.update_direct()
        log.warning("%s: resumed (%s)", self._conn_id, conn.suspension.status(time.monotonic()))

    def suspension_marks(self) -> dict[str, int | None]:
        """See ``ExchangeConnection.suspension_marks``."""
        out: dict[str, int | None] = {}
        for name in self._conn._desired:
            catchup, gap, last = self.catchup.get(name), self.pending.get(name), self.last.get(name)
            candidates = [last.get("ts_received") if last else None, gap.since if gap is not None else None,
                          catchup.marker.get("ts_received") if catchup is not None else None]  # fmt: skip
            known = [int(c) for c in candidates if isinstance(c, int)]
            out[name] = max(known) if known else None
        return out
