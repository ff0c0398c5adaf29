"""Keeping a worker's lag under ``LAG_MAX_MS``: spread its connections over healthy workers first, shed last.

The lag of a connection is ``lag_ms`` of its status record (``workers.lag``: socket backlog over the read rate plus
the age of the publisher's oldest unwritten event). Once per tick the runtime hands the guard the status records of
the connections it holds and the publisher's counters (``LagGuard.observe``); the guard keeps three states, written
into the worker's record in ``fp:workers`` as ``lag`` (``LagGuard.record``) so every worker sees the others':

- *lagging*: the worker's highest lag was above ``LAG_MAX_MS / 2`` at ``SUSTAIN`` consecutive ticks (one spike is
  not lagging), is not draining, and Redis had no trouble meanwhile (after an outage or a stall the backlog is the
  outage's, written fast: not lagging); it ends after
  ``SUSTAIN`` consecutive ticks below ``LAG_MAX_MS / 4`` (hysteresis).
- *cooling*: for ``COOLDOWN_HEARTBEATS`` heartbeats after lagging ended. A cooling worker takes nothing new and gives
  nothing away; its peers do not count on it (below), so what it just gave away is not handed back at once.
- *healthy*: neither.

Spreading (``share``, used by ``workers.rebalance`` in place of the plain fair share ``ceil(connections / live)``).
Lagging and cooling workers are *strained*. While at least one live worker is healthy:

- a healthy worker's share is ``ceil(connections / healthy workers)``: it takes offers (and free connections) up to
  that, so it takes what a strained one gives away even when it already holds its ordinary share;
- a lagging worker's share is one less than it holds: it offers one public connection at a time (the busiest by
  bytes read per second: the most relief per handover) through the usual make-before-break handover
  (``workers.handover``: nothing lost, nothing written twice; the taker first buffers as long as the offerer is
  behind, and the offerer drops its queued events of that connection unwritten, as they would be fenced). It offers
  the next only once the previous handover is over, as long after it as it was behind then (its backlog drains
  meanwhile), and after ``SUSTAIN`` more ticks above ``LAG_MAX_MS / 2`` without draining (``fresh``): it gives away
  no more than it must;
- a cooling worker's share is what it holds (no offer, no claim).

With no healthy live worker (alone, or every worker strained) the ordinary fair share applies and nothing moves.

Shedding, the last resort. When the *write* lag (``oldest_queued_age_ms``: events parsed but not in Redis yet) is
above ``LAG_MAX_MS`` at ``SUSTAIN`` consecutive ticks and not draining (shrinking by more than half the time it
took), while Redis takes writes (writes not paused, and no Redis error nor stalled ticks for ``calm_s``: an outage's
backlog is written in order, never shed, and shrinks fast once Redis is back; ``calm_s`` = ``LAG_MAX_MS`` plus
``SUSTAIN`` heartbeats), the publisher drops every queued event older than ``LAG_MAX_MS / 2`` (``EventQueue.shed``);
each topic's loss is announced by one ``gap`` event, ``reason: "lag"``, with the exact ``dropped`` count. Read lag
(frames waiting in the socket) is not shed: the reader's TCP window slows the exchange down meanwhile, and spreading
relieves it. ``LAG_MAX_MS=0`` turns the guard off (nothing spreads, nothing is shed).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)

#: ``reason`` of the gap events announcing events shed because the worker fell more than LAG_MAX_MS behind.
GAP_REASON_LAG = "lag"
#: Consecutive ticks a condition must hold before it counts (lagging, recovered, shedding).
SUSTAIN = 2
#: A gap of this many heartbeats between two ticks means the ticks stalled (Redis did not answer): the lag samples
#: before it say nothing about the worker's own speed.
STALLED_HEARTBEATS = 3
#: Heartbeats a worker stays *cooling* after lagging ended (30 s with the default HEARTBEAT_INTERVAL_S of 1 s).
COOLDOWN_HEARTBEATS = 30


def strained(record: Mapping[str, Any]) -> bool:
    """True when a worker record (``fp:workers``) says its worker is lagging or cooling (``LagGuard.record``)."""
    lag = record.get("lag")
    return isinstance(lag, dict) and bool(lag.get("lagging") or lag.get("cooling"))


def share(conns: int, live: int, strained_live: int, *, held: int, lagging: bool, cooling: bool) -> int:
    """This worker's target number of connections (see the module docstring).

    :param conns: planned connections. :param live: live workers (this one included).
    :param strained_live: live workers lagging or cooling, this one included when it is.
    :param held: connections this worker holds. :param lagging: / :param cooling: this worker's own state."""
    ordinary = math.ceil(conns / max(1, live))
    healthy = live - strained_live
    if healthy <= 0:
        return ordinary
    if lagging:
        return min(ordinary, max(0, held - 1))
    if cooling:
        return min(ordinary, held)
    return math.ceil(conns / healthy)


class LagGuard:
    """The lag states of one worker and its shedding decision (see the module docstring).

    :param lag_max_ms: ``LAG_MAX_MS`` (0: off). :param heartbeat_interval_s: the tick interval (cool-down length).

    Counters (in ``record``): ``sheds`` (times events were shed), ``shed`` (events shed), ``spread`` (connections
    offered because of lag)."""

    def __init__(self, lag_max_ms: int, *, heartbeat_interval_s: float) -> None:
        self.lag_max_ms = lag_max_ms
        self.cooldown_s = COOLDOWN_HEARTBEATS * heartbeat_interval_s
        self.heartbeat_interval_s = heartbeat_interval_s
        self.lag_ms = 0  # the highest connection lag at the last tick
        #: connection id -> bytes/s its reader consumed at the last tick: a lagging worker offers the busiest first.
        self.rates: dict[str, int] = {}
        self.write_lag_ms = 0
        self.lagging = False
        self.cooling_until = 0.0  # monotonic
        self.fresh = 0  # ticks above LAG_MAX_MS / 2 since the last offer
        self.offer_after = 0.0  # monotonic: no offer before (the last handover's backlog drains first)
        self._now = 0.0
        self.sheds = self.shed = self.spread = 0
        self._over = self._under = self._critical = 0
        self._errors: int | None = None  # publisher's redis_errors at the last tick
        #: Monotonic time of the last Redis trouble (a publisher error, stalled ticks); judged again calm_s later.
        self._trouble_at = -math.inf
        self.calm_s = lag_max_ms / 1000 + SUSTAIN * heartbeat_interval_s
        #: The last ticks: (monotonic time, lag_ms, write_lag_ms, Redis taking writes).
        self._window: deque[tuple[float, int, int, bool]] = deque(maxlen=SUSTAIN + 1)

    @property
    def enabled(self) -> bool:
        return self.lag_max_ms > 0

    def cooling(self, now: float) -> bool:
        """True during the cool-down after lagging (``now``: monotonic seconds)."""
        return not self.lagging and now < self.cooling_until

    def observe(self, records: Mapping[str, Mapping[str, Any]], publisher: Mapping[str, Any], *, paused: bool,
                now: float) -> int:  # fmt: skip
        """One tick: the status records of the held connections (``lag_ms``, ``lag.read_rate_bps``), the publisher's
        ``stats``, whether its writes are paused (a connection suspended in a Redis outage), monotonic ``now``.
        Returns the age (ms) above which queued events are to be shed, or 0."""
        self.lag_ms = max((int(r.get("lag_ms") or 0) for r in records.values()), default=0)
        self.rates = {c: int((r.get("lag") or {}).get("read_rate_bps") or 0) for c, r in records.items()}
        self.write_lag_ms = int(publisher.get("oldest_queued_age_ms") or 0)
        errors = int(publisher.get("redis_errors") or 0)
        if self._errors is not None and errors != self._errors:
            self._trouble_at = now  # a Redis error (the publisher may be in its retry backoff for a while)
        self._errors = errors
        if self._window and now - self._window[-1][0] > STALLED_HEARTBEATS * self.heartbeat_interval_s:
            self._window.clear()  # the ticks themselves stalled (Redis hung or away): an outage, not slowness
            self._over = self.fresh = 0
            self._trouble_at = now
        calm = now - self._trouble_at >= self.calm_s  # Redis has been fine long enough to judge the worker
        self._window.append((now, self.lag_ms, self.write_lag_ms, calm and not paused))
        self._now = now
        if not self.enabled:
            return 0
        high, low = self.lag_max_ms / 2, self.lag_max_ms / 4
        self._over = self._over + 1 if self.lag_ms > high else 0
        self._under = self._under + 1 if self.lag_ms < low else 0
        self.fresh = self.fresh + 1 if self.lag_ms > high else 0
        window = list(self._window)
        if (not self.lagging and self._over >= SUSTAIN and len(window) > SUSTAIN and all(w[3] for w in window)
                and not _draining(window, 1)):  # fmt: skip
            self.lagging = True
            log.warning("worker lagging: %d ms behind (LAG_MAX_MS %d); spreading its connections", self.lag_ms,
                        self.lag_max_ms)  # fmt: skip
        elif self.lagging and self._under >= SUSTAIN:
            self.lagging = False
            self.cooling_until = now + self.cooldown_s
            log.info("worker caught up: %d ms behind; cooling down for %.0f s", self.lag_ms, self.cooldown_s)
        if len(window) <= SUSTAIN or not all(w[3] and w[2] > self.lag_max_ms for w in window[1:]):
            return 0
        if _draining(window, 2):  # an outage's backlog being written: never shed
            return 0
        self._window.clear()
        return self.lag_max_ms // 2

    def may_offer(self) -> bool:
        """True when a lagging worker may offer its next connection: ``SUSTAIN`` ticks above half the bound since
        the last offer ended, and its lag not draining by itself meanwhile."""
        if not self.lagging or self.fresh < SUSTAIN or self._now < self.offer_after:
            return False
        return not _draining(list(self._window)[-SUSTAIN - 1:], 1)

    def shed_done(self, dropped: int) -> None:
        """Count one shedding that dropped ``dropped`` events."""
        if dropped:
            self.sheds += 1
            self.shed += dropped
            log.warning("worker %d ms behind the exchange (LAG_MAX_MS %d): %d queued events shed, announced as gaps"
                        " (reason lag)", self.write_lag_ms, self.lag_max_ms, dropped)  # fmt: skip

    def offered(self) -> None:
        """A connection was offered because of lag: the next needs fresh evidence."""
        self.spread += 1
        self.fresh = 0

    def offer_ended(self) -> None:
        """Our offer was taken (or withdrawn, or expired): the next one waits for fresh evidence, and at least as
        long as the worker is behind now (the backlog of what it handed over is dropped or written meanwhile)."""
        self.fresh = 0
        self.offer_after = self._now + self.lag_ms / 1000

    def record(self, now: float) -> dict[str, Any]:
        """The worker record's ``lag`` field: ``{"lag_ms", "write_lag_ms", "lag_max_ms", "lagging", "cooling",
        "spread", "sheds", "shed"}``."""
        return {"lag_ms": self.lag_ms, "write_lag_ms": self.write_lag_ms, "lag_max_ms": self.lag_max_ms,
                "lagging": self.lagging, "cooling": self.cooling(now), "spread": self.spread, "sheds": self.sheds,
                "shed": self.shed}  # fmt: skip


def _draining(window: list[tuple[float, int, int, bool]], field: int) -> bool:
    """True when the lag in ``window[i][field]`` shrank over the window by more than half the time it spans: a backlog
    being written faster than it grows (after an outage, or after a handover). A saw-tooth (one batch per round trip)
    that grows overall is not draining."""
    if len(window) < 2:
        return False
    span_ms = (window[-1][0] - window[0][0]) * 1000
    return window[0][field] - window[-1][field] > span_ms / 2
