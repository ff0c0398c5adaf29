"""End to end: supervisord + Hypercorn control server + 2 arq workers + the local exchange simulator.

Drives the system only through its public surfaces — the HTTP API (the README's curl calls),
SSE and the simulator's view of the exchange side — and checks that what arrives over SSE is
exactly what the simulator replayed from the real recordings.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from control import keys
from control.events_redis import make_events_redis
from control.redis_client import make_redis
from scripts.simulator import ExchangeSimulator
from tests.cluster import LocalCluster, local_cluster
from tests.e2e.harness import Feedplane, RedisServer, get_json, poll, post_json, sse_events, workers_alive

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

#: A given Redis database for these tests; unset: each test starts its own redis-server (see ``running_system``).
E2E_REDIS_URL = os.environ.get("FEEDPLANE_E2E_REDIS_URL", "")
TRADE_TOPIC = "binanceusdm:trade:BTCUSDT"
KLINE_TOPIC = "binanceusdm:kline:SUSHIUSDT:1m"
BITMART_TOPICS = ["bitmart:kline:ETHUSDT:1h", "bitmart:kline:ETHUSDT:1d", "bitmart:trade:BTCUSDT"]


@contextlib.asynccontextmanager
async def running_system(
    tmp_path: Path, *, events_cluster: LocalCluster | None = None, **sim_kwargs: Any
) -> AsyncIterator[tuple[Feedplane, ExchangeSimulator, aiohttp.ClientSession]]:
    """Simulator (in this process) + Feedplane under supervisord, on a flushed Redis database: a private
    redis-server in ``tmp_path``, or ``FEEDPLANE_E2E_REDIS_URL`` when set. ``events_cluster``: the event data
    goes to that Redis Cluster (``EVENTS_REDIS_URL=redis+cluster://...``), control state stays on the former."""
    import redis.asyncio as aioredis

    async with contextlib.AsyncExitStack() as stack:
        redis_url = E2E_REDIS_URL
        if not redis_url:
            server = RedisServer(tmp_path / "redis")
            await server.astart()
            stack.push_async_callback(server.astop)
            redis_url = server.url()
        flush = aioredis.Redis.from_url(redis_url)
        await flush.flushdb()
        sim = ExchangeSimulator(**sim_kwargs)
        await sim.start()
        env = {"EVENTS_REDIS_URL": events_cluster.url} if events_cluster is not None else {}
        fp = Feedplane(tmp_path, sim, redis_url=redis_url, workers=2, env=env)
        fp.start()
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=5))
        try:
            yield fp, sim, session
        finally:
            if fp.proc and fp.proc.poll() is None:
                await fp.stop()
            await session.close()
            await sim.stop()
            await flush.flushdb()
            await flush.aclose()
            print(fp.tail())


@pytest.fixture(params=["one-redis", "events-on-cluster"])
async def system(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Feedplane, ExchangeSimulator, aiohttp.ClientSession]]:
    """The running system on one Redis, and again with the event data on a real 3-master Redis Cluster."""
    if request.param == "one-redis":
        async with running_system(tmp_path, speed=0) as parts:
            yield parts
        return
    with local_cluster(tmp_path / "cluster") as cluster:
        async with running_system(tmp_path, events_cluster=cluster, speed=0) as parts:
            parts[0].events_cluster = cluster  # type: ignore[attr-defined]
            yield parts


async def two_workers_alive(http: aiohttp.ClientSession, fp: Feedplane) -> bool:
    return await workers_alive(http, fp, 2)


async def test_subscribe_stream_fail_reconnect_stop(system) -> None:
    fp, sim, http = system

    await poll(lambda: two_workers_alive(http, fp), 60, "control server and 2 workers")

    # SSE client first, so it sees every event from the start of the replay.
    sse: list[dict[str, Any]] = []
    reader = asyncio.create_task(sse_events(http, f"{fp.base}/sse?topic={TRADE_TOPIC}&topic={KLINE_TOPIC}", sse))

    # The README's curl calls.
    status, body = await post_json(http, f"{fp.base}/trades/subscribe", {"symbol": "BTCUSDT", "exchange": "binanceusdm"})
    assert status == 202 and body["accepted"] == [TRADE_TOPIC]
    status, body = await post_json(http, f"{fp.base}/klines/subscribe",
                                   {"symbol": "SUSHIUSDT", "tfs": ["1m"], "exchange": "binanceusdm"})
    assert status == 202 and body["accepted"] == [KLINE_TOPIC]
    status, body = await post_json(http, f"{fp.base}/klines/subscribe?wait=10", {"symbol": "ETHUSDT", "tfs": ["1H", "1D"]})
    assert status == 200, body
    assert {s["topic"]: s["state"] for s in body["subscriptions"]} == {
        "bitmart:kline:ETHUSDT:1h": "active", "bitmart:kline:ETHUSDT:1d": "active"}
    status, body = await post_json(http, f"{fp.base}/trades/subscribe?wait=10", {"symbol": "BTCUSDT"})
    assert status == 200 and body["subscriptions"][0]["state"] == "active"
    # Subscribing twice is not an error and opens nothing twice.
    status, body = await post_json(http, f"{fp.base}/trades/subscribe", {"symbol": "BTCUSDT"})
    assert status == 202 and body["added"] == []

    # An unknown symbol shows failed with the exchange's reason.
    status, body = await post_json(http, f"{fp.base}/klines/subscribe?wait=10", {"symbol": "NOPEUSDT", "tfs": ["1m"]})
    failed = body["subscriptions"][0]
    assert failed["state"] == "failed" and "not found" in failed["error"], failed

    # Every trade frame arrives over SSE, in order, with the tape's values. The default trade stream is the
    # documented btcusdt@aggTrade (on /market): 10,447 aggregates of the 21,313 recorded trades; trade_id = "a".
    trade_frames = await poll(lambda: _done(sim, "btcusdt@aggTrade", 10_447), 60, "simulator to replay the trade tape")
    await poll(lambda: _count(sse, "trade", 10_447), 90, "all trades over SSE")
    await poll(lambda: _count(sse, "kline", len(sim.sent_data["sushiusdt@kline_1m"])), 30, "klines over SSE")
    trades = [orjson.loads(e["data"]) for e in sse if e["event"] == "trade"]
    sent = [orjson.loads(f) for f in trade_frames]
    sent = [f.get("data", f) for f in sent]
    assert [(t["trade_id"], t["price"], t["size"]) for t in trades] == [(str(f["a"]), f["p"], f["q"]) for f in sent]
    assert trades[0]["side"] == ("sell" if sent[0]["m"] else "buy")
    klines = [orjson.loads(e["data"]) for e in sse if e["event"] == "kline"]
    sent_k = [orjson.loads(f) for f in sim.sent_data["sushiusdt@kline_1m"]]
    sent_k = [f.get("data", f)["k"] for f in sent_k]
    assert [(k["open_time"], k["close"], k["closed"]) for k in klines] == [(k["t"], k["c"], k["x"]) for k in sent_k]
    reader.cancel()
    await asyncio.gather(reader, return_exceptions=True)
    cluster = getattr(fp, "events_cluster", None)
    if cluster is not None:  # the events are on the cluster's masters, once each, and not on the control Redis
        await _events_on_cluster(cluster, fp, {TRADE_TOPIC: 10_447})

    # Two workers, each topic on exactly one exchange socket (NOPEUSDT was refused, so 5).
    def held() -> list[str]:
        return [t for c in sim.connections for t in c.subscribed]

    await sim.wait_for(lambda: len(held()) == 5, timeout=20)
    assert len(held()) == len(set(held()))
    _, status_body = await get_json(http, f"{fp.base}/status")
    owners = {c["id"]: c["worker"] for c in status_body["connections"]}
    assert len(set(owners.values())) == 2, owners  # both workers hold connections

    # Killing the exchange side's sockets leads to reconnect and full resubscription.
    before = len(sim.received)
    dropped = await sim.drop_connections()
    assert dropped >= 2
    await sim.wait_for(lambda: len(held()) == 5 and len(sim.received) > before, timeout=30)

    async def reconnected():
        _, body = await get_json(http, f"{fp.base}/status")
        conns = body["connections"]
        return conns if sum(c["reconnects"] for c in conns) >= dropped and all(c["state"] == "open" for c in conns) else None

    await poll(reconnected, 30, "reconnects in /status")

    # POST /stop closes every exchange socket; POST /start resumes the same topics.
    status, body = await post_json(http, f"{fp.base}/stop")
    assert status == 200 and body["paused"] is True
    await sim.wait_for(lambda: not sim.connections, timeout=30)
    status, body = await post_json(http, f"{fp.base}/start")
    assert status == 200
    await sim.wait_for(lambda: len(held()) == 5, timeout=30)

    # Graceful stop of everything under supervisord.
    assert await fp.stop() == 0
    await sim.wait_for(lambda: not sim.connections, timeout=10)


async def _events_on_cluster(cluster: LocalCluster, fp: Feedplane, expected: dict[str, int]) -> None:
    """Each topic's stream on the cluster holds ``expected[topic]`` non-gap events with distinct trade ids, and the
    control Redis holds no event key."""
    events = make_events_redis(cluster.url, decode=False)
    control = make_redis(fp.env["REDIS_URL"], decode=False)
    try:
        for topic, n in expected.items():
            entries = await events.xrange(keys.event_stream(topic))
            data = [orjson.loads(fields[keys.STREAM_FIELD.encode()]) for _, fields in entries]
            trades = [e["trade_id"] for e in data if e.get("type") == "trade"]
            assert (len(trades), len(set(trades))) == (n, n)
        assert [k async for k in control.scan_iter(match="fp:stream:*")] == []
        assert [k async for k in control.scan_iter(match="fp:last:*")] == []
    finally:
        await events.aclose()
        await control.aclose()


async def _done(sim: ExchangeSimulator, native: str, n: int):
    frames = sim.sent_data.get(native, [])
    return frames if len(frames) >= n else None


async def _count(events: list[dict[str, Any]], kind: str, n: int) -> bool:
    return sum(1 for e in events if e.get("event") == kind) >= n


#: One topic per exchange and public channel, each served by the simulator from a recording
#: (or a tape it derives from one): (subscribe path, body).
EVERY_CHANNEL = [
    ("/klines/subscribe", {"exchange": "bitmart", "symbol": "BTCUSDT", "tfs": ["1m"]}),
    ("/trades/subscribe", {"exchange": "bitmart", "symbol": "BTCUSDT"}),
    ("/ticker/subscribe", {"exchange": "bitmart", "symbol": "BTCUSDT"}),
    ("/bookticker/subscribe", {"exchange": "bitmart", "symbol": "BTCUSDT"}),
    ("/depth/subscribe", {"exchange": "bitmart", "symbol": "BTCUSDT", "levels": 5}),
    ("/klines/subscribe", {"exchange": "binanceusdm", "symbol": "SUSHIUSDT", "tfs": ["1m"]}),
    ("/trades/subscribe", {"exchange": "binanceusdm", "symbol": "BTCUSDT"}),
    ("/ticker/subscribe", {"exchange": "binanceusdm", "symbol": "BTCUSDT"}),
    ("/bookticker/subscribe", {"exchange": "binanceusdm", "symbol": "SUSHIUSDT"}),
    ("/depth/subscribe", {"exchange": "binanceusdm", "symbol": "SUSHIUSDT", "levels": 10}),
    ("/klines/subscribe", {"exchange": "gateio", "symbol": "BTC_USDT", "tfs": ["1m"]}),
    ("/trades/subscribe", {"exchange": "gateio", "symbol": "BTC_USDT"}),
    ("/ticker/subscribe", {"exchange": "gateio", "symbol": "BTC_USDT"}),
    ("/bookticker/subscribe", {"exchange": "gateio", "symbol": "WOO_USDT"}),
    ("/depth/subscribe", {"exchange": "gateio", "symbol": "RDNT_USDT", "levels": 20}),
]


async def test_three_exchanges_every_public_channel(tmp_path: Path) -> None:
    """Klines, trades, ticker, best bid/ask and books of BitMart, Binance USD-M and Gate.io over SSE."""
    async with running_system(tmp_path, rate=400.0) as (fp, _sim, http):
        await poll(lambda: two_workers_alive(http, fp), 60, "control server and 2 workers")
        topics: list[str] = []
        for path, body in EVERY_CHANNEL:
            status, answer = await post_json(http, f"{fp.base}{path}", body)
            assert status == 202, answer
            topics += answer["accepted"]
        assert len(topics) == 15
        query = "&".join(f"topic={t}" for t in topics)
        sse: list[dict[str, Any]] = []
        reader = asyncio.create_task(sse_events(http, f"{fp.base}/sse?{query}&backlog=1000", sse))

        def seen() -> dict[str, set[str]]:
            kinds: dict[str, set[str]] = {}
            for e in sse:
                data = orjson.loads(e["data"])
                if "exchange" in data:
                    topic = _topic_of(data)
                    kinds.setdefault(topic, set()).add(data["type"])
            return kinds

        async def every_topic_delivered():
            kinds = seen()
            return all(_expected(t) <= kinds.get(t, set()) for t in topics)

        await poll(every_topic_delivered, 90, "an event on every topic")
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)

        assert not [e for e in sse if e.get("event") == "gap"], "false gap on a recorded book"
        for e in sse:
            if e.get("event") == "depth":
                book = orjson.loads(e["data"])
                levels = {"bitmart": 5, "binanceusdm": 10, "gateio": 20}[book["exchange"]]
                assert 0 < len(book["bids"]) <= levels and 0 < len(book["asks"]) <= levels
                assert _dec(book["bids"][0][0]) < _dec(book["asks"][0][0])  # never crossed
        _, status_body = await get_json(http, f"{fp.base}/status")
        states = {s["topic"]: s["state"] for s in status_body["subscriptions"]}
        assert states == {t: "active" for t in topics}, states


def _topic_of(event: dict[str, Any]) -> str:
    channel = "kline" if event["type"] == "kline" else event["type"]
    if channel in ("depth", "depth_delta"):
        channel = "depth"
    base = f"{event['exchange']}:{channel}:{event['symbol']}"
    return f"{base}:{event['timeframe']}" if channel == "kline" else base


def _expected(topic: str) -> set[str]:
    channel = topic.split(":")[1]
    return {"depth", "depth_delta"} if channel == "depth" else {channel}


def _dec(text: str):
    from decimal import Decimal

    return Decimal(text)
