"""``/status`` at scale: filters, the summary form and paging of the subscription list."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from starlette.testclient import TestClient

from app.errors import now_ms
from control.store import ControlStore

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]


async def _world(client: TestClient, redis: Redis) -> None:
    """9 bitmart klines, 3 binanceusdm trades; one failed, three active (one of them stale)."""
    assert client.post("/klines/subscribe", json={"symbols": SYMBOLS, "tfs": ["1m", "5m", "1h"]}).status_code == 202
    body = {"symbols": SYMBOLS, "exchange": "binanceusdm"}
    assert client.post("/trades/subscribe", json=body).status_code == 202
    now = now_ms()
    await ControlStore(redis).set_states({
        "bitmart:kline:BTCUSDT:1m": {"state": "active", "error": None, "since": now, "conn": "c1"},
        "bitmart:kline:BTCUSDT:5m": {"state": "active", "error": None, "since": now - 600_000, "conn": "c1"},
        "binanceusdm:trade:ETHUSDT": {"state": "active", "error": None, "since": now, "conn": "c2"},
        "bitmart:kline:SOLUSDT:1h": {"state": "failed", "error": "unknown symbol", "since": now, "conn": None},
    })  # fmt: skip
    await ControlStore(redis).put_connections({"c1": {"exchange": "bitmart", "state": "open"},
                                               "c2": {"exchange": "binanceusdm", "state": "open"}})  # fmt: skip


def _topics(body: dict[str, Any]) -> list[str]:
    return [s["topic"] for s in body["subscriptions"]]


async def test_filters(client: TestClient, redis: Redis) -> None:
    await _world(client, redis)
    assert _topics(client.get("/status?state=failed").json()) == ["bitmart:kline:SOLUSDT:1h"]
    body = client.get("/status?exchange=binanceusdm").json()
    assert len(_topics(body)) == 3 and [c["id"] for c in body["connections"]] == ["c2"]
    assert _topics(client.get("/status?topic=bitmart:kline:BTCUSDT").json()) == [
        "bitmart:kline:BTCUSDT:1h", "bitmart:kline:BTCUSDT:1m", "bitmart:kline:BTCUSDT:5m"]  # fmt: skip
    assert _topics(client.get("/status?stale=1").json()) == ["bitmart:kline:BTCUSDT:5m"]  # STALL_TIMEOUT_S=60
    assert _topics(client.get("/status?state=active&exchange=bitmart&stale=0").json()) == ["bitmart:kline:BTCUSDT:1m"]
    for bad in ("state=gone", "exchange=kraken", "stale=maybe", "limit=0", "limit=x", "nope=1"):
        resp = client.get(f"/status?{bad}")
        assert resp.status_code == 400 and resp.json()["error"]["code"] == "validation_error", bad


async def test_summary_counts(client: TestClient, redis: Redis) -> None:
    await _world(client, redis)
    body = client.get("/status?summary=1").json()
    assert body["subscriptions"] == {
        "total": 12, "stale": 1,
        "by_state": {"active": 3, "failed": 1, "pending": 8},
        "by_exchange": {"binanceusdm": 3, "bitmart": 9},
        "by_reason": {"unknown symbol": 1},
    }  # fmt: skip
    assert body["connections"] == {"open": 2} and body["workers"] == {"total": 0, "alive": 0}
    assert client.get("/status?summary=1&exchange=gate").json()["subscriptions"]["total"] == 0  # alias accepted


async def test_paging_follows_next_to_the_end(client: TestClient, redis: Redis) -> None:
    await _world(client, redis)
    everything = _topics(client.get("/status").json())
    seen: list[str] = []
    url: str | None = "/status?limit=5&exchange=bitmart"
    pages = 0
    while url is not None:
        body = client.get(url).json()
        assert len(body["subscriptions"]) <= 5 and body["page"]["total"] == 9
        seen += _topics(body)
        url = body["page"]["next"]
        pages += 1
    assert pages == 2 and seen == [t for t in everything if t.startswith("bitmart:")]
