"""Binance USD-M adapter: recorded tapes (2021 cryptofeed, 2024 hftbacktest), REST snapshots, fixtures, frames."""

from __future__ import annotations

import collections
import itertools
import json
from decimal import Decimal
from typing import Any

import orjson
import pytest

from control.accounts import Account
from control.settings import Settings, SettingsError
from control.topics import Topic
from scripts.simulator import binance_stream_class
from scripts.tapes import (
    BINANCE_2021,
    BINANCE_2021_HTTP,
    BINANCE_2024,
    read_cryptofeed_http,
    read_cryptofeed_ws,
    read_hftbacktest,
    sample_path,
)
from workers.exchanges import REGISTRY, configured_adapters
from workers.exchanges.base import Ack, AdapterError, BookUpdate, Parsed, RestRequest, SnapshotRequest
from workers.exchanges.binanceusdm import BinanceUsdmAdapter, BinanceUsdmParser
from workers.exchanges.binanceusdm.private import listen_key_request, order_status, parse_listen_key, private_ws_url

ADAPTER = BinanceUsdmAdapter()
NAUTILUS = "nautilus/binance-futures"
TRADE_KEYS = ["type", "exchange", "symbol", "trade_id", "price", "size", "side", "ts_exchange", "ts_received"]
KLINE_KEYS = [
    "type", "exchange", "symbol", "timeframe", "open_time", "close_time",
    "open", "high", "low", "close", "volume", "closed", "ts_exchange", "ts_received",
]  # fmt: skip
TICKER_KEYS = [
    "type", "exchange", "symbol", "last", "mark_price", "index_price", "high_24h", "low_24h", "volume_24h",
    "change_pct_24h", "funding_rate", "ts_exchange", "ts_received",
]  # fmt: skip
BOOKTICKER_KEYS = [
    "type", "exchange", "symbol", "bid_price", "bid_size", "ask_price", "ask_size", "update_id", "ts_exchange",
    "ts_received",
]  # fmt: skip


def parser() -> BinanceUsdmParser:
    return ADAPTER.new_parser()


def only_event(parsed: Parsed) -> tuple[str, dict[str, Any]]:
    assert parsed.acks == [] and not parsed.unknown and not parsed.pong and parsed.error is None
    assert len(parsed.events) == 1
    return parsed.events[0]


def only_book(parsed: Parsed) -> BookUpdate:
    assert parsed.events == [] and parsed.acks == [] and not parsed.unknown and parsed.error is None
    assert len(parsed.book) == 1
    return parsed.book[0]


def topic(channel: str, symbol: str = "BTCUSDT") -> Topic:
    return Topic("binanceusdm", channel, symbol)


def assert_pu_chain(updates: list[BookUpdate]) -> dict[str, int]:
    """Per symbol: every update's ``pu`` is the previous update's ``u`` (§6 step 5); returns updates per symbol."""
    last: dict[str, int] = {}
    counts: collections.Counter[str] = collections.Counter()
    breaks = []
    for u in updates:
        assert type(u.first_id) is int and type(u.last_id) is int and type(u.prev_last_id) is int
        assert u.first_id <= u.last_id and not u.snapshot
        if u.symbol in last and u.prev_last_id != last[u.symbol]:
            breaks.append((u.symbol, last[u.symbol], u.prev_last_id))
        last[u.symbol] = u.last_id
        counts[u.symbol] += 1
    assert breaks == []
    return dict(counts)


def kline(symbol: str, tf: str) -> Topic:
    return Topic("binanceusdm", "kline", symbol, tf)


def trade(symbol: str) -> Topic:
    return Topic("binanceusdm", "trade", symbol)


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


# --- nautilus fixtures (bare ws-mode payloads) ----------------------------------------------------


def fixture_bytes(name: str) -> bytes:
    return sample_path(f"{NAUTILUS}/{name}.json").read_bytes()


@pytest.mark.parametrize(("name", "closed"), [("kline_stream_open", False), ("kline_stream_closed", True)])
def test_nautilus_kline_fixtures(name: str, closed: bool) -> None:
    topic, event = only_event(parser().parse(fixture_bytes(name), 7))

    assert topic == "binanceusdm:kline:BTCUSDT:1m"
    assert event["closed"] is closed
    assert (event["open_time"], event["close_time"], event["ts_exchange"]) == (
        1638747660000,
        1638747719999,
        1638747660000,
    )
    assert (event["open"], event["high"], event["close"], event["volume"]) == ("0.0010", "0.0025", "0.0020", "1000")
    assert event["low"] == ("0.0010" if closed else "0.0015")
    assert list(event) == KLINE_KEYS


@pytest.mark.parametrize(("name", "trade_id"), [("trade_stream", "5933014"), ("agg_trade_stream", "5933014")])
def test_nautilus_trade_fixtures(name: str, trade_id: str) -> None:
    topic, event = only_event(parser().parse(fixture_bytes(name), 7))

    assert topic == "binanceusdm:trade:BTCUSDT"
    assert event == {
        "type": "trade",
        "exchange": "binanceusdm",
        "symbol": "BTCUSDT",
        "trade_id": trade_id,
        "price": "0.001",
        "size": "100",
        "side": "sell",
        "ts_exchange": 123456785,
        "ts_received": 7,
    }


def test_nautilus_ticker_fixture() -> None:
    topic_, event = only_event(parser().parse(fixture_bytes("ticker_stream"), 7))

    assert topic_ == "binanceusdm:ticker:BTCUSDT"
    assert event == {
        "type": "ticker",
        "exchange": "binanceusdm",
        "symbol": "BTCUSDT",
        "last": "16584.60000000",
        "mark_price": None,
        "index_price": None,
        "high_24h": "16764.89000000",
        "low_24h": "16456.51000000",
        "volume_24h": "122474.816",
        "change_pct_24h": "-0.786",
        "funding_rate": None,
        "ts_exchange": 1672515782136,
        "ts_received": 7,
    }
    assert list(event) == TICKER_KEYS


def test_nautilus_book_ticker_fixture_tolerates_new_keys() -> None:
    # carries "st" and "ps" (2026-06 COIN-M merge, §0): ignored
    topic_, event = only_event(parser().parse(fixture_bytes("book_ticker_stream"), 7))

    assert topic_ == "binanceusdm:bookticker:BNBUSDT"
    assert event == {
        "type": "bookticker",
        "exchange": "binanceusdm",
        "symbol": "BNBUSDT",
        "bid_price": "25.35190000",
        "bid_size": "31.21000000",
        "ask_price": "25.36520000",
        "ask_size": "40.66000000",
        "update_id": "400900217",
        "ts_exchange": 1568014460893,
        "ts_received": 7,
    }


def test_nautilus_depth_update_fixture() -> None:
    update = only_book(parser().parse(fixture_bytes("depth_update_stream"), 7))

    assert update == BookUpdate(
        topic="binanceusdm:depth:BTCUSDT",
        symbol="BTCUSDT",
        bids=[("0.0024", "10")],
        asks=[("0.0026", "100")],
        first_id=157,
        last_id=160,
        prev_last_id=149,
        snapshot=False,
        ts_exchange=123456789,
        ts_received=7,
    )


def test_ticker_in_the_stream_envelope() -> None:
    payload = json.loads(fixture_bytes("ticker_stream"))

    topic_, event = only_event(parser().parse(json.dumps({"stream": "btcusdt@ticker", "data": payload}), 7))

    assert topic_ == "binanceusdm:ticker:BTCUSDT" and event["last"] == "16584.60000000"


@pytest.mark.parametrize("name", ["mark_price_stream", "liquidation_stream"])
def test_other_nautilus_market_fixtures_are_unknown(name: str) -> None:
    assert parser().parse(fixture_bytes(name), 7) == Parsed(unknown=True)


def test_non_canonical_interval_is_passed_through() -> None:
    payload = json.loads(fixture_bytes("kline_stream_open"))
    payload["k"]["i"] = "3m"

    topic, event = only_event(parser().parse(json.dumps(payload), 7))

    assert topic == "binanceusdm:kline:BTCUSDT:3m" and event["timeframe"] == "3m"


def test_big_trade_id_stays_exact() -> None:
    raw = '{"e":"trade","E":1,"T":2,"s":"BTCUSDT","t":12345678901234567890,"p":"1.0","q":"2","X":"MARKET","m":false}'

    _, event = only_event(parser().parse(raw, 3))

    assert event["trade_id"] == "12345678901234567890"


# --- control frames ----------------------------------------------------------------------------


def test_ack() -> None:
    assert parser().parse(b'{"result":null,"id":7}', 1) == Parsed(acks=[Ack(ok=True, action="subscribe", request_id=7)])


def test_list_subscriptions_reply_is_an_ack() -> None:
    parsed = parser().parse('{"result":["btcusdt@trade"],"id":3}', 1)

    assert parsed.acks == [Ack(ok=True, request_id=3)]


@pytest.mark.parametrize(
    "raw",
    [
        '{"code":2,"msg":"Invalid request: invalid stream","id":2}',
        '{"error":{"code":2,"msg":"Invalid request: invalid stream"},"id":2}',
    ],
)
def test_error_reply_both_shapes(raw: str) -> None:
    assert parser().parse(raw, 1) == Parsed(
        acks=[Ack(ok=False, request_id=2, error="2: Invalid request: invalid stream")]
    )


@pytest.mark.parametrize(
    "raw",
    [
        '{"code":2,"msg":"Invalid request: request ID must be an unsigned integer","id":null}',
        '{"error":{"code":2,"msg":"Invalid request: request ID must be an unsigned integer"},"id":null}',
        '{"code":2,"msg":"Invalid request: request ID must be an unsigned integer"}',
    ],
)
def test_error_without_id_is_frame_level(raw: str) -> None:
    assert parser().parse(raw, 1) == Parsed(error="2: Invalid request: request ID must be an unsigned integer")


@pytest.mark.parametrize("raw", ["[]", "1", "null", '{"foo":1}', '{"stream":"x@y","data":[1,2]}', '{"e":["kline"]}'])
def test_valid_json_not_understood_is_unknown(raw: str) -> None:
    assert parser().parse(raw, 1) == Parsed(unknown=True)


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"{",
        b"",
        b'{"stream":"btcusdt@trade","data":{"e":"trade","s":"BTCUSDT"}}',
        b'{"e":"kline","E":1,"s":"BTCUSDT","k":null}',
        b'{"e":"aggTrade","s":["BTCUSDT"],"a":1,"p":"1","q":"1","m":true,"T":1}',
        b'{"e":"bookTicker","u":1,"E":1,"T":1,"s":"BTCUSDT","b":"1","B":"1","a":"2"}',
        b'{"e":"24hrTicker","E":1,"s":"BTCUSDT","c":"1","h":"1","l":"1","v":"1"}',
        b'{"e":"depthUpdate","E":1,"T":1,"s":"BTCUSDT","U":"1","u":2,"pu":0,"b":[],"a":[]}',
        b'{"e":"depthUpdate","E":1,"T":1,"s":"BTCUSDT","U":1,"u":2,"pu":null,"b":[],"a":[]}',
        b'{"e":"depthUpdate","E":1,"T":1,"s":"BTCUSDT","U":1,"u":2,"pu":0,"b":[["1","2","3"]],"a":[]}',
        b'{"e":"depthUpdate","E":1,"T":1,"s":"BTCUSDT","U":1,"u":2,"pu":0,"b":[]}',
        b'{"e":"depthUpdate","E":1,"T":1,"s":"BTCUSDT","U":1,"u":2,"pu":0,"b":null,"a":[]}',
    ],
)
def test_malformed_frames_raise_value_error(raw: bytes) -> None:
    with pytest.raises(ValueError):
        parser().parse(raw, 1)


# --- REST order-book snapshot ----------------------------------------------------------------------


def test_snapshot_request_uses_the_documented_1000_levels() -> None:
    assert ADAPTER.snapshot_request("BTCUSDT", 20) == SnapshotRequest(
        "/fapi/v1/depth", {"symbol": "BTCUSDT", "limit": "1000"}
    )
    assert ADAPTER.snapshot_request("ETHUSDT", 100) == SnapshotRequest(
        "/fapi/v1/depth", {"symbol": "ETHUSDT", "limit": "1000"}
    )
    assert ADAPTER.book_sync.rule == "binance"
    assert ADAPTER.resync_frame(topic("depth")) is None


def test_snapshot_without_event_time() -> None:
    body = b'{"lastUpdateId":7,"bids":[["1.0","2"]],"asks":[]}'

    snap = ADAPTER.parse_snapshot("BTCUSDT", body, 5)

    assert snap == BookUpdate("binanceusdm:depth:BTCUSDT", "BTCUSDT", [("1.0", "2")], [], None, 7, None, True, None, 5)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"code":-1121,"msg":"Invalid symbol."}', "-1121: Invalid symbol."),
        (b"not json", None),
        (b"[]", "not an object"),
        (b'{"lastUpdateId":"7","bids":[],"asks":[]}', "must be an integer"),
        (b'{"lastUpdateId":7,"bids":[]}', "malformed"),
        (b'{"lastUpdateId":7,"bids":[["1"]],"asks":[]}', "unpack"),
        (b'{"lastUpdateId":7,"bids":null,"asks":[]}', "malformed"),
    ],
)
def test_bad_snapshot_raises_value_error(body: bytes, message: str | None) -> None:
    with pytest.raises(ValueError, match=message):
        ADAPTER.parse_snapshot("BTCUSDT", body, 0)


# --- subscribe frames, routes, URLs ---------------------------------------------------------------


def test_subscribe_frames_batch_and_count_ids() -> None:
    topics = [kline(f"SYM{i}USDT", "1m") for i in range(5)]

    frames = ADAPTER.subscribe_frames(topics, batch_size=2, first_request_id=10)

    assert [f.request_id for f in frames] == [10, 11, 12]
    assert [len(f.topics) for f in frames] == [2, 2, 1]
    assert frames[0].text == '{"method":"SUBSCRIBE","params":["sym0usdt@kline_1m","sym1usdt@kline_1m"],"id":10}'
    assert frames[0].topics == ("binanceusdm:kline:SYM0USDT:1m", "binanceusdm:kline:SYM1USDT:1m")
    assert [t for f in frames for t in f.topics] == [str(t) for t in topics]
    assert all(json.loads(f.text)["id"] == f.request_id for f in frames)


def test_unsubscribe_frames() -> None:
    frames = ADAPTER.unsubscribe_frames([trade("BTCUSDT"), kline("BTCUSDT", "4h")], batch_size=50, first_request_id=1)

    assert [(f.text, f.topics, f.request_id) for f in frames] == [
        (
            '{"method":"UNSUBSCRIBE","params":["btcusdt@aggTrade","btcusdt@kline_4h"],"id":1}',
            ("binanceusdm:trade:BTCUSDT", "binanceusdm:kline:BTCUSDT:4h"),
            1,
        )
    ]


def test_subscribe_frames_respect_byte_limit() -> None:
    topics = [kline(f"VERYLONGSYMBOLNAME{i:04d}USDT", "15m") for i in range(400)]

    frames = ADAPTER.subscribe_frames(topics, batch_size=1024, first_request_id=1)

    assert len(frames) > 1
    assert all(len(f.text.encode()) <= ADAPTER.max_subscribe_frame_bytes for f in frames)
    assert [t for f in frames for t in f.topics] == [str(t) for t in topics]
    assert [f.request_id for f in frames] == list(range(1, len(frames) + 1))


def test_subscribe_frames_argument_errors() -> None:
    with pytest.raises(ValueError):
        ADAPTER.subscribe_frames([trade("BTCUSDT")], batch_size=0, first_request_id=1)
    with pytest.raises(ValueError):
        ADAPTER.subscribe_frames([trade("BTCUSDT")], batch_size=1, first_request_id=-1)
    assert ADAPTER.subscribe_frames([], batch_size=10, first_request_id=1) == []


def test_subscribe_frames_for_ticker_bookticker_and_depth() -> None:
    topics = [topic("ticker"), topic("bookticker"), topic("depth", "ETHUSDT")]

    frames = ADAPTER.subscribe_frames(topics, batch_size=10, first_request_id=3, now_ms=1_700_000_000_000)
    unsub = ADAPTER.unsubscribe_frames(topics[:1], batch_size=10, first_request_id=4, now_ms=1)

    assert [(f.text, f.topics, f.request_id) for f in frames] == [
        (
            '{"method":"SUBSCRIBE","params":["btcusdt@ticker","btcusdt@bookTicker","ethusdt@depth@100ms"],"id":3}',
            ("binanceusdm:ticker:BTCUSDT", "binanceusdm:bookticker:BTCUSDT", "binanceusdm:depth:ETHUSDT"),
            3,
        )
    ]
    assert unsub[0].text == '{"method":"UNSUBSCRIBE","params":["btcusdt@ticker"],"id":4}'


def test_routes_and_urls() -> None:
    base = "wss://fstream.binance.com/"

    assert ADAPTER.route(kline("BTCUSDT", "1m")) == "market"
    assert ADAPTER.route(trade("BTCUSDT")) == "market"  # aggTrade (see the trade-stream tests below)
    # §2: @ticker is a /market stream, @bookTicker and @depth are /public streams
    assert ADAPTER.route(topic("ticker")) == "market"
    assert ADAPTER.route(topic("bookticker")) == "public"
    assert ADAPTER.route(topic("depth")) == "public"
    assert ADAPTER.ws_url(base, ADAPTER.route(kline("BTCUSDT", "1m"))) == "wss://fstream.binance.com/market/stream"
    assert ADAPTER.ws_url("wss://fstream.binance.com", "public") == "wss://fstream.binance.com/public/stream"


def test_validate() -> None:
    for tf in ("1m", "5m", "15m", "30m", "1h", "2h", "4h", "1d", "1w"):
        ADAPTER.validate(kline("BTCUSDT", tf))
    for channel in ("trade", "ticker", "bookticker", "depth"):
        ADAPTER.validate(topic(channel))
    with pytest.raises(AdapterError):
        ADAPTER.validate(Topic("binanceusdm", "funding", "BTCUSDT"))
    with pytest.raises(AdapterError):
        ADAPTER.validate(kline("BTCUSDT", "3m"))
    with pytest.raises(AdapterError):
        ADAPTER.validate(Topic("bitmart", "trade", "BTCUSDT"))
    with pytest.raises(AdapterError):
        ADAPTER.route(Topic("binanceusdm", "funding", "BTCUSDT"))
    with pytest.raises(AdapterError):
        ADAPTER.subscribe_frames([Topic("binanceusdm", "funding", "BTCUSDT")], batch_size=1, first_request_id=1)


def test_static_attributes() -> None:
    assert ADAPTER.id == "binanceusdm"
    assert ADAPTER.max_topics_per_connection == 1024
    assert ADAPTER.min_send_interval_ms == 110
    assert ADAPTER.app_ping is False and ADAPTER.ping_frame() is None and ADAPTER.ping_frame(now_ms=5) is None
    assert ADAPTER.channels == {"kline", "trade", "ticker", "bookticker", "depth"}
    assert ADAPTER.ws_headers == {}


# --- user data: listenKey, events, signed REST snapshots (§7-§9) ------------------------------------------------------

ORDER_KEYS = [
    "type", "exchange", "account", "symbol", "order_id", "client_order_id", "side", "order_type", "status",
    "status_raw", "price", "size", "filled_size", "avg_fill_price", "reduce_only", "ts_exchange", "ts_received",
    "snapshot",
]  # fmt: skip
POSITION_KEYS = [
    "type", "exchange", "account", "symbol", "side", "mode", "size", "entry_price", "mark_price", "liquidation_price",
    "leverage", "margin_mode", "unrealized_pnl", "ts_exchange", "ts_received", "snapshot",
]  # fmt: skip
BALANCE_KEYS = [
    "type", "exchange", "account", "asset", "balance", "available", "frozen", "ts_exchange", "ts_received", "snapshot",
]  # fmt: skip
#: binance_usdm.md §8 own vectors: key and secret.
CREDS = Account("binanceusdm", "main", "feedplane-test-apikey-0001", "feedplane-test-secret-0001")
PRIVATE = [Topic.parse(f"binanceusdm:{channel}:main") for channel in ("order", "position", "balance")]


def user_parser() -> BinanceUsdmParser:
    return ADAPTER.new_parser("main")


def position(symbol: str, side: str, mode: str, size: str, entry: str, margin: str, pnl: str) -> dict[str, Any]:
    return {
        "type": "position",
        "exchange": "binanceusdm",
        "account": "main",
        "symbol": symbol,
        "side": side,
        "mode": mode,
        "size": size,
        "entry_price": entry,
        "mark_price": None,
        "liquidation_price": None,
        "leverage": None,
        "margin_mode": margin,
        "unrealized_pnl": pnl,
        "ts_exchange": 1564745798939,
        "ts_received": 3,
        "snapshot": False,
    }


def test_listen_key_requests() -> None:
    for method in ("POST", "PUT", "DELETE", "put"):
        assert listen_key_request(CREDS, method) == RestRequest(
            method.upper(), "/fapi/v1/listenKey", {}, {"X-MBX-APIKEY": "feedplane-test-apikey-0001"}
        )
    with pytest.raises(ValueError, match="POST, PUT or DELETE"):
        listen_key_request(CREDS, "GET")
    with pytest.raises(AdapterError, match="cannot sign binanceusdm"):
        listen_key_request(Account("bitmart", "main", "k", "s"), "POST")


def test_parse_listen_key() -> None:
    key = "pqia91ma19a5s61cv6a81va65sdf19v8a65a1a5s61cv6a81va65sdf19v8a65a1"

    assert parse_listen_key(json.dumps({"listenKey": key}).encode()) == key
    with pytest.raises(ValueError, match="-1125: This listenKey does not exist."):
        parse_listen_key(b'{"code":-1125,"msg":"This listenKey does not exist."}')
    with pytest.raises(ValueError, match="no listenKey"):
        parse_listen_key(b"{}")  # a DELETE reply
    with pytest.raises(ValueError):
        parse_listen_key(b"[]")


def test_private_ws_url_and_routes() -> None:
    assert private_ws_url("wss://fstream.binance.com/", "abc123") == (
        "wss://fstream.binance.com/private/ws?listenKey=abc123"
    )
    assert ADAPTER.private_channels == {"order", "position", "balance"}
    assert [ADAPTER.route(t) for t in PRIVATE] == ["private:main"] * 3
    for t in PRIVATE:
        ADAPTER.validate(t)
    with pytest.raises(AdapterError, match="listenKey"):
        ADAPTER.ws_url("wss://fstream.binance.com", "private:main")
    assert ADAPTER.login_frame(CREDS, 1) is None


def test_private_topics_need_no_frames() -> None:
    public = Topic("binanceusdm", "trade", "BTCUSDT")

    assert ADAPTER.subscribe_frames(PRIVATE, batch_size=10, first_request_id=1, creds=CREDS) == []
    assert ADAPTER.unsubscribe_frames(PRIVATE, batch_size=10, first_request_id=1) == []
    [frame] = ADAPTER.subscribe_frames([*PRIVATE, public], batch_size=10, first_request_id=4)
    assert (frame.text, frame.topics) == ('{"method":"SUBSCRIBE","params":["btcusdt@aggTrade"],"id":4}', (str(public),))


def test_order_trade_update_fixture() -> None:
    [(topic, event)] = user_parser().parse(fixture_bytes("order_update_trade"), 3).events

    assert topic == "binanceusdm:order:main"
    assert event == {
        "type": "order",
        "exchange": "binanceusdm",
        "account": "main",
        "symbol": "BTCUSDT",
        "order_id": "8886774",
        "client_order_id": "TEST",
        "side": "buy",
        "order_type": "limit",
        "status": "partially_filled",
        "status_raw": "PARTIALLY_FILLED",
        "price": "7100.50",
        "size": "0.001",
        "filled_size": "0.001",
        "avg_fill_price": "7100.50",
        "reduce_only": False,
        "ts_exchange": 1568879465651,
        "ts_received": 3,
        "snapshot": False,
    }
    assert list(event) == ORDER_KEYS


@pytest.mark.parametrize(
    ("name", "fields"),
    [
        # (side, order_type, status, status_raw, size, filled, avg, reduce_only, client id, order id)
        ("order_update_new", ("buy", "trailing_stop_market", "new", "NEW", "0.001", "0", "0", False, "TEST", "8886774")),
        ("order_update_trade_partial", ("buy", "limit", "partially_filled", "PARTIALLY_FILLED", "0.002", "0.001",
                                        "7100.50", False, "TEST", "8886774")),
        ("order_update_calculated", ("sell", "limit", "filled", "FILLED", "0.014", "0.014", "9910.12", True,
                                     "autoclose-1234567890", "8886999")),
        ("order_update_calculated_pending", ("sell", "limit", "new", "NEW", "0.014", "0", "0", True,
                                             "autoclose-pending-0000", "8887004")),
        ("order_update_delivery", ("sell", "limit", "filled", "FILLED", "1", "1", "70000.0", True,
                                   "delivery_autoclose-12345", "8887003")),
        ("order_update_settlement", ("sell", "limit", "filled", "FILLED", "0.010", "0.010", "50000.00", True,
                                     "settlement_autoclose-9999", "8887002")),
        # statuses outside the documented set: derived from z vs q
        ("order_update_adl", ("buy", "limit", "filled", "NEW_ADL", "0.005", "0.005", "42000.00", True,
                              "adl_autoclose_12345", "8887001")),
        ("order_update_insurance", ("sell", "limit", "filled", "NEW_INSURANCE", "0.020", "0.020", "45000.00", True,
                                    "autoclose-insurance-5678", "8887003")),
    ],
)  # fmt: skip
def test_order_update_fixtures(name: str, fields: tuple[Any, ...]) -> None:
    [(topic, event)] = user_parser().parse(fixture_bytes(name), 3).events
    keys = ("side", "order_type", "status", "status_raw", "size", "filled_size", "avg_fill_price", "reduce_only",
            "client_order_id", "order_id")  # fmt: skip

    assert topic == "binanceusdm:order:main"
    assert tuple(event[k] for k in keys) == fields
    assert list(event) == ORDER_KEYS


@pytest.mark.parametrize(
    ("status", "size", "filled", "expected"),
    [
        ("NEW", "1", "0", "new"),
        ("PARTIALLY_FILLED", "1", "0.5", "partially_filled"),
        ("FILLED", "1", "1", "filled"),
        ("CANCELED", "1", "0.5", "canceled"),
        ("EXPIRED", "1", "0", "expired"),
        ("EXPIRED_IN_MATCH", "1", "0", "expired"),
        ("REJECTED", "1", "0", "rejected"),
        ("NEW_INSURANCE", "0.020", "0.02", "filled"),
        ("NEW_ADL", "1", "0.4", "partially_filled"),
        ("SOMETHING_NEW", "1", "0", "new"),
    ],
)
def test_order_status_mapping(status: str, size: str, filled: str, expected: str) -> None:
    assert order_status(status, size, filled) == expected


def test_account_update_fixture() -> None:
    parsed = user_parser().parse(fixture_bytes("account_update"), 3)

    assert parsed == Parsed(
        events=[
            ("binanceusdm:position:main", position("BTCUSDT", "both", "one_way", "0", "0.00000", "isolated", "0")),
            (
                "binanceusdm:position:main",
                position("BTCUSDT", "long", "hedge", "20", "6563.6", "isolated", "2850.21200"),
            ),
            (
                "binanceusdm:position:main",
                position("BTCUSDT", "short", "hedge", "-10", "6563.8", "isolated", "-1423.15600"),
            ),
            (
                "binanceusdm:balance:main",
                {
                    "type": "balance",
                    "exchange": "binanceusdm",
                    "account": "main",
                    "asset": "USDT",
                    "balance": "122624.12345678",
                    "available": None,  # cw is the cross wallet balance, not the available one
                    "frozen": None,
                    "ts_exchange": 1564745798939,
                    "ts_received": 3,
                    "snapshot": False,
                },
            ),
        ]
    )
    assert list(parsed.events[0][1]) == POSITION_KEYS
    assert list(parsed.events[3][1]) == BALANCE_KEYS


def test_account_update_bnfcr_fixture() -> None:
    [(topic, event)] = user_parser().parse(fixture_bytes("account_update_bnfcr"), 3).events

    assert topic == "binanceusdm:balance:main"
    assert (event["asset"], event["balance"], event["ts_exchange"]) == ("BNFCR", "5001.28983031", 1781606859764)


def test_trade_lite_is_unknown() -> None:
    assert user_parser().parse(fixture_bytes("trade_lite"), 3) == Parsed(unknown=True)


@pytest.mark.parametrize("name", ["order_update_trade", "account_update"])
def test_user_events_without_an_account_are_unknown(name: str) -> None:
    assert parser().parse(fixture_bytes(name), 3) == Parsed(unknown=True)


@pytest.mark.parametrize(
    "raw",
    [
        '{"e":"listenKeyExpired","E":1576653824250,"listenKey":"abc"}',
        '{"e":"listenKeyExpired","E":"1576653824250","listenKey":"abc"}',  # the older doc example
        '{"stream":"abc","data":{"e":"listenKeyExpired","E":1576653824250,"listenKey":"abc"}}',
    ],
)
def test_listen_key_expired_asks_for_a_reconnect(raw: str) -> None:
    assert user_parser().parse(raw, 1) == Parsed(reconnect="listenKeyExpired")
    assert parser().parse(raw, 1) == Parsed(reconnect="listenKeyExpired")


def test_user_event_in_the_stream_envelope() -> None:
    payload = json.loads(fixture_bytes("order_update_new"))

    [(topic, _)] = user_parser().parse(json.dumps({"stream": "abc", "data": payload}), 3).events

    assert topic == "binanceusdm:order:main"


def test_malformed_user_events_raise() -> None:
    with pytest.raises(ValueError, match="ORDER_TRADE_UPDATE"):
        user_parser().parse('{"e":"ORDER_TRADE_UPDATE","E":1,"o":{"s":"BTCUSDT"}}', 0)
    with pytest.raises(ValueError, match="ACCOUNT_UPDATE"):
        user_parser().parse('{"e":"ACCOUNT_UPDATE","E":1,"A":{}}', 0)  # no "a" object at all


def test_signed_snapshot_requests() -> None:
    # binance_usdm.md §8 own vector: recvWindow=5000&timestamp=1700000000000 -> 46c9d045…
    signed = {
        "recvWindow": "5000",
        "timestamp": "1700000000000",
        "signature": "46c9d04512e820aefb87e9db7c33ebdb62b816c0d577d318f3897e1d338a659c",
    }
    headers = {"X-MBX-APIKEY": "feedplane-test-apikey-0001"}

    assert ADAPTER.open_orders_request(CREDS, 1_700_000_000_000) == RestRequest(
        "GET", "/fapi/v1/openOrders", signed, headers
    )
    assert ADAPTER.positions_request(CREDS, 1_700_000_000_000) == RestRequest(
        "GET", "/fapi/v2/positionRisk", signed, headers
    )


#: "Current All Open Orders" doc example (comments dropped).
OPEN_ORDERS_BODY = b"""[{"avgPrice":"0.00000","clientOrderId":"abc","cumQuote":"0","executedQty":"0","orderId":1917641,
"origQty":"0.40","origType":"TRAILING_STOP_MARKET","price":"0","reduceOnly":false,"side":"BUY","positionSide":"SHORT",
"status":"NEW","stopPrice":"9300","closePosition":false,"symbol":"BTCUSDT","time":1579276756075,"timeInForce":"GTC",
"type":"TRAILING_STOP_MARKET","activatePrice":"9020","priceRate":"0.3","updateTime":1579276756075,
"workingType":"CONTRACT_PRICE","priceProtect":false,"priceMatch":"NONE","selfTradePreventionMode":"NONE",
"goodTillDate":0}]"""
#: "Position Information V2" (hedge mode) and "V3" (one-way) doc examples.
POSITIONS_V2_BODY = b"""[{"symbol":"BTCUSDT","positionAmt":"0.001","entryPrice":"22185.2","breakEvenPrice":"0.0",
"markPrice":"21123.05052574","unRealizedProfit":"-1.06214947","liquidationPrice":"19731.45529116","leverage":"4",
"maxNotionalValue":"100000000","marginType":"cross","isolatedMargin":"0.00000000","isAutoAddMargin":"false",
"positionSide":"LONG","notional":"21.12305052","isolatedWallet":"0","updateTime":1655217461579},
{"symbol":"BTCUSDT","positionAmt":"0.000","entryPrice":"0.0","breakEvenPrice":"0.0","markPrice":"21123.05052574",
"unRealizedProfit":"0.00000000","liquidationPrice":"0","leverage":"4","maxNotionalValue":"100000000",
"marginType":"cross","isolatedMargin":"0.00000000","isAutoAddMargin":"false","positionSide":"SHORT","notional":"0",
"isolatedWallet":"0","updateTime":0}]"""
POSITIONS_V3_BODY = b"""[{"symbol":"ADAUSDT","positionSide":"BOTH","positionAmt":"30","entryPrice":"0.385",
"breakEvenPrice":"0.385077","markPrice":"0.41047590","unRealizedProfit":"0.76427700","liquidationPrice":"0",
"isolatedMargin":"0","notional":"12.31427700","marginAsset":"USDT","isolatedWallet":"0","initialMargin":"0.61571385",
"maintMargin":"0.08004280","positionInitialMargin":"0.61571385","openOrderInitialMargin":"0","adl":2,
"bidNotional":"0","askNotional":"0","updateTime":1720736417660}]"""


def test_parse_open_orders_doc_example() -> None:
    assert ADAPTER.parse_open_orders(OPEN_ORDERS_BODY, "main", 9) == [
        (
            "binanceusdm:order:main",
            {
                "type": "order",
                "exchange": "binanceusdm",
                "account": "main",
                "symbol": "BTCUSDT",
                "order_id": "1917641",
                "client_order_id": "abc",
                "side": "buy",
                "order_type": "trailing_stop_market",
                "status": "new",
                "status_raw": "NEW",
                "price": "0",
                "size": "0.40",
                "filled_size": "0",
                "avg_fill_price": "0.00000",
                "reduce_only": False,
                "ts_exchange": 1579276756075,
                "ts_received": 9,
                "snapshot": True,
            },
        )
    ]


def test_parse_positions_v2_and_v3_doc_examples() -> None:
    long_, short = ADAPTER.parse_positions(POSITIONS_V2_BODY, "main", 9)
    [(_, one_way)] = ADAPTER.parse_positions(POSITIONS_V3_BODY, "main", 9)

    assert long_ == (
        "binanceusdm:position:main",
        {
            "type": "position",
            "exchange": "binanceusdm",
            "account": "main",
            "symbol": "BTCUSDT",
            "side": "long",
            "mode": "hedge",
            "size": "0.001",
            "entry_price": "22185.2",
            "mark_price": "21123.05052574",
            "liquidation_price": "19731.45529116",
            "leverage": "4",
            "margin_mode": "cross",
            "unrealized_pnl": "-1.06214947",
            "ts_exchange": 1655217461579,
            "ts_received": 9,
            "snapshot": True,
        },
    )
    assert (short[1]["side"], short[1]["size"], short[1]["ts_exchange"]) == ("short", "0.000", None)
    assert (one_way["side"], one_way["mode"], one_way["size"], one_way["leverage"], one_way["margin_mode"]) == (
        "both",
        "one_way",
        "30",
        None,
        None,
    )
    assert list(one_way) == POSITION_KEYS


@pytest.mark.parametrize(
    ("body", "text"),
    [
        (b'{"code":-2015,"msg":"Invalid API-key, IP, or permissions for action."}', "-2015: Invalid API-key"),
        (b'{"orders":[]}', "not a list"),
        (b'[{"symbol":"BTCUSDT"}]', "malformed"),
    ],
)
def test_rest_snapshot_errors(body: bytes, text: str) -> None:
    with pytest.raises(ValueError, match=text):
        ADAPTER.parse_open_orders(body, "main", 0)
    with pytest.raises(ValueError, match=text):
        ADAPTER.parse_positions(body, "main", 0)


# --- issue 10: trade stream, conditional orders (ALGO_UPDATE), partial ACCOUNT_UPDATE ----------------------------


def test_trade_channel_defaults_to_the_documented_agg_trade_stream_on_market() -> None:
    """``<s>@trade`` is not in the official stream list (binance_usdm.md §2): if Binance stopped serving it, the
    SUBSCRIBE would still be acked and the topic would go silent. The default is ``<s>@aggTrade`` on ``/market``."""
    t = trade("BTCUSDT")

    assert ADAPTER.trade_stream == "aggTrade"
    assert ADAPTER.route(t) == "market"
    [frame] = ADAPTER.subscribe_frames([t, kline("BTCUSDT", "1m")], batch_size=10, first_request_id=1)
    assert frame.text == '{"method":"SUBSCRIBE","params":["btcusdt@aggTrade","btcusdt@kline_1m"],"id":1}'
    assert binance_stream_class("btcusdt@aggTrade") == ADAPTER.route(t)  # the simulator's §2 table agrees


def test_raw_trade_stream_stays_selectable() -> None:
    raw = BinanceUsdmAdapter(trade_stream="trade")
    t = trade("BTCUSDT")

    assert raw.trade_stream == "trade" and raw.route(t) == "public"
    [frame] = raw.subscribe_frames([t], batch_size=10, first_request_id=2)
    assert frame.text == '{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":2}'
    assert binance_stream_class("btcusdt@trade") == raw.route(t)
    # both trade shapes parse on either adapter: the payload's "e" decides
    assert raw.new_parser().parse(fixture_bytes("agg_trade_stream"), 1).events[0][1]["trade_id"] == "5933014"
    with pytest.raises(ValueError, match="aggTrade"):
        BinanceUsdmAdapter(trade_stream="aggtrade")


def test_trade_stream_setting_reaches_the_workers_adapters() -> None:
    assert Settings.from_env({}).binance_usdm_trade_stream == "aggTrade"
    settings = Settings.from_env({"BINANCE_USDM_TRADE_STREAM": "trade"})
    adapters = configured_adapters(settings)

    assert adapters["binanceusdm"].route(trade("BTCUSDT")) == "public"
    assert adapters["bitmart"] is REGISTRY["bitmart"] and adapters["gateio"] is REGISTRY["gateio"]
    assert configured_adapters(Settings.from_env({}))["binanceusdm"] is REGISTRY["binanceusdm"]
    with pytest.raises(SettingsError, match="BINANCE_USDM_TRADE_STREAM"):
        Settings.from_env({"BINANCE_USDM_TRADE_STREAM": "aggtrade"})


#: The "Event: Algo Order Update" response example, https://developers.binance.com/docs/derivatives/
#: usds-margined-futures/user-data-streams/Event-Algo-Order-Update (comments dropped; X varied by the tests).
ALGO_UPDATE_DOC = {
    "e": "ALGO_UPDATE", "T": 1750515742297, "E": 1750515742303,
    "o": {
        "caid": "Q5xaq5EGKgXXa0fD7fs0Ip", "aid": 2148719, "at": "CONDITIONAL", "o": "TAKE_PROFIT", "s": "BNBUSDT",
        "S": "SELL", "ps": "BOTH", "f": "GTC", "q": "0.01", "X": "CANCELED", "ai": "", "ap": "0.00000",
        "aq": "0.00000", "act": "0", "tp": "750", "p": "750", "V": "EXPIRE_MAKER", "wt": "CONTRACT_PRICE",
        "pm": "NONE", "cp": False, "pP": False, "R": False, "tt": 0, "gtd": 0, "rm": "Reduce Only reject",
    },
}  # fmt: skip
ALGO_ORDER_KEYS = [*ORDER_KEYS, "trigger_price", "trigger_price_type", "actual_order_id", "algo"]


def algo_update(**order: Any) -> bytes:
    return orjson.dumps({**ALGO_UPDATE_DOC, "o": {**ALGO_UPDATE_DOC["o"], **order}})


def test_algo_update_doc_example_is_an_order_event_with_its_trigger() -> None:
    [(topic, event)] = user_parser().parse(algo_update(), 3).events

    assert topic == "binanceusdm:order:main"
    assert event == {
        "type": "order",
        "exchange": "binanceusdm",
        "account": "main",
        "symbol": "BNBUSDT",
        "order_id": "2148719",  # the algo id: its own id space
        "client_order_id": "Q5xaq5EGKgXXa0fD7fs0Ip",
        "side": "sell",
        "order_type": "take_profit",
        "status": "canceled",
        "status_raw": "CANCELED",
        "price": "750",
        "size": "0.01",
        "filled_size": "0.00000",
        "avg_fill_price": "0.00000",
        "reduce_only": False,
        "ts_exchange": 1750515742303,
        "ts_received": 3,
        "snapshot": False,
        "trigger_price": "750",
        "trigger_price_type": "contract_price",
        "actual_order_id": None,
        "algo": True,
    }
    assert list(event) == ALGO_ORDER_KEYS


@pytest.mark.parametrize(
    ("changes", "status", "actual"),
    [
        ({"X": "NEW"}, "new", None),
        ({"X": "TRIGGERING"}, "triggered", None),
        ({"X": "TRIGGERED", "ai": "8886774"}, "triggered", "8886774"),
        ({"X": "FINISHED", "ai": 8886774, "aq": "0.01", "ap": "751.2"}, "filled", "8886774"),
        ({"X": "FINISHED", "ai": "8886774", "aq": "0.004", "ap": "751.2"}, "canceled", "8886774"),
        ({"X": "FINISHED", "ai": "8886774", "aq": "0"}, "canceled", "8886774"),
        ({"X": "FINISHED", "ai": "8886774", "q": "0", "cp": True, "aq": "0.3"}, "filled", "8886774"),  # close-all
        ({"X": "FINISHED", "ai": "8886774", "aq": None, "ap": None}, "triggered", "8886774"),
        ({"X": "REJECTED"}, "rejected", None),
        ({"X": "EXPIRED"}, "expired", None),
        ({"X": "SOMETHING_NEW"}, "new", None),
    ],
)
def test_algo_update_statuses(changes: dict[str, Any], status: str, actual: str | None) -> None:
    order = {k: v for k, v in changes.items() if v is not None}
    frame = orjson.loads(algo_update(**order))
    for k in (k for k, v in changes.items() if v is None):
        del frame["o"][k]
    [(_, event)] = user_parser().parse(orjson.dumps(frame), 3).events

    assert (event["status"], event["status_raw"], event["actual_order_id"]) == (status, changes["X"], actual)


def test_algo_update_trailing_stop_and_mark_price_trigger() -> None:
    raw = algo_update(o="TRAILING_STOP_MARKET", X="NEW", wt="MARK_PRICE", tp="9020", p="0", R=True)

    [(_, event)] = user_parser().parse(raw, 3).events

    assert (event["order_type"], event["trigger_price"], event["trigger_price_type"], event["reduce_only"]) == (
        "trailing_stop_market", "9020", "mark_price", True)  # fmt: skip


@pytest.mark.parametrize(("name", "status"), [("algo_update_new", "new"), ("algo_update_canceled", "canceled")])
def test_algo_update_fixtures(name: str, status: str) -> None:
    [(topic, event)] = user_parser().parse(fixture_bytes(name), 3).events

    assert topic == "binanceusdm:order:main"
    assert (event["order_id"], event["status"], event["trigger_price"], event["algo"]) == ("2148719", status, "750", True)
    assert parser().parse(fixture_bytes(name), 3) == Parsed(unknown=True)  # no account: not ours to publish


def test_malformed_algo_update_raises() -> None:
    with pytest.raises(ValueError, match="ALGO_UPDATE"):
        user_parser().parse('{"e":"ALGO_UPDATE","E":1,"o":{"s":"BTCUSDT"}}', 0)


def test_account_update_with_an_unknown_position_side_keeps_what_parses() -> None:
    """One position with a side outside BOTH/LONG/SHORT (and one without ``pa``, one balance without ``a``) must not
    cost the frame's other positions and balances: they are published, the rest counted and reported."""
    doc = json.loads(fixture_bytes("account_update"))
    good_position, good_balance = doc["a"]["P"][1], doc["a"]["B"][0]
    doc["a"]["P"] = [good_position, {**good_position, "s": "ETHUSDT", "ps": "SIDEWAYS"}, {"s": "XRPUSDT", "ps": "BOTH"}]
    doc["a"]["B"] = [{"wb": "1.0"}, good_balance]
    p = user_parser()

    parsed = p.parse(json.dumps(doc), 3)

    assert parsed.events == [
        ("binanceusdm:position:main", position("BTCUSDT", "long", "hedge", "20", "6563.6", "isolated", "2850.21200")),
        ("binanceusdm:balance:main", {
            "type": "balance", "exchange": "binanceusdm", "account": "main", "asset": "USDT",
            "balance": "122624.12345678", "available": None, "frozen": None, "ts_exchange": 1564745798939,
            "ts_received": 3, "snapshot": False,
        }),
    ]  # fmt: skip
    assert parsed.error is not None and "ACCOUNT_UPDATE" in parsed.error and "'SIDEWAYS'" in parsed.error
    assert "2 of 3 positions" in parsed.error and "1 of 2 balances" in parsed.error
    assert (p.account_positions_skipped, p.account_balances_skipped) == (2, 1)
    assert p.parse(fixture_bytes("account_update"), 4).error is None  # a clean frame reports nothing
    assert (p.account_positions_skipped, p.account_balances_skipped) == (2, 1)


def test_account_update_where_nothing_parses_is_reported_not_fatal() -> None:
    p = user_parser()
    raw = '{"e":"ACCOUNT_UPDATE","E":1,"a":{"m":"ORDER","P":[{"s":"X","pa":"1","ps":"SIDEWAYS"}],"B":[]}}'

    parsed = p.parse(raw, 0)

    assert parsed.events == [] and parsed.error == (
        "binanceusdm ACCOUNT_UPDATE: skipped 1 of 1 positions (X: unknown position side 'SIDEWAYS')")
    assert (p.account_positions_skipped, p.account_balances_skipped) == (1, 0)
