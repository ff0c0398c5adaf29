"""``/ws`` while its own redis-server is stopped and started again: an open subscription loses nothing, a subscribe
during the outage answers CONNECTION_LOST and leaves the connection usable, a new connection is refused with 1013."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from control.redis_client import make_redis
from tests.app._auth import READ, write_secrets
from tests.app.ws._ws import KLINE, TRADE, desire, open_ws, xadd_range
from tests.e2e.harness import RedisServer, redis_server


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server with an append-only file, so a stop/start keeps the streams."""
    with redis_server(tmp_path / "redis", persistent=True) as server:
        yield server


@pytest.fixture
async def own_client(own_redis: RedisServer) -> AsyncIterator[Redis]:
    client = make_redis(own_redis.url())
    yield client
    await client.aclose()


async def test_redis_outage_keeps_subscriptions_and_refuses_cleanly(
    start_server: Any, session: aiohttp.ClientSession, own_redis: RedisServer, own_client: Redis
) -> None:
    await desire(own_client, KLINE, TRADE, state="active")
    server = await start_server(REDIS_URL=own_redis.url())
    ws = await open_ws(session, server)
    await ws.until("connected")
    await ws.send({"type": "subscribe", "topics": [TRADE]})
    await ws.until("subscribed")
    first = await xadd_range(own_client, TRADE, 0, 3)
    assert [m["cursor"] for m in await ws.events(3)] == first
    await own_redis.astop()
    await ws.send({"type": "subscribe", "id": "down", "topics": [KLINE]})
    error = await ws.next(timeout_s=10)
    assert (
        error["id"] == "down" and error["error"]["code"] == "CONNECTION_LOST" and "Redis" in error["error"]["message"]
    )
    await own_redis.astart()
    more = await xadd_range(own_client, TRADE, 3, 3)  # written before the hub's reader is back: still delivered
    assert [m["cursor"] for m in await ws.events(3, timeout_s=10)] == more
    await ws.send({"type": "subscribe", "id": "up", "topics": [KLINE]})
    assert (await ws.next())["id"] == "up"


async def test_new_connection_while_redis_is_down_is_refused_with_1013(
    start_server: Any, session: aiohttp.ClientSession, own_redis: RedisServer, tmp_path: Path
) -> None:
    server = await start_server(REDIS_URL=own_redis.url(), READ_TOKEN=READ, ACCOUNTS_FILE=write_secrets(tmp_path))
    await own_redis.astop()
    ws = await open_ws(session, server, f"token={READ}")
    seen, code = await ws.closed(timeout_s=10)
    assert [m["error"]["code"] for m in seen] == ["CONNECTION_LOST"] and code == 1013
