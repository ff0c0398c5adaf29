"""Gate.io futures: the JKorf fixture conversations (doc-derived, decimal-string sizes)."""

from __future__ import annotations

import pytest

from scripts.tapes import sample_path
from tests.exchanges.gateio._helpers import ADAPTER, JKORF, TICKER_KEYS, TRADE_KEYS, fixture, parser
from workers.exchanges.base import Ack, BookUpdate, Parsed

ALL_FIXTURES = sorted(p.stem for p in sample_path(JKORF).glob("*.txt"))


@pytest.mark.parametrize("name", ALL_FIXTURES)
def test_every_fixture_frame_parses(name: str) -> None:
    p = parser()
    for raw in fixture(name, "<"):
        [ack] = p.parse(raw, 0).acks
        assert ack.ok and ack.action == "subscribe" and ack.request_id in (7, -999)
    for raw in fixture(name, "="):
        assert isinstance(p.parse(raw, 0), Parsed)


@pytest.mark.parametrize(
    "name",
    [
        "SubscribeToContractStatsUpdates",
        "SubscribeToOrderBookV2Updates",
        "SubscribeToPositionCloseUpdates",
        "SubscribeToReduceRiskLimitUpdates",
        "SubscribeToTriggerOrderUpdates",
        "SubscribeToUserAutoDeleverageUpdates",
        "SubscribeToUserLiquidationUpdates",
        "SubscribeToUserTradeUpdates",
    ],
)
def test_other_channels_are_unknown(name: str) -> None:
    [raw] = fixture(name, "=")

    assert parser().parse(raw, 0) == Parsed(unknown=True)
    assert ADAPTER.new_parser("main").parse(raw, 0) == Parsed(unknown=True)


def test_fixture_acks_carry_id_and_echoed_topic() -> None:
    [trades] = fixture("SubscribeToTradeUpdates", "<")
    [book] = fixture("SubscribeToBookUpdates", "<")
    [kline] = fixture("SubscribeToKlineUpdates", "<")  # the fixture mislabels it futures.order_book_update
    concurrent = fixture("Concurrent", "<")

    assert parser().parse(trades, 0).acks == [Ack(ok=True, topic="gateio:trade:ETH_USDT", request_id=-999)]
    assert parser().parse(book, 0).acks == [Ack(ok=True, topic="gateio:depth:ETH_USDT", request_id=-999)]
    assert parser().parse(kline, 0).acks == [Ack(ok=True, request_id=-999)]  # "5m" is no contract
    assert [parser().parse(raw, 0).acks[0].topic for raw in concurrent] == [
        "gateio:kline:ETH_USDT:1d",
        "gateio:kline:ETH_USDT:1h",
    ]


def test_kline_fixture() -> None:
    [raw] = fixture("SubscribeToKlineUpdates", "=")
    parsed = parser().parse(raw, 5)
    bar = {
        "type": "kline",
        "exchange": "gateio",
        "symbol": "ETH_USDT",
        "timeframe": "5m",
        "open_time": 1545129300000,
        "close_time": 1545129599999,
        "open": "94.3",
        "high": "96.9",
        "low": "89.5",
        "close": "95.4",
        "volume": "27525555.5",
        "closed": False,
        "ts_exchange": 1542162490123,
        "ts_received": 5,
    }

    # two items with the same t: two updates of one open bar
    assert parsed == Parsed(events=[("gateio:kline:ETH_USDT:5m", bar), ("gateio:kline:ETH_USDT:5m", bar)])


def test_concurrent_fixture_candles_without_fields_are_dropped() -> None:
    p = parser()
    results = [p.parse(raw, 0) for raw in fixture("Concurrent", "=")]

    assert results == [Parsed(unknown=True), Parsed(unknown=True)]
    assert p.incomplete_klines == 2


def test_trades_fixture() -> None:
    [raw] = fixture("SubscribeToTradeUpdates", "=")
    p = parser()
    [(topic, event)] = p.parse(raw, 5).events

    assert topic == "gateio:trade:ETH_USDT"
    assert list(event) == TRADE_KEYS
    assert event == {
        "type": "trade",
        "exchange": "gateio",
        "symbol": "ETH_USDT",
        "trade_id": "27753479",
        "price": "96.4",
        "size": "108.5",
        "side": "sell",
        "ts_exchange": 1545136464123,
        "ts_received": 5,
    }
    assert p.internal_trades == 1  # is_internal: true is still a trade, counted


def test_ticker_fixture() -> None:
    [raw] = fixture("SubscribeToTickerUpdates", "=")
    [(topic, event)] = parser().parse(raw, 5).events

    assert topic == "gateio:ticker:ETH_USDT"
    assert list(event) == TICKER_KEYS
    assert event == {
        "type": "ticker",
        "exchange": "gateio",
        "symbol": "ETH_USDT",
        "last": "118.4",
        "mark_price": "118.35",
        "index_price": "118.36",
        "high_24h": "132.5",
        "low_24h": "99.2",
        "volume_24h": "5526",  # volume_24h_base, not the contract count volume_24h
        "change_pct_24h": "0.77",
        "funding_rate": "-0.000114",
        "ts_exchange": 1541659086123,
        "ts_received": 5,
    }


def test_book_ticker_fixture() -> None:
    [raw] = fixture("SubscribeToBookTickerUpdates", "=")
    [(topic, event)] = parser().parse(raw, 5).events

    assert topic == "gateio:bookticker:ETH_USDT"
    assert (event["bid_price"], event["bid_size"], event["ask_price"], event["ask_size"]) == (
        "54696.6",
        "37000.5",
        "54696.7",
        "47061.2",
    )
    assert (event["update_id"], event["ts_exchange"]) == ("2517661076", 1615366379123)


def test_book_update_fixture() -> None:
    [raw] = fixture("SubscribeToBookUpdates", "=")

    assert parser().parse(raw, 5) == Parsed(
        book=[
            BookUpdate(
                topic="gateio:depth:ETH_USDT",
                symbol="ETH_USDT",
                bids=[("54672.1", "0"), ("54664.5", "58794.5")],
                asks=[("54743.6", "0"), ("54742", "95.2")],
                first_id=2517661101,
                last_id=2517661113,
                ts_exchange=1615366381417,
                ts_received=5,
            )
        ]
    )
