"""BitMart futures v2 adapter: JKorf fixture conversations, kline close inference, trades, ticker, best bid/ask,
order book (depthIncrease), frames."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from control.topics import Topic
from scripts.tapes import BITMART_FIXTURES, read_jkorf
from workers.exchanges.base import Ack, AdapterError, BookUpdate, Parsed
from workers.exchanges.bitmart import (
    BitmartAdapter,
    BitmartParser,
    group_to_topic,
    native_topic,
    ratio_to_percent,
    rfc3339_to_ms,
)

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
                        "side": "buy",
                        "ts_exchange": 1677225251124,
                        "ts_received": 5,
                    },
                )
            ]
        )
    ]
    assert list(pushes[0].events[0][1]) == TRADE_KEYS
    assert p.side_defaulted == 1


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


@pytest.mark.parametrize("name", ["Balances.txt", "OrderBook.txt", "Orders.txt", "Positions.txt"])
def test_other_fixture_frames_are_unknown(name: str) -> None:
    p = parser()
    for frame in read_jkorf(f"{BITMART_FIXTURES}/{name}"):
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


@pytest.mark.parametrize(
    "raw",
    [
        '{"action":"access","success":true}',
        '{"action":"access","success":false,"error":"access failed: openapi auth failed"}',
    ],
)
def test_login_replies_are_unknown_for_now(raw: str) -> None:
    assert parser().parse(raw, 0) == Parsed(unknown=True)


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

    assert ADAPTER.book_rule == "bitmart"
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
    assert p.side_defaulted == 0


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
