"""JSON API of the control server through TestClient (lifespan runs) against the real Redis test db: public
subscribe/unsubscribe, stop/start/clear, wait."""

from __future__ import annotations

import asyncio

import orjson
from arq.connections import RedisSettings, create_pool
from arq.jobs import Job
from redis.asyncio import Redis
from starlette.testclient import TestClient

from app.errors import now_ms
from control import keys
from control.jobs import RECONCILE, reconcile_job_id
from control.store import ControlStore
from tests.app._api import K1M, K5M, KLINE_BODY

# -- happy paths ---------------------------------------------------------------------------------------


async def test_subscribe_klines_enqueues_reconcile_job(client: TestClient, redis: Redis, redis_url: str) -> None:
    resp = client.post("/klines/subscribe", json=KLINE_BODY)
    assert resp.status_code == 202
    assert resp.json() == {"accepted": [K1M, K5M], "added": [K1M, K5M], "already": [], "paused": False}
    assert set(await redis.hkeys(keys.DESIRED)) == {K1M, K5M}
    version = await ControlStore(redis).version()
    assert await redis.zrange(keys.ARQ_QUEUE, 0, -1) == [reconcile_job_id(version)]
    pool = await create_pool(RedisSettings.from_dsn(redis_url))
    try:
        info = await Job(reconcile_job_id(version), pool, _queue_name=keys.ARQ_QUEUE).info()
    finally:
        await pool.aclose()
    assert info is not None and info.function == RECONCILE and info.args == (version,)


async def test_subscribe_is_idempotent_and_enqueues_once(client: TestClient, redis: Redis) -> None:
    assert client.post("/klines/subscribe", json=KLINE_BODY).status_code == 202
    version = await ControlStore(redis).version()
    again = client.post("/klines/subscribe", json=KLINE_BODY)
    assert again.status_code == 202
    assert again.json() == {"accepted": [K1M, K5M], "added": [], "already": [K1M, K5M], "paused": False}
    assert await ControlStore(redis).version() == version  # nothing changed...
    assert await redis.zrange(keys.ARQ_QUEUE, 0, -1) == [reconcile_job_id(version)]  # ...so no second job


async def test_bulk_and_bitmart_spellings_give_canonical_topics(client: TestClient, redis: Redis) -> None:
    body = {"symbol": "btcusdt", "symbols": ["ETHUSDT", "BTCUSDT"], "tfs": ["1H", "1D", "1W", "1h"]}
    resp = client.post("/klines/subscribe", json=body)
    assert resp.status_code == 202
    expected = [f"bitmart:kline:{s}:{tf}" for s in ("BTCUSDT", "ETHUSDT") for tf in ("1h", "1d", "1w")]
    assert resp.json()["accepted"] == expected
    assert sorted(await redis.hkeys(keys.DESIRED)) == sorted(expected)
    other = client.post("/klines/subscribe", json={"symbol": "BTCUSDT", "tfs": ["4H"], "exchange": "binanceusdm"})
    assert other.json()["added"] == ["binanceusdm:kline:BTCUSDT:4h"]


async def test_trades_subscribe_and_unsubscribe(client: TestClient, redis: Redis) -> None:
    resp = client.post("/trades/subscribe", json={"symbols": ["BTCUSDT", "ETHUSDT"]})
    assert resp.status_code == 202
    assert resp.json()["added"] == ["bitmart:trade:BTCUSDT", "bitmart:trade:ETHUSDT"]
    resp = client.post("/trades/unsubscribe", json={"symbol": "ETHUSDT", "symbols": ["XRPUSDT"]})
    assert resp.status_code == 200
    assert resp.json() == {"removed": ["bitmart:trade:ETHUSDT"], "not_subscribed": ["bitmart:trade:XRPUSDT"]}
    assert await redis.hkeys(keys.DESIRED) == ["bitmart:trade:BTCUSDT"]


async def test_ticker_bookticker_and_depth_subscribe(client: TestClient, redis: Redis) -> None:
    resp = client.post("/ticker/subscribe", json={"symbol": "BTCUSDT", "exchange": "binanceusdm"})
    assert resp.status_code == 202 and resp.json()["added"] == ["binanceusdm:ticker:BTCUSDT"]
    resp = client.post("/bookticker/subscribe", json={"symbols": ["btc_usdt"], "exchange": "gate"})  # ccxt alias
    assert resp.status_code == 202 and resp.json()["added"] == ["gateio:bookticker:BTC_USDT"]
    resp = client.post("/depth/subscribe", json={"symbol": "BTCUSDT", "levels": 5})
    assert resp.status_code == 202 and resp.json()["added"] == ["bitmart:depth:BTCUSDT"]
    assert orjson.loads(await redis.hget(keys.TOPIC_OPTIONS, "bitmart:depth:BTCUSDT")) == {"levels": 5}
    version = int(await redis.get(keys.DESIRED_VERSION))
    # Same topic, new levels: not added again, but the option change nudges the workers.
    resp = client.post("/depth/subscribe", json={"symbol": "BTCUSDT", "levels": 50})
    assert resp.json()["added"] == [] and int(await redis.get(keys.DESIRED_VERSION)) > version
    assert orjson.loads(await redis.hget(keys.TOPIC_OPTIONS, "bitmart:depth:BTCUSDT")) == {"levels": 50}
    resp = client.post("/depth/unsubscribe", json={"symbol": "BTCUSDT"})
    assert resp.json()["removed"] == ["bitmart:depth:BTCUSDT"]
    assert not await redis.hexists(keys.TOPIC_OPTIONS, "bitmart:depth:BTCUSDT")
    for path in ("/ticker/unsubscribe", "/bookticker/unsubscribe"):
        assert client.post(path, json={"symbol": "XRPUSDT"}).status_code == 200


async def test_klines_unsubscribe(client: TestClient, redis: Redis) -> None:
    client.post("/klines/subscribe", json=KLINE_BODY)
    jobs_before = await redis.zcard(keys.ARQ_QUEUE)
    resp = client.post("/klines/unsubscribe", json={"symbol": "BTCUSDT", "tfs": ["5m"]})
    assert resp.status_code == 200
    assert resp.json() == {"removed": [K5M], "not_subscribed": []}
    assert await redis.hkeys(keys.DESIRED) == [K1M]
    assert await redis.zcard(keys.ARQ_QUEUE) == jobs_before + 1


async def test_stop_start_and_clear(client: TestClient, redis: Redis) -> None:
    client.post("/klines/subscribe", json=KLINE_BODY)
    resp = client.post("/stop")
    assert resp.status_code == 200 and resp.json() == {"stopped": True, "paused": True, "cleared": 0}
    assert await redis.get(keys.PAUSED) == "1"
    assert set(await redis.hkeys(keys.DESIRED)) == {K1M, K5M}  # desired state kept
    assert client.post("/trades/subscribe", json={"symbol": "BTCUSDT"}).json()["paused"] is True

    resp = client.post("/start")
    assert resp.status_code == 200 and resp.json() == {"started": True, "topics": 3}
    assert await redis.exists(keys.PAUSED) == 0

    client.post("/stop")
    resp = client.post("/stop", json={"clear": True})
    assert resp.json() == {"stopped": True, "paused": False, "cleared": 3}
    assert await redis.exists(keys.DESIRED, keys.PAUSED) == 0
    version = await ControlStore(redis).version()
    assert reconcile_job_id(version) in await redis.zrange(keys.ARQ_QUEUE, 0, -1)


async def test_wait_returns_200_when_worker_activates(client: TestClient, redis: Redis) -> None:
    store = ControlStore(redis)
    async with redis.pubsub() as ps:
        await ps.subscribe(keys.CONTROL_CHANNEL)
        await ps.get_message(timeout=1)
        request = asyncio.create_task(
            asyncio.to_thread(client.post, "/trades/subscribe?wait=1", json={"symbol": "BTCUSDT"})
        )
        async with asyncio.timeout(5):  # the "plan" nudge (fp:ctl is server-wide: skip other databases' nudges)
            while not await redis.hexists(keys.DESIRED, "bitmart:trade:BTCUSDT"):
                await ps.get_message(ignore_subscribe_messages=True, timeout=5)
        await store.set_states(
            {"bitmart:trade:BTCUSDT": {"state": "active", "error": None, "since": now_ms(), "conn": "c1"}}
        )
        resp = await request
    assert resp.status_code == 200
    body = resp.json()
    assert body["added"] == ["bitmart:trade:BTCUSDT"]
    [record] = body["subscriptions"]
    assert record["topic"] == "bitmart:trade:BTCUSDT" and record["state"] == "active" and record["conn"] == "c1"


async def test_wait_times_out_with_202(client: TestClient) -> None:
    resp = client.post("/trades/subscribe?wait=0.2", json={"symbol": "BTCUSDT"})
    assert resp.status_code == 202
    assert [s["state"] for s in resp.json()["subscriptions"]] == ["pending"]
