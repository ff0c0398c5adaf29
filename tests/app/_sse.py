"""The SSE test harness: an in-process Hypercorn server, an aiohttp SSE client, and the stream writers and
cursor helpers shared by ``test_sse*.py``."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import aiohttp
import orjson
import pytest
from redis.asyncio import Redis
from starlette.applications import Starlette

from app import sse_entries
from app.sse_cursor import fingerprint
from app.sse_hub import SSEHub
from control import keys

# A symbol of their own, so other suites writing BTCUSDT events to the same database do not interleave.
KLINE = "bitmart:kline:SSEAPPUSDT:1m"
TRADE = "bitmart:trade:SSEAPPUSDT"
BASE_MS = 1_732_300_000_000


@dataclass
class Server:
    app: Starlette
    url: str
    stop_event: asyncio.Event
    task: asyncio.Task[None]

    @property
    def hub(self) -> SSEHub:
        hub: SSEHub = self.app.state.hub
        return hub

    async def stop(self) -> None:
        self.stop_event.set()
        await asyncio.wait_for(self.task, 10)


@dataclass
class SSEClient:
    """Tiny text/event-stream parser over an aiohttp response."""

    resp: aiohttp.ClientResponse
    comments: list[str] = field(default_factory=list)

    async def next(self, timeout_s: float = 5.0) -> dict[str, str] | None:
        """The next event (fields event/id/data/retry), or None at end of stream."""
        event: dict[str, str] = {}
        async with asyncio.timeout(timeout_s):
            while True:
                raw = await self.resp.content.readline()
                if not raw:
                    return event or None
                line = raw.decode().removesuffix("\n").removesuffix("\r")
                if not line:
                    if event:
                        return event
                    continue
                if line.startswith(":"):
                    self.comments.append(line[1:].strip())
                    continue
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                event[name] = f"{event['data']}\n{value}" if name == "data" and "data" in event else value

    async def next_comment(self, timeout_s: float = 5.0) -> str:
        """Read until a comment line (keep-alive) arrives; events in between are dropped."""
        async with asyncio.timeout(timeout_s):
            while True:
                raw = await self.resp.content.readline()
                assert raw, "stream ended"
                if raw.startswith(b":"):
                    return raw[1:].decode().strip()

    async def until(self, kind: str, timeout_s: float = 5.0) -> tuple[dict[str, str], list[dict[str, str]]]:
        """Read up to the first event of type ``kind``; returns it and the events before it."""
        before = []
        while True:
            event = await self.next(timeout_s)
            assert event is not None, f"stream ended before {kind!r}"
            if event.get("event") == kind:
                return event, before
            before.append(event)

    async def take(self, n: int) -> list[dict[str, str]]:
        return [e for e in [await self.next() for _ in range(n)] if e is not None]

    async def close(self) -> None:
        self.resp.close()


async def connect(session: aiohttp.ClientSession, url: str, last_event_id: str | None = None) -> SSEClient:
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    resp = await session.get(url, headers=headers)
    assert resp.status == 200, await resp.text()
    assert resp.headers["content-type"].startswith("text/event-stream")
    return SSEClient(resp)


def payload(topic: str, i: int) -> bytes:
    if ":kline:" in topic:
        event = {"type": "kline", "exchange": "bitmart", "symbol": "SSEAPPUSDT", "timeframe": "1m",
                 "open_time": BASE_MS + i * 60_000, "close": f"{100 + i}.5", "closed": False}  # fmt: skip
    else:
        event = {"type": "trade", "exchange": "bitmart", "symbol": "SSEAPPUSDT", "trade_id": str(i),
                 "price": f"{100 + i}.25", "size": "0.001", "side": "buy"}  # fmt: skip
    return orjson.dumps(event)


async def xadd_many(redis: Redis, items: list[tuple[str, int]], maxlen: int | None = None) -> list[tuple[str, str]]:
    """XADD ``payload(topic, i)`` with explicit increasing ids (ms = BASE_MS + i) in one transaction."""
    async with redis.pipeline(transaction=True) as pipe:
        for topic, i in items:
            pipe.xadd(keys.event_stream(topic), {keys.STREAM_FIELD: payload(topic, i)}, id=f"{BASE_MS + i}-0",
                      maxlen=maxlen, approximate=False)  # fmt: skip
        await pipe.execute()
    return [(topic, f"{BASE_MS + i}-0") for topic, i in items]


def alternating(start: int, count: int) -> list[tuple[str, int]]:
    return [(KLINE if i % 2 == 0 else TRADE, i) for i in range(start, start + count)]


def cursor_of(last: dict[str, str]) -> str:
    """The id field for per-topic last ids ``last``: topic-set fingerprint, ids in sorted topic order."""
    return fingerprint(list(last)) + ":" + ",".join(last[t] for t in sorted(last))


def expect_cursor(items: list[tuple[str, str]], start: dict[str, str]) -> list[str]:
    """The id field after each of ``items``."""
    last = dict(start)
    out = []
    for topic, sid in items:
        last[topic] = sid
        out.append(cursor_of(last))
    return out


def count_serializations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The stream id of every entry the server serializes from now on (``sse_entries.wire_of``), to check that each
    event is built once per topic whatever the number of clients."""
    built: list[str] = []
    real = sse_entries.wire_of

    def counting(topic: str, stream_id: str, event: str, data: bytes) -> tuple[bytes, bytes]:
        built.append(stream_id)
        return real(topic, stream_id, event, data)

    monkeypatch.setattr(sse_entries, "wire_of", counting)
    return built
