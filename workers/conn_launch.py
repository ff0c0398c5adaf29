"""The connections one worker runtime holds: launching, restarting, retiring and halting them, and their options.

``Launcher`` owns the runtime's records (``held``: connections whose lease this worker holds; ``retiring``: ones
being stopped; ``taking``: handovers being taken; ``offered``: the connection offered for rebalancing). The runtime
(``workers.runtime``) and the rebalancer (``workers.rebalance``) decide *what* runs here; this module does it:

- ``launch`` builds a connection (``ConnectionFactory``; a private route gets a ``PrivateSession`` from the
  ``AccountBook``, or an ``UnservedConnection`` when its account is unknown), gives it its topics (their options
  first) and runs it in a task; ``start`` records it as held, announcing a ``takeover`` gap where asked.
- a connection task that dies is logged and restarted with backoff (``restart_crashed``, at every tick).
- ``retire`` forgets a connection at once and stops it in the background (so a slow unsubscribe never delays lease
  renewal): when its lease is still ours, the publisher is flushed before the lease is released (so nothing queued
  is fenced). ``freeze``: the lease is lost, its output stops this instant.
- depth topics get ``set_options()`` from ``fp:topic:options`` (one HGETALL per tick, read before any connection
  of that tick starts).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import aiohttp
import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from control import keys
from control.accounts import Account
from control.settings import Settings
from control.store import ControlStore
from control.topics import Topic, TopicError
from workers.accounts_reload import AccountBook
from workers.backoff import Backoff
from workers.conn_protocol import Connection, ConnectionFactory
from workers.connection import TAKEOVER
from workers.exchanges.base import ExchangeAdapter
from workers.handover import Handovers
from workers.leases import Leases
from workers.private import PrivateSession, account_of_route
from workers.publisher import Publisher
from workers.unserved import UnservedConnection

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Held:
    """A connection whose lease this worker holds, and the task running it."""

    conn_id: str
    exchange: str
    route: str
    url: str
    conn: Connection
    task: asyncio.Task[None]
    topics: frozenset[str]
    lease_expires_at: int  # epoch ms, for status records
    lease_deadline: float  # loop time by which the lease must be renewed, for fencing
    restarts: Backoff
    restart_at: float | None = None
    account: Account | None = None  # the credentials a private connection was started with
    roll: asyncio.Task[None] | None = None  # a lifetime roll in progress
    twin: Connection | None = None  # the standby connection of that roll
    roll_after: float = 0.0  # loop time before which no new roll starts (after a failed one)


@dataclass(slots=True)
class Take:
    """A connection being taken over from ``origin`` (make-before-break): its standby connection."""

    conn_id: str
    origin: str
    conn: Connection | None = None
    task: asyncio.Task[None] | None = None
    job: asyncio.Task[None] | None = None


class Launcher:
    """Builds, records, restarts and stops this worker's connections (see the module docstring).

    :param settings: runtime settings. :param worker_id: lease owner id, in every log line.
    :param redis: ``decode_responses=True`` client (topic options). :param session: shared ``aiohttp.ClientSession``.
    :param adapters: exchange id -> adapter. :param publisher: the event publisher.
    :param accounts: credentials of private routes. :param factory: builds a connection (``ConnectionFactory``).
    :param wake: runs the runtime's next tick as soon as possible. :param clock: wall clock, epoch seconds.
    """

    def __init__(
        self, settings: Settings, *, worker_id: str, redis: Redis, session: aiohttp.ClientSession,
        adapters: Mapping[str, ExchangeAdapter], publisher: Publisher, accounts: AccountBook,
        factory: ConnectionFactory, wake: Callable[[], None], clock: Callable[[], float] = time.time,
    ) -> None:  # fmt: skip
        self.settings, self.worker_id, self.redis, self.session = settings, worker_id, redis, session
        self.adapters, self.publisher, self.accounts, self.factory = adapters, publisher, accounts, factory
        self.wake, self.clock = wake, clock
        self.store = ControlStore(redis)
        fence = getattr(getattr(publisher, "split", None), "fence", None)  # split mode (EVENTS_REDIS_URL)
        self.leases = Leases(redis, fence)
        self.handovers = Handovers(redis, fence)
        self.held: dict[str, Held] = {}
        self.retiring: dict[str, asyncio.Task[None]] = {}
        self.taking: dict[str, Take] = {}  # handovers this worker is taking (at most one at a time)
        self.offered: str | None = None  # the connection this worker offered for rebalancing
        self.background: set[asyncio.Task[None]] = set()  # old connections stopping (credentials change, roll)
        #: depth topic -> {"levels"} from fp:topic:options, read each tick before any connection starts
        self.topic_options: dict[str, dict[str, Any]] = {}

    # -- building ---------------------------------------------------------------------------------

    def launch(
        self, conn_id: str, exchange: str, url: str, topics: Iterable[str], route: str = "", *, standby: bool = False
    ) -> tuple[Connection, asyncio.Task[None]]:
        """Build and run a connection (a private route without known account: an ``UnservedConnection``)."""
        private: PrivateSession | None = None
        conn: Connection
        name = account_of_route(route)
        if name is not None and (account := self.accounts.get(exchange, name)) is not None:
            private = self.accounts.private_session(account)
        if name is not None and private is None:
            conn = UnservedConnection(
                conn_id=conn_id, exchange=exchange, url=url, publisher=self.publisher, worker_id=self.worker_id,
                error=f"unknown account {exchange}:{name}: configure it (environment, ACCOUNTS_FILE or "
                "POST /accounts)", clock=self.clock,
            )  # fmt: skip
        else:
            conn = self.factory(
                conn_id=conn_id, adapter=self.adapters[exchange], url=url, settings=self.settings,
                session=self.session, publisher=self.publisher, worker_id=self.worker_id, private=private,
                standby=standby,
            )  # fmt: skip
        self.configure(conn, topics)
        task = asyncio.create_task(conn.run(), name=f"conn:{conn_id}")
        task.add_done_callback(self._on_conn_done)
        return conn, task

    def start(
        self, conn_id: str, data: Mapping[str, str], topics: list[str], now: int,
        takeover: Mapping[str, int | None] | None = None,
    ) -> None:
        """Run ``conn_id`` here; ``takeover``: topic -> ms of its last stored event, announced as a gap."""
        exchange, url = data["exchange"], data["url"]
        if exchange not in self.adapters:  # the planner never plans one; defensive
            log.error("worker %s: no adapter for %s of connection %s", self.worker_id, exchange, conn_id)
            return
        route = data["route"]
        conn, task = self.launch(conn_id, exchange, url, topics, route)
        if takeover:
            conn.announce_gaps(TAKEOVER, dict(takeover))
        s = self.settings
        self.held[conn_id] = Held(
            conn_id, exchange, route, url, conn, task, frozenset(topics), now + self.ttl_ms,
            asyncio.get_running_loop().time() + s.lease_ttl_s, Backoff(s.reconnect_delay_s, s.reconnect_max_delay_s),
            account=self.accounts.account_for(exchange, route),
        )
        log.info("worker %s: running connection %s (%s, %d topics)", self.worker_id, conn_id, url, len(topics))

    def relaunch(self, held: Held) -> tuple[Connection, asyncio.Task[None]]:
        """Run ``held`` on a new connection (current credentials); returns the old ``(conn, task)``."""
        old = held.conn, held.task
        held.conn, held.task = self.launch(held.conn_id, held.exchange, held.url, held.topics, held.route)
        held.account = self.accounts.account_for(held.exchange, held.route)
        held.restart_at = None
        return old

    def replace(self, held: Held, *, name: str) -> None:
        """``relaunch`` ``held``, then stop its old connection in the background without unsubscribing."""
        conn, task = self.relaunch(held)
        old = Held(held.conn_id, held.exchange, held.route, held.url, conn, task, held.topics, 0, 0.0, held.restarts)
        self.spawn(self.halt(old, unsubscribe=False, timeout_s=self.settings.drain_timeout_s), name=name)

    def _on_conn_done(self, task: asyncio.Task[None]) -> None:
        if any(h.task is task for h in self.held.values()):
            self.wake()  # an unexpected exit: restart it on the next tick

    def restart_crashed(self) -> None:
        """Schedule (with backoff) or perform the restart of each held connection whose task ended."""
        loop_time = asyncio.get_running_loop().time()
        for conn_id, held in self.held.items():
            if not held.task.done():
                continue
            if held.restart_at is None:
                exc = None if held.task.cancelled() else held.task.exception()
                delay = held.restarts.next_delay()
                held.restart_at = loop_time + delay
                log.error("worker %s: connection %s task ended unexpectedly (%r); restarting in %.2fs",
                          self.worker_id, conn_id, exc, delay, exc_info=exc)
            elif loop_time >= held.restart_at:
                self.relaunch(held)
                log.info("worker %s: connection %s restarted", self.worker_id, conn_id)

    # -- topic options ----------------------------------------------------------------------------

    async def read_options(self, by_conn: Mapping[str, list[str]]) -> None:
        """Refresh the per-topic options (``{"levels": N}``) when the plan has depth topics. Read before any
        connection of this tick starts, so every new socket (a standby one too) builds its first ``depth`` event
        with the levels asked for, not the default."""
        if not any(is_depth(t) for topics in by_conn.values() for t in topics):
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
        self.topic_options = options

    def options_for(self, topics: Iterable[str]) -> dict[str, dict[str, Any]]:
        return {t: self.topic_options[t] for t in topics if t in self.topic_options}

    def configure(self, conn: Connection, topics: Iterable[str]) -> None:
        """Give ``conn`` its topics, their options first: a book that syncs at once publishes the levels asked for."""
        topics = list(topics)
        conn.set_options(self.options_for(topics))
        conn.set_topics(parse_topics(topics))

    def push_options(self) -> None:
        """Hand each held connection with depth topics its per-topic options (a change since it started)."""
        for held in self.held.values():
            if any(is_depth(t) for t in held.topics):
                held.conn.set_options(self.options_for(held.topics))

    # -- stopping ---------------------------------------------------------------------------------

    def retire(
        self, conn_id: str, *, unsubscribe: bool, release: bool, reason: str, forget: bool = False,
        freeze: bool = False,
    ) -> None:
        """Forget ``conn_id`` now; stop it (and release its lease) in the background. ``forget``: a private
        connection whose account has no private topic left (its listenKey is closed). ``freeze``: the lease is
        lost, so its output stops this instant (``ExchangeConnection.freeze``), before the socket closes."""
        held = self.held.pop(conn_id)
        if freeze:
            held.conn.freeze()
        if held.roll is not None:
            held.roll.cancel()
        if conn_id == self.offered:
            self.offered = None
            if release:  # still ours: withdraw the offer so nobody prepares a handover that cannot happen
                self.spawn(self._withdraw_offer(conn_id), name=f"withdraw:{conn_id}")
        log.info("worker %s: stopping connection %s (%s)", self.worker_id, conn_id, reason)
        task = asyncio.create_task(self.retire_task(held, unsubscribe, release, forget), name=f"retire:{conn_id}")
        self.retiring[conn_id] = task
        task.add_done_callback(lambda t: self.retiring.pop(conn_id) if self.retiring.get(conn_id) is t else None)

    async def stop_all(self, *, drain: bool, suspended: Iterable[Held]) -> list[Held]:
        """The runtime stops: every held connection stops at once (unsubscribing when ``drain``) and releases its
        lease; those retiring or stopping in the background finish; ``suspended`` ones close without unsubscribing.
        Tasks still running after ``DRAIN_TIMEOUT_S`` + 2 s are cancelled. Returns the connections that were held."""
        held = list(self.held.values())
        self.held.clear()
        timeout_s = self.settings.drain_timeout_s
        pending = [*(asyncio.create_task(self.retire_task(h, drain, True)) for h in held), *self.retiring.values(),
                   *(asyncio.create_task(self.halt(h, unsubscribe=False, timeout_s=timeout_s)) for h in suspended),
                   *self.background]  # fmt: skip
        if pending:
            _, late = await asyncio.wait(pending, timeout=timeout_s + 2.0)
            for task in late:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        return held

    def spawn(self, coro: Coroutine[Any, Any, None], *, name: str) -> None:
        """Run ``coro`` in a background task that ``WorkerRuntime.stop`` waits for."""
        task = asyncio.create_task(coro, name=name)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def _withdraw_offer(self, conn_id: str) -> None:
        with contextlib.suppress(RedisError):
            await self.handovers.withdraw(conn_id, self.worker_id)

    async def retire_task(self, held: Held, unsubscribe: bool, release: bool, forget: bool = False) -> None:
        """Stop ``held``; when ``release``: flush the publisher, write a final status record, release the lease."""
        await self.halt(held, unsubscribe=unsubscribe, timeout_s=self.settings.drain_timeout_s, forget=forget)
        if not release:
            return
        # Flush first: events still queued for the connection would be fenced once the lease is gone.
        if not await self.publisher.flush(self.settings.drain_timeout_s):
            log.warning("worker %s: events of %s not flushed before releasing it", self.worker_id, held.conn_id)
        try:
            # Final record while we still hold the lease, so it cannot overwrite a new owner's.
            record = {**self.status_record(held), "worker": None, "lease_expires_at": None}
            await self.store.put_connections({held.conn_id: record})
            await self.leases.release([held.conn_id], self.worker_id)
        except RedisError as exc:
            log.warning("worker %s: could not release connection %s: %s", self.worker_id, held.conn_id, exc)

    async def halt(self, held: Held, *, unsubscribe: bool, timeout_s: float, forget: bool = False) -> None:
        """Stop ``held.conn`` within ``timeout_s`` (+1 s), then end its task; never raises (logs instead)."""
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

    def status_record(self, held: Held) -> dict[str, Any]:
        """``fp:conn:status`` record of a held connection: the connection's own, plus lease and handover state."""
        return {**held.conn.status(), "worker": self.worker_id, "route": held.route,
                "lease_expires_at": held.lease_expires_at, "rolling": held.roll is not None,
                "offered": held.conn_id == self.offered}  # fmt: skip

    @property
    def ttl_ms(self) -> int:
        """The lease TTL in milliseconds."""
        return int(self.settings.lease_ttl_s * 1000)


def parse_topics(topics: Iterable[str]) -> list[Topic]:
    """Parsed ``topics`` in sorted order; an invalid one is logged and skipped."""
    parsed = []
    for text in sorted(topics):
        try:
            parsed.append(Topic.parse(text))
        except TopicError as exc:  # the planner skips these; defensive
            log.warning("skipping invalid topic %s: %s", text, exc)
    return parsed


def is_depth(topic: str) -> bool:
    """``exchange:depth:SYMBOL`` (cheap: no parsing)."""
    return topic.split(":", 2)[1:2] == ["depth"]
