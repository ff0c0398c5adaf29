"""Binance USD-M control frames (acks, errors, malformed), subscribe frames, routes, URLs, the trade stream
choice (binance_usdm.md §2)."""

from __future__ import annotations

import json

import pytest

from control.exchanges.binanceusdm import TRADE_STREAM
from control.settings import Settings, SettingsError
from control.topics import Topic
from scripts.simulator import binance_stream_class
from tests.exchanges.binanceusdm._helpers import ADAPTER, fixture_bytes, kline, parser, topic, trade
from workers.exchanges import REGISTRY, configured_adapters
from workers.exchanges.base import Ack, AdapterError, Parsed
from workers.exchanges.binanceusdm import BinanceUsdmAdapter

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


# --- issue 10: the trade stream (aggTrade on /market by default) ------------------------------------------------


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
    assert Settings.from_env({}).value(TRADE_STREAM) == "aggTrade"
    settings = Settings.from_env({"BINANCE_USDM_TRADE_STREAM": "trade"})
    adapters = configured_adapters(settings)

    assert adapters["binanceusdm"].route(trade("BTCUSDT")) == "public"
    assert adapters["bitmart"] is REGISTRY["bitmart"] and adapters["gateio"] is REGISTRY["gateio"]
    assert configured_adapters(Settings.from_env({}))["binanceusdm"] is REGISTRY["binanceusdm"]
    with pytest.raises(SettingsError, match="BINANCE_USDM_TRADE_STREAM"):
        Settings.from_env({"BINANCE_USDM_TRADE_STREAM": "aggtrade"})
