"""The local exchange simulator, driven by real aiohttp WebSocket clients on loopback.

Waits are event-driven (``ws.receive`` and ``sim.wait_for``); the only fixed timeouts are the
short windows that prove something did *not* happen (dead peer, silent feed).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import WSMsgType

from scripts import sim_tapes, tapes
from scripts.simulator import BITMART_MAX_FRAME_BYTES, ExchangeSimulator, binance_stream_class

REPO = Path(__file__).resolve().parents[2]
DECIMAL = re.compile(r"^\d+(\.\d+)?$")
RFC3339_NS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$")
N_TRADES = 21_313
ABSENCE_S = 0.3  # window used only to show that nothing arrives


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def sim() -> AsyncIterator[ExchangeSimulator]:
    async with ExchangeSimulator(speed=0) as s:
        yield s


async def recv(ws: aiohttp.ClientWebSocketResponse, timeout: float = 10.0) -> Any:
    msg = await ws.receive(timeout=timeout)
    assert msg.type is WSMsgType.TEXT, msg
    return orjson.loads(msg.data)


async def send(ws: aiohttp.ClientWebSocketResponse, obj: Any) -> None:
    await ws.send_str(orjson.dumps(obj).decode())


async def nothing_arrives(ws: aiohttp.ClientWebSocketResponse) -> None:
    with pytest.raises(TimeoutError):
        await ws.receive(timeout=ABSENCE_S)


def bitmart_sub(*topics: str, action: str = "subscribe") -> dict[str, Any]:
    return {"action": action, "args": list(topics)}


# ---------------------------------------------------------------------- BitMart


async def test_bitmart_acks_each_topic_with_the_request(sim: ExchangeSimulator, session: aiohttp.ClientSession) -> None:
    sim.set_silent(True)  # acks only, so the frame order is exact
    ws = await session.ws_connect(sim.bitmart_public_url)
    req = bitmart_sub("futures/klineBin1m:BTCUSDT", "futures/trade:BTCUSDT")
    await send(ws, req)
    assert await recv(ws) == {
        "action": "subscribe",
        "group": "futures/klineBin1m:BTCUSDT",
        "success": True,
        "request": req,
    }
    assert await recv(ws) == {"action": "subscribe", "group": "futures/trade:BTCUSDT", "success": True, "request": req}
    assert sim.connections[0].subscribed == {"futures/klineBin1m:BTCUSDT", "futures/trade:BTCUSDT"}
    assert sim.connections[0].exchange == "bitmart" and sim.connections[0].path == "/api?protocol=1.1"


async def test_bitmart_invalid_topics_fail_with_wire_text(
    sim: ExchangeSimulator, session: aiohttp.ClientSession
) -> None:
    sim.set_silent(True)
    ws = await session.ws_connect(sim.bitmart_public_url)
    bad = [
        "futures/klineBin1h:BTCUSDT",
        "futures/klineBin3m:BTCUSDT",
        "futures/trade:NOPEUSDT",
        "futures/depth5:BTCUSDT",
    ]
    await send(ws, bitmart_sub(*bad, "futures/trade:ETHUSDT"))
    for topic in bad:
        assert await recv(ws) == {
            "action": "subscribe",
            "group": topic,
            "success": False,
            "error": f"Invalid channel: not found {topic}",
        }
    assert (await recv(ws))["success"] is True
    assert sim.connections[0].subscribed == {"futures/trade:ETHUSDT"}


async def test_bitmart_ping_non_json_and_protocol_ping(sim: ExchangeSimulator, session: aiohttp.ClientSession) -> None:
    ws = await session.ws_connect(sim.bitmart_public_url, autoping=False)
    await send(ws, {"action": "ping"})
    pong = await recv(ws)
    assert pong["group"] == "System" and pong["data"].startswith("pong+")
    uuid.UUID(pong["data"].removeprefix("pong+"))
    await ws.send_str("ping")  # plain text ping is rejected on the futures host (§1.5), socket stays open
    assert await recv(ws) == {"success": False, "error": "Invalid message: message must be JSON: ping"}
    await ws.ping(b"hb")
    msg = await ws.receive(timeout=5)
    assert msg.type is WSMsgType.PONG and msg.data == b"hb"
    assert sim.stats["pings_answered"] == 2 and len(sim.received) == 2


async def test_bitmart_frame_over_2048_bytes_closes_with_1009(
    sim: ExchangeSimulator, session: aiohttp.ClientSession
) -> None:
    sim.set_silent(True)

    def frame_of(size: int) -> str:
        head = orjson.dumps(bitmart_sub("futures/trade:ETHUSDT", "")).decode()
        return head.replace('""', '"' + "x" * (size - len(head)) + '"')

    ws = await session.ws_connect(sim.bitmart_public_url)
    ok = frame_of(BITMART_MAX_FRAME_BYTES)
    assert len(ok.encode()) == BITMART_MAX_FRAME_BYTES
    await ws.send_str(ok)
    assert (await recv(ws))["success"] is True  # accepted: acks come back
    assert (await recv(ws))["success"] is False
    await ws.send_str(frame_of(BITMART_MAX_FRAME_BYTES + 1))
    msg = await ws.receive(timeout=5)
    assert msg.type is WSMsgType.CLOSE and msg.data == 1009
    await sim.wait_for(lambda: not sim.connections)
    assert sim.stats["oversize_closes"] == 1


async def test_bitmart_ethusdt_replays_fixture_frames_once(
    sim: ExchangeSimulator, session: aiohttp.ClientSession
) -> None:
    topics = ["futures/klineBin1H:ETHUSDT", "futures/klineBin1D:ETHUSDT", "futures/trade:ETHUSDT"]
    ws = await session.ws_connect(sim.bitmart_public_url)
    await send(ws, bitmart_sub(*topics))
    assert [(await recv(ws))["group"] for _ in topics] == topics
    pushes = {}
    for _ in topics:
        msg = await ws.receive(timeout=5)
        pushes[orjson.loads(msg.data)["group"]] = msg.data
    for topic in topics:
        tape = sim_tapes.get_tape("bitmart", topic)
        assert tape is not None and tape.source == sim_tapes.SRC_BITMART_FIXTURE
        assert pushes[topic] == tape.frames[0]
    assert orjson.loads(pushes["futures/klineBin1D:ETHUSDT"])["data"]["items"][0]["ts"] == 1721030401
    # A duplicate subscribe is acked again and does not replay a second time.
    await send(ws, bitmart_sub("futures/trade:ETHUSDT"))
    assert (await recv(ws))["success"] is True
    await send(ws, {"action": "ping"})
    assert (await recv(ws))["group"] == "System"
    assert len(sim.sent_data["futures/trade:ETHUSDT"]) == 1


async def test_bitmart_btcusdt_derived_trades_and_klines(
    sim: ExchangeSimulator, session: aiohttp.ClientSession
) -> None:
    topics = ["futures/trade:BTCUSDT", "futures/klineBin1m:BTCUSDT", "futures/klineBin1W:BTCUSDT"]
    expected = {t: len(sim_tapes.get_tape("bitmart", t) or ()) for t in topics}
    assert expected["futures/trade:BTCUSDT"] == N_TRADES
    ws = await session.ws_connect(sim.bitmart_public_url)
    await send(ws, bitmart_sub(*topics))
    for _ in topics:
        assert (await recv(ws))["success"] is True
    got: dict[str, list[Any]] = {t: [] for t in topics}
    while sum(map(len, got.values())) < sum(expected.values()):
        frame = await recv(ws)
        got[frame["group"]].append(frame["data"])
    assert {t: len(v) for t, v in got.items()} == expected

    trades = [d[0] for d in got["futures/trade:BTCUSDT"]]
    assert all(len(d) == 1 for d in got["futures/trade:BTCUSDT"])
    assert trades[0]["trade_id"] == 5266583935 and trades[-1]["trade_id"] == 5266605247
    assert all(a["trade_id"] < b["trade_id"] for a, b in itertools.pairwise(trades))
    for t in trades[:500]:
        assert DECIMAL.match(t["deal_price"]) and DECIMAL.match(t["deal_vol"]) and RFC3339_NS.match(t["created_at"])
        assert t["way"] == (5 if t["m"] else 1) and t["symbol"] == "BTCUSDT"
    total = sum((Decimal(t["deal_vol"]) for t in trades), Decimal(0))

    # The last push of each bar is its exact aggregate: bar volumes add up to the traded volume.
    for topic in ("futures/klineBin1m:BTCUSDT", "futures/klineBin1W:BTCUSDT"):
        last_per_bar: dict[int, dict[str, Any]] = {}
        for data in got[topic]:
            item = data["items"][0]
            assert data["symbol"] == "BTCUSDT"
            assert all(DECIMAL.match(item[k]) for k in "ohlcv") and isinstance(item["ts"], int)
            last_per_bar[item["ts"]] = item
        assert sum((Decimal(b["v"]) for b in last_per_bar.values()), Decimal(0)) == total
    assert list(last_per_bar) == [1722816000]  # one weekly bar, opening Monday 2024-08-05 00:00 UTC
    assert len({d["items"][0]["ts"] for d in got["futures/klineBin1m:BTCUSDT"]}) == 6  # 23:54 ... 23:59


async def test_bitmart_unsubscribe_stops_delivery(session: aiohttp.ClientSession) -> None:
    async with ExchangeSimulator(speed=1.0) as sim:  # recorded pace: ~60 trades/s
        ws = await session.ws_connect(sim.bitmart_public_url)
        await send(ws, bitmart_sub("futures/trade:BTCUSDT"))
        assert (await recv(ws))["success"] is True
        for _ in range(3):
            assert (await recv(ws))["group"] == "futures/trade:BTCUSDT"
        await send(ws, bitmart_sub("futures/trade:BTCUSDT", action="unsubscribe"))
        while (frame := await recv(ws)).get("action") != "unsubscribe":
            assert frame["group"] == "futures/trade:BTCUSDT"  # data already in flight before the ack
        assert frame["success"] is True and frame["group"] == "futures/trade:BTCUSDT"
        await send(ws, {"action": "ping"})
        assert (await recv(ws))["group"] == "System"  # nothing of the stream after its unsubscribe ack
        assert sim.connections[0].subscribed == set()


async def test_unsubscribe_under_backpressure_keeps_other_streams(session: aiohttp.ClientSession) -> None:
    streams = ["btcusdt@depth@0ms", "btcusdt@bookTicker", "btcusdt@trade"]
    async with ExchangeSimulator(speed=0, loop=True, record_sent=False) as sim:
        await sim.preload()
        ws = await session.ws_connect(f"{sim.binance_base_url}/public/stream?streams={'/'.join(streams)}")
        # Not reading: all three replays end up blocked on the full socket (aiohttp's shared drain future).
        await sim.wait_for(lambda: bool(sim.connections) and len(sim.connections[0]._in_write) == 3)
        await send(ws, {"method": "UNSUBSCRIBE", "params": ["btcusdt@depth@0ms"], "id": 1})
        while "result" not in (frame := await recv(ws)):
            pass
        assert frame == {"result": None, "id": 1}
        seen: Counter[str] = Counter()
        while min(seen["btcusdt@bookTicker"], seen["btcusdt@trade"]) < 100:
            seen[(await recv(ws))["stream"]] += 1
        assert seen["btcusdt@depth@0ms"] == 0
        assert sorted(sim.connections[0]._tasks) == ["_keepalive", "btcusdt@bookTicker", "btcusdt@trade"]


# ---------------------------------------------------------------------- Binance


async def test_binance_acks_list_and_unsubscribe(sim: ExchangeSimulator, session: aiohttp.ClientSession) -> None:
    ws = await session.ws_connect(f"{sim.binance_base_url}/market/stream")
    # ethusdt is not on any tape: acked like production and silent, so only replies arrive here.
    await send(ws, {"method": "SUBSCRIBE", "params": ["ethusdt@aggTrade", "ethusdt@kline_1m"], "id": 1})
    assert await recv(ws) == {"result": None, "id": 1}
    await send(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 2})
    assert await recv(ws) == {"result": ["ethusdt@aggTrade", "ethusdt@kline_1m"], "id": 2}
    await send(ws, {"method": "UNSUBSCRIBE", "params": ["ethusdt@aggTrade"], "id": 3})
    assert await recv(ws) == {"result": None, "id": 3}
    await send(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 4})
    assert await recv(ws) == {"result": ["ethusdt@kline_1m"], "id": 4}
    await send(ws, {"method": "GET_PROPERTY", "params": ["combined"], "id": 5})
    assert await recv(ws) == {"result": True, "id": 5}
    c = sim.connections[0]
    assert (c.exchange, c.route, c.mode, c.subscribed) == ("binanceusdm", "market", "stream", {"ethusdt@kline_1m"})


@pytest.mark.parametrize(
    ("frame", "reply"),
    [
        (
            '{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":"a-uuid"}',
            {"error": {"code": 2, "msg": "Invalid request: request ID must be an unsigned integer"}, "id": "a-uuid"},
        ),
        (
            '{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":-1}',
            {"error": {"code": 2, "msg": "Invalid request: request ID must be an unsigned integer"}, "id": -1},
        ),
        (
            '{"method":"LIST_SUBSCRIPTIONS"}',
            {"error": {"code": 2, "msg": "Invalid request: request ID must be an unsigned integer"}, "id": None},
        ),
        (
            '{"method":"SUBSCRIBE","params":["btcusdt@nope"],"id":7}',
            {"error": {"code": 2, "msg": "Invalid request: invalid stream"}, "id": 7},
        ),
        (
            '{"method":"SUBSCRIBE","params":["BTCUSDT@trade"],"id":8}',
            {"error": {"code": 2, "msg": "Invalid request: invalid stream"}, "id": 8},
        ),
        (
            '{"method":"SUBSCRIBE","params":["btcusdt"],"id":9}',
            {"error": {"code": 2, "msg": "Invalid request: invalid stream"}, "id": 9},
        ),
    ],
)
async def test_binance_request_errors(
    sim: ExchangeSimulator, session: aiohttp.ClientSession, frame: str, reply: dict[str, Any]
) -> None:
    ws = await session.ws_connect(f"{sim.binance_base_url}/public/ws")
    await ws.send_str(frame)
    assert await recv(ws) == reply
    assert sim.connections[0].subscribed == set()


async def test_binance_invalid_json_and_unknown_method(sim: ExchangeSimulator, session: aiohttp.ClientSession) -> None:
    ws = await session.ws_connect(f"{sim.binance_base_url}/public/ws")
    await ws.send_str("{not json")
    reply = await recv(ws)
    assert reply["id"] is None and reply["error"]["code"] == 3 and reply["error"]["msg"].startswith("Invalid JSON: ")
    await send(ws, {"method": "PLEASE", "id": 4})
    reply = await recv(ws)
    assert reply["id"] == 4 and reply["error"]["code"] == 2


async def test_binance_reject(sim: ExchangeSimulator, session: aiohttp.ClientSession) -> None:
    sim.reject("btcusdt@kline_1m", "Invalid request: stream is gone")
    sim.reject("btcusdt@kline_5m")
    ws = await session.ws_connect(f"{sim.binance_base_url}/market/stream")
    await send(ws, {"method": "SUBSCRIBE", "params": ["btcusdt@kline_1m"], "id": 1})
    assert await recv(ws) == {"error": {"code": 2, "msg": "Invalid request: stream is gone"}, "id": 1}
    await send(ws, {"method": "SUBSCRIBE", "params": ["btcusdt@kline_5m"], "id": 2})
    assert await recv(ws) == {"error": {"code": 2, "msg": "Invalid request: invalid stream"}, "id": 2}
    assert sim.connections[0].subscribed == set() and "btcusdt@kline_1m" not in sim.sent_data
    sim.unreject("btcusdt@kline_5m")
    await send(ws, {"method": "SUBSCRIBE", "params": ["btcusdt@kline_5m"], "id": 3})
    assert await recv(ws) == {"result": None, "id": 3}
    # BitMart rejections use BitMart's shape.
    sim.reject("futures/trade:ETHUSDT", "delisted")
    bm = await session.ws_connect(sim.bitmart_public_url)
    await send(bm, bitmart_sub("futures/trade:ETHUSDT"))
    assert await recv(bm) == {
        "action": "subscribe",
        "group": "futures/trade:ETHUSDT",
        "success": False,
        "error": "delisted",
    }


async def test_binance_at_most_1024_streams_per_connection(
    sim: ExchangeSimulator, session: aiohttp.ClientSession
) -> None:
    ws = await session.ws_connect(f"{sim.binance_base_url}/public/ws")
    names = [f"sym{i}usdt@bookTicker" for i in range(1025)]  # unknown symbols: acked, no data
    await send(ws, {"method": "SUBSCRIBE", "params": names[:1024], "id": 1})
    assert await recv(ws) == {"result": None, "id": 1}
    await send(ws, {"method": "SUBSCRIBE", "params": names[1024:], "id": 2})
    reply = await recv(ws)
    assert reply["id"] == 2 and reply["error"]["code"] == 2
    assert len(sim.connections[0].subscribed) == 1024


async def test_binance_wrong_route_is_acked_but_silent(sim: ExchangeSimulator, session: aiohttp.ClientSession) -> None:
    ws = await session.ws_connect(f"{sim.binance_base_url}/public/stream")
    await send(ws, {"method": "SUBSCRIBE", "params": ["btcusdt@kline_1m", "btcusdt@trade"], "id": 1})
    assert await recv(ws) == {"result": None, "id": 1}
    streams = set()
    for _ in range(N_TRADES):
        streams.add((await recv(ws))["stream"])
    assert streams == {"btcusdt@trade"}
    assert "btcusdt@kline_1m" not in sim.sent_data
    assert sim.connections[0].subscribed == {"btcusdt@kline_1m", "btcusdt@trade"}
    assert sim.stats["route_mismatch_silenced"] == 1
    # Legacy unrouted /ws delivers only /public-class streams since 2026-04-23.
    legacy = await session.ws_connect(f"{sim.binance_base_url}/ws")
    await send(legacy, {"method": "SUBSCRIBE", "params": ["sushiusdt@aggTrade", "sushiusdt@bookTicker"], "id": 1})
    assert await recv(legacy) == {"result": None, "id": 1}
    assert (await recv(legacy))["e"] == "bookTicker"
    await sim.wait_for(lambda: len(sim.sent_data.get("sushiusdt@bookTicker", [])) == 305)
    assert "sushiusdt@aggTrade" not in sim.sent_data
    # The same kline stream on /market is delivered (derived from the 2024 trades).
    market = await session.ws_connect(f"{sim.binance_base_url}/market/stream?streams=btcusdt@kline_1m")
    frame = await recv(market)
    assert frame["stream"] == "btcusdt@kline_1m" and frame["data"]["k"]["i"] == "1m"


async def test_binance_stream_and_ws_mode_envelopes(sim: ExchangeSimulator, session: aiohttp.ClientSession) -> None:
    first_raw = next(raw for _, raw in tapes.read_hftbacktest() if raw.startswith('{"stream":"btcusdt@trade"'))
    stream = await session.ws_connect(f"{sim.binance_base_url}/public/stream?streams=btcusdt@trade")
    msg = await stream.receive(timeout=10)
    assert msg.data == first_raw  # byte-identical to the recorded line
    bare = await session.ws_connect(f"{sim.binance_base_url}/public/ws/btcusdt@trade")
    msg = await bare.receive(timeout=10)
    assert msg.data == first_raw[len('{"stream":"btcusdt@trade","data":') : -1]  # bare payload, same bytes
    # SET_PROPERTY combined switches a ws-mode socket to the envelope.
    kl = await session.ws_connect(f"{sim.binance_base_url}/market/ws")
    sim.set_silent(True)
    await send(kl, {"method": "SET_PROPERTY", "params": ["combined", True], "id": 1})
    assert await recv(kl) == {"result": None, "id": 1}
    await send(kl, {"method": "SUBSCRIBE", "params": ["sushiusdt@kline_1m"], "id": 2})
    assert await recv(kl) == {"result": None, "id": 2}
    sim.set_silent(False)
    frame = await recv(kl)
    assert frame["stream"] == "sushiusdt@kline_1m" and frame["data"]["e"] == "kline"


async def test_binance_more_than_10_frames_per_second_closes_1008(
    sim: ExchangeSimulator, session: aiohttp.ClientSession
) -> None:
    ws = await session.ws_connect(f"{sim.binance_base_url}/market/stream")
    for i in range(11):
        await send(ws, {"method": "LIST_SUBSCRIPTIONS", "id": i})
    for i in range(10):
        assert await recv(ws) == {"result": [], "id": i}
    msg = await ws.receive(timeout=5)
    assert msg.type is WSMsgType.CLOSE and msg.data == 1008
    assert sim.stats["rate_limit_closes"] == 1


async def test_binance_server_ping_and_pong_timeout(session: aiohttp.ClientSession) -> None:
    async with ExchangeSimulator(speed=0, binance_ping_interval_s=0.05, binance_pong_timeout_s=0.3) as sim:
        answering = await session.ws_connect(f"{sim.binance_base_url}/market/ws")
        # aiohttp answers pings only inside receive(), so keep one pending for the whole test.
        reader = asyncio.create_task(answering.receive())
        mute = await session.ws_connect(f"{sim.binance_base_url}/market/ws", autoping=False)
        msg = await mute.receive(timeout=5)
        assert msg.type is WSMsgType.PING
        t0 = time.monotonic()
        while (msg := await mute.receive(timeout=5)).type is WSMsgType.PING:
            pass
        assert msg.type is WSMsgType.CLOSE and msg.data == 1008
        assert time.monotonic() - t0 < 2.0
        assert sim.stats["pong_timeout_closes"] == 1
        # The answering client survives many ping rounds past the timeout.
        await sim.wait_for(lambda: sim.stats["pongs_received"] >= 10)
        await send(answering, {"method": "LIST_SUBSCRIPTIONS", "id": 1})
        assert orjson.loads((await reader).data) == {"result": [], "id": 1}


async def test_binance_speed0_replays_every_trade_in_order(
    sim: ExchangeSimulator, session: aiohttp.ClientSession
) -> None:
    await sim.preload()
    ws = await session.ws_connect(f"{sim.binance_base_url}/public/ws")
    t0 = time.perf_counter()
    await send(ws, {"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 1})
    assert await recv(ws) == {"result": None, "id": 1}
    ids = [(await recv(ws))["t"] for _ in range(N_TRADES)]
    elapsed = time.perf_counter() - t0
    assert ids[0] == 5266583935 and ids[-1] == 5266605247
    assert ids == list(range(ids[0], ids[-1] + 1))  # contiguous, in recorded order
    assert len(sim.sent_data["btcusdt@trade"]) == N_TRADES
    print(
        f"\nspeed=0 replay of btcusdt@trade: {N_TRADES} frames in {elapsed:.3f} s = {N_TRADES / elapsed:,.0f} frames/s"
    )


def test_binance_agg_trade_tape_aggregates_the_recorded_trades() -> None:
    """``btcusdt@aggTrade`` is derived from the recorded raw trades (``scripts.sim_aggtrade``): every trade in exactly
    one aggregate, in order; an aggregate is a maximal run of trades with the same ms, price and taker side."""
    raw = sim_tapes.get_tape("binanceusdm", "btcusdt@trade")
    agg = sim_tapes.get_tape("binanceusdm", "btcusdt@aggTrade")
    assert raw is not None and agg is not None and agg.derived and "aggregated" in agg.source
    trades = {t["t"]: t for t in map(orjson.loads, raw.frames)}
    aggs = [orjson.loads(f) for f in agg.frames]

    assert len(aggs) == 10_447
    assert [a["a"] for a in aggs] == list(range(aggs[0]["a"], aggs[0]["a"] + len(aggs)))  # contiguous ids
    assert [i for a in aggs for i in range(a["f"], a["l"] + 1)] == list(trades)  # each trade once, in order
    for a in aggs:
        members = [trades[i] for i in range(a["f"], a["l"] + 1)]
        assert {(t["T"], t["p"], t["m"]) for t in members} == {(a["T"], a["p"], a["m"])}
        assert Decimal(a["q"]) == sum(Decimal(t["q"]) for t in members) and DECIMAL.match(a["q"])
        assert a["E"] == members[-1]["E"] and list(a) == ["e", "E", "a", "s", "p", "q", "f", "l", "T", "m"]
    for prev, nxt in itertools.pairwise(aggs):  # maximal runs: neighbours differ
        assert (prev["T"], prev["p"], prev["m"]) != (nxt["T"], nxt["p"], nxt["m"])
    assert list(agg.times_s) == sorted(agg.times_s)
    assert max(a["l"] - a["f"] + 1 for a in aggs) == 113


async def test_binance_agg_trade_is_served_on_market_only(
    sim: ExchangeSimulator, session: aiohttp.ClientSession
) -> None:
    await sim.preload()
    market = await session.ws_connect(f"{sim.binance_base_url}/market/stream?streams=btcusdt@aggTrade")
    frames = [await recv(market) for _ in range(10_447)]
    assert {f["stream"] for f in frames} == {"btcusdt@aggTrade"}
    assert [f["data"]["f"] for f in frames[:3]] == [5266583935, 5266583936, 5266583937]
    assert frames[-1]["data"]["l"] == 5266605247
    public = await session.ws_connect(f"{sim.binance_base_url}/public/ws")
    await send(public, {"method": "SUBSCRIBE", "params": ["btcusdt@aggTrade"], "id": 1})
    assert await recv(public) == {"result": None, "id": 1}
    await nothing_arrives(public)  # acked on the wrong route, never delivered (binance_usdm.md §4)
    assert sim.status()["tapes"]["btcusdt@aggTrade"]["derived"] is True


async def test_replay_pacing_speed_and_rate_loop(session: aiohttp.ClientSession) -> None:
    tape = sim_tapes.get_tape("binanceusdm", "btcusdt@trade")
    assert tape is not None
    n = 200
    async with ExchangeSimulator(speed=50) as sim:
        ws = await session.ws_connect(f"{sim.binance_base_url}/public/ws/btcusdt@trade")
        await recv(ws)
        t0 = time.monotonic()
        for _ in range(n - 1):
            await recv(ws)
        expected = (tape.times_s[n - 1] - tape.times_s[0]) / 50
        assert expected * 0.8 <= time.monotonic() - t0 <= expected + 1.0
    async with ExchangeSimulator(rate=100, loop=True) as sim:
        ws = await session.ws_connect(sim.bitmart_public_url)
        await send(ws, bitmart_sub("futures/trade:ETHUSDT"))  # a one-frame tape, looped
        await recv(ws)
        first = await ws.receive(timeout=5)
        t0 = time.monotonic()
        for _ in range(4):
            assert (await ws.receive(timeout=5)).data == first.data
        assert time.monotonic() - t0 >= 0.035  # 4 frames at 100/s


async def rest_depth(session: aiohttp.ClientSession, sim: ExchangeSimulator, **params: str) -> tuple[int, Any, bytes]:
    async with session.get(f"{sim.binance_rest_url}/fapi/v1/depth", params=params) as r:
        return r.status, r.headers, await r.read()


async def test_binance_rest_depth_snapshots(sim: ExchangeSimulator, session: aiohttp.ClientSession) -> None:
    recorded = next(raw for _, raw in tapes.read_hftbacktest() if raw.startswith('{"lastUpdateId"'))
    status, _, body = await rest_depth(session, sim, symbol="BTCUSDT", limit="1000")
    assert status == 200 and body.decode() == recorded  # verbatim 2024 REST line
    full = orjson.loads(recorded)
    status, _, body = await rest_depth(session, sim, symbol="BTCUSDT", limit="5")
    assert orjson.loads(body) == full | {"bids": full["bids"][:5], "asks": full["asks"][:5]}
    status, _, body = await rest_depth(session, sim, symbol="BTCUSDT")  # default limit 500
    assert len(orjson.loads(body)["bids"]) == 500
    sushi = next(raw for url, _, raw in tapes.read_cryptofeed_http(tapes.BINANCE_2021_HTTP) if "SUSHIUSDT" in url)
    status, _, body = await rest_depth(session, sim, symbol="SUSHIUSDT", limit="1000")
    assert status == 200 and body.decode() == sushi
    status, _, body = await rest_depth(session, sim, symbol="ETHUSDT", limit="100")
    assert (status, orjson.loads(body)) == (400, {"code": -1121, "msg": "Invalid symbol."})
    status, _, body = await rest_depth(session, sim, symbol="BTCUSDT", limit="abc")
    assert status == 400 and orjson.loads(body)["code"] == -1130
    sim.fail_rest(2)
    for _ in range(2):
        status, headers, body = await rest_depth(session, sim, symbol="BTCUSDT", limit="1000")
        assert (status, headers["Retry-After"], orjson.loads(body)["code"]) == (429, "1", -1003)
    assert (await rest_depth(session, sim, symbol="BTCUSDT", limit="1000"))[0] == 200
    assert sim.stats["rest_binance_depth"] == sim.stats["rest_requests"] == 9
    assert sim.stats["rest_throttled"] == 2 and sim.stats["rest_errors"] == 2
    assert [r.status for r in sim.rest_requests][-3:] == [429, 429, 200]


async def test_binance_depth_100ms_plays_the_recorded_diff_stream_and_bridges(
    sim: ExchangeSimulator, session: aiohttp.ClientSession
) -> None:
    recorded = sim_tapes.get_tape("binanceusdm", "btcusdt@depth@0ms")
    assert recorded is not None and len(recorded) == 6551
    assert sim_tapes.tape_key("binanceusdm", "btcusdt@depth@100ms") == "btcusdt@depth@0ms"
    ws = await session.ws_connect(f"{sim.binance_base_url}/public/stream?streams=btcusdt@depth@100ms")
    # binance_usdm.md §6: buffer, then the snapshot; the bridging frame is near the start of the replay.
    _, _, body = await rest_depth(session, sim, symbol="BTCUSDT", limit="1000")
    last_id = orjson.loads(body)["lastUpdateId"]
    frames = [await recv(ws) for _ in range(len(recorded))]
    assert {f["stream"] for f in frames} == {"btcusdt@depth@100ms"}  # named as subscribed
    data = [f["data"] for f in frames]
    assert all(b["pu"] == a["u"] for a, b in itertools.pairwise(data))
    live = [d for d in data if d["u"] >= last_id]
    assert live[0]["U"] <= last_id <= live[0]["u"] and len(data) - len(live) == 4
    assert "btcusdt@depth@100ms" in sim.sent_data and "btcusdt@depth@0ms" not in sim.sent_data
    # A 2021 symbol: "@depth" (no speed) plays its recorded @depth@100ms tape, bridged by its snapshot.
    old = await session.ws_connect(f"{sim.binance_base_url}/public/ws/sushiusdt@depth")
    _, _, body = await rest_depth(session, sim, symbol="SUSHIUSDT", limit="1000")
    last_id = orjson.loads(body)["lastUpdateId"]
    data = [await recv(old) for _ in range(255)]
    live = [d for d in data if d["u"] >= last_id]
    assert live[0]["U"] <= last_id <= live[0]["u"] and data[0]["s"] == "SUSHIUSDT"


async def test_binance_derived_ticker(sim: ExchangeSimulator, session: aiohttp.ClientSession) -> None:
    tape = sim_tapes.get_tape("binanceusdm", "btcusdt@ticker")
    assert tape is not None and tape.derived and len(tape) == 344
    ws = await session.ws_connect(f"{sim.binance_base_url}/market/ws/btcusdt@ticker")
    ticks = [await recv(ws) for _ in range(len(tape))]
    assert all(t["e"] == "24hrTicker" and t["s"] == "BTCUSDT" for t in ticks)
    assert all(b["E"] - a["E"] >= 1000 for a, b in itertools.pairwise(ticks))
    last = ticks[-1]
    assert (last["F"], last["L"], last["n"]) == (5266583935, 5266605247, N_TRADES)
    for key in ("p", "P", "w", "c", "Q", "o", "h", "l", "v", "q"):
        assert re.match(r"^-?\d+\.\d+$", last[key]), key
    assert Decimal(last["p"]) == Decimal(last["c"]) - Decimal(last["o"])
    assert Decimal(last["l"]) <= Decimal(last["w"]) <= Decimal(last["h"])
    trade_tape = sim_tapes.get_tape("binanceusdm", "btcusdt@trade")
    assert trade_tape is not None
    volume = sum((Decimal(orjson.loads(f)["q"]) for f in trade_tape.frames), Decimal(0))
    assert Decimal(last["v"]) == volume
    # The same stream on /public is acked and never delivered (route rule).
    public = await session.ws_connect(f"{sim.binance_base_url}/public/ws")
    await send(public, {"method": "SUBSCRIBE", "params": ["btcusdt@ticker"], "id": 1})
    assert await recv(public) == {"result": None, "id": 1}
    await nothing_arrives(public)


async def test_bitmart_tickers_and_bookticker(sim: ExchangeSimulator, session: aiohttp.ClientSession) -> None:
    ws = await session.ws_connect(sim.bitmart_public_url)
    topics = ["futures/ticker:AXONUSDT", "futures/ticker", "futures/ticker:ETHUSDT"]
    await send(ws, bitmart_sub(*topics))
    assert [(await recv(ws))["success"] for _ in topics] == [True, True, True]
    pushes = {}
    for _ in range(2):
        frame = await recv(ws)
        pushes[frame["group"]] = frame["data"]
    assert pushes["futures/ticker:AXONUSDT@100ms"]["symbol"] == "AXONUSDT"  # group carries @100ms as recorded
    assert pushes["futures/ticker"]["last_price"] == "146.24"  # the doc-example fixture, its own channel only
    assert set(sim.sent_data) == {"futures/ticker:AXONUSDT", "futures/ticker"}  # ETHUSDT: valid, no frames

    derived = sim_tapes.get_tape("bitmart", "futures/ticker:BTCUSDT")
    assert derived is not None and derived.source == sim_tapes.SRC_DERIVED
    bm = await session.ws_connect(sim.bitmart_public_url)
    await send(bm, bitmart_sub("futures/ticker:BTCUSDT"))
    assert (await recv(bm))["success"] is True
    ticks = [await recv(bm) for _ in range(len(derived))]
    assert {t["group"] for t in ticks} == {"futures/ticker:BTCUSDT"}
    keys = ["symbol", "volume_24", "mark_price", "index_price", "last_price", "range"]
    keys += ["ask_price", "ask_vol", "bid_price", "bid_vol"]
    assert all(list(t["data"]) == keys for t in ticks)
    assert all(DECIMAL.match(t["data"][k]) for t in ticks[:50] for k in keys if k not in ("symbol", "range"))
    assert Decimal(ticks[-1]["data"]["ask_price"]) > Decimal(ticks[-1]["data"]["bid_price"])

    book = sim_tapes.get_tape("bitmart", "futures/bookticker:BTCUSDT")
    recorded = sim_tapes.get_tape("binanceusdm", "btcusdt@bookTicker")
    assert book is not None and recorded is not None and len(book) == len(recorded) == 66_089
    assert book.source == sim_tapes.SRC_DERIVED_BOOK
    await send(bm, bitmart_sub("futures/bookticker:BTCUSDT"))
    assert (await recv(bm))["success"] is True
    for raw in recorded.frames[:300]:
        src, got = orjson.loads(raw), await recv(bm)
        assert got == {
            "group": "futures/bookticker:BTCUSDT",
            "data": {
                "symbol": "BTCUSDT",
                "best_bid_price": src["b"],
                "best_bid_vol": src["B"],
                "best_ask_price": src["a"],
                "best_ask_vol": src["A"],
                "ms_t": src["T"],
            },
        }


def apply_depth(book: dict[str, dict[str, str]], data: dict[str, Any]) -> None:
    if data["type"] == "snapshot":
        book["asks"], book["bids"] = {}, {}
    for side in ("asks", "bids"):
        for level in data[side]:
            if level["vol"] == "0":
                book[side].pop(level["price"], None)
            else:
                book[side][level["price"]] = level["vol"]


def as_levels(book: dict[str, dict[str, str]], side: str) -> list[dict[str, str]]:
    prices = sorted(book[side], key=Decimal, reverse=side == "bids")
    return [{"price": p, "vol": book[side][p]} for p in prices]


async def test_bitmart_depth_increase_snapshot_versions_and_request(session: aiohttp.ClientSession) -> None:
    topic = "futures/depthIncrease5:BTCUSDT@100ms"
    tape = sim_tapes.get_tape("bitmart", topic)
    assert tape is not None and tape.source == sim_tapes.SRC_DERIVED_BOOK
    async with ExchangeSimulator(rate=400) as sim:
        ws = await session.ws_connect(sim.bitmart_public_url)
        await send(ws, bitmart_sub(topic, "futures/depthIncrease50:BTCUSDT"))
        assert [(await recv(ws))["success"] for _ in range(2)] == [True, True]
        books: dict[str, dict[str, dict[str, str]]] = {}
        versions: dict[str, int] = {}
        request_sent = snapshot_seen = False
        while not snapshot_seen or versions[topic] < 60:
            frame = await recv(ws)
            group, data = frame["group"], frame["data"]
            assert data["symbol"] == "BTCUSDT" and list(data) == ["symbol", "asks", "bids", "ms_t", "version", "type"]
            if group not in versions:
                assert data["type"] == "snapshot" and data["version"] == 1  # first push is the snapshot
            elif data["type"] == "snapshot":  # the answer to our request: same version, same book
                assert group == topic and request_sent and data["version"] == versions[topic]
                assert data["asks"] == as_levels(books[topic], "asks") and data["bids"] == as_levels(
                    books[topic], "bids"
                )
                snapshot_seen = True
            else:
                assert data["version"] == versions[group] + 1  # no gaps
            versions[group] = data["version"]
            book = books.setdefault(group, {"asks": {}, "bids": {}})
            apply_depth(book, data)
            levels = 50 if "depthIncrease50" in group else 5
            assert len(book["asks"]) <= levels and len(book["bids"]) <= levels
            assert min(map(Decimal, book["asks"])) > max(map(Decimal, book["bids"]))
            if group == topic and versions[topic] == 20 and not request_sent:
                await send(ws, {"action": "request", "args": [topic]})
                request_sent = True
        # every update plus the requested snapshot (the simulator may have sent later versions meanwhile)
        upto = [f for f in sim.sent_data[topic] if orjson.loads(f)["data"]["version"] <= versions[topic]]
        assert len(upto) == versions[topic] + 1
        await send(ws, {"action": "request", "args": ["futures/trade:BTCUSDT", "futures/depthIncrease30:BTCUSDT"]})
        errors = []
        while len(errors) < 2:
            if (frame := await recv(ws)).get("action") == "request":
                errors.append(frame)
        assert [e["success"] for e in errors] == [False, False]
        assert errors[1]["error"] == "Invalid channel: not found futures/depthIncrease30:BTCUSDT"


def test_bitmart_depth_increase_ends_on_the_true_top_n() -> None:
    """Snapshot + every update of each derived tape equals the Binance book rebuilt per binance_usdm.md §6."""
    lines = list(tapes.read_hftbacktest())
    snap = orjson.loads(next(raw for _, raw in lines if raw.startswith('{"lastUpdateId"')))
    book = {"bids": {p: q for p, q in snap["bids"]}, "asks": {p: q for p, q in snap["asks"]}}
    for _, raw in lines:
        if raw.startswith('{"stream":"btcusdt@depth@0ms"'):
            d = orjson.loads(raw)["data"]
            if d["u"] < snap["lastUpdateId"]:
                continue
            for side, key in (("bids", "b"), ("asks", "a")):
                for p, q in d[key]:
                    if Decimal(q) == 0:
                        book[side].pop(p, None)
                    else:
                        book[side][p] = q
    for levels in (5, 20, 50):
        for suffix in ("", "@100ms", "@200ms"):
            tape = sim_tapes.get_tape("bitmart", f"futures/depthIncrease{levels}:BTCUSDT{suffix}")
            assert tape is not None
            mine: dict[str, dict[str, str]] = {"asks": {}, "bids": {}}
            for i, raw in enumerate(tape.frames):
                data = orjson.loads(raw)["data"]
                assert data["version"] == i + 1 and (data["type"] == "snapshot") == (i == 0)
                apply_depth(mine, data)
            for side in ("asks", "bids"):
                assert as_levels(mine, side) == as_levels(book, side)[:levels]
            final = orjson.loads(sim_tapes.bitmart_depth_snapshot(tape, len(tape) - 1))["data"]
            assert final["asks"] == as_levels(mine, "asks") and final["version"] == len(tape)


async def test_bitmart_new_channels_validated(sim: ExchangeSimulator, session: aiohttp.ClientSession) -> None:
    sim.set_silent(True)
    ws = await session.ws_connect(sim.bitmart_public_url)
    bad = [
        "futures/depthIncrease30:BTCUSDT",
        "futures/depthIncrease5:BTCUSDT@50ms",
        "futures/depthIncrease5:NOPEUSDT@100ms",
        "futures/bookticker:NOPEUSDT",
        "futures/ticker:BTCUSDT@100ms",
        "futures/depthAll5:BTCUSDT",
    ]
    good = ["futures/depthIncrease20:BTCUSDT@200ms", "futures/bookticker:ETHUSDT", "futures/ticker:BTCUSDT"]
    await send(ws, bitmart_sub(*bad, *good))
    for topic in bad:
        assert (await recv(ws))["error"] == f"Invalid channel: not found {topic}"
    assert [(await recv(ws))["success"] for _ in good] == [True, True, True]
    assert sim.connections[0].subscribed == set(good)


# ---------------------------------------------------------------------- faults and control


async def test_drop_connections_is_abrupt(sim: ExchangeSimulator, session: aiohttp.ClientSession) -> None:
    bm = await session.ws_connect(sim.bitmart_public_url)
    bn = await session.ws_connect(f"{sim.binance_base_url}/market/stream")
    await sim.wait_for(lambda: len(sim.connections) == 2)
    assert await sim.drop_connections("bitmart") == 1
    msg = await bm.receive(timeout=5)
    assert msg.type in (WSMsgType.CLOSED, WSMsgType.ERROR) and bm.close_code == 1006
    await sim.wait_for(lambda: len(sim.connections) == 1)
    await send(bn, {"method": "LIST_SUBSCRIPTIONS", "id": 1})
    assert await recv(bn) == {"result": [], "id": 1}
    assert await sim.drop_connections() == 1
    await bn.receive(timeout=5)
    assert bn.close_code == 1006
    await sim.wait_for(lambda: not sim.connections)


async def test_dead_peer_sends_nothing(sim: ExchangeSimulator, session: aiohttp.ClientSession) -> None:
    ws = await session.ws_connect(sim.bitmart_public_url, autoping=False)
    sim.set_dead(True)
    await send(ws, {"action": "ping"})
    await ws.ping(b"x")
    await send(ws, bitmart_sub("futures/trade:ETHUSDT"))
    await sim.wait_for(lambda: len(sim.received) == 2 and sim.stats["protocol_pings_received"] == 1)
    await nothing_arrives(ws)  # no pong, no protocol pong, no ack, no data
    sim.set_dead(False)
    # The subscription taken while dead now plays; pings are answered again.
    assert orjson.loads((await ws.receive(timeout=5)).data)["group"] == "futures/trade:ETHUSDT"
    await send(ws, {"action": "ping"})
    assert (await recv(ws))["group"] == "System"


async def test_silent_feed_still_answers(sim: ExchangeSimulator, session: aiohttp.ClientSession) -> None:
    sim.set_silent(True)
    ws = await session.ws_connect(f"{sim.binance_base_url}/public/stream")
    await send(ws, {"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 1})
    assert await recv(ws) == {"result": None, "id": 1}
    await ws.ping(b"p")  # autoping client: the pong is consumed internally, the server counts it
    await sim.wait_for(lambda: sim.stats["pings_answered"] == 1)
    await nothing_arrives(ws)
    assert sim.sent_data == {}
    sim.set_silent(False)
    assert (await recv(ws))["data"]["t"] == 5266583935  # resumes from where it paused (the start)


async def test_http_control_surface(sim: ExchangeSimulator, session: aiohttp.ClientSession) -> None:
    ws = await session.ws_connect(sim.bitmart_public_url)
    sim.set_silent(True)
    await send(ws, bitmart_sub("futures/klineBin1m:BTCUSDT"))
    await recv(ws)
    async with session.get(f"{sim.http_url}/_sim/status") as r:
        status = await r.json()
    assert status["subscriptions"] == {"futures/klineBin1m:BTCUSDT": 1}
    assert status["connections"][0]["exchange"] == "bitmart"
    assert status["tapes"]["futures/klineBin1m:BTCUSDT"]["source"].startswith(
        "derived from Binance 2024 recorded trades"
    )
    assert status["tapes"]["btcusdt@trade"]["derived"] is False
    assert status["tapes"]["futures/depthIncrease5:BTCUSDT"]["source"].startswith(
        "derived from Binance 2024 recorded book"
    )
    assert status["tapes"]["futures.tickers:BTC_USDT"]["derived"] is True
    assert status["tapes"]["futures.order_book_update:RDNT_USDT"]["source"] == sim_tapes.SRC_GATE_2023
    assert status["rest_snapshots"]["gateio:RDNT_USDT"]["source"] == sim_tapes.SRC_GATE_2023
    assert status["urls"]["GATEIO_WS_URI"] == sim.gate_ws_url == f"{sim.base_url}/v4/ws/usdt"
    assert status["urls"]["GATEIO_REST_URI"] == status["urls"]["BINANCE_USDM_REST_URI"] == sim.http_url
    assert status["counters"]["subscribe_frames"] == 1 and status["faults"]["silent"] is True
    for path, key, value in (
        ("dead?on=1", "dead", True),
        ("dead?on=0", "dead", False),
        ("silent?on=0", "silent", False),
    ):
        async with session.post(f"{sim.http_url}/_sim/{path}") as r:
            assert (await r.json()) == {key: value}
    async with session.post(f"{sim.http_url}/_sim/reject", params={"native": "btcusdt@trade", "error": "nope"}) as r:
        assert (await r.json()) == {"rejected": {"btcusdt@trade": "nope"}}
    async with session.post(f"{sim.http_url}/_sim/fail_rest", params={"n": "2"}) as r:
        assert (await r.json()) == {"rest_failures_pending": 2}
    async with session.post(f"{sim.http_url}/_sim/drop", params={"exchange": "bitmart"}) as r:
        assert (await r.json()) == {"dropped": 1}
    await sim.wait_for(lambda: not sim.connections)


def test_binance_stream_classes() -> None:
    assert binance_stream_class("btcusdt@trade") == "public"
    assert binance_stream_class("btcusdt@depth@0ms") == "public"
    assert binance_stream_class("btcusdt@depth20@100ms") == "public"
    assert binance_stream_class("btcusdt@kline_1M") == "market"
    assert binance_stream_class("btcusdt@aggTrade") == "market"
    assert binance_stream_class("!markPrice@arr@1s") == "market"
    for bad in ("btcusdt@kline_1s", "btcusdt@Trade", "BTCUSDT@trade", "btcusdt@", "@trade", "btcusdt@depth@50ms"):
        assert binance_stream_class(bad) is None, bad


def test_every_catalogued_tape_loads() -> None:
    for exchange, native in sim_tapes.CATALOG:
        tape = sim_tapes.get_tape(exchange, native)
        assert tape is not None and len(tape) > 0, native
        assert list(tape.times_s) == sorted(tape.times_s), native


@pytest.mark.integration  # runs the simulator CLI in a subprocess
async def test_cli_prints_urls_and_exits_cleanly_on_sigterm() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "scripts.simulator",
        "--port",
        "0",
        "--speed",
        "0",
        "--log-level",
        "WARNING",
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )
    assert proc.stdout is not None
    try:
        urls: dict[str, str] = {}
        while len(urls) < 2:
            line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
            assert line, "simulator exited early"
            if "=" in line and not line.startswith("#"):
                key, _, value = line.strip().partition("=")
                urls[key] = value
        assert urls["BITMART_PUBLIC_WS_URI"].endswith("/api?protocol=1.1")
        async with aiohttp.ClientSession() as s, s.ws_connect(urls["BITMART_PUBLIC_WS_URI"]) as ws:
            await send(ws, {"action": "ping"})
            assert (await recv(ws))["group"] == "System"
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
