"""WorkerRuntime: the long-lived part of one arq worker process (started in ``on_startup``).

It owns the exchange connections this process runs and keeps them in line with the plan in
Redis (``workers.planner``). Every ``HEARTBEAT_INTERVAL_S``, or at once when anything arrives on
``fp:ctl``, it runs ``tick()``:

a. heartbeat: write this worker's record to ``fp:workers``; prune records older than 3 x lease TTL.
b. re-plan when ``fp:desired:version`` differs from ``fp:plan:version`` (cheap, idempotent, locked), or when a
   planned URL is not the one this worker's settings give and this worker is the most recently started live one
   (Redis kept an earlier run's plan: the settings in force decide where to connect; in a rolling restart the
   newest settings win). Until that re-plan is written, such connections are not started on the old URL.
c. renew the leases of held connections; a connection whose lease was lost is stopped at once
   *without* unsubscribing (another worker may own it now) and forgotten. A connection whose lease
   could not be renewed before its local deadline (Redis unreachable) is *suspended* (``workers.suspend``): its
   output is frozen at that instant (also from a timer, so a tick blocked on Redis cannot delay it), its socket
   kept. Right after the next successful heartbeat the suspended connections re-acquire their leases and resume
   (one ``redis_unavailable`` gap per topic that lost events, 0 reconnects), or are closed without unsubscribing
   when another worker holds the lease now. After such an outage this worker takes no free lease for one
   ``LEASE_TTL_S``, so that the previous owners get theirs back first.
d. paused: stop every held connection gracefully (unsubscribe), release its lease, and stop there.
e. held connections gone from the plan are stopped gracefully and released; a public one whose planned URL
   changed rolls there make-before-break (as in h; a private one is stopped and released); the others get
   ``set_topics()`` with their planned topics (a live diff on the open socket).
   Connections holding depth topics also get ``set_options()`` from ``fp:topic:options`` (one HGETALL).
f. take unowned planned connections up to a fair share ``ceil(connections / live workers)``; free
   ids are tried in sorted order rotated by a hash of the worker id, so workers do not all race for
   the same first key. A lease still carrying this worker's own id (left by this worker id's previous
   process) is adopted. Worker ids must therefore be unique among live processes. A connection started
   this way announces a ``takeover`` gap on each public topic that has events in Redis already
   (``fp:topic:last_event``: served before, by a process that died or stopped, or before a pause). When a
   foreign lease is about to expire and this worker is under its share, the next tick runs at that instant, so
   a killed worker's connections are served again about ``LEASE_TTL_S`` after its last renewal.
g. rebalance, make-before-break (``workers.handover``): a worker above its share offers ONE public connection
   at a time; a worker below it claims an offer, opens its own socket for the connection in standby, and once
   every topic is acknowledged moves the lease to itself with one compare-and-set and switches publishing on,
   continuing each topic right after the last event in its stream (``workers.stitch``). The old owner's next
   renewal fails and it closes its socket without unsubscribing; between the switch and that close the
   publisher fences its events. If the last events cannot be read, the taker retries while renewing its lease,
   and never publishes its buffer blind: past ``HANDOVER_TIMEOUT_S`` it releases the connection, which is then
   served like a free one, with a ``takeover`` gap (``workers.handover.read_markers``).
h. roll public connections whose socket is older than ``CONNECTION_MAX_AGE_S`` the same way inside this
   worker: a standby twin subscribes, and once acknowledged the old socket is frozen and the twin continues
   after the old one's last events (no gap event; counted as ``lifetime``).
i. write status records for held connections to ``fp:conn:status``; drop records of connections no
   longer planned.

Private connections (route ``private:<account>``, one per account and exchange) get a ``workers.private``
session built from the account's credentials. Accounts are loaded with ``control.accounts.load_accounts`` at the
first tick and again whenever ``accounts`` arrives on ``fp:ctl`` (POST/DELETE /accounts); every loaded secret is
added to the log redaction filter (``control.redact``). A held private connection whose credentials changed is
restarted; one whose account is unknown runs as ``workers.private.UnservedConnection`` (topics ``failed``,
``unknown account``) until the account appears. When the planner removes a private connection (its account's last
private topic was unsubscribed) it is stopped with ``forget`` (Binance: the listenKey is closed).

Guarantee: each topic is in exactly one planned connection (planner), and a connection id runs on
at most one live worker at a time (its lease), so no topic is streamed twice in steady state. Only the lease
holder's events reach Redis: the publisher is built with this worker's id and checks the lease of every
connection inside its write script (fencing); a connection whose lease was lost is frozen (no more output) and
stopped at once; one whose lease could not be renewed before the local deadline is frozen and suspended.

Graceful stop (``stop``: SIGTERM through arq's ``on_shutdown``): control tasks end, handovers and rolls in
flight are abandoned, every connection unsubscribes and closes, the publisher is flushed before each lease is
released (so nothing queued is fenced), then the worker record is removed and the others are woken.

Failure handling: a tick that hits a Redis error is logged and retried on the next tick; the worker
never crashes for it. A connection task that dies is logged and restarted with backoff. If the
control loop itself dies unexpectedly (a bug), it is logged CRITICAL and restarted after backoff,
rather than exiting the process (arq would keep taking jobs; supervisord cannot see a dead task).
Stops and releases run in background tasks so a slow unsubscribe never delays lease renewal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import aiohttp
import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from control import keys
from control.accounts import Account, load_accounts, secret_values
from control.redact import install_redaction
from control.settings import Settings
from control.store import ControlStore
from control.topics import Topic, TopicError
from workers.backoff import Backoff
from workers.connection import TAKEOVER, ExchangeConnection
from workers.exchanges import configured_adapters
from workers.exchanges.base import ExchangeAdapter
from workers.handover import Handovers, read_markers
from workers.leases import Leases
from workers.planner import PlanResult, plan, read_plan, stale_urls
from workers.private import PrivateSession, UnservedConnection, account_of_route
from workers.publisher import Publisher
from workers.suspend import Suspender

log = logging.getLogger(__name__)

#: Margin after a foreign lease's expiry before the tick that takes it (Redis expiry is not to the millisecond).
_EXPIRY_MARGIN_S = 0.02
#: Publisher counters copied into the worker record (``/status``: backlog per worker).
_PUBLISHER_STATS = ("queue_depth", "inflight", "oldest_queued_age_ms", "dropped", "fenced", "gaps_published",
                    "gaps_by_reason", "dropped_by_reason", "redis_errors", "events_published")  # fmt: skip


@dataclass(slots=True)
class _Held:
    """A connection whose lease this worker holds, and the task running it."""

    conn_id: str
    exchange: str
    route: str
    url: str
    conn: Any
    task: asyncio.Task[None]
    topics: frozenset[str]
    lease_expires_at: int  # epoch ms, for status records
    lease_deadline: float  # loop time by which the lease must be renewed, for fencing
    restarts: Backoff
    restart_at: float | None = None
    account: Account | None = None  # the credentials a private connection was started with
    roll: asyncio.Task[None] | None = None  # a lifetime roll in progress
    twin: Any = None  # the standby connection of that roll
    roll_after: float = 0.0  # loop time before which no new roll starts (after a failed one)


@dataclass(slots=True)
class _Take:
    """A connection being taken over from ``origin`` (make-before-break): its standby connection."""

    conn_id: str
    origin: str
    conn: Any = None
    task: asyncio.Task[None] | None = None
    job: asyncio.Task[None] | None = None


class WorkerRuntime:
    """Runs this process's share of the planned exchange connections (see the module docstring).

    :param settings: runtime settings (intervals, lease TTL, drain timeout, URLs).
    :param worker_id: unique id of this worker process (``Settings.worker_id``).
    :param redis: ``decode_responses=True`` client for control state.
    :param redis_bytes: ``decode_responses=False`` client for the event publisher.
    :param session: shared ``aiohttp.ClientSession`` for the WebSockets.
    :param adapters: exchange id -> adapter (default ``workers.exchanges.configured_adapters(settings)``).
    :param connection_factory: builds a connection (default ``ExchangeConnection``) from keyword args
        ``conn_id, adapter, url, settings, session, publisher, worker_id``.
    :param clock: wall clock, epoch seconds (heartbeats and records).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        worker_id: str,
        redis: Redis,
        redis_bytes: Redis,
        session: aiohttp.ClientSession,
        adapters: Mapping[str, ExchangeAdapter] | None = None,
        connection_factory: Any = ExchangeConnection,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings, self.worker_id, self.redis, self.session = settings, worker_id, redis, session
        self.adapters = configured_adapters(settings) if adapters is None else adapters
        self.connection_factory, self.clock = connection_factory, clock
        self.store = ControlStore(redis)
        self.leases = Leases(redis)
        self.publisher = Publisher(redis_bytes, stream_maxlen=settings.stream_maxlen, worker_id=worker_id)
        self.handovers = Handovers(redis)
        self._suspend = Suspender(redis, self.publisher, worker_id=worker_id, lease_ttl_s=settings.lease_ttl_s,
                                  heartbeat_interval_s=settings.heartbeat_interval_s)  # fmt: skip
        #: Completed ticks (observability, tests).
        self.ticks = 0
        self._held: dict[str, _Held] = {}
        self._retiring: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._pubsub_task: asyncio.Task[None] | None = None
        self._stop_future: asyncio.Future[None] | None = None
        self._started_at = 0
        self._host = socket.gethostname()
        #: (exchange, account) -> credentials; loaded on the first tick and on every ``accounts`` nudge.
        self._accounts: dict[tuple[str, str], Account] = {}
        self._accounts_due = True
        self._background: set[asyncio.Task[None]] = set()  # old connections stopping (credentials change, roll)
        self._taking: dict[str, _Take] = {}  # handovers this worker is taking (at most one at a time)
        self._offered: str | None = None  # the connection this worker offered for rebalancing
        self._wake_at: float | None = None  # loop time of an earlier tick (a foreign lease about to expire)
        self._plan: PlanResult | None = None  # the plan of the last tick
        #: depth topic -> {"levels"} from fp:topic:options, read each tick before any connection starts
        self._topic_options: dict[str, dict[str, Any]] = {}
        #: This process started last among the live workers: its settings' URLs win (``_current_plan``).
        self._newest = True
        #: Planned connections whose URL this worker is about to re-plan: not started on the old URL meanwhile.
        self._stale: frozenset[str] = frozenset()
        #: worker id -> heartbeat_at (epoch ms) of the records read at the last heartbeat.
        self._beats: dict[str, int] = {}
        #: Handovers completed by this worker as the taker, and their durations (claim to switch, seconds).
        self.handovers_done: list[float] = []

    # -- public surface ---------------------------------------------------------------------------

    @property
    def held(self) -> list[str]:
        """Sorted ids of the connections this worker runs now."""
        return sorted(self._held)

    async def start(self) -> None:
        """Start the publisher, the ``fp:ctl`` listener and the control loop (idempotent)."""
        if self._loop_task is not None or self._stop_future is not None:
            return
        self._started_at = self._now_ms()
        self.publisher.start()
        self._pubsub_task = asyncio.create_task(self._watch_control(), name=f"ctl-watch:{self.worker_id}")
        self._loop_task = asyncio.create_task(self._run_loop(), name=f"runtime:{self.worker_id}")
        log.info("worker %s: runtime started (pid %d)", self.worker_id, os.getpid())

    def wake(self) -> None:
        """Run a tick as soon as possible (plan changed, pause/resume, job)."""
        self._wake.set()

    async def stop(self, drain: bool = True) -> None:
        """Stop connections concurrently (unsubscribing when ``drain``) within ``DRAIN_TIMEOUT_S``,
        flush and close the publisher, release leases, remove the worker record and close the
        pub/sub. Idempotent; Redis errors are logged, not raised."""
        if self._stop_future is None:
            self._stop_future = asyncio.ensure_future(self._stop(drain))
        await asyncio.shield(self._stop_future)

    async def abort(self) -> None:
        """Die like a killed process (tests, emergencies): close sockets without unsubscribing and
        keep leases and the worker record, so other workers take over only once they expire."""
        if self._stop_future is not None:
            return
        self._stop_future = asyncio.get_running_loop().create_future()
        await self._cancel_control_tasks()
        await self._cancel_makes(withdraw=False)
        held, self._held = [*self._held.values(), *self._suspend.release_all()], {}
        await asyncio.gather(*(self._halt(h, unsubscribe=False, timeout_s=1.0) for h in held))
        await self.publisher.close(timeout_s=1.0)
        self._stop_future.set_result(None)
        log.warning("worker %s: aborted; %d connections dropped, leases left to expire", self.worker_id, len(held))

    async def tick(self) -> None:
        """One reconcile pass (steps a-g of the module docstring). Raises RedisError on Redis trouble."""
        now = self._now_ms()
        self._fence_expired()
        if self._accounts_due:
            await self._load_accounts()
        self._restart_crashed()
        reported = sorted(self._held)
        live = await self._heartbeat(now)
        await self._recover(now)
        current = await self._current_plan(now)
        self._plan = current
        await self._renew(now)
        if current.paused:
            for take in list(self._taking.values()):
                if take.job is not None:
                    take.job.cancel()
            for conn_id in list(self._held):
                self._retire(conn_id, unsubscribe=True, release=True, reason="paused")
        else:
            by_conn = current.by_conn()
            await self._read_options(by_conn)
            self._apply(current, by_conn)
            await self._acquire(current, by_conn, live, now)
            await self._rebalance(current, by_conn, live)
            self._roll_due()
            await self._push_options()
        if sorted(self._held) != reported:  # keep /status exact without waiting for the next heartbeat
            await self.store.put_worker(self.worker_id, self._worker_record(now))
        await self._write_status(current)
        self.ticks += 1

    # -- tick steps -------------------------------------------------------------------------------

    def _worker_record(self, now: int) -> dict[str, Any]:
        stats = self.publisher.stats
        return {"host": self._host, "pid": os.getpid(), "started_at": self._started_at, "heartbeat_at": now,
                "connections": sorted(self._held), "taking": sorted(self._taking), "offered": self._offered,
                "publisher": {k: stats[k] for k in _PUBLISHER_STATS}, "suspend": self._suspend.status()}  # fmt: skip

    async def _heartbeat(self, now: int) -> int:
        """Write our record, prune dead ones; returns the number of live workers (us included)."""
        await self.store.put_worker(self.worker_id, self._worker_record(now))
        ttl, live, newest = self._ttl_ms, 0, True
        workers = await self.store.workers()
        self._beats = {str(w["id"]): int(w.get("heartbeat_at") or 0) for w in workers}
        for worker in workers:
            age = now - int(worker.get("heartbeat_at") or 0)
            if worker["id"] != self.worker_id and age > 3 * ttl:
                log.info("worker %s: pruning stale worker record %s (%d ms old)", self.worker_id, worker["id"], age)
                await self.store.remove_worker(worker["id"])
            elif age <= ttl or worker["id"] == self.worker_id:
                live += 1
                started = (int(worker.get("started_at") or 0), str(worker["id"]))
                newest = newest and started <= (self._started_at, self.worker_id)
        self._newest = newest
        return live

    async def _current_plan(self, now: int) -> PlanResult:
        """The plan, re-planned first when the desired state changed, or when its URLs are not this worker's
        settings and this worker started last (Redis kept an earlier run's plan; in a rolling restart the newest
        settings win, older workers follow the plan). Until such a re-plan lands, ``_stale`` keeps those
        connections from being started on the old URL."""
        desired_version = int(await self.redis.get(keys.DESIRED_VERSION) or 0)
        current = await read_plan(self.redis)
        stale = stale_urls(current, self.settings, self.adapters) if self._newest else {}
        self._stale = frozenset()
        if desired_version != current.version or stale:
            if stale:
                log.info("worker %s: re-planning: planned URLs differ from the settings: %s", self.worker_id,
                         ", ".join(f"{c} {old} -> {new}" for c, (old, new) in sorted(stale.items())))  # fmt: skip
            planned = await plan(self.redis, self.settings, self.adapters, now_ms=now)
            if planned is not None:
                return planned
            self._stale = frozenset(stale)
            self.wake()  # another process held the planner lock: look again at once
        return current

    async def _renew(self, now: int) -> None:
        if not self._held:
            return
        deadline = asyncio.get_running_loop().time() + self.settings.lease_ttl_s
        kept = await self.leases.renew_many(list(self._held), self.worker_id, self._ttl_ms)
        for conn_id, held in list(self._held.items()):
            if conn_id in kept:
                held.lease_expires_at, held.lease_deadline = now + self._ttl_ms, deadline
            else:
                reason = "handed over" if conn_id == self._offered else "lease lost"
                self._retire(conn_id, unsubscribe=False, release=False, reason=reason, freeze=True)

    def _fence_expired(self) -> None:
        """Suspend connections whose lease could not be renewed in time (``workers.suspend``); one that cannot be
        suspended is stopped without unsubscribing. Runs at every tick and at the earliest lease deadline."""
        loop_time = asyncio.get_running_loop().time()
        for conn_id, held in list(self._held.items()):
            if held.lease_deadline > loop_time:
                continue
            if not self._suspend.can_suspend(held):
                self._retire(conn_id, unsubscribe=False, release=False, reason="lease expired unrenewed",
                             freeze=True)  # fmt: skip
                continue
            del self._held[conn_id]
            if held.roll is not None:
                held.roll.cancel()
            if conn_id == self._offered:
                self._offered = None
            self._suspend.suspend(held)
        deadlines = [h.lease_deadline for h in self._held.values()]
        self._suspend.watch(min(deadlines) if deadlines else None, self._fence_expired)

    async def _recover(self, now: int) -> None:
        """Redis answers: suspended connections whose lease is ours again run on, the others stop (no unsubscribe)."""
        recovery = await self._suspend.recover(self._ttl_ms)
        if recovery is None:
            return
        deadline = recovery.renewed_at + self.settings.lease_ttl_s
        for held in recovery.resumed:
            held.lease_expires_at, held.lease_deadline = now + self._ttl_ms, deadline
            self._held[held.conn_id] = held
        for held, why in recovery.lost:
            self._held[held.conn_id] = held
            self._retire(held.conn_id, unsubscribe=False, release=False, reason=why, freeze=True)

    def _apply(self, current: PlanResult, by_conn: Mapping[str, list[str]]) -> None:
        for conn_id, held in list(self._held.items()):
            data = current.conns.get(conn_id)
            if data is None:  # no topic left on it; for a private connection: none left for its account, unless
                # another planned connection serves the account already (a quick unsubscribe/subscribe): its socket
                # may hold the same listenKey (one per account), so it is not closed
                forget = account_of_route(held.route) is not None and not any(
                    d["exchange"] == held.exchange and d["route"] == held.route for d in current.conns.values()
                )
                self._retire(conn_id, unsubscribe=True, release=True, reason="removed from plan", forget=forget)
            elif data["url"] != held.url and account_of_route(held.route) is not None:
                self._retire(conn_id, unsubscribe=True, release=True, reason="url changed")
            else:
                if data["url"] != held.url:
                    self._move(held, data["url"])
                if (topics := frozenset(by_conn.get(conn_id, ()))) == held.topics:
                    continue
                self._configure(held.conn, topics)
                if held.twin is not None:  # a roll in progress: its twin must carry the same topics
                    self._configure(held.twin, topics)
                held.topics = topics

    def _move(self, held: _Held, url: str) -> None:
        """The plan gives a public connection a new URL: roll it there make-before-break (``_roll``). A crashed
        one waiting for its restart just restarts there; a roll already under way finishes first."""
        if held.task.done():
            held.url = url
        elif held.roll is None and asyncio.get_running_loop().time() >= held.roll_after:
            log.info("worker %s: connection %s moves to %s (planned URL changed)", self.worker_id, held.conn_id, url)
            held.roll = asyncio.create_task(self._roll(held, url), name=f"roll:{held.conn_id}")

    async def _acquire(self, current: PlanResult, by_conn: Mapping[str, list[str]], live: int, now: int) -> None:
        target = math.ceil(len(current.conns) / max(1, live))
        candidates = [c for c in sorted(current.conns) if c not in self._held and c not in self._retiring
                      and c not in self._taking and c not in self._stale]  # fmt: skip
        if not candidates:
            return
        leases = await self.leases.owner_ttl_ms(candidates)
        owners = {c: owner for c, (owner, _) in leases.items()}
        # A live owner renews every heartbeat, so its leases never get this close to expiring: these belong to a
        # worker that stopped. Tick the moment they run out (its share is then free), not up to a heartbeat later.
        # Its record counts as live (fair share) until its heartbeat is LEASE_TTL_S old: tick when both have run out.
        expiring = [max(ttl, self._beats.get(str(owner), 0) + self._ttl_ms - now) for owner, ttl in leases.values()
                    if owner not in (None, self.worker_id) and ttl is not None
                    and ttl < self.settings.heartbeat_interval_s * 1000]  # fmt: skip
        if expiring:
            self._wake_at = asyncio.get_running_loop().time() + min(expiring) / 1000 + _EXPIRY_MARGIN_S
        if len(self._held) + len(self._taking) >= target:
            return
        mine = [c for c in candidates if owners[c] == self.worker_id]  # left by this id's previous process
        adopted = await self.leases.renew_many(mine, self.worker_id, self._ttl_ms) if mine else set()
        free = [c for c in candidates if owners[c] is None and self._suspend.may_take(c)]
        offset = zlib.crc32(self.worker_id.encode()) % len(free) if free else 0
        for conn_id in [*sorted(adopted), *free[offset:], *free[:offset]]:
            if len(self._held) + len(self._taking) >= target:
                break
            if conn_id in adopted or await self.leases.acquire(conn_id, self.worker_id, self._ttl_ms):
                topics = by_conn.get(conn_id, [])
                since = await self._last_events(topics)
                self._start(conn_id, current.conns[conn_id], topics, now, takeover=since)

    async def _last_events(self, topics: Iterable[str]) -> dict[str, int | None]:
        """``topic -> ms`` of the last event stored for each of ``topics`` that has one (``fp:topic:last_event``)."""
        names = sorted(topics)
        if not names:
            return {}
        values = await cast(Awaitable[list[str | None]], self.redis.hmget(keys.TOPIC_LAST_EVENT, names))
        return {t: int(v) for t, v in zip(names, values, strict=True) if v is not None and v.isdigit()}

    # -- rebalancing and lifetime rolls (make-before-break) ---------------------------------------

    async def _rebalance(self, current: PlanResult, by_conn: Mapping[str, list[str]], live: int) -> None:
        """Offer one connection when above the fair share; claim one offer when below it (module docstring g)."""
        target = math.ceil(len(current.conns) / max(1, live))
        ttl_ms = int(self.settings.handover_timeout_s * 1000)
        if self._offered is not None:
            offer = (await self.handovers.offers([self._offered])).get(self._offered)
            if self._offered not in self._held or offer is None or offer[0] != self.worker_id:
                self._offered = None  # taken, withdrawn or expired
        if self._offered is None and live > 1 and len(self._held) > target:
            movable = [c for c, h in self._held.items()
                       if account_of_route(h.route) is None and h.roll is None and h.restart_at is None]  # fmt: skip
            for conn_id in sorted(movable, reverse=True):  # the newest first
                if await self.handovers.offer(conn_id, self.worker_id, ttl_ms):
                    self._offered = conn_id
                    log.info("worker %s: offering connection %s (%d held, fair share %d)", self.worker_id, conn_id,
                             len(self._held), target)  # fmt: skip
                    await self.store.notify("handover")
                    break
        if self._taking or len(self._held) >= target:
            return
        ids = [c for c in sorted(current.conns) if c not in self._held and c not in self._retiring]
        for conn_id, (origin, taker) in (await self.handovers.offers(ids)).items():
            data = current.conns[conn_id]
            if taker is not None or origin == self.worker_id or account_of_route(data["route"]) is not None:
                continue
            if data["exchange"] not in self.adapters:
                continue
            if await self.handovers.claim(conn_id, origin, self.worker_id, ttl_ms):
                take = self._taking[conn_id] = _Take(conn_id, origin)
                topics = by_conn.get(conn_id, [])
                take.job = asyncio.create_task(self._take(take, dict(data), topics), name=f"take:{conn_id}")
                break

    async def _take(self, take: _Take, data: dict[str, str], topics: list[str]) -> None:
        """Standby socket -> all acked -> lease compare-and-set -> markers -> publish (see ``workers.handover``)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        conn_id, switched, added, give_back = take.conn_id, False, False, True
        log.info("worker %s: taking connection %s over from %s", self.worker_id, conn_id, take.origin)
        try:
            take.conn, take.task = self._launch(conn_id, data["exchange"], data["url"], topics, data["route"],
                                                standby=True)  # fmt: skip
            if not await take.conn.wait_ready(self.settings.handover_timeout_s):
                log.warning("worker %s: standby socket of %s not ready in time; handover abandoned", self.worker_id,
                            conn_id)  # fmt: skip
                return
            current = self._plan
            if current is None or conn_id not in current.conns or self._stop_future is not None:
                return
            deadline = loop.time() + self.settings.lease_ttl_s
            if not await self.handovers.transfer(conn_id, take.origin, self.worker_id, self._ttl_ms):
                log.info("worker %s: connection %s moved elsewhere meanwhile; handover abandoned", self.worker_id,
                         conn_id)  # fmt: skip
                return
            switched = True
            read = await read_markers(
                self.handovers, sorted(topics), renew=lambda: self._renew_taken(conn_id),
                lease_ttl_s=self.settings.lease_ttl_s, lease_deadline=deadline,
                give_up_s=self.settings.handover_timeout_s, label=f"worker {self.worker_id}: handover of {conn_id}",
                intact=lambda: not getattr(take.conn, "_buffer_overflow", 0),  # no public counter (connection.py)
            )  # fmt: skip
            deadline = read.lease_deadline
            if read.markers is None:  # never publish the buffer blind: give it up, a takeover gap follows
                give_back = read.lease_held
                return
            take.conn.promote(read.markers)
            now = self._now_ms()
            s = self.settings
            self._held[conn_id] = _Held(
                conn_id, data["exchange"], data["route"], data["url"], take.conn, take.task, frozenset(topics),
                now + self._ttl_ms, deadline, Backoff(s.reconnect_delay_s, s.reconnect_max_delay_s),
            )  # fmt: skip
            added = True
            self.handovers_done.append(loop.time() - started)
            log.info("worker %s: took connection %s over from %s in %.3f s (make-before-break)", self.worker_id,
                     conn_id, take.origin, loop.time() - started)  # fmt: skip
            self.wake()
            with contextlib.suppress(RedisError):
                await self.store.notify("plan")  # the old owner stops now rather than at its next heartbeat
        except RedisError as exc:
            log.warning("worker %s: handover of %s failed: %s", self.worker_id, conn_id, exc)
        finally:
            try:
                if not added:
                    if take.conn is not None and take.task is not None:
                        stale = _Held(conn_id, data["exchange"], data["route"], data["url"], take.conn, take.task,
                                      frozenset(topics), 0, 0.0, Backoff(1.0, 1.0))  # fmt: skip
                        await asyncio.shield(self._halt(stale, unsubscribe=False, timeout_s=1.0))
                    with contextlib.suppress(RedisError):
                        if not switched:
                            await self.handovers.withdraw(conn_id, take.origin, self.worker_id)
                        elif give_back:  # transferred but not switched: back to the pool (served with a gap)
                            await self.leases.release([conn_id], self.worker_id)
                            self.wake()
            finally:
                # Only now: until the lease is released a tick must not adopt it as "left by this worker id".
                self._taking.pop(conn_id, None)

    async def _renew_taken(self, conn_id: str) -> bool:
        """Renew the lease of a connection being taken over (not held yet); True while it is still ours."""
        return conn_id in await self.leases.renew_many([conn_id], self.worker_id, self._ttl_ms)

    def _roll_due(self) -> None:
        """Start a lifetime roll for each public connection whose socket is older than CONNECTION_MAX_AGE_S."""
        loop_time = asyncio.get_running_loop().time()
        for held in self._held.values():
            if held.roll is not None or loop_time < held.roll_after or account_of_route(held.route) is not None:
                continue
            if getattr(held.conn, "socket_age_s", 0.0) >= self.settings.connection_max_age_s:
                held.roll = asyncio.create_task(self._roll(held), name=f"roll:{held.conn_id}")

    async def _roll(self, held: _Held, url: str | None = None) -> None:
        """Make-before-break inside this worker: a standby twin, then freeze the old socket and promote the twin.
        ``url``: the twin connects there (the planned URL changed) and the connection keeps it."""
        old, conn_id, url = held.conn, held.conn_id, url or held.url
        loop = asyncio.get_running_loop()
        started = loop.time()
        log.info("worker %s: rolling connection %s (socket %.0f s old)", self.worker_id, conn_id, old.socket_age_s)
        twin, twin_task = self._launch(conn_id, held.exchange, url, held.topics, held.route, standby=True)
        held.twin = twin
        promoted = False
        try:
            ready = await twin.wait_ready(self.settings.handover_timeout_s)
            if not ready or self._held.get(conn_id) is not held or held.conn is not old or held.task.done():
                log.warning("worker %s: roll of %s abandoned (ready: %s)", self.worker_id, conn_id, ready)
                held.roll_after = loop.time() + min(60.0, self.settings.handover_timeout_s)
                return
            markers, gaps = old.freeze()
            twin.promote(markers, gaps, successor_of=old)
            previous = _Held(conn_id, held.exchange, held.route, held.url, old, held.task, held.topics, 0, 0.0,
                             held.restarts)  # fmt: skip
            held.conn, held.task, held.url = twin, twin_task, url
            promoted = True
            log.info("worker %s: connection %s rolled to a new socket in %.2f s", self.worker_id, conn_id,
                     loop.time() - started)  # fmt: skip
            stop = asyncio.create_task(self._halt(previous, unsubscribe=False, timeout_s=self.settings.drain_timeout_s),
                                       name=f"rolled:{conn_id}")  # fmt: skip
            self._background.add(stop)
            stop.add_done_callback(self._background.discard)
        finally:
            held.twin = None
            held.roll = None
            if not promoted:
                stale = _Held(conn_id, held.exchange, held.route, url, twin, twin_task, held.topics, 0, 0.0,
                              held.restarts)  # fmt: skip
                await asyncio.shield(self._halt(stale, unsubscribe=False, timeout_s=1.0))

    async def _cancel_makes(self, *, withdraw: bool) -> None:
        """End handovers being taken and rolls in progress (their standby sockets close); ``withdraw`` our offer."""
        jobs = [t.job for t in self._taking.values() if t.job is not None]
        jobs += [h.roll for h in self._held.values() if h.roll is not None]
        for job in jobs:
            job.cancel()
        if jobs:
            await asyncio.gather(*jobs, return_exceptions=True)
        if withdraw and self._offered is not None:
            with contextlib.suppress(RedisError):
                await self.handovers.withdraw(self._offered, self.worker_id)
        self._offered = None

    async def _read_options(self, by_conn: Mapping[str, list[str]]) -> None:
        """Refresh the per-topic options (``{"levels": N}``) when the plan has depth topics. Read before any
        connection of this tick starts, so every new socket (a standby one too) builds its first ``depth`` event
        with the levels asked for, not the default."""
        if not any(_is_depth(t) for topics in by_conn.values() for t in topics):
            return
        raw = await cast(Awaitable[dict[str, str]], self.redis.hgetall(keys.TOPIC_OPTIONS))
        options: dict[str, dict[str, Any]] = {}
        for topic, text in raw.items():
            try:
                value = orjson.loads(text)
            except orjson.JSONDecodeError:
                continue
            if isinstance(value, dict):
                options[topic] = value
        self._topic_options = options

    def _options_for(self, topics: Iterable[str]) -> dict[str, dict[str, Any]]:
        return {t: self._topic_options[t] for t in topics if t in self._topic_options}

    def _configure(self, conn: Any, topics: Iterable[str]) -> None:
        """Give ``conn`` its topics, their options first: a book that syncs at once publishes the levels asked for."""
        topics = list(topics)
        set_options = getattr(conn, "set_options", None)
        if set_options is not None:
            set_options(self._options_for(topics))
        conn.set_topics(_parse(topics))

    async def _push_options(self) -> None:
        """Hand each held connection with depth topics its per-topic options (a change since it started)."""
        for held in self._held.values():
            set_options = getattr(held.conn, "set_options", None)
            if set_options is not None and any(_is_depth(t) for t in held.topics):
                set_options(self._options_for(held.topics))

    async def _write_status(self, current: PlanResult) -> None:
        await self.store.put_connections({c: self._status_record(h) for c, h in self._held.items()})
        recorded = await cast(Awaitable[list[str]], self.redis.hkeys(keys.CONN_STATUS))
        gone = [c for c in recorded if c not in current.conns]
        await self.store.remove_connections(gone)

    # -- connection lifecycle ---------------------------------------------------------------------

    def _launch(
        self, conn_id: str, exchange: str, url: str, topics: Iterable[str], route: str = "", *, standby: bool = False
    ) -> tuple[Any, asyncio.Task[None]]:
        kwargs: dict[str, Any] = {"standby": True} if standby else {}
        name = account_of_route(route)
        if name is not None:
            account = self._accounts.get((exchange, name))
            if account is None:
                conn: Any = UnservedConnection(
                    conn_id=conn_id, exchange=exchange, url=url, publisher=self.publisher, worker_id=self.worker_id,
                    error=f"unknown account {exchange}:{name}: configure it (environment, ACCOUNTS_FILE or "
                    "POST /accounts)", clock=self.clock,
                )  # fmt: skip
            else:
                kwargs["private"] = self._private_session(account)
        if name is None or "private" in kwargs:
            conn = self.connection_factory(
                conn_id=conn_id, adapter=self.adapters[exchange], url=url, settings=self.settings,
                session=self.session, publisher=self.publisher, worker_id=self.worker_id, **kwargs,
            )
        self._configure(conn, topics)
        task = asyncio.create_task(conn.run(), name=f"conn:{conn_id}")
        task.add_done_callback(self._on_conn_done)
        return conn, task

    def _start(
        self, conn_id: str, data: Mapping[str, str], topics: list[str], now: int,
        takeover: Mapping[str, int | None] | None = None,
    ) -> None:
        """Run ``conn_id`` here; ``takeover``: topic -> ms of its last stored event, announced as a gap."""
        exchange, url = data["exchange"], data["url"]
        if exchange not in self.adapters:  # the planner never plans one; defensive
            log.error("worker %s: no adapter for %s of connection %s", self.worker_id, exchange, conn_id)
            return
        route = data["route"]
        conn, task = self._launch(conn_id, exchange, url, topics, route)
        if takeover and hasattr(conn, "announce_gaps"):
            conn.announce_gaps(TAKEOVER, dict(takeover))
        s = self.settings
        self._held[conn_id] = _Held(
            conn_id, exchange, route, url, conn, task, frozenset(topics), now + self._ttl_ms,
            asyncio.get_running_loop().time() + s.lease_ttl_s, Backoff(s.reconnect_delay_s, s.reconnect_max_delay_s),
            account=self._account_for(exchange, route),
        )
        log.info("worker %s: running connection %s (%s, %d topics)", self.worker_id, conn_id, url, len(topics))

    def _on_conn_done(self, task: asyncio.Task[None]) -> None:
        if any(h.task is task for h in self._held.values()):
            self.wake()  # an unexpected exit: restart it on the next tick

    def _restart_crashed(self) -> None:
        loop_time = asyncio.get_running_loop().time()
        for conn_id, held in self._held.items():
            if not held.task.done():
                continue
            if held.restart_at is None:
                exc = None if held.task.cancelled() else held.task.exception()
                delay = held.restarts.next_delay()
                held.restart_at = loop_time + delay
                log.error("worker %s: connection %s task ended unexpectedly (%r); restarting in %.2fs",
                          self.worker_id, conn_id, exc, delay, exc_info=exc)
            elif loop_time >= held.restart_at:
                held.conn, held.task = self._launch(conn_id, held.exchange, held.url, held.topics, held.route)
                held.account = self._account_for(held.exchange, held.route)
                held.restart_at = None
                log.info("worker %s: connection %s restarted", self.worker_id, conn_id)

    def _retire(
        self, conn_id: str, *, unsubscribe: bool, release: bool, reason: str, forget: bool = False,
        freeze: bool = False,
    ) -> None:
        """Forget ``conn_id`` now; stop it (and release its lease) in the background. ``forget``: a private
        connection whose account has no private topic left (its listenKey is closed). ``freeze``: the lease is
        lost, so its output stops this instant (``ExchangeConnection.freeze``), before the socket closes."""
        held = self._held.pop(conn_id)
        if freeze and hasattr(held.conn, "freeze"):
            held.conn.freeze()
        if held.roll is not None:
            held.roll.cancel()
        if conn_id == self._offered:
            self._offered = None
            if release:  # still ours: withdraw the offer so nobody prepares a handover that cannot happen
                task = asyncio.create_task(self._withdraw_offer(conn_id), name=f"withdraw:{conn_id}")
                self._background.add(task)
                task.add_done_callback(self._background.discard)
        log.info("worker %s: stopping connection %s (%s)", self.worker_id, conn_id, reason)
        task = asyncio.create_task(self._retire_task(held, unsubscribe, release, forget), name=f"retire:{conn_id}")
        self._retiring[conn_id] = task
        task.add_done_callback(lambda t: self._retiring.pop(conn_id) if self._retiring.get(conn_id) is t else None)

    async def _withdraw_offer(self, conn_id: str) -> None:
        with contextlib.suppress(RedisError):
            await self.handovers.withdraw(conn_id, self.worker_id)

    async def _retire_task(self, held: _Held, unsubscribe: bool, release: bool, forget: bool = False) -> None:
        await self._halt(held, unsubscribe=unsubscribe, timeout_s=self.settings.drain_timeout_s, forget=forget)
        if not release:
            return
        # Flush first: events still queued for the connection would be fenced once the lease is gone.
        if not await self.publisher.flush(self.settings.drain_timeout_s):
            log.warning("worker %s: events of %s not flushed before releasing it", self.worker_id, held.conn_id)
        try:
            # Final record while we still hold the lease, so it cannot overwrite a new owner's.
            record = {**self._status_record(held), "worker": None, "lease_expires_at": None}
            await self.store.put_connections({held.conn_id: record})
            await self.leases.release([held.conn_id], self.worker_id)
        except RedisError as exc:
            log.warning("worker %s: could not release connection %s: %s", self.worker_id, held.conn_id, exc)

    async def _halt(self, held: _Held, *, unsubscribe: bool, timeout_s: float, forget: bool = False) -> None:
        try:
            async with asyncio.timeout(timeout_s + 1.0):
                if forget:
                    await held.conn.stop(unsubscribe=unsubscribe, timeout_s=timeout_s, forget=True)
                else:
                    await held.conn.stop(unsubscribe=unsubscribe, timeout_s=timeout_s)
        except Exception as exc:  # noqa: BLE001 - a broken stop (or its timeout) must not block the others
            log.warning("worker %s: stopping connection %s failed: %r", self.worker_id, held.conn_id, exc)
        if not held.task.done():
            held.task.cancel()
        (result,) = await asyncio.gather(held.task, return_exceptions=True)
        if isinstance(result, Exception):
            log.warning("worker %s: connection %s ended with %r", self.worker_id, held.conn_id, result)

    # -- accounts ---------------------------------------------------------------------------------

    async def _load_accounts(self) -> None:
        """(Re)load the accounts, redact their secrets from logs, restart private connections whose credentials
        changed. Raises RedisError (the tick retries; ``_accounts_due`` stays set)."""
        accounts = await load_accounts(self.settings, self.redis)
        self._accounts_due = False
        secrets = secret_values(self.settings)
        for account in accounts.values():
            secrets.update(v for v in (account.api_key, account.api_secret, account.memo) if v)
        if secrets:
            install_redaction(secrets)
        changed = accounts != self._accounts
        self._accounts = accounts
        if changed:
            log.info("worker %s: %d account(s) loaded: %s", self.worker_id, len(accounts),
                     ", ".join(f"{e}:{a}" for e, a in sorted(accounts)) or "none")  # fmt: skip
        for held in list(self._held.values()):
            if account_of_route(held.route) is None or self._account_for(held.exchange, held.route) == held.account:
                continue
            log.info("worker %s: credentials of connection %s changed; restarting it", self.worker_id, held.conn_id)
            old = held.conn, held.task
            held.conn, held.task = self._launch(held.conn_id, held.exchange, held.url, held.topics, held.route)
            held.account = self._account_for(held.exchange, held.route)
            held.restart_at = None
            stop = _Held(held.conn_id, held.exchange, held.route, held.url, old[0], old[1], held.topics, 0, 0.0,
                         held.restarts)  # fmt: skip
            task = asyncio.create_task(self._halt(stop, unsubscribe=False, timeout_s=self.settings.drain_timeout_s),
                                       name=f"restart:{held.conn_id}")  # fmt: skip
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    def _account_for(self, exchange: str, route: str) -> Account | None:
        name = account_of_route(route)
        return None if name is None else self._accounts.get((exchange, name))

    def _private_session(self, account: Account) -> PrivateSession:
        s = self.settings
        return PrivateSession(
            account=account, adapter=self.adapters[account.exchange], session=self.session, publisher=self.publisher,
            ws_base_url=s.exchange_ws_uri(account.exchange, private=True),
            rest_base_url=s.exchange_rest_uri(account.exchange), keepalive_s=s.listen_key_keepalive_s,
            retry_initial_s=min(s.reconnect_delay_s, 1.0), retry_max_s=s.reconnect_max_delay_s, clock=self.clock,
        )  # fmt: skip

    def _status_record(self, held: _Held) -> dict[str, Any]:
        return {**held.conn.status(), "worker": self.worker_id, "route": held.route,
                "lease_expires_at": held.lease_expires_at, "rolling": held.roll is not None,
                "offered": held.conn_id == self._offered}  # fmt: skip

    # -- loops ------------------------------------------------------------------------------------

    async def _run_loop(self) -> None:
        backoff = Backoff(0.1, 5.0)
        while True:
            try:
                await self._loop_forever()
            except Exception:  # a bug in the loop itself: keep the process serving, loudly
                delay = backoff.next_delay()
                log.critical("worker %s: control loop crashed; restarting in %.2fs", self.worker_id, delay,
                             exc_info=True)
                await asyncio.sleep(delay)

    async def _loop_forever(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.tick()
            except RedisError as exc:
                log.warning("worker %s: Redis error in tick, retrying next tick: %s", self.worker_id, exc)
                self._suspend.failed()
                self._fence_expired()
            except Exception:
                log.exception("worker %s: tick failed; retrying next tick", self.worker_id)
            wait_s = self.settings.heartbeat_interval_s
            if self._wake_at is not None:
                wait_s = min(wait_s, max(0.0, self._wake_at - asyncio.get_running_loop().time()))
                self._wake_at = None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await self._wake.wait()

    async def _watch_control(self) -> None:
        """Wake the loop on every ``fp:ctl`` message; resubscribe with backoff after Redis errors."""
        backoff = Backoff(0.05, 5.0)
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(keys.CONTROL_CHANNEL)
                backoff.reset()
                self.wake()  # catch up on whatever was published while we were not listening
                while True:  # bounded waits, so the connection's health check keeps running
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None:
                        if message.get("data") in ("accounts", b"accounts"):
                            self._accounts_due = True
                        self.wake()
            except (RedisError, OSError) as exc:
                delay = backoff.next_delay()
                log.warning("worker %s: %s listener lost (%s); retrying in %.2fs", self.worker_id,
                            keys.CONTROL_CHANNEL, exc, delay)
                await asyncio.sleep(delay)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _cancel_control_tasks(self) -> None:
        tasks = [t for t in (self._loop_task, self._pubsub_task) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _stop(self, drain: bool) -> None:
        await self._cancel_control_tasks()
        await self._cancel_makes(withdraw=True)
        held, self._held = list(self._held.values()), {}
        suspended = self._suspend.release_all()  # not ours to unsubscribe or release: closed like a lost lease
        timeout_s = self.settings.drain_timeout_s
        pending = [*(asyncio.create_task(self._retire_task(h, drain, True)) for h in held), *self._retiring.values(),
                   *(asyncio.create_task(self._halt(h, unsubscribe=False, timeout_s=timeout_s)) for h in suspended),
                   *self._background]  # fmt: skip
        if pending:
            _, late = await asyncio.wait(pending, timeout=timeout_s + 2.0)
            for task in late:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self.publisher.close(timeout_s=timeout_s)
        try:
            # Also frees a lease taken by a tick cancelled between SET NX and recording it.
            await self.leases.release(list((await read_plan(self.redis)).conns), self.worker_id)
            await self.store.remove_worker(self.worker_id)
            if held:
                await self.store.notify("plan")  # wake the others to take our connections over now
        except RedisError as exc:
            log.warning("worker %s: could not clean up in Redis: %s", self.worker_id, exc)
        log.info("worker %s: runtime stopped (%d connections %s)", self.worker_id, len(held),
                 "drained" if drain else "closed")

    # -- helpers ----------------------------------------------------------------------------------

    @property
    def _ttl_ms(self) -> int:
        return int(self.settings.lease_ttl_s * 1000)

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)


def _parse(topics: Iterable[str]) -> list[Topic]:
    parsed = []
    for text in sorted(topics):
        try:
            parsed.append(Topic.parse(text))
        except TopicError as exc:  # the planner skips these; defensive
            log.warning("skipping invalid topic %s: %s", text, exc)
    return parsed


def _is_depth(topic: str) -> bool:
    """``exchange:depth:SYMBOL`` (cheap: no parsing)."""
    return topic.split(":", 2)[1:2] == ["depth"]
