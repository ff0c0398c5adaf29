"""BitMart futures v2 adapter: JKorf fixture conversations, kline close inference, trades, ticker, best bid/ask,
order book (depthIncrease), frames."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from control.accounts import Account
from control.topics import Topic
from scripts.tapes import BITMART_FIXTURES, read_jkorf
from workers.exchanges.base import Ack, AdapterError, BookUpdate, OutFrame, Parsed, RestRequest
from workers.exchanges.bitmart import BitmartAdapter, BitmartParser
from workers.exchanges.bitmart.private import login_frame, order_status, rest_headers, sign
from workers.exchanges.bitmart.wire import group_to_topic, native_topic, ratio_to_percent, rfc3339_to_ms

ADAPTER = BitmartAdapter()
KLINE_KEYS = [
    "type", "exchange", "symbol", "timeframe", "open_time", "close_time",
    "open", "high", "low", "close", "volume", "closed", "ts_exchange", "ts_received",
]  # fmt: skip
TRADE_KEYS = ["type", "exchange", "symbol", "trade_id", "price", "size", "side", "ts_exchange", "ts_received"]
TICKER_KEYS = [
    "type", "exchange", "symbol", "last", "mark_price", "index_price", "high_24h", "low_24h", "volume_24h",
    "change_pct_24h", "funding_rate", "ts_exchange", "ts_received",
]  # fmt: skip
BOOKTICKER_KEYS = [
    "type", "exchange", "symbol", "bid_price", "bid_size", "ask_price", "ask_size", "update_id", "ts_exchange",
    "ts_received",
]  # fmt: skip
#: The one recorded candle of the JKorf fixtures (Klines.txt, Concurrent.txt).
FIXTURE_CANDLE = {"open": "3354.38", "high": "3371.21", "low": "3338.48", "close": "3352.2", "volume": "159199176"}


def parser() -> BitmartParser:
    return ADAPTER.new_parser()


def kline_topic(symbol: str, tf: str) -> Topic:
    return Topic("bitmart", "kline", symbol, tf)


def kline_push(ts: int, close: str, symbol: str = "BTCUSDT", native_tf: str = "1m") -> str:
    item = {"o": "100", "h": "110", "l": "90", "c": close, "v": "5", "ts": ts}
    return json.dumps({"group": f"futures/klineBin{native_tf}:{symbol}", "data": {"symbol": symbol, "items": [item]}})


def expected_kline(
    symbol: str, tf: str, open_time: int, tf_ms: int, candle: dict[str, str], **kw: Any
) -> dict[str, Any]:
    event = {
        "type": "kline",
        "exchange": "bitmart",
        "symbol": symbol,
        "timeframe": tf,
        "open_time": open_time,
        "close_time": open_time + tf_ms - 1,
        **candle,
        "closed": False,
        "ts_exchange": None,
        "ts_received": 0,
    }
    event.update(kw)
    return event


# --- JKorf fixture conversations --------------------------------------------------------------


def test_klines_fixture() -> None:
    frames = read_jkorf(f"{BITMART_FIXTURES}/Klines.txt")
    p = parser()
    replies = [p.parse(f.raw, 1_000) for f in frames if f.direction == "<"]
    pushes = [p.parse(f.raw, 2_000) for f in frames if f.direction == "="]

    assert replies == [Parsed(acks=[Ack(ok=True, action="subscribe", topic="bitmart:kline:ETHUSDT:1d")])]
    assert pushes == [
        Parsed(
            events=[
                (
                    "bitmart:kline:ETHUSDT:1d",
                    expected_kline("ETHUSDT", "1d", 1721030401000, 86_400_000, FIXTURE_CANDLE, ts_received=2_000),
                )
            ]
        )
    ]
    assert list(pushes[0].events[0][1]) == KLINE_KEYS


def test_concurrent_fixture() -> None:
    frames = read_jkorf(f"{BITMART_FIXTURES}/Concurrent.txt")
    p = parser()
    acks = {f.tag: p.parse(f.raw, 0).acks for f in frames if f.direction == "<"}
    events = {f.tag: p.parse(f.raw, 0).events for f in frames if f.direction == "="}

    assert acks == {
        "1": [Ack(ok=True, topic="bitmart:kline:ETHUSDT:1h")],
        "2": [Ack(ok=True, topic="bitmart:kline:ETHUSDT:1d")],
    }
    assert events == {
        "1": [("bitmart:kline:ETHUSDT:1h", expected_kline("ETHUSDT", "1h", 1721030401000, 3_600_000, FIXTURE_CANDLE))],
        "2": [("bitmart:kline:ETHUSDT:1d", expected_kline("ETHUSDT", "1d", 1721030401000, 86_400_000, FIXTURE_CANDLE))],
    }


def test_trades_fixture_uses_the_group_symbol() -> None:
    # The fixture (a doc example) subscribes ETHUSDT but its trade says "symbol":"BTCUSDT" and has no
    # "m": the event follows the subscribed group, and the side falls back to "buy" (counted).
    frames = read_jkorf(f"{BITMART_FIXTURES}/Trades.txt")
    p = parser()
    acks = [p.parse(f.raw, 0) for f in frames if f.direction == "<"]
    pushes = [p.parse(f.raw, 5) for f in frames if f.direction == "="]

    assert acks == [Parsed(acks=[Ack(ok=True, topic="bitmart:trade:ETHUSDT")])]
    assert pushes == [
        Parsed(
            events=[
                (
                    "bitmart:trade:ETHUSDT",
                    {
                        "type": "trade",
                        "exchange": "bitmart",
                        "symbol": "ETHUSDT",
                        "trade_id": "1409495322",
                        "price": "117387.58",
                        "size": "1445",
                        "side": None,  # no "m": the taker side is unknown, not guessed
                        "ts_exchange": 1677225251124,
                        "ts_received": 5,
                    },
                )
            ]
        )
    ]
    assert list(pushes[0].events[0][1]) == TRADE_KEYS
    assert p.trades_without_side == 1
    assert p.counters() == {"stale_klines": 0, "trades_without_side": 1}


def test_ticker_alternate_identifier_fixture() -> None:
    # Subscribed as futures/ticker:AXONUSDT, pushed with the group "futures/ticker:AXONUSDT@100ms" (§1.6)
    frames = read_jkorf(f"{BITMART_FIXTURES}/TickerAlternateIdentifier.txt")
    p = parser()
    acks = [p.parse(f.raw, 0) for f in frames if f.direction == "<"]
    pushes = [p.parse(f.raw, 8) for f in frames if f.direction == "="]

    assert acks == [Parsed(acks=[Ack(ok=True, topic="bitmart:ticker:AXONUSDT")])]
    assert pushes == [
        Parsed(
            events=[
                (
                    "bitmart:ticker:AXONUSDT",
                    {
                        "type": "ticker",
                        "exchange": "bitmart",
                        "symbol": "AXONUSDT",
                        "last": "566.92",
                        "mark_price": "567.02",
                        "index_price": "566.445020726126944",
                        "high_24h": None,
                        "low_24h": None,
                        "volume_24h": "246128",
                        "change_pct_24h": "-1.17663465058309",  # range "-0.0117663465058309" is a ratio (§1.6)
                        "funding_rate": None,
                        "ts_exchange": None,
                        "ts_received": 8,
                    },
                )
            ]
        )
    ]
    assert list(pushes[0].events[0][1]) == TICKER_KEYS


def test_ticker_fixture_all_contracts_group() -> None:
    # The doc example subscribes "futures/ticker" (all contracts, no symbol): the ack maps to no topic of ours,
    # the push is named by data.symbol. Its "range" "147.17" is a doc placeholder; as a ratio it is 14717 %.
    frames = read_jkorf(f"{BITMART_FIXTURES}/Ticker.txt")
    p = parser()
    acks = [p.parse(f.raw, 0) for f in frames if f.direction == "<"]
    [push] = [p.parse(f.raw, 3) for f in frames if f.direction == "="]

    assert acks == [Parsed(unknown=True)]
    [(topic, event)] = push.events
    assert topic == "bitmart:ticker:BTCUSDT"
    assert (event["last"], event["mark_price"], event["index_price"]) == ("146.24", "146.24", "146.20")
    assert (event["volume_24h"], event["change_pct_24h"], event["ts_received"]) == ("117387.58", "14717", 3)
    assert list(event) == TICKER_KEYS


def test_order_book_v1_fixture_frames_are_unknown() -> None:
    p = parser()
    for frame in read_jkorf(f"{BITMART_FIXTURES}/OrderBook.txt"):
        if frame.direction != ">":
            assert p.parse(frame.raw, 0) == Parsed(unknown=True), frame.raw


# --- acks, errors, pongs --------------------------------------------------------------------------


def test_failed_ack_keeps_the_exchange_text() -> None:
    raw = (
        '{"action":"subscribe","group":"futures/klineBin1m:NOPEUSDT","success":false,'
        '"error":"Invalid channel: not found futures/klineBin1m:NOPEUSDT"}'
    )

    assert parser().parse(raw, 0) == Parsed(
        acks=[
            Ack(
                ok=False,
                action="subscribe",
                topic="bitmart:kline:NOPEUSDT:1m",
                error="Invalid channel: not found futures/klineBin1m:NOPEUSDT",
            )
        ]
    )


def test_unsubscribe_ack_and_speed_suffix() -> None:
    raw = '{"action":"unsubscribe","group":"futures/trade:BTCUSDT@100ms","success":true,"request":{}}'

    assert parser().parse(raw, 0).acks == [Ack(ok=True, action="unsubscribe", topic="bitmart:trade:BTCUSDT")]


def test_error_without_group_is_frame_level() -> None:
    raw = '{"success":false,"error":"Invalid message: message must be JSON: ping"}'

    assert parser().parse(raw, 0) == Parsed(error="Invalid message: message must be JSON: ping")


def test_failed_reply_for_a_channel_we_do_not_map_is_an_error() -> None:
    raw = '{"action":"subscribe","group":"futures/order","success":false,"error":"futures/order need authenication"}'

    assert parser().parse(raw, 0) == Parsed(error="futures/order: futures/order need authenication")


def test_login_replies_are_login_acks_on_any_parser() -> None:
    # §1.3: success, and failure with the server's text (the server then drops the socket)
    ok = '{"action":"access","success":true}'
    failed = '{"action":"access","success":false,"error":"access failed: openapi auth failed"}'

    for p in (parser(), ADAPTER.new_parser("main")):
        assert p.parse(ok, 0) == Parsed(acks=[Ack(ok=True, action="login")])
        assert p.parse(failed, 0) == Parsed(
            acks=[Ack(ok=False, action="login", error="access failed: openapi auth failed")]
        )


def test_emitted_kline_dicts_can_be_mutated_by_the_consumer() -> None:
    p = parser()
    [(_, first)] = p.parse(kline_push(60, "101"), 1).events
    first["close"] = "mutated"

    closed, _ = p.parse(kline_push(120, "102"), 2).events

    assert closed[1]["close"] == "101" and closed[1]["closed"] is True


@pytest.mark.parametrize(
    "raw", ['{"group":"System","data":"pong+3c1f6f2e-8a52-4b9e-9d4e-0f6c1a2b3c4d"}', '{"action":"pong"}']
)
def test_pong(raw: str) -> None:
    assert parser().parse(raw, 0) == Parsed(pong=True)


@pytest.mark.parametrize("raw", [b"not json", b"{", b"", b'{"group":"futures/trade:BTCUSDT","data":null}'])
def test_malformed_frames_raise_value_error(raw: bytes) -> None:
    with pytest.raises(ValueError):
        parser().parse(raw, 0)


@pytest.mark.parametrize(
    "data",
    [
        {"symbol": "BTCUSDT", "items": [{"o": "1", "h": "1", "l": "1", "c": "1", "v": "1"}]},  # no ts
        {"symbol": "BTCUSDT", "items": [{"o": "1", "h": "1", "l": "1", "c": "1", "v": "1", "ts": 1.5}]},
        {"symbol": "BTCUSDT", "items": 7},
        None,
    ],
)
def test_malformed_kline_push_raises_value_error(data: Any) -> None:
    p = parser()
    with pytest.raises(ValueError):
        p.parse(json.dumps({"group": "futures/klineBin1m:BTCUSDT", "data": data}), 0)


# --- ticker, best bid/ask ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ratio", "percent"),
    [
        ("-0.0117663465058309", "-1.17663465058309"),
        ("0.0117663465058309", "1.17663465058309"),
        ("147.17", "14717"),
        ("0.5", "50"),
        ("0.05", "5"),
        ("0.001", "0.1"),
        ("0", "0"),
        ("0.0000", "0"),
        ("-0.00", "0"),
        ("1", "100"),
        ("1E-5", "0.001"),
        ("1e+2", "10000"),
        (
            "-0.00000000000000000000000000012345678901234567890123",
            "-0.000000000000000000000000012345678901234567890123",
        ),
        ("123456789012345678901234567890.123456789", "12345678901234567890123456789012.3456789"),
    ],
)
def test_ratio_to_percent_is_exact(ratio: str, percent: str) -> None:
    assert ratio_to_percent(ratio) == percent


@pytest.mark.parametrize("ratio", ["", "abc", "NaN", "Infinity", "-inf", "1,5", None, [1]])
def test_ratio_to_percent_rejects_non_numbers(ratio: Any) -> None:
    with pytest.raises(ValueError):
        ratio_to_percent(ratio)


def test_ticker_push_without_range_and_a_bad_range() -> None:
    p = parser()
    raw = '{"group":"futures/ticker:BTCUSDT","data":{"symbol":"BTCUSDT","last_price":"1"}}'

    [(_, event)] = p.parse(raw, 0).events

    assert event["change_pct_24h"] is None and event["last"] == "1" and event["volume_24h"] is None
    with pytest.raises(ValueError):
        p.parse('{"group":"futures/ticker:BTCUSDT","data":{"symbol":"BTCUSDT","range":"x"}}', 0)


def test_bookticker_push() -> None:
    raw = json.dumps(
        {
            "group": "futures/bookticker:BTCUSDT",
            "data": {
                "symbol": "BTCUSDT",
                "best_bid_price": "95010.2",
                "best_bid_vol": "1200",
                "best_ask_price": "95010.3",
                "best_ask_vol": "310",
                "ms_t": 1740000000123,
            },
        }
    )

    parsed = parser().parse(raw, 77)

    assert parsed == Parsed(
        events=[
            (
                "bitmart:bookticker:BTCUSDT",
                {
                    "type": "bookticker",
                    "exchange": "bitmart",
                    "symbol": "BTCUSDT",
                    "bid_price": "95010.2",
                    "bid_size": "1200",
                    "ask_price": "95010.3",
                    "ask_size": "310",
                    "update_id": None,
                    "ts_exchange": 1740000000123,
                    "ts_received": 77,
                },
            )
        ]
    )
    assert list(parsed.events[0][1]) == BOOKTICKER_KEYS


# --- order book (depthIncrease) ---------------------------------------------------------------------


DEPTH_GROUP = "futures/depthIncrease50:BTCUSDT@100ms"


def depth_push(kind: str, version: Any, bids: Any = (), asks: Any = (), group_symbol: str = "BTCUSDT") -> str:
    data: dict[str, Any] = {"symbol": "BTCUSDT", "ms_t": 1_740_000_000_000 + version if type(version) is int else 0}
    if bids is not None:
        data["bids"] = [{"price": p, "vol": v} for p, v in bids]
    if asks is not None:
        data["asks"] = [{"price": p, "vol": v} for p, v in asks]
    data.update(version=version, type=kind)
    return json.dumps({"group": f"futures/depthIncrease50:{group_symbol}@100ms", "data": data})


def test_depth_increase_snapshot_then_updates() -> None:
    # §1.6: the first push is type "snapshot", then "update"s with version + 1; sizes absolute, "0" deletes,
    # empty sides still advance the version.
    p = parser()
    ack = (
        '{"action":"subscribe","group":"futures/depthIncrease50:BTCUSDT@100ms","success":true,'
        '"request":{"action":"subscribe","args":["futures/depthIncrease50:BTCUSDT@100ms"]}}'
    )
    frames = [
        depth_push("snapshot", 100, bids=[("95000.1", "5"), ("95000.0", "7")], asks=[("95000.2", "3")]),
        depth_push("update", 101, bids=[("95000.1", "0")], asks=[]),
        depth_push("update", 102, bids=None, asks=None),  # no sides at all
        depth_push("update", 103, bids=[], asks=[("95000.3", "9"), ("95000.2", "1")]),
        depth_push("snapshot", 50, bids=[("1", "1")], asks=[("2", "2")]),  # after a "request": a fresh snapshot
    ]

    acks = p.parse(ack, 0).acks
    parsed = [p.parse(raw, 10 + i) for i, raw in enumerate(frames)]

    assert acks == [Ack(ok=True, topic="bitmart:depth:BTCUSDT")]
    assert all(r.events == [] and r.acks == [] and not r.unknown and len(r.book) == 1 for r in parsed)
    book = [r.book[0] for r in parsed]
    assert book[0] == BookUpdate(
        topic="bitmart:depth:BTCUSDT",
        symbol="BTCUSDT",
        bids=[("95000.1", "5"), ("95000.0", "7")],
        asks=[("95000.2", "3")],
        first_id=100,
        last_id=100,
        prev_last_id=None,
        snapshot=True,
        ts_exchange=1_740_000_000_100,
        ts_received=10,
    )
    assert [(u.first_id, u.last_id, u.snapshot) for u in book] == [
        (100, 100, True),
        (101, 101, False),
        (102, 102, False),
        (103, 103, False),
        (50, 50, True),
    ]
    assert [(u.bids, u.asks) for u in book[1:4]] == [
        ([("95000.1", "0")], []),
        ([], []),
        ([], [("95000.3", "9"), ("95000.2", "1")]),
    ]
    assert {u.topic for u in book} == {"bitmart:depth:BTCUSDT"}
    assert all(u.prev_last_id is None and u.ts_received == 10 + i for i, u in enumerate(book))


def test_depth_symbol_comes_from_the_group() -> None:
    [update] = parser().parse(depth_push("update", 7, group_symbol="ETHUSDT"), 0).book

    assert (update.topic, update.symbol) == ("bitmart:depth:ETHUSDT", "ETHUSDT")


def test_depth_version_as_digit_string_is_accepted() -> None:
    [update] = parser().parse(depth_push("update", "12"), 0).book

    assert (update.first_id, update.last_id) == (12, 12)


@pytest.mark.parametrize(
    "raw",
    [
        depth_push("partial", 1),
        depth_push("update", "v1"),
        depth_push("update", 1.5),
        depth_push("update", None),
        json.dumps({"group": DEPTH_GROUP, "data": {"symbol": "BTCUSDT", "bids": [], "asks": [], "type": "update"}}),
        json.dumps({"group": DEPTH_GROUP, "data": {"version": 1, "type": "update", "bids": [{"price": "1"}]}}),
        json.dumps({"group": DEPTH_GROUP, "data": []}),
    ],
)
def test_malformed_depth_push_raises_value_error(raw: str) -> None:
    with pytest.raises(ValueError):
        parser().parse(raw, 0)


def test_other_depth_families_are_not_ours() -> None:
    # depth5 (one side per frame) and depthIncrease20 are not subscribed, so they are unknown (§1.6)
    [frame] = [f for f in read_jkorf(f"{BITMART_FIXTURES}/OrderBook.txt") if f.direction == "="]
    raw = depth_push("snapshot", 1).replace("depthIncrease50", "depthIncrease20")

    assert parser().parse(frame.raw, 0) == Parsed(unknown=True)
    assert parser().parse(raw, 0) == Parsed(unknown=True)
    assert group_to_topic("futures/depth5:ETHUSDT") is None


def test_book_hooks() -> None:
    depth = Topic("bitmart", "depth", "BTCUSDT")

    assert ADAPTER.book_sync.rule == "bitmart"
    assert ADAPTER.snapshot_request("BTCUSDT", 20) is None
    assert ADAPTER.resync_frame(depth) == '{"action":"request","args":["futures/depthIncrease50:BTCUSDT@100ms"]}'
    with pytest.raises(AdapterError):
        ADAPTER.parse_snapshot("BTCUSDT", b"{}", 0)
    with pytest.raises(AdapterError):
        ADAPTER.resync_frame(Topic("bitmart", "trade", "BTCUSDT"))
    with pytest.raises(AdapterError):
        ADAPTER.resync_frame(Topic("binanceusdm", "depth", "BTCUSDT"))


def test_request_reply_is_not_an_ack() -> None:
    # The answer to {"action":"request"} is not a subscription ack (its shape is undocumented)
    raw = '{"action":"request","group":"futures/depthIncrease50:BTCUSDT@100ms","success":true}'

    assert parser().parse(raw, 0) == Parsed(unknown=True)


# --- klines -----------------------------------------------------------------------------------


def test_flat_documented_kline_shape() -> None:
    raw = (
        '{"group":"futures/klineBin1m:BTCUSDT","data":{"symbol":"BTCUSDT","o":"146.24","h":"146.24","l":"146.24",'
        '"c":"146.24","v":"1581","ts":1715843460}}'
    )

    events = parser().parse(raw, 9).events

    candle = {"open": "146.24", "high": "146.24", "low": "146.24", "close": "146.24", "volume": "1581"}
    assert events == [
        ("bitmart:kline:BTCUSDT:1m", expected_kline("BTCUSDT", "1m", 1715843460000, 60_000, candle, ts_received=9))
    ]


def test_closed_bar_is_inferred_when_a_newer_bar_arrives() -> None:
    p = parser()
    topic = "bitmart:kline:BTCUSDT:1m"
    c = {"open": "100", "high": "110", "low": "90", "volume": "5"}

    first = p.parse(kline_push(60, "101"), 1_000).events
    second = p.parse(kline_push(60, "102"), 2_000).events
    third = p.parse(kline_push(120, "103"), 3_000).events

    assert first == [(topic, expected_kline("BTCUSDT", "1m", 60_000, 60_000, {**c, "close": "101"}, ts_received=1_000))]
    assert second == [
        (topic, expected_kline("BTCUSDT", "1m", 60_000, 60_000, {**c, "close": "102"}, ts_received=2_000))
    ]
    assert third == [
        (topic, expected_kline("BTCUSDT", "1m", 60_000, 60_000, {**c, "close": "102"}, closed=True, ts_received=3_000)),
        (topic, expected_kline("BTCUSDT", "1m", 120_000, 60_000, {**c, "close": "103"}, ts_received=3_000)),
    ]
    assert all(list(e) == KLINE_KEYS for _, e in third)


def test_stale_bars_are_dropped_and_topics_are_independent() -> None:
    p = parser()
    p.parse(kline_push(120, "1"), 0)

    stale = p.parse(kline_push(60, "2"), 1)
    other_symbol = p.parse(kline_push(60, "3", symbol="ETHUSDT"), 2)
    other_tf = p.parse(kline_push(0, "4", native_tf="5m"), 3)

    assert stale == Parsed()
    assert p.stale_klines == 1
    assert [(t, e["open_time"], e["closed"]) for t, e in other_symbol.events] == [
        ("bitmart:kline:ETHUSDT:1m", 60_000, False)
    ]
    assert [(t, e["open_time"]) for t, e in other_tf.events] == [("bitmart:kline:BTCUSDT:5m", 0)]


def test_items_in_one_frame_are_sorted_and_close_each_other() -> None:
    items = [{"o": "1", "h": "1", "l": "1", "c": str(ts), "v": "1", "ts": ts} for ts in (180, 60, 120)]
    raw = json.dumps({"group": "futures/klineBin1m:BTCUSDT@100ms", "data": {"symbol": "BTCUSDT", "items": items}})

    events = parser().parse(raw, 0).events

    assert [(e["open_time"], e["close"], e["closed"]) for _, e in events] == [
        (60_000, "60", False),
        (60_000, "60", True),
        (120_000, "120", False),
        (120_000, "120", True),
        (180_000, "180", False),
    ]


@pytest.mark.parametrize(
    ("tf", "native"),
    [
        ("1m", "1m"),
        ("5m", "5m"),
        ("15m", "15m"),
        ("30m", "30m"),
        ("1h", "1H"),
        ("2h", "2H"),
        ("4h", "4H"),
        ("1d", "1D"),
        ("1w", "1W"),
    ],
)
def test_timeframe_mapping_both_ways(tf: str, native: str) -> None:
    topic = kline_topic("BTCUSDT", tf)

    assert native_topic(topic) == f"futures/klineBin{native}:BTCUSDT"
    assert group_to_topic(f"futures/klineBin{native}:BTCUSDT") == str(topic)
    [(event_topic, event)] = parser().parse(kline_push(0, "1", native_tf=native), 0).events
    assert event_topic == str(topic) and event["timeframe"] == tf


def test_lower_case_hour_group_is_not_ours() -> None:
    # BitMart rejects klineBin1h (§1.6), so such a group never maps to a topic.
    assert group_to_topic("futures/klineBin1h:BTCUSDT") is None
    assert parser().parse(kline_push(0, "1", native_tf="1h"), 0) == Parsed(unknown=True)


# --- trades -----------------------------------------------------------------------------------


def test_trades_side_from_m_and_chronological_order() -> None:
    data = [  # newest first, as BitMart sends them (§1.6)
        {"trade_id": 3000000389425123, "symbol": "BTCUSDT", "deal_price": "78727.5", "deal_vol": "3", "way": 6,
         "m": False, "created_at": "2025-03-10T18:17:14.700000000Z"},
        {"trade_id": 3000000389425121, "symbol": "BTCUSDT", "deal_price": "78727.3", "deal_vol": "310", "way": 2,
         "m": True, "created_at": "2025-03-10T18:17:14.656686827Z"},
    ]  # fmt: skip
    p = parser()

    events = p.parse(json.dumps({"group": "futures/trade:BTCUSDT", "data": data}), 11).events

    assert events == [
        (
            "bitmart:trade:BTCUSDT",
            {
                "type": "trade",
                "exchange": "bitmart",
                "symbol": "BTCUSDT",
                "trade_id": "3000000389425121",
                "price": "78727.3",
                "size": "310",
                "side": "sell",
                "ts_exchange": 1741630634656,
                "ts_received": 11,
            },
        ),
        (
            "bitmart:trade:BTCUSDT",
            {
                "type": "trade",
                "exchange": "bitmart",
                "symbol": "BTCUSDT",
                "trade_id": "3000000389425123",
                "price": "78727.5",
                "size": "3",
                "side": "buy",
                "ts_exchange": 1741630634700,
                "ts_received": 11,
            },
        ),
    ]
    assert p.trades_without_side == 0


def test_trades_without_m_have_a_null_side_and_are_counted() -> None:
    # "m" missing or null: the doc's "way" (1-8) does not say which order was the taker (§1.6), so no side is guessed.
    data = [
        {"trade_id": 3, "deal_price": "1", "deal_vol": "1", "m": None},
        {"trade_id": 2, "deal_price": "1", "deal_vol": "1", "way": 2},
        {"trade_id": 1, "deal_price": "1", "deal_vol": "1", "m": False},
    ]
    p = parser()

    events = p.parse(json.dumps({"group": "futures/trade:BTCUSDT", "data": data}), 0).events

    assert [(e["trade_id"], e["side"]) for _, e in events] == [("1", "buy"), ("2", None), ("3", None)]
    assert p.trades_without_side == 2
    p.parse(json.dumps({"group": "futures/trade:BTCUSDT", "data": data[:1]}), 0)
    assert p.counters()["trades_without_side"] == 3  # cumulative for the parser's socket


def test_depth_window_is_the_subscribed_channel() -> None:
    # depthIncrease50 keeps 50 levels; levels outside it never get updates (§1.6), so a depth topic's levels are
    # capped at max_depth_levels (control.topics.DEPTH_LEVELS_CAP).
    assert ADAPTER.max_depth_levels == 50
    assert native_topic(Topic("bitmart", "depth", "BTCUSDT")) == "futures/depthIncrease50:BTCUSDT@100ms"


def test_trade_without_created_at_has_no_exchange_time() -> None:
    raw = '{"group":"futures/trade:BTCUSDT","data":[{"trade_id":1,"deal_price":"1","deal_vol":"1","m":true}]}'

    [(_, event)] = parser().parse(raw, 0).events

    assert event["ts_exchange"] is None and event["side"] == "sell"


@pytest.mark.parametrize(
    ("text", "iso"),
    [
        ("2023-02-24T07:54:11.124940968Z", "2023-02-24T07:54:11.124+00:00"),
        ("2025-03-10T18:17:14.656686827Z", "2025-03-10T18:17:14.656+00:00"),
        ("2023-02-24T07:54:11Z", "2023-02-24T07:54:11+00:00"),
        ("2023-02-24T07:54:11.1Z", "2023-02-24T07:54:11.100+00:00"),
        ("2024-02-29T23:59:59.999999999Z", "2024-02-29T23:59:59.999+00:00"),
        ("1970-01-01T00:00:00Z", "1970-01-01T00:00:00+00:00"),
        ("2023-02-24T15:54:11.5+08:00", "2023-02-24T07:54:11.500+00:00"),
        ("2023-02-24T02:24:11.5-05:30", "2023-02-24T07:54:11.500+00:00"),
    ],
)
def test_rfc3339_to_ms(text: str, iso: str) -> None:
    expected = dt.datetime.fromisoformat(iso)
    whole = int(expected.replace(microsecond=0).timestamp()) * 1000

    assert rfc3339_to_ms(text) == whole + expected.microsecond // 1000


@pytest.mark.parametrize(
    "text",
    [
        "",
        "2023-02-24",
        "2023-02-24T07:54:11",  # no zone
        "2023-02-24T07:54:11.Z",  # empty fraction
        "2023-13-24T07:54:11Z",  # month 13
        "\uff12023-02-24T07:54:11Z",  # full-width digit two
    ],
)
def test_rfc3339_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError):
        rfc3339_to_ms(text)


# --- subscribe frames ---------------------------------------------------------------------------


def test_subscribe_frames_for_ticker_bookticker_and_depth() -> None:
    topics = [Topic("bitmart", c, "BTCUSDT") for c in ("ticker", "bookticker", "depth")]

    [frame] = ADAPTER.subscribe_frames(topics, batch_size=20, first_request_id=1, now_ms=1_700_000_000_000)
    [unsub] = ADAPTER.unsubscribe_frames(topics[2:], batch_size=20, first_request_id=1, now_ms=1)

    assert frame.text == (
        '{"action":"subscribe","args":["futures/ticker:BTCUSDT","futures/bookticker:BTCUSDT",'
        '"futures/depthIncrease50:BTCUSDT@100ms"]}'
    )
    assert frame.topics == ("bitmart:ticker:BTCUSDT", "bitmart:bookticker:BTCUSDT", "bitmart:depth:BTCUSDT")
    assert unsub.text == '{"action":"unsubscribe","args":["futures/depthIncrease50:BTCUSDT@100ms"]}'


@pytest.mark.parametrize(
    ("channel", "native"),
    [
        ("trade", "futures/trade:BTCUSDT"),
        ("ticker", "futures/ticker:BTCUSDT"),
        ("bookticker", "futures/bookticker:BTCUSDT"),
        ("depth", "futures/depthIncrease50:BTCUSDT@100ms"),
    ],
)
def test_channel_mapping_both_ways(channel: str, native: str) -> None:
    topic = Topic("bitmart", channel, "BTCUSDT")

    assert native_topic(topic) == native
    assert group_to_topic(native) == str(topic)
    assert group_to_topic(native.partition("@")[0] + "@200ms") == str(topic)


def test_subscribe_frame_shape() -> None:
    topics = [kline_topic("BTCUSDT", "1h"), Topic("bitmart", "trade", "BTCUSDT")]

    frames = ADAPTER.subscribe_frames(topics, batch_size=20, first_request_id=1)

    assert len(frames) == 1
    assert frames[0].text == '{"action":"subscribe","args":["futures/klineBin1H:BTCUSDT","futures/trade:BTCUSDT"]}'
    assert frames[0].topics == ("bitmart:kline:BTCUSDT:1h", "bitmart:trade:BTCUSDT")
    assert frames[0].request_id is None


def test_unsubscribe_frame_shape() -> None:
    [frame] = ADAPTER.unsubscribe_frames([kline_topic("BTCUSDT", "1w")], batch_size=20, first_request_id=1)

    assert frame.text == '{"action":"unsubscribe","args":["futures/klineBin1W:BTCUSDT"]}'


@pytest.mark.parametrize(("count", "batch_size"), [(120, 50), (120, 100), (7, 3), (1, 1)])
def test_subscribe_frames_split_by_count_and_bytes(count: int, batch_size: int) -> None:
    tfs = ["1m", "5m", "15m", "30m", "1h", "2h", "4h", "1d", "1w"]
    topics = [kline_topic(f"LONGNAME{i:03d}USDT", tfs[i % len(tfs)]) for i in range(count)]

    frames = ADAPTER.subscribe_frames(topics, batch_size=batch_size, first_request_id=1)

    assert all(len(f.text.encode()) <= 2000 for f in frames)
    assert all(len(f.topics) <= batch_size for f in frames)
    assert [t for f in frames for t in f.topics] == [str(t) for t in topics]
    for f in frames:  # each frame's args are exactly its topics
        assert json.loads(f.text)["args"] == [native_topic(Topic.parse(t)) for t in f.topics]


def test_byte_limit_splits_before_batch_size() -> None:
    topics = [kline_topic(f"LONGNAME{i:03d}USDT", "15m") for i in range(100)]

    frames = ADAPTER.subscribe_frames(topics, batch_size=100, first_request_id=1)

    assert len(frames) > 1
    assert all(len(f.text.encode()) <= 2000 for f in frames)
    # greedy: one more topic (its quoted name plus a comma) would not have fit in any frame but the last
    one_more = len(json.dumps(native_topic(topics[0]))) + 1
    assert all(len(f.text.encode()) + one_more > 2000 for f in frames[:-1])
    assert all(len(f.topics) < 100 for f in frames)


def test_subscribe_frames_argument_errors() -> None:
    with pytest.raises(ValueError):
        ADAPTER.subscribe_frames([kline_topic("BTCUSDT", "1m")], batch_size=0, first_request_id=1)
    with pytest.raises(AdapterError):
        ADAPTER.subscribe_frames([Topic("bitmart", "funding", "BTCUSDT")], batch_size=1, first_request_id=1)
    assert ADAPTER.subscribe_frames([], batch_size=10, first_request_id=1) == []


def test_validate_and_static_facts() -> None:
    ADAPTER.validate(kline_topic("BTCUSDT", "1w"))
    for channel in ("trade", "ticker", "bookticker", "depth"):
        ADAPTER.validate(Topic("bitmart", channel, "BTCUSDT"))
    with pytest.raises(AdapterError):
        ADAPTER.validate(Topic("bitmart", "funding", "BTCUSDT"))
    with pytest.raises(AdapterError):
        ADAPTER.validate(kline_topic("BTCUSDT", "3m"))
    with pytest.raises(AdapterError):
        ADAPTER.validate(Topic("binanceusdm", "trade", "BTCUSDT"))
    assert ADAPTER.route(kline_topic("BTCUSDT", "1m")) == "public"
    url = "wss://openapi-ws-v2.bitmart.com/api?protocol=1.1"
    assert ADAPTER.ws_url(url, "public") == url
    assert ADAPTER.ping_frame() == ADAPTER.ping_frame(now_ms=5) == '{"action":"ping"}' and ADAPTER.app_ping is True
    assert ADAPTER.channels == {"kline", "trade", "ticker", "bookticker", "depth"}
    assert ADAPTER.ws_headers == {}
    assert (ADAPTER.max_topics_per_connection, ADAPTER.max_subscribe_frame_bytes, ADAPTER.min_send_interval_ms) == (
        100,
        2000,
        0,
    )


# --- private channels (§1.3 login, §1.7 order/position/asset, REST snapshots) -----------------------------------------

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
#: exchanges.md §1.3 "own" vector (verified against ccxt 4.5.70's authenticate()).
OWN = Account("bitmart", "main", "bmkey_0123456789abcdef", "bmsecret_fedcba9876543210", memo="mymemo")
#: exchanges.md §1.3 doc vector (BitMart's own example key).
DOC = Account(
    "bitmart",
    "doc",
    "80618e45710812162b04892c7ee5ead4a3cc3e56",
    "6c6c98544461bbe71db2bca4c6d7fd0021e0ba9efc215f9c6ad41852df9d9df9",
    memo="test001",
)
PRIVATE = [Topic.parse(f"bitmart:{channel}:main") for channel in ("order", "position", "balance")]


def private_parser() -> BitmartParser:
    return ADAPTER.new_parser("main")


def fixture_parses(name: str, account: str | None = "main") -> tuple[list[Parsed], list[Parsed]]:
    """(replies, pushes) of a JKorf private conversation through one parser."""
    p = ADAPTER.new_parser(account)
    frames = read_jkorf(f"{BITMART_FIXTURES}/{name}")
    replies = [p.parse(f.raw, 1_000) for f in frames if f.direction == "<"]
    pushes = [p.parse(f.raw, 2_000) for f in frames if f.direction == "="]
    return replies, pushes


def order_push(order: dict[str, Any], action: int = 2) -> str:
    return json.dumps({"group": "futures/order", "data": [{"action": action, "order": order}]})


def order(**kw: Any) -> dict[str, Any]:
    base = {
        "order_id": "1",
        "client_order_id": "",
        "price": "100",
        "size": "10",
        "symbol": "BTCUSDT",
        "state": 2,
        "side": 1,
        "type": "limit",
        "deal_avg_price": "0",
        "deal_size": "0",
        "update_time": 1700000000000,
    }
    return {**base, **kw}


def test_login_frame_doc_vector() -> None:
    assert login_frame(DOC, 1589267764859) == (
        '{"action":"access","args":["80618e45710812162b04892c7ee5ead4a3cc3e56","1589267764859",'
        '"3ceeb7e1b8cb165a975e28a2e2dfaca4d30b358873c0351c1a071d8c83314556","web"]}'
    )


def test_login_frame_own_vector_is_ccxts_frame() -> None:
    # byte for byte what ccxt.pro.bitmart.authenticate("swap") sent with milliseconds() pinned (§1.3)
    assert ADAPTER.login_frame(OWN, 1700000000000) == (
        '{"action":"access","args":["bmkey_0123456789abcdef","1700000000000",'
        '"bfeb553bcd9d22e6adc5bc65fcd945675789aa128550a5b4e9b8058c01e27435","web"]}'
    )


def test_login_frame_refuses_unusable_credentials() -> None:
    no_memo = Account("bitmart", "main", "k", "s3cr3t-value")
    other = Account("gateio", "main", "k", "s3cr3t-value", memo="m")
    no_secret = Account("bitmart", "main", "k", "", memo="m")

    for creds, text in ((no_memo, "no API memo"), (other, "cannot sign bitmart"), (no_secret, "no API key or secret")):
        with pytest.raises(AdapterError, match=text) as info:
            login_frame(creds, 1)
        assert "s3cr3t" not in str(info.value)


def test_rest_signing_doc_vector_and_headers() -> None:
    # GET_signature.md (futures v2 doc, [S-BMDOC]): a POST body signed at 1589793796145
    body = '{"symbol":"BTC_USDT","price":"8600","count":"100"}'
    assert sign(DOC.api_secret, 1589793796145, "test001", body) == (
        "c31dc326bf87f38bfb49a3f8494961abfa291bd549d0d98d9578e87516cee46d"
    )
    assert rest_headers(DOC, 1589793796145, body) == {
        "X-BM-KEY": "80618e45710812162b04892c7ee5ead4a3cc3e56",
        "X-BM-TIMESTAMP": "1589793796145",
        "X-BM-SIGN": "c31dc326bf87f38bfb49a3f8494961abfa291bd549d0d98d9578e87516cee46d",
    }


def test_snapshot_requests_are_signed_over_the_empty_query() -> None:
    headers = {
        "X-BM-KEY": OWN.api_key,
        "X-BM-TIMESTAMP": "1700000000000",
        "X-BM-SIGN": sign(OWN.api_secret, 1700000000000, "mymemo", ""),
    }

    assert ADAPTER.open_orders_request(OWN, 1700000000000) == RestRequest(
        "GET", "/contract/private/get-open-orders", {}, headers
    )
    assert ADAPTER.positions_request(OWN, 1700000000000) == RestRequest(
        "GET", "/contract/private/position", {}, headers
    )


def test_private_topics_route_validate_and_subscribe() -> None:
    assert ADAPTER.private_channels == {"order", "position", "balance"}
    assert [ADAPTER.route(t) for t in PRIVATE] == ["private:main"] * 3
    for topic in PRIVATE:
        ADAPTER.validate(topic)
    with pytest.raises(AdapterError):
        ADAPTER.validate(Topic("bitmart", "order", "bad:name"))
    assert [native_topic(t) for t in PRIVATE] == ["futures/order", "futures/position", "futures/asset:USDT"]

    [frame] = ADAPTER.subscribe_frames(PRIVATE, batch_size=20, first_request_id=1, creds=OWN)
    [unsub] = ADAPTER.unsubscribe_frames(PRIVATE[:1], batch_size=20, first_request_id=1, creds=OWN)

    assert frame == OutFrame(
        '{"action":"subscribe","args":["futures/order","futures/position","futures/asset:USDT"]}',
        ("bitmart:order:main", "bitmart:position:main", "bitmart:balance:main"),
    )
    assert unsub.text == '{"action":"unsubscribe","args":["futures/order"]}'
    assert OWN.api_key not in frame.text  # credentials travel in the login frame only


def test_private_subscribe_round_trip_to_acks() -> None:
    [frame] = ADAPTER.subscribe_frames(PRIVATE, batch_size=20, first_request_id=1)
    p = private_parser()
    acks = [
        p.parse(json.dumps({"action": "subscribe", "group": arg, "success": True}), 0).acks[0]
        for arg in json.loads(frame.text)["args"]
    ]

    assert [a.topic for a in acks] == list(frame.topics)


def test_orders_fixture() -> None:
    replies, pushes = fixture_parses("Orders.txt")

    assert replies == [
        Parsed(acks=[Ack(ok=True, action="login")]),
        Parsed(acks=[Ack(ok=True, action="subscribe", topic="bitmart:order:main")]),
    ]
    assert pushes == [
        Parsed(
            events=[
                (
                    "bitmart:order:main",
                    {
                        "type": "order",
                        "exchange": "bitmart",
                        "account": "main",
                        "symbol": "BTCUSDT",
                        "order_id": "220906179895578",
                        "client_order_id": "BM1234",
                        "side": "buy",
                        "order_type": "limit",
                        "status": "canceled",  # action 3 (cancel) whatever state 2 says
                        "status_raw": "2/3",
                        "price": "1",
                        "size": "1000",
                        "filled_size": "1000",
                        "avg_fill_price": "0",
                        "reduce_only": None,  # the doc example has no position_mode
                        "ts_exchange": 1662368173000,
                        "ts_received": 2_000,
                        "snapshot": False,
                    },
                )
            ]
        )
    ]
    assert list(pushes[0].events[0][1]) == ORDER_KEYS


def test_positions_fixture() -> None:
    replies, pushes = fixture_parses("Positions.txt")

    assert replies[1] == Parsed(acks=[Ack(ok=True, action="subscribe", topic="bitmart:position:main")])
    assert pushes == [
        Parsed(
            events=[
                (
                    "bitmart:position:main",
                    {
                        "type": "position",
                        "exchange": "bitmart",
                        "account": "main",
                        "symbol": "BTCUSDT",
                        "side": "long",
                        "mode": None,
                        "size": "2000",
                        "entry_price": "19406.2092",
                        "mark_price": None,
                        "liquidation_price": "15621.998406",
                        "leverage": None,
                        "margin_mode": "isolated",
                        "unrealized_pnl": None,
                        "ts_exchange": 1662692862255,
                        "ts_received": 2_000,
                        "snapshot": False,
                    },
                )
            ]
        )
    ]
    assert list(pushes[0].events[0][1]) == POSITION_KEYS


def test_balances_fixture() -> None:
    # the fixture subscribes USDT, BTC and ETH: every asset ack and push maps to the one balance topic
    replies, pushes = fixture_parses("Balances.txt")

    assert (
        replies
        == [Parsed(acks=[Ack(ok=True, action="login")])]
        + [Parsed(acks=[Ack(ok=True, action="subscribe", topic="bitmart:balance:main")])] * 3
    )
    assert pushes == [
        Parsed(
            events=[
                (
                    "bitmart:balance:main",
                    {
                        "type": "balance",
                        "exchange": "bitmart",
                        "account": "main",
                        "asset": "BTC",
                        "balance": None,
                        "available": "1000",
                        "frozen": "1000",
                        "ts_exchange": None,
                        "ts_received": 2_000,
                        "snapshot": False,
                    },
                )
            ]
        )
    ]
    assert list(pushes[0].events[0][1]) == BALANCE_KEYS


@pytest.mark.parametrize("name", ["Balances.txt", "Orders.txt", "Positions.txt"])
def test_private_fixtures_without_an_account(name: str) -> None:
    # a parser without an account (a public socket) names no private topic: login acks only
    replies, pushes = fixture_parses(name, account=None)

    assert replies[0] == Parsed(acks=[Ack(ok=True, action="login")])
    assert all(r == Parsed(unknown=True) for r in replies[1:])
    assert pushes == [Parsed(unknown=True)]


def test_failed_private_subscribe_ack() -> None:
    raw = '{"action":"subscribe","group":"futures/order","success":false,"error":"futures/order need authenication"}'

    assert private_parser().parse(raw, 0) == Parsed(
        acks=[Ack(ok=False, topic="bitmart:order:main", error="futures/order need authenication")]
    )


@pytest.mark.parametrize(
    ("state", "action", "size", "deal_size", "status"),
    [
        (1, 2, "10", "0", "new"),  # approval, submitted
        (2, 2, "10", "0", "new"),  # check
        (2, 1, "10", "4", "partially_filled"),  # open with a fill
        (4, 1, "10", "10", "filled"),  # finished, all dealt
        (4, 1, "10.0", "10", "filled"),  # compared as decimals
        (4, 1, "10", "4", "canceled"),  # finished with a remainder (IOC / market)
        (4, 3, "10", "0", "canceled"),  # cancel
        (4, 3, "10", "4", "canceled"),  # partly filled, then cancelled
        (2, 3, "10", "10", "canceled"),  # a cancel push wins over the state (the fixture)
        (4, 4, "10", "0", "canceled"),  # liquidate-cancel
        (4, 5, "10", "0", "canceled"),  # ADL-cancel
        (4, 6, "10", "10", "filled"),  # partial liquidation match
        (4, 9, "10", "10", "filled"),  # active ADL match
        (2, None, "10", "0", "new"),  # REST open order: no action
        (2, None, "10", "3", "partially_filled"),
    ],
)
def test_order_status_mapping(state: int, action: int | None, size: str, deal_size: str, status: str) -> None:
    assert order_status(state, action, size, deal_size) == status


def test_order_status_raw_and_malformed_sizes() -> None:
    [(_, event)] = private_parser().parse(order_push(order(state=4, deal_size="10"), action=1), 0).events

    assert (event["status"], event["status_raw"]) == ("filled", "4/1")
    with pytest.raises(ValueError, match="deal_size"):
        private_parser().parse(order_push(order(deal_size="lots")), 0)
    with pytest.raises(ValueError, match="size"):
        order_status(4, 1, "NaN", "1")
    with pytest.raises(ValueError, match="malformed bitmart futures/order push"):
        private_parser().parse(order_push(order(side=7)), 0)


@pytest.mark.parametrize(
    ("side", "mode", "expected_side", "reduce_only"),
    [
        (1, "hedge_mode", "buy", False),  # buy_open_long
        (2, "hedge_mode", "buy", False),  # buy_close_short
        (3, "hedge_mode", "sell", False),  # sell_close_long
        (4, "hedge_mode", "sell", False),  # sell_open_short
        (1, "one_way_mode", "buy", False),
        (2, "one_way_mode", "buy", True),  # buy, reduce-only
        (3, "one_way_mode", "sell", True),  # sell, reduce-only
        (4, "one_way_mode", "sell", False),
        (3, None, "sell", None),  # mode unknown
    ],
)
def test_order_side_and_reduce_only(side: int, mode: str | None, expected_side: str, reduce_only: bool | None) -> None:
    fields: dict[str, Any] = {"side": side}
    if mode is not None:
        fields["position_mode"] = mode
    [(_, event)] = private_parser().parse(order_push(order(**fields)), 0).events

    assert (event["side"], event["reduce_only"]) == (expected_side, reduce_only)


def test_order_client_id_and_type_pass_through() -> None:
    [(_, blank)] = private_parser().parse(order_push(order(client_order_id="")), 0).events
    [(_, plan)] = private_parser().parse(order_push(order(type="plan_order", client_order_id="abc")), 0).events

    assert blank["client_order_id"] is None
    assert (plan["order_type"], plan["client_order_id"]) == ("plan_order", "abc")


def test_position_push_short_cross_hedge() -> None:
    raw = json.dumps(
        {
            "group": "futures/position",
            "data": [
                {
                    "symbol": "LTCUSDT",
                    "hold_volume": "5",
                    "position_type": 2,
                    "open_type": 2,
                    "open_avg_price": "70.1",
                    "liquidate_price": "90",
                    "update_time": 5,
                    "position_mode": "hedge_mode",
                }
            ],
        }
    )
    [(topic, event)] = private_parser().parse(raw, 9).events

    assert topic == "bitmart:position:main"
    assert (event["side"], event["mode"], event["margin_mode"], event["entry_price"]) == (
        "short",
        "hedge",
        "cross",
        "70.1",  # no hold_avg_price: the open average
    )


def test_private_parser_account_is_validated() -> None:
    with pytest.raises(ValueError):
        ADAPTER.new_parser("bad:account")


#: The futures v2 doc's "Get All Open Orders" example reply.
OPEN_ORDERS_BODY = json.dumps(
    {
        "code": 1000,
        "message": "Ok",
        "data": [
            {
                "order_id": "220908185908509",
                "client_order_id": "BM123",
                "price": "14277",
                "size": "7216",
                "symbol": "BTCUSDT",
                "state": 4,
                "side": 3,
                "type": "limit",
                "position_mode": "hedge_mode",
                "leverage": "0",
                "open_type": "isolated",
                "deal_avg_price": "14277",
                "deal_size": "7216",
                "preset_take_profit_price_type": 1,
                "preset_stop_loss_price_type": 2,
                "preset_take_profit_price": "68000",
                "preset_stop_loss_price": "60000",
                "create_time": 1662368173000,
                "update_time": 1662368173000,
            }
        ],
        "trace": "80ba1f07-1b6f-46ad-81dd-78ac7e9bbccd",
    }
).encode()
#: The futures v2 doc's "Get Current Position" example reply.
POSITIONS_BODY = json.dumps(
    {
        "code": 1000,
        "message": "Ok",
        "data": [
            {
                "symbol": "BTCUSDT",
                "leverage": "5",
                "timestamp": 1663814313531,
                "current_fee": "5.00409471",
                "open_timestamp": 1662714817820,
                "current_value": "16680.3157",
                "mark_value": "16673.27053207877",
                "mark_price": "93000.50",
                "position_value": "18584.272343943943943944339",
                "position_cross": "3798.397624451826977945",
                "maintenance_margin": "4798.397624451826977945",
                "margin_type": "Isolated",
                "position_mode": "hedge_mode",
                "close_vol": "100",
                "close_avg_price": "20700.7",
                "open_avg_price": "20200",
                "entry_price": "20201",
                "current_amount": "899",
                "unrealized_value": "1903.956643943943943944339",
                "realized_value": "55.049173071454605573",
                "position_type": 2,
                "account": "futures",
            }
        ],
        "trace": "ae96cae5-1f09-4ea5-971e-4474a6724bc8",
    }
).encode()


def test_parse_open_orders_doc_example() -> None:
    assert ADAPTER.parse_open_orders(OPEN_ORDERS_BODY, "main", 7) == [
        (
            "bitmart:order:main",
            {
                "type": "order",
                "exchange": "bitmart",
                "account": "main",
                "symbol": "BTCUSDT",
                "order_id": "220908185908509",
                "client_order_id": "BM123",
                "side": "sell",
                "order_type": "limit",
                "status": "filled",
                "status_raw": "4",
                "price": "14277",
                "size": "7216",
                "filled_size": "7216",
                "avg_fill_price": "14277",
                "reduce_only": False,
                "ts_exchange": 1662368173000,
                "ts_received": 7,
                "snapshot": True,
            },
        )
    ]


def test_parse_positions_doc_example() -> None:
    [(topic, event)] = ADAPTER.parse_positions(POSITIONS_BODY, "main", 7)

    assert topic == "bitmart:position:main"
    assert event == {
        "type": "position",
        "exchange": "bitmart",
        "account": "main",
        "symbol": "BTCUSDT",
        "side": "short",
        "mode": "hedge",
        "size": "899",
        "entry_price": "20201",
        "mark_price": "93000.50",
        "liquidation_price": None,
        "leverage": "5",
        "margin_mode": "isolated",
        "unrealized_pnl": "1903.956643943943943944339",
        "ts_exchange": 1663814313531,
        "ts_received": 7,
        "snapshot": True,
    }
    assert list(event) == POSITION_KEYS


@pytest.mark.parametrize(
    ("body", "text"),
    [
        (b'{"code":30005,"message":"Header X-BM-SIGN is wrong","data":{}}', "30005: Header X-BM-SIGN is wrong"),
        (b"[]", "not an object"),
        (b'{"code":1000,"data":{}}', "no data list"),
        (b'{"code":1000,"data":[{"symbol":"X"}]}', "malformed"),
    ],
)
def test_rest_snapshot_errors(body: bytes, text: str) -> None:
    with pytest.raises(ValueError, match=text):
        ADAPTER.parse_open_orders(body, "main", 0)
    with pytest.raises(ValueError):
        ADAPTER.parse_positions(body, "main", 0)
