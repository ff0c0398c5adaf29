"""The simulator's faults and control surface (drop, dead peer, silent feed, HTTP control), replay pacing,
backpressure, the stream classes, the tape catalogue and the CLI."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections import Counter

import aiohttp
import orjson
import pytest
from aiohttp import WSMsgType

from scripts.sim import tapes as sim_tapes
from scripts.simulator import ExchangeSimulator, binance_stream_class
from tests.simulator._helpers import REPO, bitmart_sub, nothing_arrives, recv, send


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
