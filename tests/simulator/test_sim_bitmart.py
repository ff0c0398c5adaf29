"""The simulator's BitMart public socket, driven by real aiohttp WebSocket clients on loopback: acks, limits,
fixture replay, derived trades/klines, tickers, best bid/ask and depthIncrease."""

from __future__ import annotations

import itertools
import uuid
from decimal import Decimal
from typing import Any

import aiohttp
import orjson
from aiohttp import WSMsgType

from scripts import tapes
from scripts.sim import tapes as sim_tapes
from scripts.simulator import BITMART_MAX_FRAME_BYTES, ExchangeSimulator
from tests.simulator._helpers import DECIMAL, N_TRADES, RFC3339_NS, bitmart_sub, recv, send

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
