"""Gate.io futures public pushes: replies, keep-alive, errors, kline close inference, trades, tickers,
book ticker and book (``workers.exchanges.gateio.public``/``book``)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.exchanges.gateio._helpers import ADAPTER, candle, parser, push, trade
from workers.exchanges.base import Ack, Parsed, match_request

# --- replies, keep-alive, errors -------------------------------------------------------------


def test_error_reply_keeps_the_exchange_text() -> None:
    raw = json.dumps(
        {
            "time": 1,
            "time_ms": 1000,
            "id": 5,
            "channel": "futures.candlesticks",
            "event": "subscribe",
            "payload": ["1m", "BTC_USDT_20220318"],
            "error": {"code": 2, "message": "unknown contract BTC_USDT_20220318"},
            "result": {"status": "fail"},
        }
    )

    assert parser().parse(raw, 0).acks == [
        Ack(
            ok=False,
            topic="gateio:kline:BTC_USDT_20220318:1m",
            request_id=5,
            error="2: unknown contract BTC_USDT_20220318",
        )
    ]


def test_error_reply_without_id_and_payload() -> None:
    raw = '{"time":1,"channel":"futures.trades","event":"subscribe","error":{"code":2,"message":"unknown contract X"}}'

    assert parser().parse(raw, 0).acks == [
        Ack(ok=False, error="2: unknown contract X", channel="trade", symbols=("X",))
    ]


def test_failed_status_without_error_object() -> None:
    raw = '{"time":1,"id":3,"channel":"futures.trades","event":"subscribe","error":null,"result":{"status":"fail"}}'

    [ack] = parser().parse(raw, 0).acks
    assert (ack.ok, ack.request_id, ack.error) == (False, 3, "request failed (status 'fail')")


def test_unsubscribe_ack_with_several_contracts_has_no_topic() -> None:
    raw = json.dumps(
        {"time": 1, "id": 9, "channel": "futures.book_ticker", "event": "unsubscribe",
         "payload": ["BTC_USDT", "ETH_USDT"], "error": None, "result": {"status": "success"}}
    )  # fmt: skip

    assert parser().parse(raw, 0).acks == [Ack(ok=True, action="unsubscribe", request_id=9)]
    # without the id, the echoed contracts are what ties it to its request (match_request)
    no_id = raw.replace('"id": 9, ', "")
    assert parser().parse(no_id, 0).acks == [
        Ack(ok=True, action="unsubscribe", channel="bookticker", symbols=("BTC_USDT", "ETH_USDT"))
    ]
    requests = {1: ("unsubscribe", ("gateio:bookticker:SOL_USDT",)), 2: ("unsubscribe", ("gateio:bookticker:BTC_USDT",
                "gateio:bookticker:ETH_USDT"))}  # fmt: skip
    assert match_request(parser().parse(no_id, 0).acks[0], requests) == 2


def test_pong_upgrade_and_frame_level_errors() -> None:
    p = parser()

    assert p.parse('{"time":1,"time_ms":1001,"channel":"futures.pong","event":"","result":null}', 0) == Parsed(
        pong=True
    )
    # gatews closes and reconnects on any frame with event "upgrade" (§2.4): a reconnect request, not an error
    assert p.parse('{"time":1,"channel":"futures.tickers","event":"upgrade"}', 0) == Parsed(
        reconnect="server asked to reconnect (event upgrade)"
    )
    assert p.parse('{"time":1,"channel":"futures.x","event":"","error":{"code":1,"message":"bad"}}', 0) == Parsed(
        error="1: bad"
    )
    assert p.parse('{"time":1,"channel":"futures.order_book","event":"all","result":{}}', 0) == Parsed(unknown=True)
    assert p.parse("[1,2]", 0) == Parsed(unknown=True)


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"",
        push(
            "futures.trades", [{"size": 1.5, "id": 1, "create_time_ms": 1, "price": "1", "contract": "A_USDT"}]
        ).encode(),
        push("futures.trades", None).encode(),
        push("futures.order_book_update", {"t": 1, "s": "A_USDT", "U": "x", "u": 2, "b": [], "a": []}).encode(),
        push(
            "futures.order_book_update", {"t": 1, "s": "A_USDT", "U": 1, "u": 2, "b": [{"p": "1", "s": 0.5}], "a": []}
        ).encode(),
        push("futures.book_ticker", {"t": 1, "s": "A_USDT"}).encode(),
        push("futures.candlesticks", [candle(1, "1") | {"t": "soon"}]).encode(),
        push("futures.trades", [trade(1, create_time_ms="later")]).encode(),
    ],
)
def test_malformed_frames_raise_value_error(raw: bytes) -> None:
    with pytest.raises(ValueError):
        parser().parse(raw, 0)


# --- klines: close inference ----------------------------------------------------------------


def test_closed_bar_is_inferred_when_a_later_bar_arrives() -> None:
    p = parser()
    p.parse(push("futures.candlesticks", [candle(60, "1")], time_ms=61_000), 1)
    p.parse(push("futures.candlesticks", [candle(60, "2")], time_ms=100_000), 2)
    later = p.parse(push("futures.candlesticks", [candle(120, "3")], time_ms=121_000), 3)
    stale = p.parse(push("futures.candlesticks", [candle(60, "9")], time_ms=122_000), 4)

    [(t1, closed), (t2, opened)] = later.events
    assert t1 == t2 == "gateio:kline:BTC_USDT:1m"
    assert (closed["open_time"], closed["close"], closed["closed"], closed["ts_exchange"], closed["ts_received"]) == (
        60_000,
        "2",
        True,
        100_000,
        3,
    )
    assert (opened["open_time"], opened["close"], opened["closed"]) == (120_000, "3", False)
    assert stale == Parsed() and p.stale_klines == 1


def test_bars_are_sorted_and_topics_independent() -> None:
    p = parser()
    items = [candle(120, "b"), candle(60, "a"), candle(60, "x", n="1m_ETH_USDT")]
    events = p.parse(push("futures.candlesticks", items), 0).events

    assert [(t, e["open_time"], e["closed"]) for t, e in events] == [
        ("gateio:kline:BTC_USDT:1m", 60_000, False),
        ("gateio:kline:ETH_USDT:1m", 60_000, False),
        ("gateio:kline:BTC_USDT:1m", 60_000, True),
        ("gateio:kline:BTC_USDT:1m", 120_000, False),
    ]


def test_emitted_kline_dicts_can_be_mutated_by_the_consumer() -> None:
    p = parser()
    [(_, first)] = p.parse(push("futures.candlesticks", [candle(60, "1")]), 0).events
    first["close"] = "mutated"
    [(_, closed), _] = p.parse(push("futures.candlesticks", [candle(120, "2")]), 0).events

    assert closed["close"] == "1"


def test_intervals_we_never_subscribe_are_unknown() -> None:
    assert parser().parse(push("futures.candlesticks", [candle(60, "1", n="10s_BTC_USDT")]), 0) == Parsed(unknown=True)


def test_kline_without_time_ms_and_string_volume() -> None:
    raw = json.dumps(
        {"time": 1, "channel": "futures.candlesticks", "event": "update", "result": [candle(60, "1", v="2.5")]}
    )
    [(_, event)] = parser().parse(raw, 0).events

    assert (event["volume"], event["ts_exchange"]) == ("2.5", None)


# --- trades, tickers, book ticker, book -------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "side", "abs_size"),
    [(5, "buy", "5"), (-5, "sell", "5"), ("12.5", "buy", "12.5"), ("-0.25", "sell", "0.25"), ("+3", "buy", "3")],
)
def test_trade_side_and_size_from_the_sign(size: int | str, side: str, abs_size: str) -> None:
    [(_, event)] = parser().parse(push("futures.trades", [trade(size)]), 0).events

    assert (event["side"], event["size"]) == (side, abs_size)


@pytest.mark.parametrize(
    ("fields", "ts"),
    [
        ({"create_time_ms": 1545136464123}, 1545136464123),
        ({"create_time_ms": "1545136464123.999"}, 1545136464123),
        ({"create_time_ms": 1545136464123.5}, 1545136464123),
        ({"create_time_ms": None, "create_time": 1545136464}, 1545136464000),
        ({"create_time_ms": None, "create_time": None}, None),
    ],
)
def test_trade_time_is_exact(fields: dict[str, Any], ts: int | None) -> None:
    item = trade(1)
    item.update(fields)
    item = {k: v for k, v in item.items() if v is not None}
    [(_, event)] = parser().parse(push("futures.trades", [item]), 0).events

    assert event["ts_exchange"] == ts


def test_several_trades_in_wire_order() -> None:
    raw = push("futures.trades", [trade(1, id=1), trade(-2, id=2, contract="BTC_USDT")])
    events = parser().parse(raw, 0).events

    assert [(t, e["trade_id"], e["side"]) for t, e in events] == [
        ("gateio:trade:ETH_USDT", "1", "buy"),
        ("gateio:trade:BTC_USDT", "2", "sell"),
    ]


def test_ticker_without_base_volume_and_with_missing_values() -> None:
    raw = push("futures.tickers", [{"contract": "BTC_USDT", "last": "1", "volume_24h": 200, "funding_rate": ""}])
    [(_, event)] = parser().parse(raw, 0).events

    assert (event["volume_24h"], event["funding_rate"], event["mark_price"]) == ("200", None, None)


def test_book_ticker_with_an_empty_side() -> None:
    raw = push("futures.book_ticker", {"t": 5, "u": 9, "s": "BTC_USDT", "b": "", "B": 0, "a": "10", "A": 3})
    [(_, event)] = parser().parse(raw, 0).events

    assert (event["bid_price"], event["bid_size"], event["ask_price"], event["ask_size"]) == (None, None, "10", "3")


def test_full_book_push_is_a_snapshot() -> None:
    result = {"t": 5, "s": "BTC_USDT", "U": 1, "u": 10, "b": [{"p": "1", "s": "2"}], "a": [], "l": "100", "full": True}
    [book] = parser().parse(push("futures.order_book_update", result), 7).book

    assert (book.snapshot, book.first_id, book.last_id, book.bids, book.ts_received) == (True, 1, 10, [("1", "2")], 7)


def test_snapshot_error_bodies_raise_value_error() -> None:
    with pytest.raises(ValueError, match="INVALID_CONTRACT"):
        ADAPTER.parse_snapshot("X_USDT", b'{"label":"INVALID_CONTRACT","message":"no such contract"}', 0)
    with pytest.raises(ValueError):
        ADAPTER.parse_snapshot("X_USDT", b'{"id":1,"bids":[{"p":"1"}],"asks":[]}', 0)
    with pytest.raises(ValueError):
        ADAPTER.parse_snapshot("X_USDT", b"[]", 0)


def test_snapshot_without_current() -> None:
    book = ADAPTER.parse_snapshot("X_USDT", b'{"id":"42","bids":[],"asks":[{"p":"1","s":"0.5"}]}', 9)

    assert (book.last_id, book.ts_exchange, book.asks, book.ts_received) == (42, None, [("1", "0.5")], 9)
