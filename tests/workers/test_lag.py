"""Lag visibility (``workers.lag``): a worker that cannot keep up shows how far behind it is in its status record.

Real parts: the session's redis-server, a real local WebSocket server (the benchmarks' fake exchange,
``scripts.benchkit.exchange``: quick to start) sending the recorded Binance trades as aggTrade frames at a fixed rate, the real ``Publisher`` and ``ExchangeConnection``. The fault: the publisher's writes
are paused (as while Redis is away), so events wait in its queue (write lag), its queue reaches the high-water
mark and the reader holds (TCP backpressure), so frames wait in the socket (read lag). ``lag_ms`` must grow with
both, then fall back once writes resume, and nothing may be cut or shed on the way.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from control.settings import Settings
from control.topics import Topic
from scripts.benchkit.exchange import FakeExchange
from scripts.benchkit.frames import build
from workers.connection import ExchangeConnection
from workers.exchanges.binanceusdm import BinanceUsdmAdapter
from workers.lag import ReadLag, socket_backlog
from workers.publisher import Publisher

pytestmark = pytest.mark.timeout(60)

ADAPTER = BinanceUsdmAdapter()  # aggTrade on /market
TOPIC = "binanceusdm:trade:BTCUSDT"
#: Hold budget min(ping, pong) / 2 = 2.5 s: the reader holds (frames pile up in the socket) rather than sheds.
SETTINGS = {"SUBSCRIBE_DELAY_MS": "50", "PING_INTERVAL_S": "5", "PONG_TIMEOUT_S": "5", "STALL_TIMEOUT_S": "10"}


async def until(predicate: Callable[[], bool], timeout_s: float) -> None:
    """Poll ``predicate`` (a status figure: nothing to await) every 20 ms; TimeoutError after ``timeout_s``."""
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.02)


async def test_a_worker_behind_shows_its_read_and_write_lag(redis_bytes: Redis,
                                                            make_settings: Callable[..., Settings]) -> None:  # fmt: skip
    pub = Publisher(redis_bytes, stream_maxlen=1_000_000, max_batch=50, high_water=200, max_queue=100_000)
    pub.start()
    exchange = FakeExchange(build(30_000).frames, rate=2000.0)
    server = await asyncio.start_server(exchange.handle, "127.0.0.1", 0)
    base = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    session = aiohttp.ClientSession()
    conn = ExchangeConnection(conn_id="c1", adapter=ADAPTER, url=ADAPTER.ws_url(base, "market"),
                              settings=make_settings(**SETTINGS), session=session, publisher=pub,
                              rng=random.Random(7))  # fmt: skip
    conn.set_topics([Topic.parse(TOPIC)])
    task = asyncio.create_task(conn.run())
    try:
        await until(lambda: pub.stats["events_published"] >= 200, 10)
        status: dict[str, Any] = conn.status()
        assert status["lag_ms"] < 500, status["lag"]  # keeping up

        pub.pause_writes()  # the fault: Redis takes nothing
        paused_at = time.monotonic()
        await until(lambda: conn.liveness.holding, 5)  # queue at the high-water mark: the reader holds
        conn.status()  # a sample while the reader still consumed bytes: the drain rate is known
        await until(lambda: conn.status()["lag"]["read_backlog_bytes"] > 20_000, 5)
        await until(lambda: conn.status()["lag_ms"] >= 1000, 5)
        behind = conn.status()
        lag = behind["lag"]
        print(f"\nbehind: {behind['lag_ms']} ms {lag}")
        assert lag["write_lag_ms"] >= 0.8 * (time.monotonic() - paused_at) * 1000 - 100  # the oldest queued event
        assert lag["read_lag_ms"] > 0 and behind["lag_ms"] == lag["read_lag_ms"] + lag["write_lag_ms"]

        resumed_at = time.monotonic()
        pub.resume_writes()
        await until(lambda: conn.status()["lag_ms"] < 300, 15)  # caught up: back to (near) nothing
        print(f"caught up in {time.monotonic() - resumed_at:.1f} s: {conn.status()['lag']}")
        assert conn.reconnects == 0 and conn.liveness.shed == 0  # nothing cut, nothing dropped
    finally:
        await conn.stop(timeout_s=2.0)
        await task
        await pub.close(timeout_s=2.0)
        server.close()
        await session.close()


def test_read_lag_is_the_backlog_over_the_drain_rate() -> None:
    lag = ReadLag()
    assert lag.sample(None, 10.0)["read_lag_ms"] == 0  # no socket: nothing waits
    lag.bytes_read = 500_000
    assert lag.sample(1_000, 11.0) == {"read_backlog_bytes": 1_000, "read_rate_bps": 500_000, "read_lag_ms": 2}
    assert lag.sample(250_000, 12.0)["read_lag_ms"] == 1000  # nothing consumed since 11.0: the time since then
    lag.bytes_read += 100_000
    assert lag.sample(50_000, 12.5)["read_lag_ms"] == 250  # 50 kB at 200 kB/s
    assert lag.sample(0, 13.0)["read_lag_ms"] == 0


def test_socket_backlog_counts_unread_bytes() -> None:
    import socket

    a, b = socket.socketpair()
    with a, b:
        assert socket_backlog(b) == 0
        a.sendall(b"x" * 1234)
        time.sleep(0.01)  # local delivery; the kernel copies synchronously, this only guards odd schedulers
        assert socket_backlog(b) == 1234
        b.recv(1000)
        assert socket_backlog(b) == 234
    assert socket_backlog(None) is None and socket_backlog(b) is None  # closed
