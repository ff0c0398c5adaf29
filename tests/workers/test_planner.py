"""Planner: pure sticky assignment, and plan() on the real Redis (keys, nudge, lock)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

import orjson
import pytest
from redis.asyncio import Redis

from control import keys
from control.settings import Settings
from control.store import ControlStore
from workers.exchanges import REGISTRY, configured_adapters
from workers.planner import assign, plan, read_plan

BASE_URLS = {"bitmart": "wss://bm.example/api?protocol=1.1", "binanceusdm": "wss://bn.example"}


def _ids() -> Callable[[str, str], str]:
    counter = itertools.count(1)
    return lambda exchange, route: f"{exchange}.{route}.{next(counter)}"


def _plan(topics, current=None, conns=None, new_id=None):
    return assign(topics, current or {}, conns or {}, REGISTRY, new_id or _ids(), base_urls=BASE_URLS)


def test_adding_topics_never_moves_existing_ones() -> None:
    new_id = _ids()
    first, conns = _plan(["bitmart:trade:ETHUSDT", "binanceusdm:trade:BTCUSDT"], new_id=new_id)
    more = ["bitmart:trade:ETHUSDT", "binanceusdm:trade:BTCUSDT", "bitmart:kline:AAAUSDT:1m", "binanceusdm:kline:X1:5m"]

    second, conns2 = _plan(more, first, conns, new_id)

    assert {t: second[t] for t in first} == first
    assert second["bitmart:kline:AAAUSDT:1m"] == first["bitmart:trade:ETHUSDT"]  # room in the same socket
    assert set(conns) <= set(conns2)


def test_binance_routes_get_separate_connections() -> None:
    result, conns = _plan(["binanceusdm:kline:BTCUSDT:1m", "binanceusdm:depth:BTCUSDT", "bitmart:trade:BTCUSDT"])

    kline, depth = conns[result["binanceusdm:kline:BTCUSDT:1m"]], conns[result["binanceusdm:depth:BTCUSDT"]]
    assert kline == {"exchange": "binanceusdm", "route": "market", "url": "wss://bn.example/market/stream"}
    assert depth == {"exchange": "binanceusdm", "route": "public", "url": "wss://bn.example/public/stream"}
    assert conns[result["bitmart:trade:BTCUSDT"]]["url"] == BASE_URLS["bitmart"]
    assert len(conns) == 3


def test_a_changed_binance_trade_stream_moves_trade_topics_to_its_route() -> None:
    """A plan made with BINANCE_USDM_TRADE_STREAM=trade (raw @trade on /public) is re-planned when the workers run
    with the default aggTrade (on /market): the trade topic joins the /market connection, the /public one goes."""
    kline, trade = "binanceusdm:kline:BTCUSDT:1m", "binanceusdm:trade:BTCUSDT"
    raw = configured_adapters(Settings.from_env({"BINANCE_USDM_TRADE_STREAM": "trade"}))
    new_id = _ids()
    first, conns = assign([kline, trade], {}, {}, raw, new_id, base_urls=BASE_URLS)
    assert conns[first[trade]]["route"] == "public" and conns[first[kline]]["route"] == "market"

    second, conns2 = assign([kline, trade], first, conns, REGISTRY, new_id, base_urls=BASE_URLS)

    assert second == {kline: first[kline], trade: first[kline]}
    assert conns2 == {first[kline]: {"exchange": "binanceusdm", "route": "market", "url": "wss://bn.example/market/stream"}}


def test_capacity_opens_a_second_connection() -> None:
    cap = REGISTRY["bitmart"].max_topics_per_connection
    topics = [f"bitmart:trade:S{i:03d}USDT" for i in range(cap + 5)]

    result, conns = _plan(topics)

    per_conn: dict[str, int] = {}
    for cid in result.values():
        per_conn[cid] = per_conn.get(cid, 0) + 1
    assert sorted(per_conn.values()) == [5, cap]
    assert set(per_conn) == set(conns)


def test_removing_topics_deletes_empty_connections_only() -> None:
    topics = ["bitmart:trade:BTCUSDT", "binanceusdm:kline:BTCUSDT:1m", "binanceusdm:depth:BTCUSDT"]
    first, conns = _plan(topics)

    second, conns2 = _plan(["bitmart:trade:BTCUSDT", "binanceusdm:depth:BTCUSDT"], first, conns)

    assert first["binanceusdm:kline:BTCUSDT:1m"] not in conns2
    assert second == {t: first[t] for t in second}
    assert len(conns2) == 2


def test_invalid_topics_are_skipped() -> None:
    result, conns = _plan(["bitmart:trade:BTCUSDT", "nope:trade:BTCUSDT", "bitmart:kline:BTCUSDT:7m"])

    assert list(result) == ["bitmart:trade:BTCUSDT"]
    assert len(conns) == 1


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(BITMART_PUBLIC_WS_URI=BASE_URLS["bitmart"], BINANCE_USDM_WS_URI=BASE_URLS["binanceusdm"])


async def test_plan_writes_the_plan_and_publishes(redis: Redis, settings: Settings) -> None:
    store = ControlStore(redis)
    await store.add_desired(["bitmart:trade:BTCUSDT", "binanceusdm:kline:BTCUSDT:1m", "nope:x:Y"], now_ms=1)
    async with redis.pubsub() as pubsub:
        await pubsub.subscribe(keys.CONTROL_CHANNEL)
        await pubsub.get_message(timeout=1.0)  # subscribe confirmation

        result = await plan(redis, settings, REGISTRY, now_ms=2)
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2.0)

    assert result is not None and message is not None and message["data"] == "plan"
    assert result.version == await store.version() and result.skipped == ("nope:x:Y",)
    assert await redis.get(keys.PLAN_VERSION) == str(result.version)
    assert await redis.hgetall(keys.PLAN_ASSIGN) == result.assign
    stored = {c: orjson.loads(v) for c, v in (await redis.hgetall(keys.PLAN_CONNS)).items()}
    assert stored == result.conns and len(stored) == 2
    assert (await read_plan(redis)).assign == result.assign
    failed = orjson.loads(await redis.hget(keys.SUB_STATE, "nope:x:Y"))
    assert failed["state"] == "failed" and "nope" in failed["error"]
    assert not await redis.exists(keys.PLAN_LOCK)


async def test_plan_skips_while_another_holds_the_lock(redis: Redis, settings: Settings) -> None:
    await redis.set(keys.PLAN_LOCK, "someone-else", px=5000)

    assert await plan(redis, settings, REGISTRY, now_ms=1) is None
    assert await redis.get(keys.PLAN_LOCK) == "someone-else"


async def test_concurrent_plans_never_place_a_topic_twice(redis: Redis, settings: Settings) -> None:
    store = ControlStore(redis)
    topics = [f"bitmart:trade:S{i}USDT" for i in range(10)] + ["binanceusdm:depth:BTCUSDT"]
    await store.add_desired(topics, now_ms=1)

    for round_ in range(3):
        results = await asyncio.gather(*(plan(redis, settings, REGISTRY, now_ms=2) for _ in range(5)))
        assert any(r is not None for r in results)
        await store.add_desired([f"binanceusdm:kline:S{round_}USDT:1m"], now_ms=3)

    await plan(redis, settings, REGISTRY, now_ms=4)
    current = await read_plan(redis)
    assert set(current.assign) == set(await store.desired())
    assert set(current.assign.values()) == set(current.conns)
    # one connection per (exchange, route) at these sizes: concurrent plans did not open duplicates
    groups = [(d["exchange"], d["route"]) for d in current.conns.values()]
    assert sorted(groups) == [("binanceusdm", "market"), ("binanceusdm", "public"), ("bitmart", "public")]
