"""The ``/ws`` test harness: a small aiohttp WebSocket client that unpacks batched frames, and topic helpers."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import aiohttp
import orjson
from redis.asyncio import Redis

from control import keys
from control.store import ControlStore
from tests.app._sse import BASE_MS, KLINE, TRADE, Server, payload

__all__ = ["BASE_MS", "KLINE", "TRADE", "WSClient", "desire", "open_ws", "xadd_range"]


class WSClient:
    """One client: ``next()`` returns messages one by one (a batched frame, a JSON array, is split)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.pending: deque[dict[str, Any]] = deque()
        self.frames = 0
        self.close_code: int | None = None

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send_bytes(orjson.dumps(message))

    async def next(self, timeout_s: float = 5.0) -> dict[str, Any]:
        """The next message; raises ConnectionResetError (with the close code) when the server closed."""
        async with asyncio.timeout(timeout_s):
            while not self.pending:
                msg = await self.ws.receive()
                if msg.type != aiohttp.WSMsgType.TEXT:
                    # the code the server sent (aiohttp's own close_code reads 1006 when the server then drops)
                    self.close_code = msg.data if msg.type == aiohttp.WSMsgType.CLOSE else self.ws.close_code
                    raise ConnectionResetError(f"closed: {msg.type.name} {msg.data} {msg.extra}")
                self.frames += 1
                value = orjson.loads(msg.data)
                self.pending.extend(value if isinstance(value, list) else [value])
        return self.pending.popleft()

    async def until(self, kind: str, timeout_s: float = 5.0) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Messages up to the first of ``type`` ``kind``: (it, the ones before it)."""
        before = []
        while True:
            message = await self.next(timeout_s)
            if message["type"] == kind:
                return message, before
            before.append(message)

    async def events(self, n: int, timeout_s: float = 5.0) -> list[dict[str, Any]]:
        """The next ``n`` event messages (pings skipped)."""
        out: list[dict[str, Any]] = []
        while len(out) < n:
            message = await self.next(timeout_s)
            if message["type"] != "ping":
                out.append(message)
        return out

    async def closed(self, timeout_s: float = 5.0) -> tuple[list[dict[str, Any]], int | None]:
        """Read to the end: (every message before the close, the close code)."""
        seen: list[dict[str, Any]] = []
        try:
            while True:
                seen.append(await self.next(timeout_s))
        except ConnectionResetError:
            return seen, self.close_code


async def open_ws(session: aiohttp.ClientSession, server: Server, query: str = "", **kw: Any) -> WSClient:
    """Connect to ``/ws`` (the first message the server sends is ``connected``, or a refusal)."""
    url = server.url.replace("http://", "ws://") + "/ws" + (f"?{query}" if query else "")
    client = WSClient(await session.ws_connect(url, autoping=True, **kw))
    return client


async def desire(redis: Redis, *topics: str, state: str | None = None, error: str | None = None) -> None:
    """Make ``topics`` desired (somebody streams them), optionally with a worker-written state."""
    store = ControlStore(redis)
    await store.add_desired(list(topics), BASE_MS)
    if state is not None:
        await store.set_states({t: {"state": state, "error": error, "since": BASE_MS} for t in topics})


async def xadd_range(redis: Redis, topic: str, start: int, count: int, pad: int = 0) -> list[str]:
    """XADD events ``start .. start+count-1`` of ``topic`` with ids ``BASE_MS+i-0``; ``pad`` extra bytes each."""
    ids = []
    async with redis.pipeline(transaction=False) as pipe:
        for i in range(start, start + count):
            data = payload(topic, i)
            if pad:
                data = data[:-1] + b',"pad":"' + b"x" * pad + b'"}'
            pipe.xadd(keys.event_stream(topic), {keys.STREAM_FIELD: data}, id=f"{BASE_MS + i}-0")
            ids.append(f"{BASE_MS + i}-0")
        await pipe.execute()
    return ids
