"""The SSE fan-out path (``app.sse_hub`` + ``app.sse_wire`` + ``app.sse_stream``) under a real Hypercorn server and
real Redis: each event serialized once per topic, joiners start at the hub's position, no loss and no duplicates
for clients on one or several topics, slow clients cut with a ``bye`` and resumed by cursor without loss."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp
import orjson
import pytest
from redis.asyncio import Redis

from app.sse_stream import SLOW_CONSUMER
from control import keys
from tests.app._sse import (
    KLINE,
    TRADE,
    alternating,
    connect,
    count_serializations,
    cursor_of,
    expect_cursor,
    payload,
    xadd_many,
)
from tests.app.test_observe import samples

pytestmark = pytest.mark.integration


async def test_every_client_gets_every_event_once_and_each_is_serialized_once(
    start_server: Any, session: aiohttp.ClientSession, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = count_serializations(monkeypatch)
    server = await start_server()
    singles = [await connect(session, f"{server.url}/sse?topic={TRADE}") for _ in range(6)]
    pairs = [await connect(session, f"{server.url}/sse?topic={TRADE}&topic={KLINE}") for _ in range(3)]
    starts = [orjson.loads((await c.until("ready"))[0]["data"]) for c in singles + pairs]
    assert all(s["type"] == "ready" for s in starts)
    built.clear()
    items = alternating(0, 200)
    written = []
    for start in range(0, 200, 50):  # bursts, as trades arrive
        written += await xadd_many(redis, items[start : start + 50])
    trades = [(t, sid) for t, sid in written if t == TRADE]
    for client in singles:
        events = await client.take(100)
        assert [e["data"] for e in events] == [payload(TRADE, i).decode() for i in range(1, 200, 2)]
        assert [e["id"] for e in events] == expect_cursor(trades, {TRADE: "0-0"})
    by_data = {payload(t, i).decode(): (t, sid) for (t, i), (_, sid) in zip(items, written)}
    for client in pairs:
        events = await client.take(200)
        got = [by_data[e["data"]] for e in events]
        assert sorted(got, key=lambda ts: ts[1]) == written  # every entry once
        for topic in (TRADE, KLINE):  # in order per topic (across topics the order may differ by a read)
            assert [sid for t, sid in got if t == topic] == [sid for t, sid in written if t == topic]
        assert [e["id"] for e in events] == expect_cursor(got, {TRADE: "0-0", KLINE: "0-0"})
    assert sorted(built) == sorted(sid for _, sid in written)  # once per entry, not once per client
    assert server.hub.stats()["delivered"] >= 6 * 100 + 3 * 200
    for client in singles + pairs:
        await client.close()


async def test_a_client_joining_a_busy_topic_gets_a_gapless_tail(
    start_server: Any, session: aiohttp.ClientSession, redis: Redis
) -> None:
    server = await start_server()
    first = await connect(session, f"{server.url}/sse?topic={TRADE}")
    await first.until("ready")  # the hub reads TRADE: the next clients join at its position, no Redis call

    async def write() -> None:
        for i in range(0, 300, 10):
            await xadd_many(redis, [(TRADE, j) for j in range(i, i + 10)])
            await asyncio.sleep(0.002)

    writer = asyncio.create_task(write())
    joiners = []
    for _ in range(5):
        await asyncio.sleep(0.01)
        joiners.append(await connect(session, f"{server.url}/sse?topic={TRADE}"))
    await writer
    for client in joiners:
        await client.until("ready")
        seen = []
        while not seen or seen[-1] != 299:
            event = await client.next()
            assert event is not None
            seen.append(orjson.loads(event["data"])["trade_id"])
            seen[-1] = int(seen[-1])
        assert seen == list(range(seen[0], 300)), "a joiner's events are one contiguous run up to the last entry"
    assert [orjson.loads(e["data"])["trade_id"] for e in await first.take(300)] == [str(i) for i in range(300)]
    for client in [first, *joiners]:
        await client.close()


def _events(raw: bytes) -> list[dict[str, str]]:
    """SSE events of a whole (HTTP/1.0, close-delimited) response body."""
    body = raw.split(b"\r\n\r\n", 1)[1].decode()
    out = []
    for block in body.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        if "event" in fields:
            out.append(fields)
    return out


async def test_a_slow_client_is_cut_with_a_reason_and_resumes_by_cursor_without_loss(
    start_server: Any, session: aiohttp.ClientSession, redis: Redis
) -> None:
    server = await start_server(SSE_SEND_TIMEOUT_S="0.3")
    fast = await connect(session, f"{server.url}/sse?topic={TRADE}")
    await fast.until("ready")
    port = int(server.url.rsplit(":", 1)[1])
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # takes almost nothing until it reads
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=1024)
    writer.write(f"GET /sse?topic={TRADE} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
    await server.hub.wait_for_subscribers(2, timeout_s=5)
    big = "x" * 4000
    stream = keys.event_stream(TRADE)
    for start in range(0, 1500, 100):
        async with redis.pipeline(transaction=False) as pipe:
            for i in range(start, start + 100):
                pipe.xadd(stream, {"d": orjson.dumps({"type": "trade", "trade_id": str(i), "pad": big})})
            await pipe.execute()
    # The fast client is not held back by the stuck one.
    got = [orjson.loads(e["data"])["trade_id"] for e in await fast.take(1500)]
    assert got == [str(i) for i in range(1500)]
    async with asyncio.timeout(10):
        while server.app.state.sse_ticker.stats()["cut_slow"] < 1:
            await asyncio.sleep(0.05)
    raw = await asyncio.wait_for(reader.read(), 10)  # the socket drains to the end: the server closed it
    writer.close()
    events = _events(raw)
    trades = [e for e in events if e["event"] == "trade"]
    bye = events[-1]
    assert bye["event"] == "bye" and orjson.loads(bye["data"]) == {"type": "bye", "reason": SLOW_CONSUMER}
    kept = [orjson.loads(e["data"])["trade_id"] for e in trades]
    assert kept == [str(i) for i in range(len(kept))] and len(kept) < 1500
    assert bye["id"] == (trades[-1]["id"] if trades else bye["id"])
    again = await connect(session, f"{server.url}/sse?topic={TRADE}", last_event_id=bye["id"])
    _, caught_up = await again.until("ready")
    rest = [orjson.loads(e["data"])["trade_id"] for e in caught_up]
    assert kept + rest == [str(i) for i in range(1500)]  # nothing lost, nothing twice
    # The fan-out's own counters are on /metrics: the cut, the entries read once for all clients, the reader.
    async with session.get(f"{server.url}/metrics") as resp:
        got = samples(await resp.text())
    assert got[("feedplane_sse_cut_total", (("reason", "slow_consumer"),))] == 1
    assert got[("feedplane_fanout_entries_read_total", ())] == 1500
    assert got[("feedplane_fanout_delivered_total", ())] >= 3000  # the fast client's and the stuck one's
    assert got[("feedplane_fanout_reader_up", ())] == 1 and got[("feedplane_fanout_subscribers", ())] == 2
    await again.close()
    await fast.close()


async def test_cursor_helpers_match_the_shared_frames(
    start_server: Any, session: aiohttp.ClientSession, redis: Redis
) -> None:
    """The shared single-topic frame carries the same cursor a per-client frame would (fingerprint of the topic)."""
    server = await start_server()
    client = await connect(session, f"{server.url}/sse?topic={KLINE}")
    await client.until("ready")
    [(_, sid)] = await xadd_many(redis, [(KLINE, 7)])
    event = await client.next()
    assert event is not None and event["id"] == cursor_of({KLINE: sid})
    await client.close()
