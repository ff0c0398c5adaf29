"""BitMart public channels: JKorf fixture conversations, acks, pongs, malformed frames, ticker and
best bid/ask (``workers.exchanges.bitmart.public``)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from scripts.tapes import BITMART_FIXTURES, read_jkorf
from tests.exchanges.bitmart._helpers import (
    ADAPTER,
    BOOKTICKER_KEYS,
    FIXTURE_CANDLE,
    KLINE_KEYS,
    TICKER_KEYS,
    TRADE_KEYS,
    expected_kline,
    kline_push,
    parser,
)
from workers.exchanges.base import Ack, Parsed
from workers.exchanges.bitmart.wire import ratio_to_percent

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
