"""WorkerRuntime: the long-lived part of one arq worker process (started in ``on_startup``).

It owns the exchange connections this process runs and keeps them in line with the plan in
Redis (``workers.planner``). Every ``HEARTBEAT_INTERVAL_S``, or at once when anything arrives on
``fp:ctl``, it runs ``tick()``:

a. heartbeat: write this worker's record to ``fp:workers``; prune records older than 3 x lease TTL
   (``workers.heartbeat``).
b. re-plan when ``fp:desired:version`` differs from ``fp:plan:version`` (cheap, idempotent, locked), or when a
   planned URL is not the one this worker's settings give and this worker is the most recently started live one
   (Redis kept an earlier run's plan: the settings in force decide where to connect; in a rolling restart the
   newest settings win). Until that re-plan is written, such connections are not started on the old URL.
c. renew the leases of held connections; a connection whose lease was lost is stopped at once
   *without* unsubscribing (another worker may own it now) and forgotten. One whose lease could not be renewed
   before its local deadline (Redis unreachable) is *suspended*, its socket kept, and resumes or is closed once
   Redis answers (``workers.suspend``: also the timer that freezes it, and the grace after an outage).
d. paused: stop every held connection gracefully (unsubscribe), release its lease, and stop there.
e-h. the plan applied to held connections (stop, move, new topics), free connections taken up to a fair share,
   rebalancing between workers and lifetime rolls, make-before-break: ``workers.rebalance``. Connections holding
   depth topics also get ``set_options()`` from ``fp:topic:options`` (``workers.conn_launch``).
i. write status records for held connections to ``fp:conn:status``; drop records of connections no
   longer planned. Their lags feed ``workers.lag_guard`` (lagging: connections handed to healthy workers in g;
   past LAG_MAX_MS: queued events shed, announced as ``gap`` ``lag``).

Rooms: ``conn_launch`` builds, restarts and stops connections (``Connection``: ``conn_protocol``), ``rebalance``
moves them, ``accounts_reload`` loads private accounts (their secrets are redacted from logs here), ``suspend``
keeps them through a Redis outage, ``heartbeat`` keeps the worker record, ``ctl_watch`` listens on ``fp:ctl``.

Guarantee: each topic is in exactly one planned connection (planner), and a connection id runs on
at most one live worker at a time (its lease), so no topic is streamed twice in steady state. Only the lease
holder's events reach Redis: the publisher is built with this worker's id and checks the lease of every
connection inside its write script (fencing); a connection whose lease was lost is frozen (no more output) and
stopped at once; one whose lease could not be renewed before the local deadline is frozen and suspended.

Graceful stop (``stop``: SIGTERM through arq's ``on_shutdown``): control tasks end, handovers and rolls in
flight are abandoned, every connection unsubscribes and closes, the publisher is flushed before each lease is
released (so nothing queued is fenced), then the worker record is removed and the others are woken.

Failure handling: a tick that hits a Redis error is logged and retried on the next tick. If the control loop
itself dies (a bug), it is logged CRITICAL and restarted after backoff, rather than exiting the process (arq would
keep taking jobs; supervisord cannot see a dead task).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

import aiohttp
from redis.asyncio import Redis
from redis.exceptions import RedisError

from control import keys
from control.redact import install_redaction
from control.settings import Settings
from control.store import ControlStore
from workers.accounts_reload import AccountBook
from workers.backoff import Backoff
from workers.conn_launch import Held, Launcher, Take
from workers.conn_protocol import ConnectionFactory
from workers.connection import ExchangeConnection
from workers.ctl_watch import watch_control
from workers.exchanges import configured_adapters
from workers.exchanges.base import ExchangeAdapter
from workers.heartbeat import Heartbeat
from workers.lag_guard import GAP_REASON_LAG, LagGuard
from workers.planner import PlanResult, plan, read_plan, stale_urls
from workers.private import account_of_route
from workers.publisher_setup import publisher_for
from workers.rebalance import Rebalancer
from workers.suspend import Suspender

log = logging.getLogger(__name__)

#: Publisher counters copied into the worker record (``/status``: backlog per worker).
_PUBLISHER_STATS = ("queue_depth", "inflight", "oldest_queued_age_ms", "dropped", "fenced", "gaps_published",
                    "gaps_by_reason", "dropped_by_reason", "redis_errors", "events_published")  # fmt: skip


class WorkerRuntime:
    """Runs this process's share of the planned exchange connections (see the module docstring).

    :param settings: runtime settings (intervals, lease TTL, drain timeout, URLs).
    :param worker_id: unique id of this worker process (``Settings.worker_id``).
    :param redis: ``decode_responses=True`` client for control state.
    :param redis_bytes: ``decode_responses=False`` client of the control Redis for the event publisher.
    :param session: shared ``aiohttp.ClientSession`` for the WebSockets.
    :param adapters: exchange id -> adapter (default ``workers.exchanges.configured_adapters(settings)``).
    :param connection_factory: builds a connection (default ``ExchangeConnection``) from keyword args
        ``conn_id, adapter, url, settings, session, publisher, worker_id, private, standby``.
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
        connection_factory: ConnectionFactory = ExchangeConnection,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings, self.worker_id, self.redis, self.session = settings, worker_id, redis, session
        self.adapters = configured_adapters(settings) if adapters is None else adapters
        self.connection_factory, self.clock = connection_factory, clock
        self.store = ControlStore(redis)
        self.publisher = publisher_for(settings, redis_bytes, worker_id)  # split mode: EVENTS_REDIS_URL
        self._suspend = Suspender(redis, self.publisher, worker_id=worker_id, lease_ttl_s=settings.lease_ttl_s,
                                  heartbeat_interval_s=settings.heartbeat_interval_s)  # fmt: skip
        self.accounts = AccountBook(settings, self.adapters, session=session, publisher=self.publisher, clock=clock)
        self.launcher = Launcher(settings, worker_id=worker_id, redis=redis, session=session, adapters=self.adapters,
                                 publisher=self.publisher, accounts=self.accounts, factory=connection_factory,
                                 wake=self.wake, clock=clock)  # fmt: skip
        self.leases, self.handovers = self.launcher.leases, self.launcher.handovers
        #: This worker's lag states, spreading and shedding (``workers.lag_guard``).
        self.lag_guard = LagGuard(settings.lag_max_ms, heartbeat_interval_s=settings.heartbeat_interval_s)
        self._heartbeat = Heartbeat(self.store, worker_id=worker_id, ttl_ms=self.launcher.ttl_ms)
        self.rebalancer = Rebalancer(settings, worker_id=worker_id, redis=redis, launcher=self.launcher,
                                     suspender=self._suspend, plan=lambda: self._plan,
                                     stopping=lambda: self._stop_future is not None, now_ms=self._now_ms,
                                     guard=self.lag_guard, peers=lambda: self._heartbeat.live)  # fmt: skip
        #: Handovers completed by this worker as the taker, and their durations (claim to switch, seconds).
        self.handovers_done = self.rebalancer.handovers_done
        #: Completed ticks (observability, tests).
        self.ticks = 0
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._pubsub_task: asyncio.Task[None] | None = None
        self._stop_future: asyncio.Future[None] | None = None
        self._plan: PlanResult | None = None  # the plan of the last tick
        #: Planned connections whose URL this worker is about to re-plan: not started on the old URL meanwhile.
        self._stale: frozenset[str] = frozenset()

    # -- public surface ---------------------------------------------------------------------------

    @property
    def held(self) -> list[str]:
        """Sorted ids of the connections this worker runs now."""
        return sorted(self._held)

    @property
    def _held(self) -> dict[str, Held]:  # the launcher's records (tests read them under this name)
        return self.launcher.held

    @property
    def _taking(self) -> dict[str, Take]:
        return self.launcher.taking

    async def start(self) -> None:
        """Start the publisher, the ``fp:ctl`` listener and the control loop (idempotent)."""
        if self._loop_task is not None or self._stop_future is not None:
            return
        self._heartbeat.started_at = self._now_ms()
        self.publisher.start()
        watch = watch_control(self.redis, worker_id=self.worker_id, wake=self.wake,
                              accounts_due=lambda: setattr(self.accounts, "due", True))  # fmt: skip
        self._pubsub_task = asyncio.create_task(watch, name=f"ctl-watch:{self.worker_id}")
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
        await self.rebalancer.cancel_makes(withdraw=False)
        held = [*self._held.values(), *self._suspend.release_all()]
        self._held.clear()
        await asyncio.gather(*(self.launcher.halt(h, unsubscribe=False, timeout_s=1.0) for h in held))
        await self.publisher.close(timeout_s=1.0)
        self._stop_future.set_result(None)
        log.warning("worker %s: aborted; %d connections dropped, leases left to expire", self.worker_id, len(held))

    async def tick(self) -> None:
        """One reconcile pass (steps a-i of the module docstring). Raises RedisError on Redis trouble."""
        now = self._now_ms()
        self._fence_expired()
        if self.accounts.due:
            await self._load_accounts()
        self.launcher.restart_crashed()
        reported = sorted(self._held)
        live = await self._heartbeat.beat(now, self._worker_record(now))
        await self._recover(now)
        current = await self._current_plan(now)
        self._plan = current
        await self._renew(now)
        if current.paused:
            for take in list(self._taking.values()):
                if take.job is not None:
                    take.job.cancel()
            for conn_id in list(self._held):
                self.launcher.retire(conn_id, unsubscribe=True, release=True, reason="paused")
        else:
            by_conn = current.by_conn()
            await self.launcher.read_options(by_conn)
            self.rebalancer.apply(current, by_conn)
            await self.rebalancer.acquire(current, by_conn, live, now, beats=self._heartbeat.beats, stale=self._stale)
            await self.rebalancer.rebalance(current, by_conn, live)
            self.rebalancer.roll_due()
            self.launcher.push_options()
        if sorted(self._held) != reported:  # keep /status exact without waiting for the next heartbeat
            await self.store.put_worker(self.worker_id, self._worker_record(now))
        await self._write_status(current)
        self.ticks += 1

    # -- tick steps -------------------------------------------------------------------------------

    def _worker_record(self, now: int) -> dict[str, Any]:
        stats = self.publisher.stats
        return self._heartbeat.record(
            now, connections=sorted(self._held), taking=sorted(self._taking), offered=self.launcher.offered,
            publisher={k: stats[k] for k in _PUBLISHER_STATS}, suspend=self._suspend.status(),
            lag=self.lag_guard.record(asyncio.get_running_loop().time()),
        )

    async def _current_plan(self, now: int) -> PlanResult:
        """The plan, re-planned first when the desired state changed, or when its URLs are not this worker's
        settings and this worker started last (Redis kept an earlier run's plan; in a rolling restart the newest
        settings win, older workers follow the plan). Until such a re-plan lands, ``_stale`` keeps those
        connections from being started on the old URL."""
        desired_version = int(await self.redis.get(keys.DESIRED_VERSION) or 0)
        current = await read_plan(self.redis)
        stale = stale_urls(current, self.settings, self.adapters) if self._heartbeat.newest else {}
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
        kept = await self.leases.renew_many(list(self._held), self.worker_id, self.launcher.ttl_ms)
        for conn_id, held in list(self._held.items()):
            if conn_id in kept:
                held.lease_expires_at, held.lease_deadline = now + self.launcher.ttl_ms, deadline
            else:
                reason = "handed over" if conn_id == self.launcher.offered else "lease lost"
                self.publisher.queue.discard(conn_id)  # its queued events would be fenced: not written at all
                self.launcher.retire(conn_id, unsubscribe=False, release=False, reason=reason, freeze=True)

    def _fence_expired(self) -> None:
        """Suspend connections whose lease could not be renewed in time (``workers.suspend``); one that cannot be
        suspended is stopped without unsubscribing. Runs at every tick and at the earliest lease deadline."""
        loop_time = asyncio.get_running_loop().time()
        for conn_id, held in list(self._held.items()):
            if held.lease_deadline > loop_time:
                continue
            if not self._suspend.can_suspend(held):
                self.launcher.retire(conn_id, unsubscribe=False, release=False, reason="lease expired unrenewed",
                                     freeze=True)  # fmt: skip
                continue
            del self._held[conn_id]
            if held.roll is not None:
                held.roll.cancel()
            if conn_id == self.launcher.offered:
                self.launcher.offered = None
            self._suspend.suspend(held)
        deadlines = [h.lease_deadline for h in self._held.values()]
        self._suspend.watch(min(deadlines) if deadlines else None, self._fence_expired)

    async def _recover(self, now: int) -> None:
        """Redis answers: suspended connections whose lease is ours again run on, the others stop (no unsubscribe)."""
        recovery = await self._suspend.recover(self.launcher.ttl_ms)
        if recovery is None:
            return
        deadline = recovery.renewed_at + self.settings.lease_ttl_s
        for held in recovery.resumed:
            held.lease_expires_at, held.lease_deadline = now + self.launcher.ttl_ms, deadline
            self._held[held.conn_id] = held
        for held, why in recovery.lost:
            self._held[held.conn_id] = held
            self.launcher.retire(held.conn_id, unsubscribe=False, release=False, reason=why, freeze=True)

    async def _write_status(self, current: PlanResult) -> None:
        records = {c: self.launcher.status_record(h) for c, h in self._held.items()}
        await self.store.put_connections(records)
        shed_ms = self.lag_guard.observe(records, self.publisher.stats, paused=self.publisher.writes_paused,
                                         now=asyncio.get_running_loop().time())
        if shed_ms:
            self.lag_guard.shed_done(self.publisher.queue.shed(shed_ms / 1000, GAP_REASON_LAG))
        recorded = await cast(Awaitable[list[str]], self.redis.hkeys(keys.CONN_STATUS))
        gone = [c for c in recorded if c not in current.conns]
        await self.store.remove_connections(gone)

    async def _load_accounts(self) -> None:
        """(Re)load the accounts, redact their secrets from logs, restart private connections whose credentials
        changed. Raises RedisError (the tick retries; ``accounts.due`` stays set)."""
        changed, secrets = await self.accounts.load(self.redis)
        if secrets:
            install_redaction(secrets)
        accounts = self.accounts.by_key
        if changed:
            log.info("worker %s: %d account(s) loaded: %s", self.worker_id, len(accounts),
                     ", ".join(f"{e}:{a}" for e, a in sorted(accounts)) or "none")  # fmt: skip
        for held in list(self._held.values()):
            if account_of_route(held.route) is not None and self.accounts.account_for(held.exchange,
                                                                                      held.route) != held.account:
                log.info("worker %s: credentials of connection %s changed; restarting it", self.worker_id,
                         held.conn_id)  # fmt: skip
                self.launcher.replace(held, name=f"restart:{held.conn_id}")

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
            if self.rebalancer.wake_at is not None:
                wait_s = min(wait_s, max(0.0, self.rebalancer.wake_at - asyncio.get_running_loop().time()))
                self.rebalancer.wake_at = None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await self._wake.wait()

    async def _cancel_control_tasks(self) -> None:
        tasks = [t for t in (self._loop_task, self._pubsub_task) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _stop(self, drain: bool) -> None:
        await self._cancel_control_tasks()
        await self.rebalancer.cancel_makes(withdraw=True)
        # suspended ones are not ours to unsubscribe or release: closed like a lost lease
        held = await self.launcher.stop_all(drain=drain, suspended=self._suspend.release_all())
        await self.publisher.close(timeout_s=self.settings.drain_timeout_s)
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

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)
