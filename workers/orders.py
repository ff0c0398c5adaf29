"""Order execution in the worker: serve the control server's order requests from Redis (``control.orders``).

Every worker process with ``ORDERS_ENABLED=1`` runs one ``OrderExecutor``. It waits on ``fp:orders:queue`` with a
blocking ``BRPOP`` on a connection of its own (a request wakes it at once: no polling, unlike arq's 0.5 s poll), runs
each request in its own task (at most ``MAX_IN_FLIGHT`` at a time) through ``workers.order_flow``, and pushes the
answer to ``fp:orders:reply:{id}``. Whichever worker pops a request executes it: every worker holds every account's
credentials (``control.accounts.load_accounts``) and calls the exchange's REST API directly, so an order does not
wait for the account's private socket (whose worker may be busy or moving). The order's updates still arrive on the
account's order topic through that socket (the control server subscribes it when needed).

Crash safety: a request lost with a worker (popped, not answered) times out at the control server (504, "retry with
the same client_order_id"); the retry looks the order up by client order id before placing it again
(``workers.order_flow``), so it is never placed twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import aiohttp
import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from control import keys
from control.accounts import Account, load_accounts
from control.events_redis import is_cluster
from control.orders import AUDIT_MAXLEN, QUEUE, REPLY_TTL_S, OrderRequest, answer, audit_fields, audit_key, error_body
from control.settings import Settings
from workers.exchanges import ORDER_ADAPTERS, REGISTRY
from workers.exchanges.base import RestRequest, SnapshotRequest
from workers.exchanges.order_contract import ContractRules, OrderAdapter
from workers.rest import RestError, fetch, request_url

log = logging.getLogger(__name__)

#: Requests executed at once per worker.
MAX_IN_FLIGHT = 32
#: One exchange call's time limit (seconds): an order call without an answer is "outcome unknown".
CALL_TIMEOUT_S = 8.0
#: How long loaded accounts are reused before a reload (an unknown account reloads at once).
ACCOUNTS_TTL_S = 5.0
#: Contract rules are kept this long (seconds); a failed fetch is retried after ``RULES_RETRY_S``.
RULES_TTL_S, RULES_RETRY_S = 300.0, 30.0


class OrderExecutor:
    """Serves ``fp:orders:queue``. ``redis``: the worker's text client (locks, progress, answers, audit);
    ``blocking``: a client used only for ``BRPOP``; ``session``: the worker's HTTP session; ``events``: the events
    Redis (``control.events_redis.make_events_redis``; default ``redis``) for alert events and latest prices."""

    def __init__(self, settings: Settings, *, redis: Redis, blocking: Redis, session: aiohttp.ClientSession,
                 worker_id: str, clock: Callable[[], float] = time.time, events: Any = None) -> None:  # fmt: skip
        self.settings, self.redis, self.blocking, self.session = settings, redis, blocking, session
        self.events = redis if events is None else events
        self._sharded = is_cluster(self.events)
        self.worker_id, self.clock = worker_id, clock
        self.adapters: dict[str, OrderAdapter] = dict(ORDER_ADAPTERS)
        self._accounts: dict[tuple[str, str], Account] = {}
        self._accounts_at = -1e18
        self._rules: dict[tuple[str, str], tuple[float, ContractRules | None]] = {}
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[None] | None = None
        self.served = 0

    def now_ms(self) -> int:
        """Wall clock, epoch ms."""
        return int(self.clock() * 1000)

    # -- life ----------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start serving in a background task."""
        self._runner = asyncio.create_task(self.run(), name="order-executor")

    async def stop(self) -> None:
        """Stop taking requests; let those in flight finish (up to ``CALL_TIMEOUT_S``)."""
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=CALL_TIMEOUT_S)

    async def run(self) -> None:
        """Take requests until cancelled; a Redis error waits 0.5 s and retries (never ends the worker)."""
        while True:
            await self._slots.acquire()
            try:
                item = await self.blocking.brpop([QUEUE], timeout=1)  # type: ignore[misc]
            except RedisError as exc:
                self._slots.release()
                log.warning("orders: queue read failed (%s: %s); retrying", type(exc).__name__, exc)
                await asyncio.sleep(0.5)
                continue
            except BaseException:
                self._slots.release()
                raise
            if item is None:
                self._slots.release()
                continue
            task = asyncio.create_task(self._serve(item[1]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _serve(self, raw: Any) -> None:
        try:
            try:
                request = OrderRequest.decode(raw)
            except ValueError as exc:
                log.warning("orders: dropped a malformed request: %s", exc)
                return
            from workers.order_flow import execute  # the flow imports this module's types

            try:
                status, body = await execute(self, request)
            except Exception:  # a bug must still answer: the caller waits
                log.exception("orders: %s %s:%s failed", request.op, request.exchange, request.account)
                status, body = 500, error_body("internal_error", "the order request failed inside the worker")
            await self._reply(request, status, body)
            self.served += 1
        finally:
            self._slots.release()

    async def _reply(self, request: OrderRequest, status: int, body: dict[str, Any]) -> None:
        key = f"fp:orders:reply:{request.id}"
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.rpush(key, answer(status, body))
                pipe.expire(key, REPLY_TTL_S)
                await pipe.execute()
        except RedisError as exc:
            log.warning("orders: answer to %s not written (%s: %s)", request.id, type(exc).__name__, exc)

    # -- helpers for the flow ------------------------------------------------------------------------------

    async def account(self, exchange: str, name: str) -> Account | None:
        """The account's credentials (reloaded after ``ACCOUNTS_TTL_S``, or at once when unknown)."""
        now = time.monotonic()
        found = self._accounts.get((exchange, name))
        if found is None or now - self._accounts_at > ACCOUNTS_TTL_S:
            self._accounts = await load_accounts(self.settings, self.redis)
            self._accounts_at = now
            found = self._accounts.get((exchange, name))
        return found

    async def call(self, exchange: str, req: RestRequest | SnapshotRequest, deadline_ms: int | None = None
                   ) -> tuple[int, bytes]:  # fmt: skip
        """``(status, body)`` of one REST call to ``exchange``, given at most ``CALL_TIMEOUT_S`` and never past
        ``deadline_ms``; RestError when no answer came (timeout, transport, 429/418). Never logs the request (it
        carries a key and a signature)."""
        timeout_s = CALL_TIMEOUT_S
        if deadline_ms is not None:
            timeout_s = max(0.05, min(timeout_s, (deadline_ms - self.now_ms()) / 1000))
        base = self.settings.exchange_rest_uri(exchange)
        url = request_url(base, req.path, req.params)
        if isinstance(req, SnapshotRequest):
            return await fetch(self.session, "GET", url, timeout_s=timeout_s)
        return await fetch(self.session, req.method, url, timeout_s=timeout_s, headers=req.headers,
                           data=req.body or None)  # fmt: skip

    async def rules(self, adapter: OrderAdapter, symbol: str) -> ContractRules | None:
        """The contract rules of ``symbol`` (cached ``RULES_TTL_S``), None when the exchange did not give them."""
        key = (adapter.id, symbol)
        now = time.monotonic()
        cached = self._rules.get(key)
        if cached is not None and now < cached[0]:
            return cached[1]
        rules: ContractRules | None = None
        try:
            status, body = await self.call(adapter.id, adapter.contract_request(symbol), self.now_ms() + 2000)
            if status == 200:
                rules = adapter.parse_contract(body, symbol)
        except (RestError, ValueError, ArithmeticError) as exc:
            log.info("orders: no contract rules for %s %s (%s)", adapter.id, symbol, exc)
        self._rules[key] = (now + (RULES_TTL_S if rules else RULES_RETRY_S), rules)
        return rules

    async def last_price(self, exchange: str, symbol: str) -> str | None:
        """The latest price Feedplane streamed for ``symbol`` (its ``ticker`` mark/last, else its last ``trade``), or
        None: a reference for the notional of a market order when the contract info has no price."""
        try:
            # two GETs, not an MGET: on a Redis Cluster the two topics live in different slots
            ticker, trade = await asyncio.gather(self.events.get(keys.latest(f"{exchange}:ticker:{symbol}")),
                                                 self.events.get(keys.latest(f"{exchange}:trade:{symbol}")))  # fmt: skip
            for raw, names in ((ticker, ("mark_price", "last")), (trade, ("price",))):
                if raw:
                    event = orjson.loads(raw)
                    for name in names:
                        if event.get(name):
                            return str(event[name])
        except (RedisError, ValueError) as exc:
            log.info("orders: no streamed price for %s %s (%s)", exchange, symbol, exc)
        return None

    async def audit(self, request: OrderRequest, outcome: str, data: dict[str, Any]) -> None:
        """Append to ``fp:audit:{exchange}:{account}`` (never fatal; ``data`` holds no secret)."""
        fields = audit_fields(request.op, request.exchange, request.account, outcome,
                              {"request_id": request.id, "worker": self.worker_id, "ts": self.now_ms(), **data})
        try:
            await self.redis.xadd(audit_key(request.exchange, request.account), fields,  # type: ignore[arg-type]
                                  maxlen=AUDIT_MAXLEN, approximate=True)  # fmt: skip
        except RedisError as exc:
            log.warning("orders: audit entry lost (%s: %s)", type(exc).__name__, exc)

    async def alert(self, request: OrderRequest, message: str, data: dict[str, Any]) -> None:
        """An ``alert`` event on the account's order topic (stream + pub/sub), e.g. an entry filled whose
        stop-loss failed."""
        topic = f"{request.exchange}:order:{request.account}"
        event = orjson.dumps({"type": "alert", "exchange": request.exchange, "account": request.account,
                              "message": message, "ts": self.now_ms(), **data})  # fmt: skip
        try:
            async with self.events.pipeline(transaction=False) as pipe:  # one topic: one slot on a cluster
                pipe.xadd(keys.event_stream(topic), {keys.STREAM_FIELD: event}, maxlen=self.settings.stream_maxlen,
                          approximate=True)  # fmt: skip
                pipe.execute_command("SPUBLISH" if self._sharded else "PUBLISH", keys.event_channel(topic), event)
                await pipe.execute()
        except RedisError as exc:
            log.error("orders: alert on %s not written (%s: %s): %s", topic, type(exc).__name__, exc, message)
        log.warning("orders: ALERT %s: %s", topic, message)

    def private_adapter(self, exchange: str) -> Any:
        """The exchange's ``PrivateAdapter`` (open-order listing for ``cancel_open``)."""
        return REGISTRY[exchange]


def decimal(text: str) -> Decimal:
    """``Decimal(text)`` of a validated decimal string."""
    return Decimal(text)
