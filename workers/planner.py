"""The planner: which desired topic goes on which exchange connection.

The plan lives in Redis and is shared by every worker process:

* ``fp:plan:assign``  hash topic -> connection id
* ``fp:plan:conns``   hash connection id -> ``{"exchange", "route", "url"}`` (JSON)
* ``fp:plan:version`` the ``fp:desired:version`` the plan was made from

Planning is *sticky*: a topic that is still desired keeps its connection, so adding or removing
topics never moves other topics between sockets. New topics (in sorted order, for determinism) go
into the first existing connection of the same exchange and route with room
(``adapter.max_topics_per_connection``); when there is none a new connection id
``{exchange}.{route}.{n}`` is made from the counter ``fp:plan:seq``. Connections left without
topics are deleted. Each topic is in exactly one planned connection by construction; leases
(``workers.leases``) make sure each connection runs on at most one worker.

Concurrency: ``plan()`` runs under the mutex ``fp:plan:lock`` (``SET NX PX 5000`` with a random
token, released by a compare-and-delete script). A caller that finds the lock taken returns
``None`` at once: the holder is planning already, and if it read an older desired version the
stored ``fp:plan:version`` stays behind ``fp:desired:version`` so the next heartbeat re-plans.
The final write is ``WATCH lock`` + ``MULTI`` and is dropped if the lock expired meanwhile, so a
slow planner can never overwrite a newer plan.

Private topics (``{exchange}:{order|position|balance}:{account}``) get the adapter's route ``private:<account>``:
one socket per account and exchange. Its URL comes from ``Settings.exchange_ws_uri(exchange, private=True)``
(BitMart's ``/user`` URL); Binance USD-M's is ``<base>/private/ws``, the listenKey being added only when the
worker connects (``workers.private``), so no key is ever stored in the plan.

URLs follow the settings in force: every plan recomputes each connection's URL from the planning worker's
settings, and a stored plan whose URLs differ from a worker's settings (``stale_urls``: Redis kept the plan of an
earlier run, and the workers came back with another ``*_WS_URI``) is re-planned by the most recently started live
worker (``workers.runtime``), so in a rolling restart the newest settings win and older workers follow the plan.

Topics that fail ``Topic.parse`` or ``adapter.validate`` are skipped, logged and marked ``failed``
in ``fp:subs`` (the control server validates first, so this is defensive).
"""

from __future__ import annotations

import logging
import secrets
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError, WatchError

from control import keys
from control.settings import Settings
from control.store import FAILED, ControlStore
from control.topics import Topic, TopicError
from workers.exchanges.base import AdapterError, ExchangeAdapter
from workers.private import PRIVATE_ROUTE_PREFIX

log = logging.getLogger(__name__)

#: Lifetime of the planner mutex; a plan takes a few round trips, far below this.
LOCK_TTL_MS = 5000

_RELEASE_LOCK_LUA = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""

ConnData = dict[str, str]
#: ``new_conn_id(exchange, route) -> connection id`` for a connection the plan needs to create.
NewConnId = Callable[[str, str], str]


@dataclass(frozen=True, slots=True)
class PlanResult:
    """A plan: ``assign`` topic -> conn id, ``conns`` conn id -> ``{"exchange","route","url"}``.

    ``version`` is the desired-state version it was made from. ``created``/``removed`` list the
    connection ids added/deleted by this run, ``skipped`` the invalid desired topics.
    """

    version: int
    assign: dict[str, str]
    conns: dict[str, ConnData]
    paused: bool = False
    created: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    skipped: tuple[str, ...] = field(default=())

    @property
    def connections(self) -> int:
        """Number of planned connections."""
        return len(self.conns)

    @property
    def topics(self) -> int:
        """Number of assigned topics."""
        return len(self.assign)

    def by_conn(self) -> dict[str, list[str]]:
        """Connection id -> its sorted topics."""
        out: dict[str, list[str]] = {c: [] for c in self.conns}
        for topic, conn_id in sorted(self.assign.items()):
            out.setdefault(conn_id, []).append(topic)
        return out


def _place(text: str, adapters: Mapping[str, ExchangeAdapter], base_urls: Mapping[str, str]) -> tuple[str, str]:
    """``(exchange, route)`` of topic ``text``; raises TopicError/AdapterError when it cannot be served."""
    topic = Topic.parse(text)
    adapter = adapters.get(topic.exchange)
    if adapter is None or topic.exchange not in base_urls:
        raise AdapterError(f"no adapter or URL configured for exchange {topic.exchange!r}")
    adapter.validate(topic)
    return topic.exchange, adapter.route(topic)


def _conn_order(conn_id: str) -> tuple[str, int]:
    """Sort key: oldest (lowest sequence number) connection first."""
    prefix, _, seq = conn_id.rpartition(".")
    return (prefix, int(seq)) if seq.isdigit() else (conn_id, -1)


def assign(
    desired_topics: Iterable[str],
    current_assign: Mapping[str, str],
    conns: Mapping[str, Mapping[str, str]],
    adapters: Mapping[str, ExchangeAdapter],
    new_conn_id: NewConnId,
    *,
    base_urls: Mapping[str, str],
) -> tuple[dict[str, str], dict[str, ConnData]]:
    """Pure sticky assignment (no I/O). Returns ``(assign, conns)`` for ``desired_topics``.

    ``current_assign`` and ``conns`` are the previous plan. ``base_urls`` maps exchange id to the
    configured WebSocket base URL (``Settings.exchange_ws_uri``); connection URLs are recomputed
    from it with ``adapter.ws_url``. A topic keeps its connection while that connection still
    exists, matches the topic's exchange and route, and is within the adapter's cap. Invalid topics
    are logged and left out of the result.
    """
    placement: dict[str, tuple[str, str]] = {}
    for text in sorted(set(desired_topics)):
        try:
            placement[text] = _place(text, adapters, base_urls)
        except (TopicError, AdapterError) as exc:
            log.warning("planner: skipping topic %s: %s", text, exc)

    work: dict[str, ConnData] = {
        cid: {"exchange": str(data.get("exchange", "")), "route": str(data.get("route", ""))}
        for cid, data in conns.items()
    }
    counts: Counter[str] = Counter()
    result: dict[str, str] = {}
    new_topics: list[str] = []
    for text, (exchange, route) in placement.items():
        cap = adapters[exchange].max_topics_per_connection
        cid = current_assign.get(text)
        data = work.get(cid) if cid is not None else None
        if cid is not None and data == {"exchange": exchange, "route": route} and counts[cid] < cap:
            result[text] = cid
            counts[cid] += 1
        else:
            new_topics.append(text)

    for text in new_topics:
        exchange, route = placement[text]
        cap = adapters[exchange].max_topics_per_connection
        target = next(
            (
                cid
                for cid in sorted(work, key=_conn_order)
                if work[cid] == {"exchange": exchange, "route": route} and counts[cid] < cap
            ),
            None,
        )
        if target is None:
            target = new_conn_id(exchange, route)
            work[target] = {"exchange": exchange, "route": route}
        result[text] = target
        counts[target] += 1

    planned: dict[str, ConnData] = {}
    for cid in sorted(work, key=_conn_order):
        if counts[cid]:
            exchange, route = work[cid]["exchange"], work[cid]["route"]
            url = connection_url(adapters[exchange], base_urls, exchange, route)
            planned[cid] = {"exchange": exchange, "route": route, "url": url}
    return result, planned


def private_url_key(exchange: str) -> str:
    """The ``base_urls`` key of ``exchange``'s private WebSocket base URL."""
    return f"{exchange}:private"


def connection_url(adapter: ExchangeAdapter, base_urls: Mapping[str, str], exchange: str, route: str) -> str:
    """The planned URL of a connection of ``exchange`` on ``route`` (see the module docstring for private routes)."""
    if not route.startswith(PRIVATE_ROUTE_PREFIX):
        return adapter.ws_url(base_urls[exchange], route)
    base = base_urls.get(private_url_key(exchange)) or base_urls[exchange]
    if adapter.listen_key is not None:  # Binance: <base>/private/ws, the key is added when connecting
        return adapter.listen_key.planned_url(base)
    return adapter.ws_url(base, route)


def _decode_conns(raw: Mapping[str, str]) -> dict[str, ConnData]:
    conns: dict[str, ConnData] = {}
    for cid, value in raw.items():
        try:
            data = orjson.loads(value)
            conns[cid] = {"exchange": data["exchange"], "route": data["route"], "url": data.get("url", "")}
        except (ValueError, KeyError, TypeError):
            log.warning("planner: ignoring malformed plan record of connection %s", cid)
    return conns


async def read_plan(redis: Redis) -> PlanResult:
    """The plan currently stored in Redis (one MULTI round trip; ``redis`` decodes responses)."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.get(keys.PLAN_VERSION)
        pipe.hgetall(keys.PLAN_ASSIGN)
        pipe.hgetall(keys.PLAN_CONNS)
        pipe.exists(keys.PAUSED)
        version, assigned, conns, paused = await pipe.execute()
    return PlanResult(int(version or 0), dict(assigned), _decode_conns(conns), bool(paused))


def base_urls(settings: Settings, adapters: Mapping[str, ExchangeAdapter]) -> dict[str, str]:
    """Exchange id -> configured WebSocket base URL, for the exchanges that have one; ``private_url_key(exchange)``
    -> the base of its private sockets."""
    urls = {}
    for exchange in adapters:
        try:
            urls[exchange] = settings.exchange_ws_uri(exchange)
            urls[private_url_key(exchange)] = settings.exchange_ws_uri(exchange, private=True)
        except KeyError:
            log.warning("planner: no WebSocket URL setting for exchange %s", exchange)
    return urls


def stale_urls(
    current: PlanResult, settings: Settings, adapters: Mapping[str, ExchangeAdapter]
) -> dict[str, tuple[str, str]]:
    """``conn id -> (planned URL, URL from settings)`` for each planned connection whose stored URL is not the one
    ``settings`` give (pure; exchanges without an adapter or a URL setting are left out)."""
    urls = base_urls(settings, adapters)
    out: dict[str, tuple[str, str]] = {}
    for conn_id, data in current.conns.items():
        exchange, route = data["exchange"], data["route"]
        adapter = adapters.get(exchange)
        if adapter is None or exchange not in urls:
            continue
        try:
            wanted = connection_url(adapter, urls, exchange, route)
        except AdapterError:
            continue
        if data["url"] != wanted:
            out[conn_id] = (data["url"], wanted)
    return out


async def plan(
    redis: Redis, settings: Settings, adapters: Mapping[str, ExchangeAdapter], *, now_ms: int
) -> PlanResult | None:
    """Re-plan connections for the current desired state and publish ``plan`` on ``fp:ctl``.

    ``redis`` must decode responses. Returns the new plan, or ``None`` when another process holds
    the planner lock (or it expired before the write). Raises ``redis.exceptions.RedisError`` on
    connection trouble; callers retry on their next heartbeat.
    """
    token = secrets.token_hex(12)
    if not await redis.set(keys.PLAN_LOCK, token, nx=True, px=LOCK_TTL_MS):
        log.debug("planner: lock held elsewhere; skipping")
        return None
    try:
        return await _plan_locked(redis, settings, adapters, token, now_ms)
    finally:
        try:
            await redis.register_script(_RELEASE_LOCK_LUA)(keys=[keys.PLAN_LOCK], args=[token])
        except RedisError as exc:  # the lock expires by itself
            log.warning("planner: could not release the lock: %s", exc)


async def _plan_locked(
    redis: Redis, settings: Settings, adapters: Mapping[str, ExchangeAdapter], token: str, now_ms: int
) -> PlanResult | None:
    async with redis.pipeline(transaction=True) as pipe:
        pipe.get(keys.DESIRED_VERSION)
        pipe.hkeys(keys.DESIRED)
        pipe.exists(keys.PAUSED)
        pipe.hgetall(keys.PLAN_ASSIGN)
        pipe.hgetall(keys.PLAN_CONNS)
        version_raw, desired, paused, current_assign, conns_raw = await pipe.execute()
    version = int(version_raw or 0)
    current_conns = _decode_conns(conns_raw)
    urls = base_urls(settings, adapters)

    pending_ids: list[tuple[str, str, str]] = []

    def new_conn_id(exchange: str, route: str) -> str:
        placeholder = f"new#{len(pending_ids)}"
        pending_ids.append((placeholder, exchange, route))
        return placeholder

    new_assign, new_conns = assign(desired, current_assign, current_conns, adapters, new_conn_id, base_urls=urls)
    if pending_ids:
        last = int(await redis.incrby(keys.PLAN_SEQ, len(pending_ids)))
        first = last - len(pending_ids) + 1
        rename = {ph: f"{ex}.{route}.{first + i}" for i, (ph, ex, route) in enumerate(pending_ids)}
        new_assign = {t: rename.get(c, c) for t, c in new_assign.items()}
        new_conns = {rename.get(c, c): d for c, d in new_conns.items()}

    async with redis.pipeline(transaction=True) as pipe:
        try:
            await pipe.watch(keys.PLAN_LOCK)
            if await pipe.get(keys.PLAN_LOCK) != token:
                log.warning("planner: lock lost before writing plan v%d; dropped", version)
                return None
            pipe.multi()  # type: ignore[no-untyped-call]
            pipe.delete(keys.PLAN_ASSIGN, keys.PLAN_CONNS)
            if new_assign:
                pipe.hset(keys.PLAN_ASSIGN, mapping=new_assign)
            if new_conns:
                pipe.hset(keys.PLAN_CONNS, mapping={c: orjson.dumps(d).decode() for c, d in new_conns.items()})
            pipe.set(keys.PLAN_VERSION, version)
            await pipe.execute()
        except WatchError:
            log.warning("planner: lock changed while writing plan v%d; dropped", version)
            return None

    skipped = tuple(sorted(set(desired) - set(new_assign)))
    if skipped:
        await ControlStore(redis).set_states({t: _failed_record(t, adapters, urls, now_ms) for t in skipped})
    created = tuple(sorted(set(new_conns) - set(current_conns), key=_conn_order))
    removed = tuple(sorted(set(current_conns) - set(new_conns), key=_conn_order))
    await redis.publish(keys.CONTROL_CHANNEL, "plan")
    log.info(
        "planner: plan v%d: %d topics on %d connections (+%d -%d, %d skipped)",
        version, len(new_assign), len(new_conns), len(created), len(removed), len(skipped),
    )
    return PlanResult(version, new_assign, new_conns, bool(paused), created, removed, skipped)


def _failed_record(
    text: str, adapters: Mapping[str, ExchangeAdapter], urls: Mapping[str, str], now_ms: int
) -> dict[str, Any]:
    try:
        _place(text, adapters, urls)
        error = "not plannable"
    except (TopicError, AdapterError) as exc:
        error = str(exc)
    return {"state": FAILED, "error": error, "since": now_ms, "conn": None}
