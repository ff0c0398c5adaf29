"""Binance USD-M adapter: recorded tapes (2021 cryptofeed, 2024 hftbacktest), fixtures, control frames."""

from __future__ import annotations

import collections
import json
from typing import Any

import orjson
import pytest

from control.topics import Topic
from scripts.tapes import BINANCE_2021, BINANCE_2024, read_cryptofeed_ws, read_hftbacktest, sample_path
from workers.exchanges.base import Ack, AdapterError, Parsed
from workers.exchanges.binanceusdm import BinanceUsdmAdapter, BinanceUsdmParser

ADAPTER = BinanceUsdmAdapter()
NAUTILUS = "nautilus/binance-futures"
TRADE_KEYS = ["type", "exchange", "symbol", "trade_id", "price", "size", "side", "ts_exchange", "ts_received"]
KLINE_KEYS = [
    "type", "exchange", "symbol", "timeframe", "open_time", "close_time",
    "open", "high", "low", "close", "volume", "closed", "ts_exchange", "ts_received",
]  # fmt: skip


def parser() -> BinanceUsdmParser:
    return ADAPTER.new_parser()


def only_event(parsed: Parsed) -> tuple[str, dict[str, Any]]:
    assert parsed.acks == [] and not parsed.unknown and not parsed.pong and parsed.error is None
    assert len(parsed.events) == 1
    return parsed.events[0]


def kline(symbol: str, tf: str) -> Topic:
    return Topic("binanceusdm", "kline", symbol, tf)


def trade(symbol: str) -> Topic:
    return Topic("binanceusdm", "trade", symbol)


# --- recorded tapes -------------------------------------------------------------------------------


def test_2024_tape_every_trade_frame_parses_and_the_rest_is_unknown() -> None:
    # Arrange
    p = parser()
    counts: collections.Counter[str] = collections.Counter()
    events: list[tuple[str, dict[str, Any]]] = []
    # Act
    for ts_ns, raw in read_hftbacktest(BINANCE_2024):
        parsed = p.parse(raw, ts_ns // 1_000_000)
        assert parsed.acks == [] and parsed.error is None and not parsed.pong
        if parsed.events:
            assert not parsed.unknown and len(parsed.events) == 1
            events.extend(parsed.events)
            counts["event"] += 1
        else:
            assert parsed.unknown
            stream = orjson.loads(raw).get("stream", "REST snapshot")
            counts[stream.partition("@")[2] or stream] += 1
    # Assert: 21,313 trades; bookTicker, depth and the REST depth-snapshot line are unknown, not errors
    assert counts == {"event": 21_313, "bookTicker": 66_089, "depth@0ms": 6_551, "REST snapshot": 1}
    assert {topic for topic, _ in events} == {"binanceusdm:trade:BTCUSDT"}
    assert all(list(e) == TRADE_KEYS and e["side"] in ("buy", "sell") for _, e in events)
    ids = [int(e["trade_id"]) for _, e in events]
    assert ids == list(range(ids[0], ids[0] + len(ids)))  # contiguous on this tape (§5)
    assert collections.Counter(e["side"] for _, e in events).keys() == {"buy", "sell"}


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


def test_2021_tape_klines_and_agg_trades() -> None:
    p = parser()
    kinds: collections.Counter[str] = collections.Counter()
    events: list[tuple[str, dict[str, Any]]] = []
    for ts_s, raw in read_cryptofeed_ws(BINANCE_2021):
        parsed = p.parse(raw, int(ts_s * 1000))
        assert parsed.acks == [] and parsed.error is None
        stream_kind = orjson.loads(raw)["stream"].partition("@")[2]
        if stream_kind in ("kline_1m", "aggTrade"):
            events.extend(parsed.events)
            assert len(parsed.events) == 1
        else:
            assert parsed.unknown and parsed.events == [], stream_kind
        kinds[stream_kind] += 1

    klines = [e for _, e in events if e["type"] == "kline"]
    trades = [e for _, e in events if e["type"] == "trade"]
    assert len(klines) == 67 and len(trades) == 91
    assert sum(e["closed"] for e in klines) == 4
    assert all(list(e) == KLINE_KEYS for e in klines) and all(list(e) == TRADE_KEYS for e in trades)
    assert all(e["close_time"] == e["open_time"] + 59_999 and e["timeframe"] == "1m" for e in klines)
    assert {t for t, e in events if e["type"] == "kline"} == {
        f"binanceusdm:kline:{s}USDT:1m" for s in ("SUSHI", "AKRO", "KEEP", "CTK")
    }
    assert {t for t, e in events if e["type"] == "trade"} <= {
        f"binanceusdm:trade:{s}USDT" for s in ("SUSHI", "AKRO", "KEEP", "CTK")
    }
    assert kinds == {"depth@100ms": 764, "bookTicker": 613, "aggTrade": 91, "kline_1m": 67}


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


@pytest.mark.parametrize(
    "name", ["book_ticker_stream", "depth_update_stream", "mark_price_stream", "ticker_stream", "liquidation_stream"]
)
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
    ],
)
def test_malformed_frames_raise_value_error(raw: bytes) -> None:
    with pytest.raises(ValueError):
        parser().parse(raw, 1)


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
            '{"method":"UNSUBSCRIBE","params":["btcusdt@trade","btcusdt@kline_4h"],"id":1}',
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


def test_routes_and_urls() -> None:
    base = "wss://fstream.binance.com/"

    assert ADAPTER.route(kline("BTCUSDT", "1m")) == "market"
    assert ADAPTER.route(trade("BTCUSDT")) == "public"
    assert ADAPTER.ws_url(base, ADAPTER.route(kline("BTCUSDT", "1m"))) == "wss://fstream.binance.com/market/stream"
    assert ADAPTER.ws_url("wss://fstream.binance.com", "public") == "wss://fstream.binance.com/public/stream"


def test_validate() -> None:
    for tf in ("1m", "5m", "15m", "30m", "1h", "2h", "4h", "1d", "1w"):
        ADAPTER.validate(kline("BTCUSDT", tf))
    ADAPTER.validate(trade("BTCUSDT"))
    with pytest.raises(AdapterError):
        ADAPTER.validate(Topic("binanceusdm", "ticker", "BTCUSDT"))
    with pytest.raises(AdapterError):
        ADAPTER.validate(kline("BTCUSDT", "3m"))
    with pytest.raises(AdapterError):
        ADAPTER.validate(Topic("bitmart", "trade", "BTCUSDT"))
    with pytest.raises(AdapterError):
        ADAPTER.route(Topic("binanceusdm", "ticker", "BTCUSDT"))
    with pytest.raises(AdapterError):
        ADAPTER.subscribe_frames([Topic("binanceusdm", "ticker", "BTCUSDT")], batch_size=1, first_request_id=1)


def test_static_attributes() -> None:
    assert ADAPTER.id == "binanceusdm"
    assert ADAPTER.max_topics_per_connection == 1024
    assert ADAPTER.min_send_interval_ms == 110
    assert ADAPTER.app_ping is False and ADAPTER.ping_frame() is None
