"""BitMart kline close inference, timeframe mapping, trades and exchange times (``workers.exchanges.bitmart.wire``)."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from control.topics import Topic
from tests.exchanges.bitmart._helpers import ADAPTER, KLINE_KEYS, expected_kline, kline_push, kline_topic, parser
from workers.exchanges.base import Parsed
from workers.exchanges.bitmart.wire import group_to_topic, native_topic, rfc3339_to_ms

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
