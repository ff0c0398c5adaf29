"""SSE while its own redis-server restarts or is down: streams stay open and lose nothing; requests answer 503."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from tests.app._sse import KLINE, TRADE, alternating, connect, payload, xadd_many
from tests.e2e.harness import RedisServer, redis_server

# -- Redis outages (a private redis-server that the test stops and starts again) ----------------------------


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server keeping an append-only file, so a stop/start keeps the streams (a real restart)."""
    with redis_server(tmp_path / "redis", persistent=True) as server:
        yield server


async def test_redis_restart_keeps_streams_open_and_loses_nothing(
    start_server: Any, session: aiohttp.ClientSession, own_redis: RedisServer, own_client: Redis
) -> None:
    server = await start_server(REDIS_URL=own_redis.url(), SSE_PING_S="0.2")
    url = f"{server.url}/sse?topic={KLINE}&topic={TRADE}"
    client = await connect(session, url)
    await client.until("ready")
    await xadd_many(own_client, alternating(0, 10))
    seen = await client.take(10)
    cursor = seen[-1]["id"]
    await own_redis.astop()

    # The open stream stays open: keep-alive comments keep coming while Redis is away.
    assert (await client.next_comment(timeout_s=3)).startswith("ping")
    assert (await client.next_comment(timeout_s=3)).startswith("ping")
    assert server.hub.stats()["reader_up"] is False

    await own_redis.astart()
    # Written before the hub's reader has reconnected: read from its saved positions, not skipped.
    await xadd_many(own_client, alternating(10, 10))
    events = await client.take(10)
    assert [e["data"] for e in events] == [payload(t, i).decode() for t, i in alternating(10, 10)]
    assert server.hub.stats()["reader_up"] is True and server.hub.stats()["reconnects"] >= 1

    # A client that lost its stream during the outage resumes from its Last-Event-ID: nothing missed.
    again = await connect(session, url, last_event_id=cursor)
    _, resumed = await again.until("ready")
    assert [e["data"] for e in resumed] == [payload(t, i).decode() for t, i in alternating(10, 10)]
    await client.close()
    await again.close()


async def test_requests_while_redis_is_down_answer_503(
    start_server: Any, session: aiohttp.ClientSession, own_redis: RedisServer, own_client: Redis
) -> None:
    server = await start_server(REDIS_URL=own_redis.url())
    async with session.get(f"{server.url}/status") as resp:
        assert resp.status == 200
    await own_redis.astop()

    async with session.get(f"{server.url}/sse?topic={TRADE}") as resp:
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "2"
        error = (await resp.json())["error"]
    assert error["code"] == "redis_unavailable" and error["details"] == {} and error["timestamp"] > 0
    async with session.get(f"{server.url}/sse?topic={TRADE}", headers={"Last-Event-ID": "1-0"}) as resp:
        assert resp.status == 503 and resp.headers["Retry-After"] == "2"
    for method, path, body in [
        ("GET", "/status", None),
        ("POST", "/trades/subscribe", {"symbol": "BTCUSDT"}),
        ("POST", "/stop", None),
    ]:
        async with session.request(method, f"{server.url}{path}", json=body) as resp:
            assert resp.status == 503, (path, await resp.text())
            assert (await resp.json())["error"]["code"] == "redis_unavailable"

    await own_redis.astart()
    async with session.get(f"{server.url}/status") as resp:
        assert resp.status == 200
    client = await connect(session, f"{server.url}/sse?topic={TRADE}")
    await client.until("ready")
    await client.close()
