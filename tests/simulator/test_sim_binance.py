"""The simulator's Binance USD-M public side over loopback: acks, request errors, limits, envelopes, tape
replay, aggTrade, REST depth snapshots and the bridged diff stream, derived ticker."""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from decimal import Decimal
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import WSMsgType

from scripts import tapes
from scripts.sim import tapes as sim_tapes
from scripts.simulator import ExchangeSimulator
from tests.simulator._helpers import DECIMAL, N_TRADES, bitmart_sub, nothing_arrives, recv, send

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
    """``btcusdt@aggTrade`` is derived from the recorded raw trades (``scripts.sim.tapes.aggtrade``): every trade in exactly
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
