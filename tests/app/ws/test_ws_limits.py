"""``/ws`` limits and cuts (real Hypercorn, real Redis): subscriptions per connection, heartbeat (two missed pings),
idle timeout, and the slow client: cut with CONNECTION_LOST and its cursors while a fast client on the same topic
gets everything, then resumed by ``since`` with nothing lost or repeated."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
from redis.asyncio import Redis

from app.ws.access import Registry
from tests.app.test_observe import samples
from tests.app.ws._ws import KLINE, TRADE, desire, open_ws, xadd_range

Start = Callable[..., Any]


async def test_subscriptions_per_connection(start_server: Start, session: aiohttp.ClientSession,
                                            redis: Redis) -> None:  # fmt: skip
    await desire(redis, KLINE, TRADE, "bitmart:trade:THIRDUSDT")
    server = await start_server(WS_SUBSCRIPTIONS_MAX="2")
    ws = await open_ws(session, server)
    await ws.until("connected")
    await ws.send({"type": "subscribe", "topics": [KLINE, TRADE]})
    await ws.until("subscribed")
    await ws.send({"type": "subscribe", "id": 3, "topics": ["bitmart:trade:THIRDUSDT"]})
    error = await ws.next()
    assert error["id"] == 3 and error["error"]["code"] == "RATE_LIMITED" and "at most 2" in error["error"]["message"]
    await ws.send({"type": "unsubscribe", "topics": [KLINE]})
    await ws.until("unsubscribed")
    await ws.send({"type": "subscribe", "topics": ["bitmart:trade:THIRDUSDT"]})
    assert (await ws.next())["type"] == "subscribed"


async def test_heartbeat_two_missed_pings_close(start_server: Start, session: aiohttp.ClientSession,
                                                redis: Redis) -> None:  # fmt: skip
    server = await start_server(WS_HEARTBEAT_S="0.1")
    answering = await open_ws(session, server)
    silent = await open_ws(session, server)
    for _ in range(5):  # five pings answered: still open
        await answering.until("ping")
        await answering.send({"type": "pong"})
    seen, code = await silent.closed()
    assert [m["type"] for m in seen] == ["connected", "ping", "ping", "error"] and code == 1001
    assert seen[-1]["error"]["code"] == "CONNECTION_LOST" and seen[-1]["error"]["reason"] == "heartbeat missed"
    await answering.send({"type": "ping"})
    assert (await answering.until("pong"))[0]["type"] == "pong"


async def test_idle_without_subscriptions_is_closed(start_server: Start, session: aiohttp.ClientSession,
                                                    redis: Redis) -> None:  # fmt: skip
    await desire(redis, TRADE)
    server = await start_server(WS_IDLE_TIMEOUT_S="1")  # the busy client subscribes well within it
    idle = await open_ws(session, server)
    busy = await open_ws(session, server)
    await busy.until("connected")
    await busy.send({"type": "subscribe", "topics": [TRADE]})
    await busy.until("subscribed")
    seen, code = await idle.closed()
    assert seen[-1]["error"]["reason"] == "idle" and code == 1000
    registry: Registry = server.app.state.ws_registry
    assert registry.closes == {"idle": 1}  # the subscribed one stays
    await busy.send({"type": "ping"})
    await busy.until("pong")


async def raw_ws(url: str, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A WebSocket handshake on a plain socket with a small receive buffer; the caller then reads nothing (the
    reader stops taking bytes from the socket once its 64 KiB buffer is full, so the kernel buffers fill)."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))  # loopback: immediate
    reader, writer = await asyncio.open_connection(sock=sock, limit=65536)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write((f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())  # fmt: skip
    await writer.drain()
    return reader, writer


def mask(payload: bytes) -> bytes:
    """A masked client text frame (payload < 126 bytes)."""
    key = os.urandom(4)
    return bytes([0x81, 0x80 | len(payload)]) + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


async def test_slow_client_is_cut_others_get_everything_and_it_resumes_by_cursor(
    start_server: Start, session: aiohttp.ClientSession, redis: Redis
) -> None:
    await desire(redis, TRADE, state="active")
    server = await start_server(WS_SEND_QUEUE_MAX="1000")
    registry: Registry = server.app.state.ws_registry
    reader, writer = await raw_ws(server.url, "/ws?batch=0")
    fast = await open_ws(session, server)
    await fast.until("connected")
    await fast.send({"type": "subscribe", "topics": [TRADE]})
    await fast.until("subscribed")
    writer.write(mask(orjson.dumps({"type": "subscribe", "topics": [TRADE]})))
    await writer.drain()
    await server.hub.wait_for_subscribers(2, 5)
    sent: list[str] = []
    for start in range(0, 2400, 200):  # 24 MB in all: more than the socket buffers and 1,000 queued events hold
        sent += await xadd_range(redis, TRADE, start, 200, pad=10_000)
        fast_got = await fast.events(200)
        assert [m["cursor"] for m in fast_got] == sent[start:]  # the fast client never waits for the slow one
    await asyncio.wait_for(registry.wait_closes("slow client", 1), 10)
    # the slow client now reads what reached its socket: events in order, then the cut with its cursors
    await reader.readuntil(b"\r\n\r\n")
    cursors: list[str] = []
    error: dict[str, Any] = {}
    async with asyncio.timeout(10):
        while True:
            head = await reader.readexactly(2)
            length = head[1] & 0x7F
            if length == 126:
                length = int.from_bytes(await reader.readexactly(2))
            elif length == 127:
                length = int.from_bytes(await reader.readexactly(8))
            body = await reader.readexactly(length)
            if head[0] & 0x0F == 0x8:  # close
                assert int.from_bytes(body[:2]) == 1013
                break
            message = orjson.loads(body)
            if message["type"] == "trade":
                cursors.append(message["cursor"])
            elif message["type"] == "error":
                error = message["error"]
    writer.close()
    assert error["code"] == "CONNECTION_LOST" and error["reason"] == "slow client"
    assert len(cursors) < len(sent)
    assert cursors == sent[: len(cursors)], [(i, c, s) for i, (c, s) in enumerate(zip(cursors, sent)) if c != s][:3]
    assert error["cursors"] == {TRADE: cursors[-1]}
    resumed = await open_ws(session, server)
    await resumed.until("connected")
    await resumed.send({"type": "subscribe", "topics": [TRADE], "since": cursors[-1]})
    await resumed.until("subscribed")
    rest = await resumed.events(len(sent) - len(cursors))
    assert cursors + [m["cursor"] for m in rest] == sent
    exposition = server.app.state.metrics.exposition().decode()  # the cut is on /metrics (app.fanout_metrics)
    assert samples(exposition)[("feedplane_ws_server_closes_total", (("reason", "slow client"),))] == 1


async def test_server_shutdown_closes_with_1001_and_cursors(start_server: Start, session: aiohttp.ClientSession,
                                                            redis: Redis) -> None:  # fmt: skip
    await desire(redis, TRADE, state="active")
    server = await start_server()
    ws = await open_ws(session, server)
    await ws.until("connected")
    await ws.send({"type": "subscribe", "topics": [TRADE]})
    await ws.until("subscribed")
    ids = await xadd_range(redis, TRADE, 0, 2)
    assert [m["cursor"] for m in await ws.events(2)] == ids
    stopping = asyncio.create_task(server.stop())
    seen, code = await ws.closed()
    await stopping
    assert (
        code == 1001 and seen[-1]["error"]["reason"] == "shutdown" and seen[-1]["error"]["cursors"] == {TRADE: ids[-1]}
    )
