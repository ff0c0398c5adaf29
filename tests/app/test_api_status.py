"""JSON API: the status shape, the help text and that every curl line of the help works."""

from __future__ import annotations

import shlex
from urllib.parse import urlsplit

from redis.asyncio import Redis
from starlette.testclient import TestClient

from app.errors import now_ms
from control import keys
from control.settings import Settings
from control.store import ControlStore
from tests.app._api import K1M, K5M


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
                         "gaps", "page"}  # fmt: skip
    assert body["page"] == {"limit": 3, "total": 3, "next": None}
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
    if parts.path.startswith(("/sse", "/dashboard/feed")):
        with client.stream(method, target) as resp:
            return resp.status_code
    headers = {"content-type": "application/json"} if body is not None else {}
    return client.request(method, target, content=body, headers=headers).status_code


def test_help_curl_lines_work(account_client: TestClient) -> None:
    """Every example, private ones included (the default BitMart account is configured here)."""
    for item in account_client.get("/help?format=json").json()["endpoints"]:
        status = _replay(account_client, item["curl"])
        if item["path"] == "/health/ready":  # no worker runs here: not ready (tests/app/test_health.py)
            assert status == 503, (item["curl"], status)
            continue
        assert status in {200, 202}, (item["curl"], status)
