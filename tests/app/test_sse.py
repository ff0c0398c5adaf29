"""SSE under a real in-process Hypercorn server, read with aiohttp, events written to real Redis streams."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

import aiohttp
import orjson
import pytest
from redis.asyncio import Redis

from app.routes.sse import sse_frame
from app.sse_cursor import CursorError, fingerprint, parse_cursor
from tests.app._sse import BASE_MS, KLINE, TRADE, alternating, connect, cursor_of, expect_cursor, payload, xadd_many

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
