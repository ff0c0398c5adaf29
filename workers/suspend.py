"""Suspended connections: a worker that cannot reach Redis for longer than its lease keeps its exchange sockets.

A lease that could not be renewed before its local deadline (``WorkerRuntime``, step c) may be gone: another
worker may take the connection over once it expires in Redis. Writing on would break fencing, so the connection's
output must stop. But the cause is OUR Redis, not the exchange: the socket is healthy, and closing it turns every
Redis outage longer than ``LEASE_TTL_S`` into a reconnect of every socket, with ``takeover`` gaps (issue 10,
defect 2). So the connection is *suspended* instead (``ExchangeConnection.suspend``):

- its output is frozen: nothing it reads reaches the publisher, so it cannot write after another worker took over;
- its socket keeps reading (pings, pongs, acks, reconnect requests, order books kept in sequence), so liveness is
  still judged from the peer;
- every event it would have published is dropped and counted per topic (a pending gap with an exact count).

The publisher stops writing at once (``Publisher.pause_writes``): events queued before the suspension would be
fenced (and lost unannounced) if they reached Redis before the lease is ours again.

When Redis answers again (the next tick's heartbeat succeeds), ``Suspender.recover`` first tries to re-acquire the
leases of the suspended connections in one script: a lease that still names this worker is renewed, a free one is
taken (``SET NX``), a lease another worker holds is not touched. Then, per connection:

- *re-acquired*: it resumes publishing (``ExchangeConnection.resume``); each topic that lost events announces one
  ``gap`` with ``reason: "redis_unavailable"`` (``REDIS_UNAVAILABLE``), the exact ``dropped`` count, ``since`` = the
  last event before and ``until`` = the first event after, before that first event. 0 reconnects.
- *taken by another worker* (a network partition of this worker only: the others kept Redis and took over once the
  lease expired): its socket is closed without unsubscribing, as for any lease lost; the new owner announced a
  ``takeover`` gap. No event was published twice: the connection was frozen from its local deadline on, which comes
  before the lease's expiry in Redis.
- *re-acquired, but not resumable*: a lease that was free again after another worker had held it (that worker wrote
  the topics meanwhile: ``fp:topic:last_event`` is newer than anything this connection published), or events of the
  connection that the publisher fenced while it was suspended (a write that hung past the lease's expiry, e.g. a
  ``CLIENT PAUSE``: its events are missing before ones still queued, which no gap could place). The lease is
  released and the socket closed; the next owner announces a ``takeover`` gap from the last stored event.

Prefer the previous owner. After an outage longer than a lease every lease may have expired, and whichever worker
ticks first would take connections it never held, forcing their owners to close their sockets. A worker that just
regained Redis after being cut off long enough for leases to lapse (``LEASE_TTL_S - HEARTBEAT_INTERVAL_S``) takes no
free lease for one ``LEASE_TTL_S`` (``may_take``); the previous owners re-acquire theirs within a heartbeat. A
worker that died during the outage has its connections taken over when that grace ends. A connection given up
above is not taken again (by this worker) before the publisher has written or fenced everything queued for it.

Times are the event loop's monotonic clock (seconds); Redis times in milliseconds.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, cast

from redis.asyncio import Redis

from control import keys
from workers.leases import Leases

log = logging.getLogger(__name__)

#: Gap ``reason`` of events a suspended connection dropped (Redis unreachable for longer than the lease).
REDIS_UNAVAILABLE = "redis_unavailable"

_REACQUIRE_LUA = """
local out = {}
for i, key in ipairs(KEYS) do
    local owner = redis.call('get', key)
    if owner == ARGV[1] then
        redis.call('pexpire', key, ARGV[2])
        out[#out + 1] = i
    elseif not owner then
        redis.call('set', key, ARGV[1], 'PX', ARGV[2])
        out[#out + 1] = i
    end
end
return out
"""


class Suspension:
    """What one connection lost while suspended (``ExchangeConnection`` keeps one; counters over its life).

    Events of topics the connection announces itself are counted in their pending gaps (``drop``); those of order
    books and private topics (``drop_unannounced``) here, per topic: ``(since, count, first, last)`` with ``since``
    the ``ts_received`` (ms) of the last event published before, ``first``/``last`` those of the dropped ones.
    """

    __slots__ = ("_since", "_unannounced", "count", "dropped", "total_s")

    def __init__(self) -> None:
        self._since: float | None = None
        self._unannounced: dict[str, list[int | None]] = {}
        self.count = 0  # suspensions
        self.dropped = 0  # events dropped while suspended
        self.total_s = 0.0  # seconds suspended, the current suspension excluded

    @property
    def active(self) -> bool:
        return self._since is not None

    def begin(self, now: float) -> None:
        self._since = now
        self.count += 1

    def drop(self) -> None:
        self.dropped += 1

    def drop_unannounced(self, topic: str, event: dict[str, Any], last: dict[str, Any] | None) -> None:
        entry = self._unannounced.get(topic)
        ts = event.get("ts_received")
        if entry is None:
            entry = self._unannounced[topic] = [last.get("ts_received") if last else None, 0, ts, ts]
        if event.get("type") == "gap":  # a book's own gap: covered by the one resume() announces
            return
        entry[1] = (entry[1] or 0) + 1
        entry[3] = ts if ts is not None else entry[3]
        self.dropped += 1

    def end(self, now: float) -> dict[str, tuple[int | None, int, int | None, int | None]]:
        """Close the suspension; returns the unannounced topics' losses ``topic -> (since, count, first, last)``."""
        if self._since is not None:
            self.total_s += max(0.0, now - self._since)
        self._since = None
        out, self._unannounced = self._unannounced, {}
        return {t: (e[0], int(e[1] or 0), e[2], e[3]) for t, e in out.items()}

    def inherit(self, old: Suspension) -> None:
        """Carry the counters of the connection this one replaces (a lifetime roll)."""
        self.count += old.count
        self.dropped += old.dropped
        self.total_s += old.total_s

    def status(self, now: float) -> dict[str, Any]:
        """``{"suspended", "suspensions", "dropped", "suspended_s"}`` for the connection's status record."""
        current = now - self._since if self._since is not None else 0.0
        return {"suspended": self._since is not None, "suspensions": self.count, "dropped": self.dropped,
                "suspended_s": round(self.total_s + current, 3)}  # fmt: skip


def newer(stored: str | int | None, mark: int | None) -> bool:
    """True when the topic's stored last event (``fp:topic:last_event``, ms) is newer than anything this connection
    published (``mark``): another worker wrote the topic meanwhile."""
    if stored is None or not str(stored).isdigit():
        return False
    return mark is None or int(stored) > mark


class _Suspendable(Protocol):
    conn_id: str
    conn: Any
    task: asyncio.Task[None]


@dataclass(slots=True)
class Recovery:
    """What ``Suspender.recover`` decided: connections to run again (their leases renewed at ``renewed_at``, loop
    time) and connections to close without unsubscribing, with why."""

    resumed: list[Any]
    lost: list[tuple[Any, str]]
    renewed_at: float


class Suspender:
    """The suspended connections of one worker runtime (see the module docstring).

    :param redis: the runtime's decoding client. :param publisher: its ``workers.publisher.Publisher``.
    :param worker_id: lease owner id. :param lease_ttl_s, heartbeat_interval_s: the settings (seconds).

    ``held``: conn id -> the runtime's record of a suspended connection (anything with ``conn_id``, ``conn`` and
    ``task``; ``workers.conn_launch.Held``). Counters: ``suspensions``, ``resumed``, ``lost``.
    """

    def __init__(self, redis: Redis, publisher: Any, *, worker_id: str, lease_ttl_s: float,
                 heartbeat_interval_s: float) -> None:  # fmt: skip
        self.redis, self.publisher, self.worker_id = redis, publisher, worker_id
        self.lease_ttl_s = lease_ttl_s
        #: Without Redis this long, other workers' leases may have lapsed too: prefer their previous owners.
        self.lapse_s = lease_ttl_s - heartbeat_interval_s
        self.leases = Leases(redis)
        self._reacquire = redis.register_script(_REACQUIRE_LUA)
        self.held: dict[str, Any] = {}
        self._fenced_at: dict[str, int] = {}  # publisher.fenced_batches[conn] at the suspension
        self.suspensions = self.resumed = self.lost = 0
        self._last_contact: float | None = None
        self._failed = False
        self._grace_until = -math.inf
        self._quarantine: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None

    # -- suspending -------------------------------------------------------------------------------

    @staticmethod
    def can_suspend(record: _Suspendable) -> bool:
        """An exchange connection whose task still runs (a private one waiting for its account cannot)."""
        return callable(getattr(record.conn, "suspend", None)) and not record.task.done()

    def suspend(self, record: _Suspendable) -> None:
        """Freeze ``record.conn``'s output, keep its socket, pause the publisher's writes."""
        record.conn.suspend()
        self.held[record.conn_id] = record
        self._fenced_at[record.conn_id] = self.publisher.fenced_batches[record.conn_id]
        self.suspensions += 1
        self.publisher.pause_writes()
        log.warning("worker %s: lease of %s not renewed in time (Redis unreachable): connection suspended, socket "
                    "kept; its events are dropped and counted until the lease is ours again", self.worker_id,
                    record.conn_id)  # fmt: skip

    def watch(self, deadline: float | None, callback: Callable[[], None]) -> None:
        """Run ``callback`` at loop time ``deadline`` (the earliest lease deadline; a tick blocked on Redis must not
        delay a suspension), replacing the previous timer; None: no timer."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None if deadline is None else asyncio.get_running_loop().call_at(deadline, callback)

    def failed(self) -> None:
        """A tick failed on Redis."""
        self._failed = True

    # -- Redis is back ----------------------------------------------------------------------------

    def contact(self, now: float) -> None:
        """A heartbeat succeeded at loop time ``now``; after an outage long enough for leases to lapse, other
        workers' free leases are left alone for one ``LEASE_TTL_S`` (``may_take``)."""
        last, self._last_contact = self._last_contact, now
        if self._failed and (self.held or (last is not None and now - last >= self.lapse_s)):
            self._grace_until = now + self.lease_ttl_s
            log.info("worker %s: Redis answers again after %.1f s; free connections are left to their previous "
                     "owners for %.1f s", self.worker_id, now - (last or now), self.lease_ttl_s)  # fmt: skip
        self._failed = False

    def may_take(self, conn_id: str) -> bool:
        """Whether this worker may take the free lease of ``conn_id`` now (see the module docstring)."""
        if conn_id in self.held or conn_id in self._quarantine:
            return False
        return asyncio.get_running_loop().time() >= self._grace_until

    async def recover(self, ttl_ms: int) -> Recovery | None:
        """Re-acquire the suspended connections' leases and decide each one (module docstring); None when nothing is
        suspended. Raises RedisError (nothing changed then but leases re-acquired, which the next call finds)."""
        self.contact(asyncio.get_running_loop().time())
        if not self.held:
            return None
        loop = asyncio.get_running_loop()
        ids = sorted(self.held)
        renewed_at = loop.time()
        got = await self._reacquire(keys=[keys.lease(c) for c in ids], args=[self.worker_id, ttl_ms])
        kept = {ids[int(i) - 1] for i in got}
        marks = {c: self.held[c].conn.suspension_marks() for c in kept}
        names = sorted({t for m in marks.values() for t in m})
        raw = await cast(Awaitable[list[Any]], self.redis.hmget(keys.TOPIC_LAST_EVENT, names)) if names else []
        stored = dict(zip(names, raw, strict=True))
        resumed: list[Any] = []
        lost: list[tuple[Any, str]] = []
        give_back: list[str] = []
        for conn_id in ids:
            record = self.held[conn_id]
            if conn_id not in kept:
                lost.append((record, "lease taken by another worker while Redis was unreachable"))
                continue
            foreign = sorted(t for t, mark in marks[conn_id].items() if newer(stored.get(t), mark))
            if foreign:
                why = f"another worker published {', '.join(foreign)} while Redis was unreachable"
            elif self.publisher.fenced_batches[conn_id] > self._fenced_at[conn_id]:
                why = "events fenced while suspended"
            else:
                resumed.append(record)
                continue
            give_back.append(conn_id)
            lost.append((record, why))
        if give_back:  # before any queued event of theirs can be written under the lease we just took
            await self.leases.release(give_back, self.worker_id)
        for record in resumed:  # no Redis call from here on: the decisions are applied all at once
            record.conn.resume()
        self.resumed += len(resumed)
        self.lost += len(lost)
        self._hold_back([record.conn_id for record, _ in lost])
        self.held.clear()
        self._fenced_at.clear()
        self.publisher.resume_writes()
        for record in resumed:
            log.warning("worker %s: connection %s resumed after %s (lease re-acquired, 0 reconnects)", self.worker_id,
                        record.conn_id, _suspended_for(record.conn))  # fmt: skip
        for record, why in lost:
            log.warning("worker %s: suspended connection %s closed: %s", self.worker_id, record.conn_id, why)
        return Recovery(resumed, lost, renewed_at)

    def _hold_back(self, conn_ids: Iterable[str]) -> None:
        """Keep this worker from taking ``conn_ids`` again until the publisher has written (or fenced) what is
        queued now: their stale events must not be written under a lease this worker takes later."""
        ids = set(conn_ids)
        if not ids:
            return
        self._quarantine |= ids

        async def release() -> None:
            while not await self.publisher.flush(self.lease_ttl_s):
                pass
            self._quarantine -= ids

        task = asyncio.create_task(release(), name="suspend:hold-back")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- stop -------------------------------------------------------------------------------------

    def release_all(self) -> list[Any]:
        """The runtime stops: every suspended record (their sockets are closed without unsubscribing by the caller),
        timers and background tasks cancelled, publisher writes resumed (what it writes is fenced as usual)."""
        records = list(self.held.values())
        self.held.clear()
        self.watch(None, lambda: None)
        for task in list(self._tasks):
            task.cancel()
        self.publisher.resume_writes()
        return records

    def status(self) -> dict[str, Any]:
        """For the worker record: ``{"suspended": [ids], "suspensions", "resumed", "lost", "grace_s"}``."""
        grace = max(0.0, self._grace_until - asyncio.get_running_loop().time())
        return {"suspended": sorted(self.held), "suspensions": self.suspensions, "resumed": self.resumed,
                "lost": self.lost, "grace_s": round(grace, 3)}  # fmt: skip


def _suspended_for(conn: Any) -> str:
    status = getattr(conn, "suspension", None)
    if not isinstance(status, Suspension):
        return "a suspension"
    return f"{status.total_s:.1f} s suspended in all, {status.dropped} events dropped in all"
