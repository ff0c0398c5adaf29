"""The simulator's Gate.io USDT futures socket (/v4/ws/usdt) and Gate REST order book, over loopback.

Same conventions as ``test_sim_bitmart.py``: real aiohttp clients, event-driven waits.
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, NamedTuple

import aiohttp
import orjson
import pytest
from aiohttp import WSMsgType

from scripts import tapes
from scripts.sim import gate_wire as sim_gate
from scripts.sim import tapes as sim_tapes
from scripts.simulator import ExchangeSimulator
from tests.simulator._helpers import recv

DECIMAL = re.compile(r"^-?\d+(\.\d+)?$")
N_TRADES = 21_313


def req(channel: str, payload: list[str], event: str = "subscribe", **extra: Any) -> str:
    return orjson.dumps(
        {"time": int(time.time()), **extra, "channel": channel, "event": event, "payload": payload}
    ).decode()


def tape(native: str) -> sim_tapes.Tape:
    t = sim_tapes.get_tape("gateio", native)
    assert t is not None
    return t


class Reply(NamedTuple):
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


async def order_book(session: aiohttp.ClientSession, sim: ExchangeSimulator, contract: str, **params: str) -> Reply:
    query = {"contract": contract, "limit": "100", "with_id": "true"} | params
    async with session.get(f"{sim.gate_rest_url}/api/v4/futures/usdt/order_book", params=query) as r:
        assert r.content_type == "application/json"
        return Reply(r.status, r.headers, await r.read())


# ---------------------------------------------------------------------- requests, acks, errors


async def test_ack_per_request_echoes_id_only_when_sent(sim: ExchangeSimulator, session: aiohttp.ClientSession) -> None:
    sim.set_silent(True)  # acks only
    ws = await session.ws_connect(sim.gate_ws_url)
    t0 = int(time.time())
    await ws.send_str(req("futures.trades", ["BTC_USDT", "ETH_USDT"], id=7))
    ack = await recv(ws)
    assert ack == {
        "time": ack["time"],
        "time_ms": ack["time_ms"],
        "id": 7,
        "channel": "futures.trades",
        "event": "subscribe",
        "error": None,
        "result": {"status": "success"},
    }
    assert list(ack) == ["time", "time_ms", "id", "channel", "event", "error", "result"]
    assert ack["time"] >= t0 and ack["time_ms"] // 1000 == ack["time"]
    await ws.send_str(req("futures.order_book_update", ["RDNT_USDT", "100ms", "100"]))  # no id: none echoed
    ack = await recv(ws)
    assert "id" not in ack and ack["channel"] == "futures.order_book_update" and ack["error"] is None
    await ws.send_str(req("futures.candlesticks", ["1m", "BTC_USDT"], id=9))
    assert (await recv(ws))["id"] == 9
    await ws.send_str(req("futures.trades", ["ETH_USDT"], event="unsubscribe", id=10))
    ack = await recv(ws)
    assert (ack["id"], ack["event"], ack["result"]) == (10, "unsubscribe", {"status": "success"})
    conn = sim.connections[0]
    assert (conn.exchange, conn.path) == ("gateio", "/v4/ws/usdt")
    assert conn.subscribed == {
        "futures.trades:BTC_USDT",
        "futures.order_book_update:RDNT_USDT",
        "futures.candlesticks:1m_BTC_USDT",
    }


@pytest.mark.parametrize(
    ("channel", "payload", "code", "message"),
    [
        ("futures.trades", ["BTC_USDT", "NOPE_USDT"], 2, "unknown contract NOPE_USDT"),
        ("futures.book_ticker", ["btc_usdt"], 2, "unknown contract btc_usdt"),
        ("futures.order_book_update", ["NOPE_USDT", "100ms", "100"], 2, "unknown contract NOPE_USDT"),
        ("futures.candlesticks", ["1m", "NOPE_USDT"], 2, "unknown contract NOPE_USDT"),
        (
            "futures.candlesticks",
            ["1m", "BTC_USDT", "ETH_USDT"],
            2,
            "invalid argument: futures.candlesticks takes one contract per request",
        ),
        (
            "futures.order_book_update",
            ["BTC_USDT", "ETH_USDT"],
            2,
            "invalid argument: futures.order_book_update takes one contract per request",
        ),
        ("futures.candlesticks", ["2m", "BTC_USDT"], 2, "invalid argument: unknown interval 2m"),
        ("futures.order_book_update", ["RDNT_USDT", "1000ms"], 2, "invalid argument: unknown frequency 1000ms"),
        (
            "futures.order_book_update",
            ["RDNT_USDT", "20ms", "100"],
            2,
            "invalid argument: level 100 not allowed with 20ms",
        ),
        ("futures.trades", [], 2, "invalid argument: payload is empty"),
        ("futures.nope", ["BTC_USDT"], 2, "unknown channel futures.nope"),
    ],
)
async def test_invalid_requests_fail_whole(
    sim: ExchangeSimulator, session: aiohttp.ClientSession, channel: str, payload: list[str], code: int, message: str
) -> None:
    ws = await session.ws_connect(sim.gate_ws_url)
    await ws.send_str(req(channel, payload, id=3))
    reply = await recv(ws)
    assert reply == {
        "time": reply["time"],
        "time_ms": reply["time_ms"],
        "id": 3,
        "channel": channel,
        "event": "subscribe",
        "error": {"code": code, "message": message},
        "result": {"status": "fail"},
    }
    assert sim.connections[0].subscribed == set() and sim.sent_data == {}


async def test_bad_structure_is_code_1(sim: ExchangeSimulator, session: aiohttp.ClientSession) -> None:
    ws = await session.ws_connect(sim.gate_ws_url)
    for frame in (
        "hello",
        '{"time":1,"channel":"futures.trades","event":"subscribe","payload":"BTC_USDT"}',
        '{"time":1,"channel":"futures.trades","event":"update","payload":["BTC_USDT"]}',
        '{"time":1,"event":"subscribe","payload":["BTC_USDT"]}',
    ):
        await ws.send_str(frame)
        reply = await recv(ws)
        assert reply["error"]["code"] == 1 and reply["result"] == {"status": "fail"}, frame
    assert sim.stats["request_errors"] == 4 and sim.connections[0].subscribed == set()


async def test_app_ping_pong_and_server_protocol_ping(session: aiohttp.ClientSession) -> None:
    async with ExchangeSimulator(speed=0, gate_ping_interval_s=0.05, gate_pong_timeout_s=0.3) as sim:
        mute = await session.ws_connect(sim.gate_ws_url, autoping=False)
        await mute.send_str('{"time":1700000000,"channel":"futures.ping"}')
        while (msg := await mute.receive(timeout=5)).type is WSMsgType.PING:
            pass
        pong = orjson.loads(msg.data)
        assert pong == {
            "time": pong["time"],
            "time_ms": pong["time_ms"],
            "channel": "futures.pong",
            "event": "",
            "result": None,
        }
        await mute.send_str('{"time":1700000000,"id":4,"channel":"futures.ping"}')
        while (msg := await mute.receive(timeout=5)).type is WSMsgType.PING:
            pass
        assert orjson.loads(msg.data)["id"] == 4
        # Protocol pings never answered: the simulator closes the socket.
        while (msg := await mute.receive(timeout=5)).type is WSMsgType.PING:
            pass
        assert msg.type is WSMsgType.CLOSE and msg.data == 1008
        assert sim.stats["server_pings_sent"] >= 1 and sim.stats["pong_timeout_closes"] == 1


# ---------------------------------------------------------------------- replay and book sync


async def test_order_book_update_replays_chain_and_rest_snapshot_bridges(
    sim: ExchangeSimulator, session: aiohttp.ClientSession
) -> None:
    contract = "RDNT_USDT"
    recorded = tape(f"futures.order_book_update:{contract}")
    assert recorded.source == sim_tapes.SRC_GATE_2023 and len(recorded) == 70
    ws = await session.ws_connect(sim.gate_ws_url)
    await ws.send_str(req("futures.order_book_update", [contract, "100ms", "100"], id=1))
    assert (await recv(ws))["result"] == {"status": "success"}
    # The documented recipe: buffer, fetch the snapshot with id, drop u < id + 1, start at U <= id + 1 <= u.
    resp = await order_book(session, sim, contract)
    assert resp.status == 200
    snap = resp.json()
    assert list(snap) == ["current", "update", "asks", "bids", "id"]
    raw = [(await ws.receive(timeout=10)).data for _ in range(len(recorded))]
    assert raw == list(recorded.frames)  # byte-identical to the 2023 capture
    buffered = [orjson.loads(r) for r in raw]
    results = [f["result"] for f in buffered]
    assert all(f["channel"] == "futures.order_book_update" and f["event"] == "update" for f in buffered)
    assert all(b["U"] == a["u"] + 1 for a, b in itertools.pairwise(results))  # no gaps
    base = snap["id"]
    live = [r for r in results if r["u"] >= base + 1]
    assert live[0]["U"] <= base + 1 <= live[0]["u"]  # the bridging frame is there
    # Applying from the bridge keeps the chain; sizes are absolute, 0 deletes.
    book = {side: {lv["p"]: lv["s"] for lv in snap[side]} for side in ("asks", "bids")}
    for r in live:
        for side, key in (("asks", "a"), ("bids", "b")):
            for lv in r[key]:
                if lv["s"] == 0:
                    book[side].pop(lv["p"], None)
                else:
                    book[side][lv["p"]] = lv["s"]
    assert book["asks"] and book["bids"]
    assert min(Decimal(p) for p in book["asks"]) > max(Decimal(p) for p in book["bids"])  # not crossed


async def test_rest_order_book_shape_limits_and_errors(sim: ExchangeSimulator, session: aiohttp.ClientSession) -> None:
    recorded = next(raw for url, _, raw in tapes.read_cryptofeed_http(tapes.GATE_2023_HTTP) if "OMG_USDT" in url)
    resp = await order_book(session, sim, "OMG_USDT")
    assert resp.body.decode() == recorded  # verbatim
    small = (await order_book(session, sim, "OMG_USDT", limit="5")).json()
    full = orjson.loads(recorded)
    assert small == full | {"asks": full["asks"][:5], "bids": full["bids"][:5]}
    no_id = (await order_book(session, sim, "OMG_USDT", with_id="false")).json()
    assert "id" not in no_id and no_id["asks"] == full["asks"]
    for contract, message in (
        ("NOPE_USDT", "Contract NOPE_USDT not found"),
        ("BTC_USDT", "Contract BTC_USDT has no recorded order book in the simulator"),
    ):
        resp = await order_book(session, sim, contract)
        assert resp.status == 400
        assert resp.json() == {"label": "CONTRACT_NOT_FOUND", "message": message}
    sim.fail_rest(1)
    resp = await order_book(session, sim, "OMG_USDT")
    assert resp.status == 429 and "Retry-After" not in resp.headers
    assert resp.json()["label"] == "TOO_MANY_REQUESTS"
    assert (await order_book(session, sim, "OMG_USDT")).status == 200  # only the next n calls fail
    assert sim.stats["rest_gate_order_book"] == 7 and sim.stats["rest_throttled"] == 1
    assert sim.stats["rest_errors"] == 2
    assert [r.status for r in sim.rest_requests] == [200, 200, 200, 400, 400, 429, 200]
    assert all(r.exchange == "gateio" for r in sim.rest_requests)


async def test_book_ticker_list_replays_recorded_frames(sim: ExchangeSimulator, session: aiohttp.ClientSession) -> None:
    contracts = ["WOO_USDT", "PHB_USDT", "OMG_USDT"]  # OMG_USDT sent no book_ticker in the capture: silent
    ws = await session.ws_connect(sim.gate_ws_url)
    await ws.send_str(req("futures.book_ticker", contracts, id=2))
    assert (await recv(ws))["id"] == 2
    expected = {c: list(tape(f"futures.book_ticker:{c}").frames) for c in contracts[:2]}
    got: dict[str, list[str]] = {c: [] for c in contracts}
    for _ in range(sum(map(len, expected.values()))):
        msg = await ws.receive(timeout=10)
        got[orjson.loads(msg.data)["result"]["s"]].append(msg.data)
    assert got == expected | {"OMG_USDT": []}  # byte-identical to the 2023 capture
    assert sim.sent_data["futures.book_ticker:WOO_USDT"] == expected["WOO_USDT"]


async def test_derived_btc_usdt_trades_candles_tickers(sim: ExchangeSimulator, session: aiohttp.ClientSession) -> None:
    ws = await session.ws_connect(sim.gate_ws_url)
    await ws.send_str(req("futures.trades", ["BTC_USDT"], id=1))
    await ws.send_str(req("futures.candlesticks", ["1m", "BTC_USDT"], id=2))
    await ws.send_str(req("futures.tickers", ["BTC_USDT"], id=3))
    natives = ["futures.trades:BTC_USDT", "futures.candlesticks:1m_BTC_USDT", "futures.tickers:BTC_USDT"]
    expected = {n: len(tape(n)) for n in natives}
    assert expected["futures.trades:BTC_USDT"] == N_TRADES
    assert all(tape(n).source == sim_tapes.SRC_DERIVED for n in natives)
    got: dict[str, list[Any]] = {"futures.trades": [], "futures.candlesticks": [], "futures.tickers": []}
    acks = 0
    while acks < 3 or sum(map(len, got.values())) < sum(expected.values()):
        frame = await recv(ws)
        if frame["event"] == "subscribe":
            acks += 1
            continue
        assert frame["event"] == "update" and frame["time_ms"] // 1000 == frame["time"]
        got[frame["channel"]].append(frame["result"])
    trades = [r[0] for r in got["futures.trades"]]
    assert len(trades) == N_TRADES and trades[0]["id"] == 5266583935
    assert all(a["id"] < b["id"] for a, b in itertools.pairwise(trades))
    for t in trades[:300]:
        assert isinstance(t["size"], str) and DECIMAL.match(t["size"]) and DECIMAL.match(t["price"])
        assert t["contract"] == "BTC_USDT" and t["create_time_ms"] // 1000 == t["create_time"]
    assert {t["size"][0] == "-" for t in trades} == {True, False}  # both taker sides
    total = sum((abs(Decimal(t["size"])) for t in trades), Decimal(0))
    # Each bar's last push is its aggregate; bar volumes add up to the traded contracts.
    last_per_bar = {r[0]["t"]: r[0] for r in got["futures.candlesticks"]}
    assert all(r[0]["n"] == "1m_BTC_USDT" and DECIMAL.match(r[0]["c"]) for r in got["futures.candlesticks"])
    assert sum(b["v"] for b in last_per_bar.values()) == total and len(last_per_bar) == 6
    ticks = [r[0] for r in got["futures.tickers"]]
    assert ticks[-1]["contract"] == "BTC_USDT" and Decimal(ticks[-1]["volume_24h"]) == total
    assert ticks[-1]["last"] == trades[-1]["price"]
    assert all(Decimal(a["volume_24h"]) <= Decimal(b["volume_24h"]) for a, b in itertools.pairwise(ticks))


async def test_recorded_candle_and_fixture_frames(sim: ExchangeSimulator, session: aiohttp.ClientSession) -> None:
    ws = await session.ws_connect(sim.gate_ws_url)
    await ws.send_str(req("futures.candlesticks", ["1m", "FRONT_USDT"]))
    assert (await recv(ws))["event"] == "subscribe"
    msg = await ws.receive(timeout=5)
    assert msg.data == tape("futures.candlesticks:1m_FRONT_USDT").frames[0]
    assert orjson.loads(msg.data)["result"][0]["n"] == "1m_FRONT_USDT"
    await ws.send_str(req("futures.trades", ["ETH_USDT"]))
    assert (await recv(ws))["event"] == "subscribe"
    trade = await recv(ws)
    assert trade["result"][0] == {
        "size": "-108.5",
        "id": 27753479,
        "create_time": 1545136464,
        "create_time_ms": 1545136464123,
        "price": "96.4",
        "contract": "ETH_USDT",
        "is_internal": True,
    }
    assert tape("futures.trades:ETH_USDT").source == sim_tapes.SRC_GATE_FIXTURE


# ---------------------------------------------------------------------- faults


async def test_reject_dead_silent_unsubscribe_drop(sim: ExchangeSimulator, session: aiohttp.ClientSession) -> None:
    sim.reject("futures.trades:ETH_USDT", "contract delisted")
    sim.reject("futures.candlesticks:1m_BTC_USDT")
    ws = await session.ws_connect(sim.gate_ws_url)
    await ws.send_str(req("futures.trades", ["BTC_USDT", "ETH_USDT"], id=1))
    assert (await recv(ws))["error"] == {"code": 2, "message": "contract delisted"}
    await ws.send_str(req("futures.candlesticks", ["1m", "BTC_USDT"], id=2))
    assert (await recv(ws))["error"] == {"code": 2, "message": "unknown contract BTC_USDT"}
    assert sim.connections[0].subscribed == set()
    # Dead: no ack, no pong, no data; the subscription taken while dead plays afterwards.
    sim.set_dead(True)
    await ws.send_str(req("futures.order_book_update", ["ZRX_USDT", "100ms"], id=3))
    await ws.send_str('{"time":1,"channel":"futures.ping"}')
    await sim.wait_for(lambda: len(sim.received) == 4)
    with pytest.raises(TimeoutError):
        await ws.receive(timeout=0.3)
    sim.set_dead(False)
    frames = [await recv(ws) for _ in range(2)]
    assert [f["result"]["s"] for f in frames] == ["ZRX_USDT", "ZRX_USDT"]
    await ws.send_str(req("futures.order_book_update", ["ZRX_USDT", "100ms"], event="unsubscribe", id=4))
    assert (await recv(ws))["id"] == 4 and sim.connections[0].subscribed == set()
    assert await sim.drop_connections("gateio") == 1
    await ws.receive(timeout=5)
    assert ws.close_code == 1006


def test_native_keys() -> None:
    assert sim_gate.native_key("futures.trades", "BTC_USDT") == "futures.trades:BTC_USDT"
    assert sim_gate.native_key("futures.candlesticks", "BTC_USDT", "1m") == "futures.candlesticks:1m_BTC_USDT"
    parsed = sim_gate.parse_request(req("futures.candlesticks", ["5m", "mark_BTC_USDT"]))
    assert parsed.error is None and parsed.natives == ["futures.candlesticks:5m_mark_BTC_USDT"]
