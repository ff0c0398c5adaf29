"""JSON API of the control server through TestClient (lifespan runs) against the real Redis test db."""

from __future__ import annotations

import asyncio
import os
import shlex
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
from arq.connections import RedisSettings, create_pool
from arq.jobs import Job
from cryptography.fernet import Fernet
from redis.asyncio import Redis
from starlette.testclient import TestClient

from app.errors import now_ms
from app.main import create_app
from control import keys
from control.jobs import RECONCILE, reconcile_job_id
from control.settings import Settings
from control.store import ControlStore

KLINE_BODY = {"symbol": "BTCUSDT", "tfs": ["1m", "5m"]}
K1M, K5M = "bitmart:kline:BTCUSDT:1m", "bitmart:kline:BTCUSDT:5m"


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(CTRL_ADDR="127.0.0.1:18089", MAX_BODY_BYTES="8192", STALL_TIMEOUT_S="60")


@pytest.fixture
def client(settings: Settings, redis: Redis) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


async def snapshot(r: Redis) -> dict[bytes, Any]:
    """Every key with its type, value and whether it expires."""
    out: dict[bytes, Any] = {}
    for key in sorted(await r.keys("*")):
        kind = (await r.type(key)).decode()
        value: Any
        if kind == "string":
            value = await r.get(key)
        elif kind == "hash":
            value = await r.hgetall(key)
        elif kind == "zset":
            value = await r.zrange(key, 0, -1, withscores=True)
        elif kind == "list":
            value = await r.lrange(key, 0, -1)
        elif kind == "set":
            value = sorted(await r.smembers(key))
        else:
            value = await r.xrange(key)
        out[key] = (kind, value, await r.ttl(key) > 0)
    return out


def assert_envelope(resp: Any, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) == {"code", "message", "details", "timestamp"}
    assert err["code"] == code
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["details"], dict)
    assert abs(err["timestamp"] - now_ms()) < 60_000
    return err


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


# -- private streams (orders, positions, balances of one account) -------------------------------------------

BM_ENV = {"BITMART_API_KEY": "bm-key-0123456789", "BITMART_API_SECRET": "bm-secret-0123456789",
          "BITMART_API_MEMO": "bm-memo-0123"}  # fmt: skip


@pytest.fixture
def account_settings(make_settings: Callable[..., Settings], tmp_path: Path) -> Settings:
    """bitmart:default from the environment, binanceusdm:alice and gateio:g1 from ACCOUNTS_FILE, POST /accounts on."""
    doc = {"accounts": [
        {"exchange": "binanceusdm", "account": "alice", "api_key": "alice-key-0123456789", "api_secret": "alice-s-01234"},
        {"exchange": "gate", "account": "g1", "api_key": "g1-key-0123456789", "api_secret": "g1-s-0123456789",
         "uid": 90817263},
    ]}  # fmt: skip
    path = tmp_path / "accounts.json"
    path.write_bytes(orjson.dumps(doc))
    os.chmod(path, 0o600)
    return make_settings(CTRL_ADDR="127.0.0.1:18089", ACCOUNTS_FILE=str(path),
                         FEEDPLANE_SECRET_KEY=Fernet.generate_key().decode(), **BM_ENV)  # fmt: skip


@pytest.fixture
def account_client(account_settings: Settings, redis: Redis) -> Iterator[TestClient]:
    with TestClient(create_app(account_settings)) as c:
        yield c


async def test_private_subscribe_without_body_is_the_default_account(account_client: TestClient, redis: Redis) -> None:
    resp = account_client.post("/orders/subscribe")
    assert resp.status_code == 202, resp.text
    assert resp.json() == {"accepted": ["bitmart:order:default"], "added": ["bitmart:order:default"], "already": [],
                           "paused": False}  # fmt: skip
    assert await redis.hkeys(keys.DESIRED) == ["bitmart:order:default"]
    version = await ControlStore(redis).version()
    assert await redis.zrange(keys.ARQ_QUEUE, 0, -1) == [reconcile_job_id(version)]  # workers are nudged
    again = account_client.post("/orders/subscribe", json={})
    assert again.json()["already"] == ["bitmart:order:default"] and await ControlStore(redis).version() == version
    assert account_client.post("/orders/unsubscribe").json() == {"removed": ["bitmart:order:default"],
                                                                  "not_subscribed": []}  # fmt: skip
    assert await redis.hkeys(keys.DESIRED) == []


async def test_private_subscribe_named_accounts_on_every_exchange(account_client: TestClient, redis: Redis) -> None:
    calls = [("/orders/subscribe", {"exchange": "binanceusdm", "account": "alice"}, "binanceusdm:order:alice"),
             ("/positions/subscribe", {"exchange": "binanceusdm", "account": "alice"}, "binanceusdm:position:alice"),
             ("/balances/subscribe", {"exchange": "gate", "account": "g1"}, "gateio:balance:g1"),
             ("/positions/subscribe", {"account": "default"}, "bitmart:position:default"),
             ("/balances/subscribe", {"exchange": "bitmart"}, "bitmart:balance:default")]  # fmt: skip
    for path, body, topic in calls:
        resp = account_client.post(path, json=body)
        assert resp.status_code == 202 and resp.json()["added"] == [topic], resp.text
    assert sorted(await redis.hkeys(keys.DESIRED)) == sorted(t for _, _, t in calls)
    resp = account_client.post("/balances/unsubscribe", json={"exchange": "gateio", "account": "g1"})
    assert resp.json() == {"removed": ["gateio:balance:g1"], "not_subscribed": []}
    resp = account_client.post("/positions/unsubscribe", json={"exchange": "gateio", "account": "g1"})
    assert resp.json() == {"removed": [], "not_subscribed": ["gateio:position:g1"]}


async def test_private_subscribe_waits_for_the_worker(account_client: TestClient, redis: Redis) -> None:
    resp = account_client.post("/orders/subscribe?wait=0.2")
    assert resp.status_code == 202
    assert [(s["topic"], s["state"]) for s in resp.json()["subscriptions"]] == [("bitmart:order:default", "pending")]
    await ControlStore(redis).set_states({"bitmart:order:default": {"state": "failed", "error": "login refused: x",
                                                                    "since": now_ms(), "conn": "c1"}})  # fmt: skip
    resp = account_client.post("/orders/subscribe?wait=1")
    assert resp.status_code == 200
    [record] = resp.json()["subscriptions"]
    assert record["state"] == "failed" and record["error"] == "login refused: x"


@pytest.mark.parametrize("path", ["/orders/subscribe", "/positions/subscribe", "/balances/subscribe"])
async def test_private_subscribe_refuses_an_unknown_account(
    account_client: TestClient, redis_bytes: Redis, path: str
) -> None:
    before = await snapshot(redis_bytes)
    for body in ({"account": "bob"}, {"exchange": "binanceusdm"}, {"exchange": "gateio", "account": "default"}):
        err = assert_envelope(account_client.post(path, json=body), 400, "validation_error")
        assert list(err["details"]) == ["account"] and "unknown account" in err["details"]["account"][0]
        assert "0123456789" not in str(err)
    assert await snapshot(redis_bytes) == before == {}


async def test_private_topics_are_never_stale(account_client: TestClient, redis: Redis, settings: Settings) -> None:
    account_client.post("/orders/subscribe")
    old = now_ms() - int(settings.stall_timeout_s * 1000) - 10_000
    await ControlStore(redis).set_states({"bitmart:order:default": {"state": "active", "error": None, "since": old,
                                                                    "conn": "c1"}})  # fmt: skip
    [record] = account_client.get("/status").json()["subscriptions"]
    assert record["state"] == "active" and record["stale"] is False  # a quiet account is not a stalled feed


async def test_private_accounts_added_at_run_time(account_client: TestClient, redis: Redis) -> None:
    body = {"exchange": "bitmart", "account": "carol", "api_key": "carol-key-0123456789",
            "api_secret": "carol-secret-0123456789", "memo": "carol-memo"}  # fmt: skip
    assert_envelope(account_client.post("/orders/subscribe", json={"account": "carol"}), 400, "validation_error")
    assert account_client.post("/accounts", json=body).status_code == 201
    assert account_client.post("/orders/subscribe", json={"account": "carol"}).json()["added"] == ["bitmart:order:carol"]
    assert account_client.delete("/accounts/bitmart/carol").status_code == 200
    assert_envelope(account_client.post("/positions/subscribe", json={"account": "carol"}), 400, "validation_error")
    resp = account_client.post("/orders/unsubscribe", json={"account": "carol"})  # a deleted account's topics go too
    assert resp.json()["removed"] == ["bitmart:order:carol"]


async def test_status_shape(client: TestClient, redis: Redis, settings: Settings) -> None:
    store = ControlStore(redis)
    now = now_ms()
    client.post("/klines/subscribe", json={"symbol": "BTCUSDT", "tfs": ["1m", "5m", "15m"]})
    await store.put_worker("w1", {"host": "h", "pid": 1, "started_at": now - 5000, "heartbeat_at": now - 500,
                                  "connections": ["bitmart.public.1"]})  # fmt: skip
    await store.put_worker("w2", {"host": "h", "pid": 2, "started_at": now - 90_000, "heartbeat_at": now - 60_000,
                                  "connections": []})  # fmt: skip
    conn = {"exchange": "bitmart", "url": "wss://x", "route": "public", "worker": "w1", "state": "open",
            "connected_since": now - 4000, "reconnects": 0, "last_message_at": now, "messages_received": 7,
            "topics": [K1M]}  # fmt: skip
    await store.put_connections({"bitmart.public.1": conn})
    stall_ms = int(settings.stall_timeout_s * 1000)
    old = now - stall_ms - 10_000
    await store.set_states({
        K1M: {"state": "active", "error": None, "since": old, "conn": "bitmart.public.1"},
        K5M: {"state": "active", "error": None, "since": old, "conn": "bitmart.public.1"},
    })  # fmt: skip
    await redis.hset(keys.TOPIC_LAST_EVENT, K5M, str(now - 1000))

    await redis.set(keys.lease("bitmart.public.1"), "w1", px=4000)

    body = client.get("/status").json()
    assert set(body) == {"server_time", "paused", "desired_version", "workers", "connections", "subscriptions",
                         "gaps"}  # fmt: skip
    assert abs(body["server_time"] - now) < 60_000 and body["paused"] is False and body["desired_version"] == 1
    workers = {w["id"]: w for w in body["workers"]}
    assert workers["w1"]["alive"] is True and workers["w1"]["connections"] == ["bitmart.public.1"]
    assert workers["w2"]["alive"] is False
    assert set(workers["w1"]) >= {"id", "host", "pid", "started_at", "heartbeat_at", "connections", "alive",
                                  "publisher"}  # fmt: skip
    [record] = body["connections"]
    lease = record.pop("lease")
    assert lease["owner"] == "w1" and 0 < lease["expires_in_ms"] <= 4000
    assert record == {"id": "bitmart.public.1", **conn, "reasons": {}, "gaps": {}}
    assert body["gaps"] == {}
    subs = {s["topic"]: s for s in body["subscriptions"]}
    assert set(subs[K1M]) == {"topic", "state", "error", "since", "conn", "last_event_at", "stale"}
    assert subs[K1M]["state"] == "active" and subs[K1M]["stale"] is True  # no event for > STALL_TIMEOUT_S
    assert subs[K5M]["stale"] is False and subs[K5M]["last_event_at"] == now - 1000
    k15 = subs["bitmart:kline:BTCUSDT:15m"]
    assert k15["state"] == "pending" and k15["stale"] is False


def test_help_text_and_json(client: TestClient) -> None:
    text = client.get("/help")
    assert text.status_code == 200 and text.headers["content-type"].startswith("text/plain")
    paths = ["/status", "/help", "/klines/subscribe", "/klines/unsubscribe", "/trades/subscribe", "/trades/unsubscribe",
             "/orders/subscribe", "/orders/unsubscribe", "/positions/subscribe", "/positions/unsubscribe",
             "/balances/subscribe", "/balances/unsubscribe", "/stop", "/start", "/sse", "/sse/klines/",
             "/sse/trades/"]  # fmt: skip
    for path in paths:
        assert path in text.text
    assert "curl" in text.text and "http://127.0.0.1:18089/" in text.text
    as_json = client.get("/help", headers={"Accept": "application/json"})
    assert as_json.headers["content-type"].startswith("application/json")
    assert client.get("/help?format=json").json() == as_json.json()
    listed = {e["path"] for e in as_json.json()["endpoints"]}
    assert {p for p in paths if not p.endswith("/")} <= listed


def _replay(client: TestClient, curl: str) -> int:
    """Run a help curl line through TestClient; returns the status."""
    args = shlex.split(curl)
    assert args[0] == "curl"
    method, body, url = "GET", None, None
    it = iter(args[1:])
    for arg in it:
        if arg == "-X":
            method = next(it)
        elif arg == "-d":
            body = next(it).encode()
        elif arg == "-H":
            next(it)
        elif not arg.startswith("-"):
            url = arg
    assert url is not None and url.startswith("http://127.0.0.1:18089/")
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    target = target.replace("wait=5", "wait=0.1")  # nothing activates topics here; keep the test fast
    if parts.path.startswith("/sse"):
        with client.stream(method, target) as resp:
            return resp.status_code
    headers = {"content-type": "application/json"} if body is not None else {}
    return client.request(method, target, content=body, headers=headers).status_code


def test_help_curl_lines_work(account_client: TestClient) -> None:
    """Every example, private ones included (the default BitMart account is configured here)."""
    for item in account_client.get("/help?format=json").json()["endpoints"]:
        status = _replay(account_client, item["curl"])
        assert status in {200, 202}, (item["curl"], status)


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


# -- bad input: envelope, status, and Redis untouched ----------------------------------------------------

BAD_REQUESTS: list[tuple[str, str, str, dict[str, Any], int, str, str | None]] = [
    ("invalid json", "POST", "/klines/subscribe",
     {"content": b"{nope", "headers": {"content-type": "application/json"}}, 400, "invalid_json", None),
    ("json array", "POST", "/klines/subscribe", {"json": [KLINE_BODY]}, 400, "invalid_json", None),
    ("empty body", "POST", "/trades/subscribe", {}, 400, "invalid_json", None),
    ("missing symbol", "POST", "/klines/subscribe", {"json": {"tfs": ["1m"]}}, 400, "validation_error", "symbol"),
    ("bad symbol", "POST", "/klines/subscribe", {"json": {"symbol": "BTC USDT!", "tfs": ["1m"]}}, 400,
     "validation_error", "symbol"),
    ("bad symbol in bulk", "POST", "/trades/subscribe", {"json": {"symbols": ["BTCUSDT", "$"]}}, 400,
     "validation_error", "symbols"),
    ("unknown field", "POST", "/klines/subscribe", {"json": {**KLINE_BODY, "foo": 1}}, 400, "validation_error", "foo"),
    ("tfs on trades", "POST", "/trades/subscribe", {"json": KLINE_BODY}, 400, "validation_error", "tfs"),
    ("tfs not a list", "POST", "/klines/subscribe", {"json": {"symbol": "BTCUSDT", "tfs": "1m"}}, 400,
     "validation_error", "tfs"),
    ("tfs empty", "POST", "/klines/subscribe", {"json": {"symbol": "BTCUSDT", "tfs": []}}, 400, "validation_error",
     "tfs"),
    ("tf 3m", "POST", "/klines/subscribe", {"json": {"symbol": "BTCUSDT", "tfs": ["1m", "3m"]}}, 400,
     "validation_error", "tfs"),
    ("unknown exchange", "POST", "/klines/subscribe", {"json": {**KLINE_BODY, "exchange": "kraken"}}, 400,
     "validation_error", "exchange"),
    ("too many symbols", "POST", "/trades/subscribe", {"json": {"symbols": [f"S{i:03d}USDT" for i in range(201)]}},
     400, "validation_error", "symbols"),
    ("depth levels 0", "POST", "/depth/subscribe", {"json": {"symbol": "BTCUSDT", "levels": 0}}, 400,
     "validation_error", "levels"),
    ("depth levels 101", "POST", "/depth/subscribe", {"json": {"symbol": "BTCUSDT", "levels": 101}}, 400,
     "validation_error", "levels"),
    ("bitmart depth levels 51", "POST", "/depth/subscribe", {"json": {"symbol": "BTCUSDT", "levels": 51}}, 400,
     "validation_error", "levels"),
    ("gate depth levels 101", "POST", "/depth/subscribe",
     {"json": {"symbol": "BTC_USDT", "exchange": "gateio", "levels": 101}}, 400, "validation_error", "levels"),
    ("depth levels string", "POST", "/depth/subscribe", {"json": {"symbol": "BTCUSDT", "levels": "20"}}, 400,
     "validation_error", "levels"),
    ("gate has no 2h klines", "POST", "/klines/subscribe",
     {"json": {"symbol": "BTC_USDT", "tfs": ["2h"], "exchange": "gateio"}}, 400, "validation_error", "tfs"),
    ("ticker bad symbol", "POST", "/ticker/subscribe", {"json": {"symbol": "B T C"}}, 400, "validation_error",
     "symbol"),
    ("wait=abc", "POST", "/klines/subscribe?wait=abc", {"json": KLINE_BODY}, 400, "validation_error", "wait"),
    ("wait=31", "POST", "/klines/subscribe?wait=31", {"json": KLINE_BODY}, 400, "validation_error", "wait"),
    ("stop clear not bool", "POST", "/stop", {"json": {"clear": "maybe"}}, 400, "validation_error", "clear"),
    ("unsubscribe tf 3m", "POST", "/klines/unsubscribe", {"json": {"symbol": "BTCUSDT", "tfs": ["3m"]}}, 400,
     "validation_error", "tfs"),
    ("body over limit", "POST", "/klines/subscribe",
     {"content": orjson.dumps({"symbols": ["BTCUSDT"] * 1000, "tfs": ["1m"]}),
      "headers": {"content-type": "application/json"}}, 413, "payload_too_large", None),
    ("chunked body over limit", "POST", "/trades/subscribe",  # no Content-Length: the limit trips while reading
     {"content": [b'{"symbols": [', b'"A",' * 4000, b"]}"]}, 413, "payload_too_large", None),
    ("unknown path", "GET", "/nope", {}, 404, "not_found", None),
    ("unknown post path", "POST", "/foo/subscribe", {"json": KLINE_BODY}, 404, "not_found", None),
    ("wrong method", "GET", "/klines/subscribe", {}, 405, "method_not_allowed", None),
    ("wrong method on status", "POST", "/status", {}, 405, "method_not_allowed", None),
    ("private: no account configured", "POST", "/orders/subscribe", {}, 400, "validation_error", "account"),
    ("private: unknown field", "POST", "/orders/subscribe", {"json": {"symbol": "BTCUSDT"}}, 400, "validation_error",
     "symbol"),
    ("private: bad account name", "POST", "/positions/subscribe", {"json": {"account": "bad name!"}}, 400,
     "validation_error", "account"),
    ("private: account not a string", "POST", "/balances/subscribe", {"json": {"account": 7}}, 400,
     "validation_error", "account"),
    ("private: unknown exchange", "POST", "/orders/unsubscribe", {"json": {"exchange": "kraken"}}, 400,
     "validation_error", "exchange"),
    ("private: json array", "POST", "/balances/unsubscribe", {"json": []}, 400, "invalid_json", None),
    ("private: wait=abc", "POST", "/orders/subscribe?wait=abc", {}, 400, "validation_error", "wait"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "method", "path", "kwargs", "status", "code", "field"), BAD_REQUESTS,
                         ids=[b[0] for b in BAD_REQUESTS])  # fmt: skip
async def test_bad_input_answers_envelope_and_changes_nothing(
    client: TestClient, redis_bytes: Redis, name: str, method: str, path: str, kwargs: dict[str, Any], status: int,
    code: str, field: str | None,
) -> None:  # fmt: skip
    client.post("/klines/subscribe", json={"symbol": "ETHUSDT", "tfs": ["1h"]})
    client.post("/stop")
    before = await snapshot(redis_bytes)
    assert before  # something to protect
    err = assert_envelope(client.request(method, path, **kwargs), status, code)
    if field is not None:
        assert field in err["details"], err
    assert await snapshot(redis_bytes) == before


async def test_depth_levels_are_capped_per_exchange(client: TestClient, redis_bytes: Redis) -> None:
    # BitMart's depthIncrease keeps 50 levels (exchanges.md §1.6): more would publish levels that never update.
    before = await snapshot(redis_bytes)
    resp = client.post("/depth/subscribe", json={"symbols": ["BTCUSDT", "ETHUSDT"], "levels": 51})
    details = assert_envelope(resp, 400, "validation_error")["details"]
    assert details == {"levels": ["bitmart keeps at most 50 order-book levels per side; ask for 1..50"]}
    assert await snapshot(redis_bytes) == before
    for body in ({"symbol": "BTCUSDT", "levels": 50}, {"symbol": "BTC_USDT", "exchange": "gateio", "levels": 100},
                 {"symbol": "BTCUSDT", "exchange": "binanceusdm", "levels": 100}):  # fmt: skip
        assert client.post("/depth/subscribe", json=body).status_code == 202, body
    # levels are ignored on unsubscribe: a client holding an older, larger value can still leave
    resp = client.post("/depth/unsubscribe", json={"symbol": "BTCUSDT", "levels": 100})
    assert resp.status_code == 200 and resp.json()["removed"] == ["bitmart:depth:BTCUSDT"]


def test_tf_error_details_are_per_item(client: TestClient) -> None:
    resp = client.post("/klines/subscribe", json={"symbol": "BTCUSDT", "tfs": ["1m", "3m"]})
    details = assert_envelope(resp, 400, "validation_error")["details"]
    assert list(details) == ["tfs"] and list(details["tfs"]) == ["1"]
    assert details["tfs"]["1"][0].startswith("unknown timeframe '3m'")


def test_405_keeps_allow_header(client: TestClient) -> None:
    resp = client.get("/stop")
    assert_envelope(resp, 405, "method_not_allowed")
    assert resp.headers["allow"] == "POST"


# -- Redis down -----------------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_redis_down_answers_503(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(REDIS_URL=f"redis://127.0.0.1:{_closed_port()}/15")
    with TestClient(create_app(settings)) as c:
        assert_envelope(c.get("/status"), 503, "redis_unavailable")
        assert_envelope(c.post("/klines/subscribe", json=KLINE_BODY), 503, "redis_unavailable")
        assert_envelope(c.post("/stop"), 503, "redis_unavailable")
        assert_envelope(c.get("/sse?topic=bitmart:trade:BTCUSDT"), 503, "redis_unavailable")
        assert_envelope(c.post("/klines/subscribe", json={"tfs": ["1m"]}), 400, "validation_error")  # still 400
        assert c.get("/help").status_code == 200


def test_unexpected_error_is_500_envelope(settings: Settings, redis: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as c:

        async def boom(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError("boom")

        monkeypatch.setattr(app.state.dispatcher, "subscribe", boom)
        err = assert_envelope(c.post("/klines/subscribe", json=KLINE_BODY), 500, "internal_error")
    assert "boom" not in err["message"]  # no internals leak


def test_gap_summary_counts_publisher_gaps_per_reason() -> None:
    from app.routes.status import gap_summary

    connections = [{"gaps": {"takeover": 2}, "books": {"gaps": 1}}]
    workers = [{"publisher": {"gaps_published": 4, "gaps_by_reason": {"redis_backlog_overflow": 1, "redis_error": 3}}},
               {"publisher": {"gaps_published": 2}}]  # fmt: skip
    assert gap_summary(connections, workers) == {
        "book_sequence": 1, "redis_backlog_overflow": 3, "redis_error": 3, "takeover": 2,
    }
