"""SSE under a real in-process Hypercorn server, read with aiohttp, events written to real Redis streams."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from hypercorn.asyncio import serve
from hypercorn.config import Config
from redis.asyncio import Redis
from sse_starlette.sse import AppStatus
from starlette.applications import Starlette

from app.main import create_app
from app.routes.sse import sse_frame
from app.sse_cursor import CursorError, fingerprint, parse_cursor
from app.sse_hub import SSEHub
from control import keys
from control.redis_client import make_redis
from control.settings import Settings
from tests.e2e.harness import RedisServer, redis_server

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


@pytest.fixture
async def start_server(make_settings: Callable[..., Settings], redis: Redis) -> AsyncIterator[Callable[..., Any]]:
    """Factory: ``await start_server(**env)`` -> Server on 127.0.0.1:<free port> (socket bound before serving)."""
    servers: list[Server] = []

    async def start(**env: str) -> Server:
        app = create_app(make_settings(**env))
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)  # connections queue in the backlog until hypercorn accepts: no readiness race
        port = sock.getsockname()[1]
        config = Config()
        config.bind = [f"fd://{sock.detach()}"]
        config.graceful_timeout = 5
        stop_event = asyncio.Event()

        async def trigger() -> None:
            await stop_event.wait()
            AppStatus.should_exit = True

        task = asyncio.create_task(serve(app, config, shutdown_trigger=trigger))
        server = Server(app, f"http://127.0.0.1:{port}", stop_event, task)
        servers.append(server)
        async with aiohttp.ClientSession() as s, s.get(f"{server.url}/help") as resp:  # waits for lifespan startup
            assert resp.status == 200
        return server

    try:
        yield start
    finally:
        for server in servers:
            if not server.task.done():
                await server.stop()
        AppStatus.should_exit = False  # process-global; nothing else resets it


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


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


# -- pure helpers ---------------------------------------------------------------------------------------


def test_sse_frame_and_cursor_parsing() -> None:
    frame = sse_frame("kline", b'{"a":1}', "1-0,2-3", 2000)
    assert frame == b'id: 1-0,2-3\nevent: kline\ndata: {"a":1}\nretry: 2000\n\n'
    assert sse_frame("x\ny", b"a\nb", None) == b"event: xy\ndata: a\ndata: b\n\n"
    fp = fingerprint([TRADE, KLINE])
    assert fp == fingerprint([KLINE, TRADE, KLINE]) != fingerprint([KLINE])
    assert fp == "4eed81d4"  # SHA-256 based: the same in every process, so cursors survive a server restart
    assert parse_cursor(f"{fp}:1-0, 2-5", [TRADE, KLINE]) == {KLINE: (1, 0), TRADE: (2, 5)}  # sorted order
    assert parse_cursor("7-1", [TRADE]) == {TRADE: (7, 1)}  # a bare id: one topic only
    for bad, topics in [("1-0,2-0", [KLINE, TRADE]), (f"{fp}:1-0", [KLINE, TRADE]), (f"{fp}:1-0,2-0", [KLINE]),
                        ("x", [KLINE]), (f"{fp}:1-0,2-{2**64}", [KLINE, TRADE]), ("", [KLINE])]:  # fmt: skip
        with pytest.raises(CursorError):
            parse_cursor(bad, topics)


# -- streaming ------------------------------------------------------------------------------------------


async def test_two_topics_interleaved_in_order(start_server: Any, session: aiohttp.ClientSession, redis: Redis) -> None:
    server = await start_server()
    client = await connect(session, f"{server.url}/sse?topic={KLINE}&topic={TRADE}")
    ready = await client.next()
    assert ready is not None and ready["event"] == "ready" and ready["retry"] == "2000"
    assert ready["id"] == cursor_of({KLINE: "0-0", TRADE: "0-0"})
    assert orjson.loads(ready["data"]) == {"type": "ready", "topics": [KLINE, TRADE]}
    items = await xadd_many(redis, alternating(0, 10))
    events = await client.take(10)
    assert [e["event"] for e in events] == ["kline", "trade"] * 5
    assert [e["data"] for e in events] == [payload(t, i).decode() for t, i in alternating(0, 10)]
    assert [e["id"] for e in events] == expect_cursor(items, {KLINE: "0-0", TRADE: "0-0"})
    assert all("retry" not in e for e in events)
    await client.close()


async def test_resume_with_last_event_id_loses_and_repeats_nothing(
    start_server: Any, session: aiohttp.ClientSession, redis: Redis
) -> None:
    server = await start_server()
    url = f"{server.url}/sse?topic={KLINE}&topic={TRADE}"
    client = await connect(session, url)
    await client.until("ready")
    await xadd_many(redis, alternating(0, 50))
    seen = await client.take(20)
    assert [e["data"] for e in seen] == [payload(t, i).decode() for t, i in alternating(0, 20)]
    cursor = seen[-1]["id"]
    await client.close()
    await server.hub.wait_for_subscribers(0, timeout_s=5)

    await xadd_many(redis, alternating(50, 30))
    again = await connect(session, url, last_event_id=cursor)
    ready, events = await again.until("ready")
    assert [e["data"] for e in events] == [payload(t, i).decode() for t, i in alternating(20, 60)]
    assert [e["event"] for e in events] == ["kline", "trade"] * 30
    assert events[0]["retry"] == "2000"
    assert ready["id"] == events[-1]["id"] == cursor_of({KLINE: f"{BASE_MS + 78}-0", TRADE: f"{BASE_MS + 79}-0"})
    await again.close()


async def test_gap_event_when_cursor_predates_retention(
    start_server: Any, session: aiohttp.ClientSession, redis: Redis
) -> None:
    server = await start_server()
    first = await xadd_many(redis, [(TRADE, i) for i in range(5)])
    cursor = first[1][1]  # the client saw entries 0 and 1
    await xadd_many(redis, [(TRADE, i) for i in range(5, 15)], maxlen=5)  # keeps 10..14 only
    client = await connect(session, f"{server.url}/sse?topic={TRADE}", last_event_id=cursor)
    gap = await client.next()
    assert gap is not None and gap["event"] == "gap" and gap["retry"] == "2000"
    assert orjson.loads(gap["data"]) == {"type": "gap", "topic": TRADE, "reason": "retention",
                                         "since": BASE_MS + 1, "until": BASE_MS + 10}  # fmt: skip
    _, events = await client.until("ready")
    assert [e["data"] for e in events] == [payload(TRADE, i).decode() for i in range(10, 15)]
    await client.close()


async def test_backlog_sends_last_n_first(start_server: Any, session: aiohttp.ClientSession, redis: Redis) -> None:
    server = await start_server()
    await xadd_many(redis, [(TRADE, i) for i in range(6)])
    client = await connect(session, f"{server.url}/sse?topic={TRADE}&backlog=3")
    _, events = await client.until("ready")
    assert [e["data"] for e in events] == [payload(TRADE, i).decode() for i in range(3, 6)]
    await client.close()


@pytest.mark.parametrize(
    ("target", "last_event_id", "field"),
    [
        ("/sse?topic=nope", None, "topic"),
        ("/sse", None, "topic"),
        ("/sse?topic=bitmart:kline:BTCUSDT", None, "topic"),
        ("/sse?topic=bitmart:kline:BTCUSDT:3m", None, "topic"),
        (f"/sse?topic={KLINE}&backlog=abc", None, "backlog"),
        ("/sse/klines/BTCUSDT?tf=3m", None, "tf"),
        ("/sse/klines/BTCUSDT", None, "tf"),
        ("/sse/trades/BTCUSDT?exchange=kraken", None, "exchange"),
    ],
)
async def test_bad_sse_requests_are_400(
    start_server: Any, session: aiohttp.ClientSession, target: str, last_event_id: str | None, field: str
) -> None:
    server = await start_server()
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    async with session.get(server.url + target, headers=headers) as resp:
        assert resp.status == 400
        error = (await resp.json())["error"]
    assert error["code"] == "validation_error" and field in error["details"], error


async def test_shortcuts_map_to_the_same_streams(
    start_server: Any, session: aiohttp.ClientSession, redis: Redis
) -> None:
    server = await start_server()
    klines = await connect(session, f"{server.url}/sse/klines/SSEAPPUSDT?tf=1m&exchange=bitmart")
    trades = await connect(session, f"{server.url}/sse/trades/sseappusdt")
    ready_k, ready_t = await klines.next(), await trades.next()
    assert ready_k is not None and orjson.loads(ready_k["data"])["topics"] == [KLINE]
    assert ready_t is not None and orjson.loads(ready_t["data"])["topics"] == [TRADE]
    await xadd_many(redis, [(KLINE, 1), (TRADE, 2)])
    k, t = await klines.next(), await trades.next()
    assert k is not None and k["event"] == "kline" and k["data"] == payload(KLINE, 1).decode()
    assert t is not None and t["event"] == "trade" and t["id"] == cursor_of({TRADE: f"{BASE_MS + 2}-0"})
    await klines.close()
    await trades.close()


async def test_new_topic_interrupts_a_blocked_read(
    start_server: Any, session: aiohttp.ClientSession, redis: Redis
) -> None:
    server = await start_server()
    server.hub.block_ms = 60_000  # only CLIENT UNBLOCK can make the reader notice the second topic in time
    first = await connect(session, f"{server.url}/sse?topic={KLINE}")
    await first.until("ready")
    second = await connect(session, f"{server.url}/sse?topic={TRADE}")
    await second.until("ready")
    await xadd_many(redis, [(TRADE, 1)])
    event = await second.next(timeout_s=5)
    assert event is not None and event["data"] == payload(TRADE, 1).decode()
    await first.close()
    await second.close()


async def test_three_clients_share_one_redis_read(
    start_server: Any, session: aiohttp.ClientSession, redis: Redis
) -> None:
    server = await start_server()
    clients = [await connect(session, f"{server.url}/sse?topic={KLINE}") for _ in range(3)]
    for client in clients:
        await client.until("ready")  # caught up: from here on entries only come through the hub
    before = server.hub.stats()
    assert before["subscribers"] == 3 and before["topics"] == 1 and before["readers"] == 1
    await xadd_many(redis, [(KLINE, i) for i in range(30)])
    received = await asyncio.gather(*(c.take(30) for c in clients))
    for events in received:
        assert [e["data"] for e in events] == [payload(KLINE, i).decode() for i in range(30)]
    after = server.hub.stats()
    assert after["entries_read"] - before["entries_read"] == 30  # each entry read from Redis once...
    assert after["delivered"] - before["delivered"] == 90  # ...and fanned out to the three clients
    for client in clients:
        await client.close()


async def test_slow_subscriber_overflow_catches_up_from_stream(
    start_server: Any, session: aiohttp.ClientSession, redis: Redis
) -> None:
    server = await start_server()
    server.hub.queue_max = 5  # tiny queues: one XREAD batch of 100 overflows them
    client = await connect(session, f"{server.url}/sse?topic={TRADE}")
    await client.until("ready")
    await xadd_many(redis, [(TRADE, i) for i in range(100)])
    events = await client.take(100)
    assert [e["data"] for e in events] == [payload(TRADE, i).decode() for i in range(100)]
    assert server.hub.stats()["overflows"] >= 1
    await client.close()


async def test_keepalive_comments(start_server: Any, session: aiohttp.ClientSession) -> None:
    server = await start_server(SSE_PING_S="0.2")
    client = await connect(session, f"{server.url}/sse?topic={TRADE}")
    await client.until("ready")
    assert (await client.next_comment(timeout_s=3)).startswith("ping")
    assert (await client.next_comment(timeout_s=3)).startswith("ping")
    await client.close()


async def test_client_disconnect_is_clean(
    start_server: Any, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    server = await start_server()
    clients = [await connect(session, f"{server.url}/sse?topic={TRADE}&topic={KLINE}") for _ in range(2)]
    for client in clients:
        await client.until("ready")
    assert server.hub.stats()["subscribers"] == 2
    for client in clients:
        await client.close()
    await server.hub.wait_for_subscribers(0, timeout_s=5)
    assert server.hub.stats()["topics"] == 0
    await server.stop()
    problems = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert problems == [], [r.getMessage() for r in problems]


async def test_server_shutdown_sends_bye(start_server: Any, session: aiohttp.ClientSession) -> None:
    server = await start_server()
    client = await connect(session, f"{server.url}/sse?topic={TRADE}")
    ready = await client.next()
    assert ready is not None
    stopping: Awaitable[None] = asyncio.create_task(server.stop())
    bye = await client.next()
    assert bye is not None and bye["event"] == "bye" and bye["retry"] == "2000" and bye["id"] == ready["id"]
    assert orjson.loads(bye["data"]) == {"type": "bye", "reason": "shutdown"}
    assert await client.next() is None  # clean end of the chunked body, no ClientPayloadError
    await stopping


# -- Redis outages (a private redis-server that the test stops and starts again) ----------------------------


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server keeping an append-only file, so a stop/start keeps the streams (a real restart)."""
    with redis_server(tmp_path / "redis", persistent=True) as server:
        yield server


@pytest.fixture
async def own_client(own_redis: RedisServer) -> AsyncIterator[Redis]:
    client = make_redis(own_redis.url(), decode=False)
    yield client
    await client.aclose()


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
