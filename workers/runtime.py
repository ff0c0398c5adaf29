"""WorkerRuntime: the long-lived part of one arq worker process (started in ``on_startup``).

It owns the exchange connections this process runs and keeps them in line with the plan in
Redis (``workers.planner``). Every ``HEARTBEAT_INTERVAL_S``, or at once when anything arrives on
``fp:ctl``, it runs ``tick()``:

a. heartbeat: write this worker's record to ``fp:workers``; prune records older than 3 x lease TTL.
b. re-plan when ``fp:desired:version`` differs from ``fp:plan:version`` (cheap, idempotent, locked).
c. renew the leases of held connections; a connection whose lease was lost is stopped at once
   *without* unsubscribing (another worker may own it now) and forgotten. A connection whose lease
   could not be renewed before it expired (Redis unreachable) is fenced the same way.
d. paused: stop every held connection gracefully (unsubscribe), release its lease, and stop there.
e. held connections gone from the plan (or whose URL changed) are stopped gracefully and released;
   the others get ``set_topics()`` with their planned topics (a live diff on the open socket).
   Connections holding depth topics also get ``set_options()`` from ``fp:topic:options`` (one HGETALL).
f. take unowned planned connections up to a fair share ``ceil(connections / live workers)``; free
   ids are tried in sorted order rotated by a hash of the worker id, so workers do not all race for
   the same first key. A lease still carrying this worker's own id (left by this worker id's previous
   process) is adopted. Worker ids must therefore be unique among live processes.
g. write status records for held connections to ``fp:conn:status``; drop records of connections no
   longer planned.

Private connections (route ``private:<account>``, one per account and exchange) get a ``workers.private``
session built from the account's credentials. Accounts are loaded with ``control.accounts.load_accounts`` at the
first tick and again whenever ``accounts`` arrives on ``fp:ctl`` (POST/DELETE /accounts); every loaded secret is
added to the log redaction filter (``control.redact``). A held private connection whose credentials changed is
restarted; one whose account is unknown runs as ``workers.private.UnservedConnection`` (topics ``failed``,
``unknown account``) until the account appears. When the planner removes a private connection (its account's last
private topic was unsubscribed) it is stopped with ``forget`` (Binance: the listenKey is closed).

Guarantee: each topic is in exactly one planned connection (planner), and a connection id runs on
at most one live worker at a time (its lease), so no topic is streamed twice in steady state.

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
from workers.connection import ExchangeConnection
from workers.exchanges import REGISTRY
from workers.exchanges.base import ExchangeAdapter
from workers.leases import Leases
from workers.planner import PlanResult, plan, read_plan
from workers.private import PrivateSession, UnservedConnection, account_of_route
from workers.publisher import Publisher

log = logging.getLogger(__name__)


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


class WorkerRuntime:
    """Runs this process's share of the planned exchange connections (see the module docstring).

    :param settings: runtime settings (intervals, lease TTL, drain timeout, URLs).
    :param worker_id: unique id of this worker process (``Settings.worker_id``).
    :param redis: ``decode_responses=True`` client for control state.
    :param redis_bytes: ``decode_responses=False`` client for the event publisher.
    :param session: shared ``aiohttp.ClientSession`` for the WebSockets.
    :param adapters: exchange id -> adapter (default ``workers.exchanges.REGISTRY``).
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
        adapters: Mapping[str, ExchangeAdapter] = REGISTRY,
        connection_factory: Any = ExchangeConnection,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings, self.worker_id, self.redis, self.session = settings, worker_id, redis, session
        self.adapters, self.connection_factory, self.clock = adapters, connection_factory, clock
        self.store = ControlStore(redis)
        self.leases = Leases(redis)
        self.publisher = Publisher(redis_bytes, stream_maxlen=settings.stream_maxlen)
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
        self._background: set[asyncio.Task[None]] = set()  # old connections stopping after a credentials change

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
        held, self._held = list(self._held.values()), {}
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
        current = await self._current_plan(now)
        await self._renew(now)
        if current.paused:
            for conn_id in list(self._held):
                self._retire(conn_id, unsubscribe=True, release=True, reason="paused")
        else:
            by_conn = current.by_conn()
            self._apply(current, by_conn)
            await self._acquire(current, by_conn, live, now)
            await self._push_options()
        if sorted(self._held) != reported:  # keep /status exact without waiting for the next heartbeat
            await self.store.put_worker(self.worker_id, self._worker_record(now))
        await self._write_status(current)
        self.ticks += 1

    # -- tick steps -------------------------------------------------------------------------------

    def _worker_record(self, now: int) -> dict[str, Any]:
        return {"host": self._host, "pid": os.getpid(), "started_at": self._started_at, "heartbeat_at": now,
                "connections": sorted(self._held)}

    async def _heartbeat(self, now: int) -> int:
        """Write our record, prune dead ones; returns the number of live workers (us included)."""
        await self.store.put_worker(self.worker_id, self._worker_record(now))
        ttl, live = self._ttl_ms, 0
        for worker in await self.store.workers():
            age = now - int(worker.get("heartbeat_at") or 0)
            if worker["id"] != self.worker_id and age > 3 * ttl:
                log.info("worker %s: pruning stale worker record %s (%d ms old)", self.worker_id, worker["id"], age)
                await self.store.remove_worker(worker["id"])
            elif age <= ttl or worker["id"] == self.worker_id:
                live += 1
        return live

    async def _current_plan(self, now: int) -> PlanResult:
        desired_version = int(await self.redis.get(keys.DESIRED_VERSION) or 0)
        current = await read_plan(self.redis)
        if desired_version != current.version:
            planned = await plan(self.redis, self.settings, self.adapters, now_ms=now)
            if planned is not None:
                return planned
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
                self._retire(conn_id, unsubscribe=False, release=False, reason="lease lost")

    def _fence_expired(self) -> None:
        """Stop (without unsubscribing) connections whose lease could not be renewed in time."""
        loop_time = asyncio.get_running_loop().time()
        for conn_id, held in list(self._held.items()):
            if held.lease_deadline <= loop_time:
                self._retire(conn_id, unsubscribe=False, release=False, reason="lease expired unrenewed")

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
            elif data["url"] != held.url:
                self._retire(conn_id, unsubscribe=True, release=True, reason="url changed")
            elif (topics := frozenset(by_conn.get(conn_id, ()))) != held.topics:
                held.conn.set_topics(_parse(topics))
                held.topics = topics

    async def _acquire(self, current: PlanResult, by_conn: Mapping[str, list[str]], live: int, now: int) -> None:
        target = math.ceil(len(current.conns) / max(1, live))
        candidates = [c for c in sorted(current.conns) if c not in self._held and c not in self._retiring]
        if len(self._held) >= target or not candidates:
            return
        owners = await self.leases.owners(candidates)
        mine = [c for c in candidates if owners[c] == self.worker_id]  # left by this id's previous process
        adopted = await self.leases.renew_many(mine, self.worker_id, self._ttl_ms) if mine else set()
        free = [c for c in candidates if owners[c] is None]
        offset = zlib.crc32(self.worker_id.encode()) % len(free) if free else 0
        for conn_id in [*sorted(adopted), *free[offset:], *free[:offset]]:
            if len(self._held) >= target:
                break
            if conn_id in adopted or await self.leases.acquire(conn_id, self.worker_id, self._ttl_ms):
                self._start(conn_id, current.conns[conn_id], by_conn.get(conn_id, []), now)

    async def _push_options(self) -> None:
        """Hand each held connection with depth topics its per-topic options (``{"levels": N}``)."""
        holders = [h for h in self._held.values() if any(_is_depth(t) for t in h.topics)]
        if not holders:
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
        for held in holders:
            set_options = getattr(held.conn, "set_options", None)
            if set_options is not None:
                set_options({t: options[t] for t in held.topics if t in options})

    async def _write_status(self, current: PlanResult) -> None:
        await self.store.put_connections({c: self._status_record(h) for c, h in self._held.items()})
        recorded = await cast(Awaitable[list[str]], self.redis.hkeys(keys.CONN_STATUS))
        gone = [c for c in recorded if c not in current.conns]
        await self.store.remove_connections(gone)

    # -- connection lifecycle ---------------------------------------------------------------------

    def _launch(
        self, conn_id: str, exchange: str, url: str, topics: Iterable[str], route: str = ""
    ) -> tuple[Any, asyncio.Task[None]]:
        kwargs: dict[str, Any] = {}
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
        conn.set_topics(_parse(topics))
        task = asyncio.create_task(conn.run(), name=f"conn:{conn_id}")
        task.add_done_callback(self._on_conn_done)
        return conn, task

    def _start(self, conn_id: str, data: Mapping[str, str], topics: list[str], now: int) -> None:
        exchange, url = data["exchange"], data["url"]
        if exchange not in self.adapters:  # the planner never plans one; defensive
            log.error("worker %s: no adapter for %s of connection %s", self.worker_id, exchange, conn_id)
            return
        route = data["route"]
        conn, task = self._launch(conn_id, exchange, url, topics, route)
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

    def _retire(self, conn_id: str, *, unsubscribe: bool, release: bool, reason: str, forget: bool = False) -> None:
        """Forget ``conn_id`` now; stop it (and release its lease) in the background. ``forget``: a private
        connection whose account has no private topic left (its listenKey is closed)."""
        held = self._held.pop(conn_id)
        log.info("worker %s: stopping connection %s (%s)", self.worker_id, conn_id, reason)
        task = asyncio.create_task(self._retire_task(held, unsubscribe, release, forget), name=f"retire:{conn_id}")
        self._retiring[conn_id] = task
        task.add_done_callback(lambda t: self._retiring.pop(conn_id) if self._retiring.get(conn_id) is t else None)

    async def _retire_task(self, held: _Held, unsubscribe: bool, release: bool, forget: bool = False) -> None:
        await self._halt(held, unsubscribe=unsubscribe, timeout_s=self.settings.drain_timeout_s, forget=forget)
        if not release:
            return
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
                "lease_expires_at": held.lease_expires_at}

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
                self._fence_expired()
            except Exception:
                log.exception("worker %s: tick failed; retrying next tick", self.worker_id)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.heartbeat_interval_s):
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
        held, self._held = list(self._held.values()), {}
        timeout_s = self.settings.drain_timeout_s
        pending = [*(asyncio.create_task(self._retire_task(h, drain, True)) for h in held), *self._retiring.values(),
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
