"""Binance USD-M: the recorded tapes (2021 cryptofeed, 2024 hftbacktest), every frame parsed, book chains
bridged by the REST snapshots."""

from __future__ import annotations

import collections
import itertools
import json
from decimal import Decimal
from typing import Any

import orjson

from scripts.tapes import (
    BINANCE_2021,
    BINANCE_2021_HTTP,
    BINANCE_2024,
    read_cryptofeed_http,
    read_cryptofeed_ws,
    read_hftbacktest,
)
from tests.exchanges.binanceusdm._helpers import (
    ADAPTER,
    BOOKTICKER_KEYS,
    KLINE_KEYS,
    TRADE_KEYS,
    assert_pu_chain,
    only_book,
    only_event,
    parser,
)
from workers.exchanges.base import BookUpdate

# --- recorded tapes -------------------------------------------------------------------------------


def test_2024_tape_every_frame_parses_and_only_the_rest_snapshot_is_unknown() -> None:
    # Arrange
    p = parser()
    counts: collections.Counter[str] = collections.Counter()
    events: list[tuple[str, dict[str, Any]]] = []
    book: list[BookUpdate] = []
    # Act
    for ts_ns, raw in read_hftbacktest(BINANCE_2024):
        parsed = p.parse(raw, ts_ns // 1_000_000)
        assert parsed.acks == [] and parsed.error is None and not parsed.pong
        if parsed.unknown:
            assert parsed.events == [] and parsed.book == [] and "stream" not in orjson.loads(raw)
            counts["unknown"] += 1
            continue
        assert len(parsed.events) + len(parsed.book) == 1
        events.extend(parsed.events)
        book.extend(parsed.book)
        for _, e in parsed.events:
            counts[e["type"]] += 1
        counts["depth"] += len(parsed.book)
    # Assert: every WS frame becomes an event or a book update; the REST depth-snapshot line (no envelope) does not
    assert counts == {"trade": 21_313, "bookticker": 66_089, "depth": 6_551, "unknown": 1}
    assert {t for t, _ in events} == {"binanceusdm:trade:BTCUSDT", "binanceusdm:bookticker:BTCUSDT"}
    trades = [e for _, e in events if e["type"] == "trade"]
    tickers = [e for _, e in events if e["type"] == "bookticker"]
    assert all(list(e) == TRADE_KEYS and e["side"] in ("buy", "sell") for e in trades)
    ids = [int(e["trade_id"]) for e in trades]
    assert ids == list(range(ids[0], ids[0] + len(ids)))  # contiguous on this tape (§5)
    assert collections.Counter(e["side"] for e in trades).keys() == {"buy", "sell"}
    assert all(list(e) == BOOKTICKER_KEYS for e in tickers)
    update_ids = [int(e["update_id"]) for e in tickers]
    assert all(a < b for a, b in itertools.pairwise(update_ids))  # strictly increasing (§5)
    assert all(type(e["ts_exchange"]) is int and Decimal(e["bid_price"]) < Decimal(e["ask_price"]) for e in tickers)
    assert {u.topic for u in book} == {"binanceusdm:depth:BTCUSDT"}
    assert assert_pu_chain(book) == {"BTCUSDT": 6_551}  # 0 breaks (§6)
    assert all(type(u.ts_exchange) is int and u.ts_received > 0 for u in book)
    assert sum(len(u.bids) + len(u.asks) for u in book) == 443_521
    assert all(type(level) is tuple and len(level) == 2 for u in book for level in u.bids + u.asks)


def test_2024_tape_spot_check_book_ticker_and_depth_frames() -> None:
    bbo_raw = (
        '{"stream":"btcusdt@bookTicker","data":{"e":"bookTicker","u":5123107839020,"s":"BTCUSDT","b":"61800.20",'
        '"B":"2.507","a":"61800.30","A":"2.510","T":1723161256313,"E":1723161256313}}'
    )
    depth_raw = (
        '{"stream":"btcusdt@depth@0ms","data":{"e":"depthUpdate","E":1723161600370,"T":1723161600319,"s":"BTCUSDT",'
        '"U":5123134944963,"u":5123134944963,"pu":5123134735497,"b":[["5000.00","2.321"]],"a":[]}}'
    )
    recorded = {line for _, line in read_hftbacktest(BINANCE_2024)}
    assert bbo_raw in recorded and depth_raw in recorded
    p = parser()

    bbo_topic, bbo = only_event(p.parse(bbo_raw, 1723161255088))
    update = only_book(p.parse(depth_raw, 1723161599098))

    assert bbo_topic == "binanceusdm:bookticker:BTCUSDT"
    assert bbo == {
        "type": "bookticker",
        "exchange": "binanceusdm",
        "symbol": "BTCUSDT",
        "bid_price": "61800.20",
        "bid_size": "2.507",
        "ask_price": "61800.30",
        "ask_size": "2.510",
        "update_id": "5123107839020",
        "ts_exchange": 1723161256313,
        "ts_received": 1723161255088,
    }
    assert list(bbo) == BOOKTICKER_KEYS
    assert update == BookUpdate(
        topic="binanceusdm:depth:BTCUSDT",
        symbol="BTCUSDT",
        bids=[("5000.00", "2.321")],
        asks=[],
        first_id=5123134944963,
        last_id=5123134944963,
        prev_last_id=5123134735497,
        snapshot=False,
        ts_exchange=1723161600370,
        ts_received=1723161599098,
    )


def test_2024_tape_rest_snapshot_parses_and_is_bridged_by_one_frame() -> None:
    lines = [(ts, raw) for ts, raw in read_hftbacktest(BINANCE_2024)]
    [(ts_ns, raw)] = [(ts, raw) for ts, raw in lines if raw.startswith('{"lastUpdateId"')]
    p = parser()
    book = [u for _, line in lines for u in p.parse(line, 0).book]

    snap = ADAPTER.parse_snapshot("BTCUSDT", raw.encode(), ts_ns // 1_000_000)

    body = json.loads(raw)
    assert (snap.topic, snap.symbol, snap.snapshot) == ("binanceusdm:depth:BTCUSDT", "BTCUSDT", True)
    assert (snap.first_id, snap.last_id, snap.prev_last_id) == (None, 5123107852948, None)
    assert (snap.ts_exchange, snap.ts_received) == (1723161256501, ts_ns // 1_000_000)
    assert len(snap.bids) == len(snap.asks) == 1000
    assert snap.bids == [tuple(level) for level in body["bids"]] and snap.asks == [
        tuple(level) for level in body["asks"]
    ]
    assert snap.bids[0] == ("61800.20", "2.909")
    # §6 steps 3-4: after dropping frames with u < lastUpdateId, exactly one frame has U <= lastUpdateId <= u
    newer = [u for u in book if u.last_id >= snap.last_id]
    assert len(book) - len(newer) == 4
    assert [u.first_id <= snap.last_id <= u.last_id for u in newer].count(True) == 1
    assert newer[0].first_id <= snap.last_id <= newer[0].last_id


def test_2024_tape_spot_check_trade_frame() -> None:
    raw = (
        '{"stream":"btcusdt@trade","data":{"e":"trade","E":1723161256523,"T":1723161256523,"s":"BTCUSDT",'
        '"t":5266583939,"p":"61800.20","q":"0.015","X":"MARKET","m":true}}'
    )
    assert raw in {line for _, line in read_hftbacktest(BINANCE_2024)}

    topic, event = only_event(parser().parse(raw, 1723161255253))

    assert topic == "binanceusdm:trade:BTCUSDT"
    assert event == {
        "type": "trade",
        "exchange": "binanceusdm",
        "symbol": "BTCUSDT",
        "trade_id": "5266583939",
        "price": "61800.20",
        "size": "0.015",
        "side": "sell",  # m=true: buyer is maker, the taker sold
        "ts_exchange": 1723161256523,
        "ts_received": 1723161255253,
    }
    assert list(event) == TRADE_KEYS


def test_2021_tape_every_frame_parses() -> None:
    p = parser()
    kinds: collections.Counter[str] = collections.Counter()
    events: list[tuple[str, dict[str, Any]]] = []
    book: list[BookUpdate] = []
    for ts_s, raw in read_cryptofeed_ws(BINANCE_2021):
        parsed = p.parse(raw, int(ts_s * 1000))
        assert parsed.acks == [] and parsed.error is None and not parsed.unknown
        assert len(parsed.events) + len(parsed.book) == 1
        events.extend(parsed.events)
        book.extend(parsed.book)
        kinds[orjson.loads(raw)["stream"].partition("@")[2]] += 1

    symbols = {f"{s}USDT" for s in ("SUSHI", "AKRO", "KEEP", "CTK")}
    klines = [e for _, e in events if e["type"] == "kline"]
    trades = [e for _, e in events if e["type"] == "trade"]
    tickers = [e for _, e in events if e["type"] == "bookticker"]
    assert kinds == {"depth@100ms": 764, "bookTicker": 613, "aggTrade": 91, "kline_1m": 67}
    assert (len(klines), len(trades), len(tickers), len(book)) == (67, 91, 613, 764)
    assert sum(e["closed"] for e in klines) == 4
    assert all(list(e) == KLINE_KEYS for e in klines) and all(list(e) == TRADE_KEYS for e in trades)
    assert all(list(e) == BOOKTICKER_KEYS and e["update_id"].isdigit() for e in tickers)
    assert all(e["close_time"] == e["open_time"] + 59_999 and e["timeframe"] == "1m" for e in klines)
    assert {t for t, e in events if e["type"] == "kline"} == {f"binanceusdm:kline:{s}:1m" for s in symbols}
    assert {t for t, e in events if e["type"] == "trade"} <= {f"binanceusdm:trade:{s}" for s in symbols}
    assert {t for t, e in events if e["type"] == "bookticker"} == {f"binanceusdm:bookticker:{s}" for s in symbols}
    assert {u.topic for u in book} == {f"binanceusdm:depth:{s}" for s in symbols}
    assert sum(assert_pu_chain(book).values()) == 764  # 0 breaks per symbol (§6)


def test_2021_tape_spot_check_book_ticker_and_depth_frames() -> None:
    bbo_raw = (
        '{"stream":"sushiusdt@bookTicker","data":{"e":"bookTicker","u":600859600576,"s":"SUSHIUSDT","b":"7.6110",'
        '"B":"2","a":"7.6120","A":"297","T":1626992741012,"E":1626992741017}}'
    )
    depth_raw = (
        '{"stream":"keepusdt@depth@100ms","data":{"e":"depthUpdate","E":1626992743532,"T":1626992743425,'
        '"s":"KEEPUSDT","U":600859645270,"u":600859645270,"pu":600859644386,"b":[],"a":[["0.2589","0"]]}}'
    )
    recorded = {raw for _, raw in read_cryptofeed_ws(BINANCE_2021)}
    assert bbo_raw in recorded and depth_raw in recorded

    bbo_topic, bbo = only_event(parser().parse(bbo_raw, 1626992741062))
    update = only_book(parser().parse(depth_raw, 1626992743578))

    assert bbo_topic == "binanceusdm:bookticker:SUSHIUSDT"
    assert bbo == {
        "type": "bookticker",
        "exchange": "binanceusdm",
        "symbol": "SUSHIUSDT",
        "bid_price": "7.6110",
        "bid_size": "2",
        "ask_price": "7.6120",
        "ask_size": "297",
        "update_id": "600859600576",
        "ts_exchange": 1626992741017,
        "ts_received": 1626992741062,
    }
    assert (update.topic, update.bids, update.asks) == ("binanceusdm:depth:KEEPUSDT", [], [("0.2589", "0")])
    assert (update.first_id, update.last_id, update.prev_last_id) == (600859645270, 600859645270, 600859644386)
    assert (update.snapshot, update.ts_exchange, update.ts_received) == (False, 1626992743532, 1626992743578)


def test_2021_rest_snapshots_parse_and_each_is_bridged_by_one_frame() -> None:
    responses = list(read_cryptofeed_http(BINANCE_2021_HTTP))
    p = parser()
    book = [u for ts_s, raw in read_cryptofeed_ws(BINANCE_2021) for u in p.parse(raw, int(ts_s * 1000)).book]

    snapshots = []
    for url, ts_s, raw in responses:
        symbol = url.partition("symbol=")[2].partition("&")[0]
        snapshots.append(ADAPTER.parse_snapshot(symbol, raw.encode(), int(ts_s * 1000)))

    assert [s.symbol for s in snapshots] == ["SUSHIUSDT", "AKROUSDT", "KEEPUSDT", "CTKUSDT"]
    for snap, (url, ts_s, raw) in zip(snapshots, responses, strict=True):
        body = json.loads(raw)
        assert url.endswith("limit=1000")
        assert snap.topic == f"binanceusdm:depth:{snap.symbol}" and snap.snapshot is True
        assert (snap.first_id, snap.last_id, snap.prev_last_id) == (None, body["lastUpdateId"], None)
        assert (snap.ts_exchange, snap.ts_received) == (body["E"], int(ts_s * 1000))
        assert snap.bids == [tuple(x) for x in body["bids"]] and snap.asks == [tuple(x) for x in body["asks"]]
        assert snap.bids and snap.asks and all(type(level) is tuple for level in snap.bids + snap.asks)
        # §6 step 4: exactly one diff frame of that symbol has U <= lastUpdateId <= u
        same = [u for u in book if u.symbol == snap.symbol]
        assert [u.first_id <= snap.last_id <= u.last_id for u in same].count(True) == 1
    assert snapshots[0].bids[0] == ("7.6110", "6") and snapshots[0].last_id == 600859605926


def test_2021_tape_spot_check_closed_kline_and_agg_trade() -> None:
    closed_raw = (
        '{"stream":"sushiusdt@kline_1m","data":{"e":"kline","E":1626992760203,"s":"SUSHIUSDT","k":{"t":1626992700000,'
        '"T":1626992759999,"s":"SUSHIUSDT","i":"1m","f":126902874,"L":126902986,"o":"7.6080","c":"7.6170",'
        '"h":"7.6180","l":"7.6070","v":"3005","n":113,"x":true,"q":"22875.8590","V":"1900","Q":"14464.6960","B":"0"}}}'
    )
    agg_raw = (
        '{"stream":"ctkusdt@aggTrade","data":{"e":"aggTrade","E":1626992741575,"a":16599292,"s":"CTKUSDT",'
        '"p":"1.01100","q":"10","f":23961322,"l":23961322,"T":1626992741421,"m":false}}'
    )
    recorded = {raw for _, raw in read_cryptofeed_ws(BINANCE_2021)}
    assert closed_raw in recorded and agg_raw in recorded
    p = parser()

    k_topic, k = only_event(p.parse(closed_raw, 1626992760247))
    t_topic, t = only_event(p.parse(agg_raw, 1626992742289))

    assert k_topic == "binanceusdm:kline:SUSHIUSDT:1m"
    assert k == {
        "type": "kline",
        "exchange": "binanceusdm",
        "symbol": "SUSHIUSDT",
        "timeframe": "1m",
        "open_time": 1626992700000,
        "close_time": 1626992759999,
        "open": "7.6080",
        "high": "7.6180",
        "low": "7.6070",
        "close": "7.6170",
        "volume": "3005",
        "closed": True,
        "ts_exchange": 1626992760203,
        "ts_received": 1626992760247,
    }
    assert t_topic == "binanceusdm:trade:CTKUSDT"
    assert t == {
        "type": "trade",
        "exchange": "binanceusdm",
        "symbol": "CTKUSDT",
        "trade_id": "16599292",
        "price": "1.01100",
        "size": "10",
        "side": "buy",
        "ts_exchange": 1626992741421,
        "ts_received": 1626992742289,
    }
