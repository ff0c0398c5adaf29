"""Shared helpers of the JSON API tests: the Redis snapshot that proves bad input changes nothing, the error
envelope check, request bodies."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from app.errors import now_ms

KLINE_BODY = {"symbol": "BTCUSDT", "tfs": ["1m", "5m"]}
K1M, K5M = "bitmart:kline:BTCUSDT:1m", "bitmart:kline:BTCUSDT:5m"


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


# -- private streams (orders, positions, balances of one account) -------------------------------------------

BM_ENV = {"BITMART_API_KEY": "bm-key-0123456789", "BITMART_API_SECRET": "bm-secret-0123456789",
          "BITMART_API_MEMO": "bm-memo-0123"}  # fmt: skip
