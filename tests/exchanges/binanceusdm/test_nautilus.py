"""Binance USD-M: the nautilus fixtures (bare ws-mode payloads) through the public parser."""

from __future__ import annotations

import json

import pytest

from tests.exchanges.binanceusdm._helpers import (
    KLINE_KEYS,
    TICKER_KEYS,
    fixture_bytes,
    only_book,
    only_event,
    parser,
)
from workers.exchanges.base import BookUpdate, Parsed


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
