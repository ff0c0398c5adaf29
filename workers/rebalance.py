"""Which planned connections a worker runs, and how they move: the plan applied to held connections, free ones
taken up to a fair share, rebalancing between workers and lifetime rolls inside one (make-before-break).

Steps e-h of ``workers.runtime``'s tick:

e. held connections gone from the plan are stopped gracefully and released; a public one whose planned URL
   changed rolls there make-before-break (as in h; a private one is stopped and released); the others get
   ``set_topics()`` with their planned topics (a live diff on the open socket). When the planner removes a private
   connection (its account's last private topic was unsubscribed) it is stopped with ``forget`` (Binance: the
   listenKey is closed).
f. take unowned planned connections up to a fair share ``ceil(connections / live workers)``; free
   ids are tried in sorted order rotated by a hash of the worker id, so workers do not all race for
   the same first key. A lease still carrying this worker's own id (left by this worker id's previous
   process) is adopted. Worker ids must therefore be unique among live processes. A connection started
   this way announces a ``takeover`` gap on each public topic that has events in Redis already
   (``fp:topic:last_event``: served before, by a process that died or stopped, or before a pause). When a
   foreign lease is about to expire and this worker is under its share, the next tick runs at that instant
   (``wake_at``), so a killed worker's connections are served again about ``LEASE_TTL_S`` after its last renewal.
g. rebalance, make-before-break (``workers.handover``): a worker above its share offers ONE public connection
   at a time; a worker below it claims an offer, opens its own socket for the connection in standby, and once
   every topic is acknowledged moves the lease to itself with one compare-and-set and switches publishing on,
   continuing each topic right after the last event in its stream (``workers.stitch``). The old owner's next
   renewal fails and it closes its socket without unsubscribing; between the switch and that close the
   publisher fences its events. If the last events cannot be read, the taker retries while renewing its lease,
   and never publishes its buffer blind: past ``HANDOVER_TIMEOUT_S`` it releases the connection, which is then
   served like a free one, with a ``takeover`` gap (``workers.handover.read_markers``).
   A lagging worker (``workers.lag_guard``) gives connections away even below its fair share, healthy ones take
   them beyond it (``share``); the taker waits until its standby buffer covers how far behind the offerer is
   (``_covered``), so the switch still continues right after the last stored event.
h. roll public connections whose socket is older than ``CONNECTION_MAX_AGE_S`` the same way inside this
   worker: a standby twin subscribes, and once acknowledged the old socket is frozen and the twin continues
   after the old one's last events (no gap event; counted as ``lifetime``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import zlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, cast

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from control import keys
from control.settings import Settings
from workers.backoff import Backoff
from workers.conn_launch import Held, Launcher, Take
from workers.handover import read_markers
from workers.lag_guard import LagGuard, share, strained
from workers.planner import PlanResult
from workers.private import account_of_route
from workers.suspend import Suspender

log = logging.getLogger(__name__)

#: Margin after a foreign lease's expiry before the tick that takes it (Redis expiry is not to the millisecond).
_EXPIRY_MARGIN_S = 0.02


class Rebalancer:
    """Steps e-h of the tick for one worker (see the module docstring).

    :param launcher: the runtime's connections (``held``, ``taking``, ``offered`` are read and changed here).
    :param suspender: ``may_take`` (after a Redis outage, previous owners first).
    :param plan: the plan of the last tick (None before the first). :param stopping: True once the runtime stops.
    :param now_ms: wall clock, epoch ms. :param guard: this worker's lag states (``workers.lag_guard``).
    :param peers: worker id -> record of the live workers at the last heartbeat (their lag states).
    """

    def __init__(self, settings: Settings, *, worker_id: str, redis: Redis, launcher: Launcher,
                 suspender: Suspender, plan: Callable[[], PlanResult | None], stopping: Callable[[], bool],
                 now_ms: Callable[[], int], guard: LagGuard | None = None,
                 peers: Callable[[], Mapping[str, Mapping[str, Any]]] = dict) -> None:  # fmt: skip
        self.settings, self.worker_id, self.redis, self.launcher = settings, worker_id, redis, launcher
        self.suspender, self.plan, self.stopping, self.now_ms = suspender, plan, stopping, now_ms
        self.guard = guard or LagGuard(0, heartbeat_interval_s=settings.heartbeat_interval_s)
        self.peers = peers
        self._offering: str | None = None  # our offer as of the last rebalance (its end is noticed there)
        self.leases, self.handovers, self.store = launcher.leases, launcher.handovers, launcher.store
        #: Loop time of an earlier tick (a foreign lease about to expire); the runtime's loop reads and clears it.
        self.wake_at: float | None = None
        #: Handovers completed by this worker as the taker, and their durations (claim to switch, seconds).
        self.handovers_done: list[float] = []

    # -- e: the plan applied to held connections --------------------------------------------------

    def apply(self, current: PlanResult, by_conn: Mapping[str, list[str]]) -> None:
        """Stop what left the plan, move what changed URL, hand the others their planned topics."""
        lc = self.launcher
        for conn_id, held in list(lc.held.items()):
            data = current.conns.get(conn_id)
            if data is None:  # no topic left on it; for a private connection: none left for its account, unless
                # another planned connection serves the account already (a quick unsubscribe/subscribe): its socket
                # may hold the same listenKey (one per account), so it is not closed
                forget = account_of_route(held.route) is not None and not any(
                    d["exchange"] == held.exchange and d["route"] == held.route for d in current.conns.values()
                )
                lc.retire(conn_id, unsubscribe=True, release=True, reason="removed from plan", forget=forget)
            elif data["url"] != held.url and account_of_route(held.route) is not None:
                lc.retire(conn_id, unsubscribe=True, release=True, reason="url changed")
            else:
                if data["url"] != held.url:
                    self._move(held, data["url"])
                if (topics := frozenset(by_conn.get(conn_id, ()))) == held.topics:
                    continue
                lc.configure(held.conn, topics)
                if held.twin is not None:  # a roll in progress: its twin must carry the same topics
                    lc.configure(held.twin, topics)
                held.topics = topics

    def _move(self, held: Held, url: str) -> None:
        """The plan gives a public connection a new URL: roll it there make-before-break (``_roll``). A crashed
        one waiting for its restart just restarts there; a roll already under way finishes first."""
        if held.task.done():
            held.url = url
        elif held.roll is None and asyncio.get_running_loop().time() >= held.roll_after:
            log.info("worker %s: connection %s moves to %s (planned URL changed)", self.worker_id, held.conn_id, url)
            held.roll = asyncio.create_task(self._roll(held, url), name=f"roll:{held.conn_id}")

    # -- f: free connections up to the fair share -------------------------------------------------

    async def acquire(self, current: PlanResult, by_conn: Mapping[str, list[str]], live: int, now: int, *,
                      beats: Mapping[str, int], stale: frozenset[str]) -> None:  # fmt: skip
        """Take free (or own) leases up to the fair share. ``beats``: worker id -> heartbeat_at (epoch ms);
        ``stale``: connections not to start (their URL is about to be re-planned)."""
        lc, ttl_ms = self.launcher, self.launcher.ttl_ms
        target = self.share(len(current.conns), live)
        candidates = [c for c in sorted(current.conns) if c not in lc.held and c not in lc.retiring
                      and c not in lc.taking and c not in stale]  # fmt: skip
        if not candidates:
            return
        leases = await self.leases.owner_ttl_ms(candidates)
        owners = {c: owner for c, (owner, _) in leases.items()}
        # A live owner renews every heartbeat, so its leases never get this close to expiring: these belong to a
        # worker that stopped. Tick the moment they run out (its share is then free), not up to a heartbeat later.
        # Its record counts as live (fair share) until its heartbeat is LEASE_TTL_S old: tick when both have run out.
        expiring = [max(ttl, beats.get(str(owner), 0) + ttl_ms - now) for owner, ttl in leases.values()
                    if owner not in (None, self.worker_id) and ttl is not None
                    and ttl < self.settings.heartbeat_interval_s * 1000]  # fmt: skip
        if expiring:
            self.wake_at = asyncio.get_running_loop().time() + min(expiring) / 1000 + _EXPIRY_MARGIN_S
        if len(lc.held) + len(lc.taking) >= target:
            return
        mine = [c for c in candidates if owners[c] == self.worker_id]  # left by this id's previous process
        adopted = await self.leases.renew_many(mine, self.worker_id, ttl_ms) if mine else set()
        free = [c for c in candidates if owners[c] is None and self.suspender.may_take(c)]
        offset = zlib.crc32(self.worker_id.encode()) % len(free) if free else 0
        for conn_id in [*sorted(adopted), *free[offset:], *free[:offset]]:
            if len(lc.held) + len(lc.taking) >= target:
                break
            if conn_id in adopted or await self.leases.acquire(conn_id, self.worker_id, ttl_ms):
                topics = by_conn.get(conn_id, [])
                since = await self._last_events(topics)
                lc.start(conn_id, current.conns[conn_id], topics, now, takeover=since)

    async def _last_events(self, topics: Iterable[str]) -> dict[str, int | None]:
        """``topic -> ms`` of the last event stored for each of ``topics`` that has one (``fp:topic:last_event``)."""
        names = sorted(topics)
        if not names:
            return {}
        values = await cast(Awaitable[list[str | None]], self.redis.hmget(keys.TOPIC_LAST_EVENT, names))
        return {t: int(v) for t, v in zip(names, values, strict=True) if v is not None and v.isdigit()}

    # -- g: rebalancing between workers (make-before-break) ---------------------------------------

    async def rebalance(self, current: PlanResult, by_conn: Mapping[str, list[str]], live: int) -> None:
        """Offer one connection when above the fair share; claim one offer when below it (module docstring g)."""
        lc = self.launcher
        ttl_ms = int(self.settings.handover_timeout_s * 1000)
        if lc.offered is not None:
            offer = (await self.handovers.offers([lc.offered])).get(lc.offered)
            if lc.offered not in lc.held or offer is None or offer[0] != self.worker_id:
                lc.offered = None  # taken, withdrawn or expired
        ended = self._offering is not None and lc.offered != self._offering  # (also cleared when it was retired)
        if ended:
            self._offering = None
            self.guard.offer_ended()  # a lagging worker offers its next one on fresh evidence of lag only
        target = self.share(len(current.conns), live)
        # Not in the tick an offer ended: a taken one is still in ``held`` until the next renewal says it moved.
        if lc.offered is None and not ended and live > 1 and len(lc.held) > target:
            movable = [c for c, h in lc.held.items()
                       if account_of_route(h.route) is None and h.roll is None and h.restart_at is None]  # fmt: skip
            order = sorted(movable, reverse=True)  # the newest first; when lagging, the busiest
            if self.guard.may_offer():
                order.sort(key=lambda c: self.guard.rates.get(c, 0), reverse=True)
            for conn_id in order:
                if await self.handovers.offer(conn_id, self.worker_id, ttl_ms):
                    lc.offered = self._offering = conn_id
                    lagging = self.guard.may_offer()
                    if lagging:
                        self.guard.offered()
                    log.info("worker %s: offering connection %s (%d held, share %d%s)", self.worker_id, conn_id,
                             len(lc.held), target, f", {self.guard.lag_ms} ms behind" if lagging else "")  # fmt: skip
                    await self.store.notify("handover")
                    break
        if lc.taking or len(lc.held) >= target:
            return
        ids = [c for c in sorted(current.conns) if c not in lc.held and c not in lc.retiring]
        for conn_id, (origin, taker) in (await self.handovers.offers(ids)).items():
            data = current.conns[conn_id]
            if taker is not None or origin == self.worker_id or account_of_route(data["route"]) is not None:
                continue
            if data["exchange"] not in lc.adapters:
                continue
            if await self.handovers.claim(conn_id, origin, self.worker_id, ttl_ms):
                take = lc.taking[conn_id] = Take(conn_id, origin)
                topics = by_conn.get(conn_id, [])
                take.job = asyncio.create_task(self._take(take, dict(data), topics), name=f"take:{conn_id}")
                break

    def share(self, conns: int, live: int) -> int:
        """This worker's target number of connections: the fair share ``ceil(conns / live)``, adjusted for the lag
        states of the live workers (``workers.lag_guard.share``)."""
        guard = self.guard
        if not guard.enabled:
            return math.ceil(conns / max(1, live))
        cooling = guard.cooling(asyncio.get_running_loop().time())
        others = sum(1 for w, record in self.peers().items() if w != self.worker_id and strained(record))
        strained_live = min(live, others + (guard.lagging or cooling))
        return share(conns, live, strained_live, held=len(self.launcher.held), lagging=guard.may_offer(),
                     cooling=cooling or guard.lagging)  # fmt: skip

    async def _covered(self, conn_id: str) -> bool:
        """Wait, from the moment the standby socket is ready, until it has buffered longer than the offerer is behind
        on the connection (``lag_ms`` of its status record, plus as much again up to a heartbeat for the record's
        age): only then is the stream's last stored event inside the buffer, so the switch continues right after it.
        False when that would pass HANDOVER_TIMEOUT_S (the handover is abandoned; a lagging offerer sheds)."""
        loop = asyncio.get_running_loop()
        ready_at = loop.time()
        while True:
            raw = await cast(Awaitable[str | None], self.redis.hget(keys.CONN_STATUS, conn_id))
            lag_s = int((orjson.loads(raw) if raw else {}).get("lag_ms") or 0) / 1000
            need = lag_s + min(lag_s, self.settings.heartbeat_interval_s)
            wait = ready_at + need - loop.time()
            if wait <= 0:
                return True
            if need > self.settings.handover_timeout_s or self.stopping():
                return False
            await asyncio.sleep(min(wait, self.settings.heartbeat_interval_s))

    async def _take(self, take: Take, data: dict[str, str], topics: list[str]) -> None:
        """Standby socket -> all acked -> lease compare-and-set -> markers -> publish (see ``workers.handover``)."""
        lc, ttl_ms = self.launcher, self.launcher.ttl_ms
        loop = asyncio.get_running_loop()
        started = loop.time()
        conn_id, switched, added, give_back = take.conn_id, False, False, True
        log.info("worker %s: taking connection %s over from %s", self.worker_id, conn_id, take.origin)
        try:
            conn, task = lc.launch(conn_id, data["exchange"], data["url"], topics, data["route"], standby=True)
            take.conn, take.task = conn, task
            if not await conn.wait_ready(self.settings.handover_timeout_s):
                log.warning("worker %s: standby socket of %s not ready in time; handover abandoned", self.worker_id,
                            conn_id)  # fmt: skip
                return
            if not await self._covered(conn_id):
                log.warning("worker %s: %s is too far behind on %s; handover abandoned", self.worker_id, take.origin,
                            conn_id)  # fmt: skip
                return
            current = self.plan()
            if current is None or conn_id not in current.conns or self.stopping():
                return
            deadline = loop.time() + self.settings.lease_ttl_s
            if not await self.handovers.transfer(conn_id, take.origin, self.worker_id, ttl_ms):
                log.info("worker %s: connection %s moved elsewhere meanwhile; handover abandoned", self.worker_id,
                         conn_id)  # fmt: skip
                return
            switched = True
            read = await read_markers(
                self.handovers, sorted(topics), renew=lambda: self._renew_taken(conn_id),
                lease_ttl_s=self.settings.lease_ttl_s, lease_deadline=deadline,
                give_up_s=self.settings.handover_timeout_s, label=f"worker {self.worker_id}: handover of {conn_id}",
                intact=lambda: not conn.buffer_overflow,
            )  # fmt: skip
            deadline = read.lease_deadline
            if read.markers is None:  # never publish the buffer blind: give it up, a takeover gap follows
                give_back = read.lease_held
                return
            conn.promote(read.markers)
            now = self.now_ms()
            s = self.settings
            lc.held[conn_id] = Held(
                conn_id, data["exchange"], data["route"], data["url"], conn, task, frozenset(topics),
                now + ttl_ms, deadline, Backoff(s.reconnect_delay_s, s.reconnect_max_delay_s),
            )  # fmt: skip
            added = True
            self.handovers_done.append(loop.time() - started)
            log.info("worker %s: took connection %s over from %s in %.3f s (make-before-break)", self.worker_id,
                     conn_id, take.origin, loop.time() - started)  # fmt: skip
            lc.wake()
            with contextlib.suppress(RedisError):
                await self.store.notify("plan")  # the old owner stops now rather than at its next heartbeat
        except RedisError as exc:
            log.warning("worker %s: handover of %s failed: %s", self.worker_id, conn_id, exc)
        finally:
            try:
                if not added:
                    if take.conn is not None and take.task is not None:
                        stale = Held(conn_id, data["exchange"], data["route"], data["url"], take.conn, take.task,
                                     frozenset(topics), 0, 0.0, Backoff(1.0, 1.0))  # fmt: skip
                        await asyncio.shield(lc.halt(stale, unsubscribe=False, timeout_s=1.0))
                    with contextlib.suppress(RedisError):
                        if not switched:
                            await self.handovers.withdraw(conn_id, take.origin, self.worker_id)
                        elif give_back:  # transferred but not switched: back to the pool (served with a gap)
                            await self.leases.release([conn_id], self.worker_id)
                            lc.wake()
            finally:
                # Only now: until the lease is released a tick must not adopt it as "left by this worker id".
                lc.taking.pop(conn_id, None)

    async def _renew_taken(self, conn_id: str) -> bool:
        """Renew the lease of a connection being taken over (not held yet); True while it is still ours."""
        return conn_id in await self.leases.renew_many([conn_id], self.worker_id, self.launcher.ttl_ms)

    # -- h: lifetime rolls inside this worker -----------------------------------------------------

    def roll_due(self) -> None:
        """Start a lifetime roll for each public connection whose socket is older than CONNECTION_MAX_AGE_S."""
        loop_time = asyncio.get_running_loop().time()
        for held in self.launcher.held.values():
            if held.roll is not None or loop_time < held.roll_after or account_of_route(held.route) is not None:
                continue
            if held.conn.socket_age_s >= self.settings.connection_max_age_s:
                held.roll = asyncio.create_task(self._roll(held), name=f"roll:{held.conn_id}")

    async def _roll(self, held: Held, url: str | None = None) -> None:
        """Make-before-break inside this worker: a standby twin, then freeze the old socket and promote the twin.
        ``url``: the twin connects there (the planned URL changed) and the connection keeps it."""
        lc = self.launcher
        old, conn_id, url = held.conn, held.conn_id, url or held.url
        loop = asyncio.get_running_loop()
        started = loop.time()
        log.info("worker %s: rolling connection %s (socket %.0f s old)", self.worker_id, conn_id, old.socket_age_s)
        twin, twin_task = lc.launch(conn_id, held.exchange, url, held.topics, held.route, standby=True)
        held.twin = twin
        promoted = False
        try:
            ready = await twin.wait_ready(self.settings.handover_timeout_s)
            if not ready or lc.held.get(conn_id) is not held or held.conn is not old or held.task.done():
                log.warning("worker %s: roll of %s abandoned (ready: %s)", self.worker_id, conn_id, ready)
                held.roll_after = loop.time() + min(60.0, self.settings.handover_timeout_s)
                return
            markers, gaps = old.freeze()
            twin.promote(markers, gaps, successor_of=old)
            previous = Held(conn_id, held.exchange, held.route, held.url, old, held.task, held.topics, 0, 0.0,
                            held.restarts)  # fmt: skip
            held.conn, held.task, held.url = twin, twin_task, url
            promoted = True
            log.info("worker %s: connection %s rolled to a new socket in %.2f s", self.worker_id, conn_id,
                     loop.time() - started)  # fmt: skip
            lc.spawn(lc.halt(previous, unsubscribe=False, timeout_s=self.settings.drain_timeout_s),
                     name=f"rolled:{conn_id}")  # fmt: skip
        finally:
            held.twin = None
            held.roll = None
            if not promoted:
                stale = Held(conn_id, held.exchange, held.route, url, twin, twin_task, held.topics, 0, 0.0,
                             held.restarts)  # fmt: skip
                await asyncio.shield(lc.halt(stale, unsubscribe=False, timeout_s=1.0))

    async def cancel_makes(self, *, withdraw: bool) -> None:
        """End handovers being taken and rolls in progress (their standby sockets close); ``withdraw`` our offer."""
        lc = self.launcher
        jobs = [t.job for t in lc.taking.values() if t.job is not None]
        jobs += [h.roll for h in lc.held.values() if h.roll is not None]
        for job in jobs:
            job.cancel()
        if jobs:
            await asyncio.gather(*jobs, return_exceptions=True)
        if withdraw and lc.offered is not None:
            with contextlib.suppress(RedisError):
                await self.handovers.withdraw(lc.offered, self.worker_id)
        lc.offered = None
