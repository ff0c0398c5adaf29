"""Shared constants and builders of the Binance USD-M adapter tests."""

from __future__ import annotations

import collections
from typing import Any

from control.accounts import Account
from control.topics import Topic
from scripts.tapes import (
    sample_path,
)
from workers.exchanges.base import BookUpdate, Parsed
from workers.exchanges.binanceusdm import BinanceUsdmAdapter, BinanceUsdmParser

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


# --- nautilus fixtures (bare ws-mode payloads) ----------------------------------------------------


def fixture_bytes(name: str) -> bytes:
    return sample_path(f"{NAUTILUS}/{name}.json").read_bytes()


# --- user data: listenKey, events, signed REST snapshots (§7-§9) ------------------------------------------------------

#: binance_usdm.md §8 own vectors: key and secret.
CREDS = Account("binanceusdm", "main", "feedplane-test-apikey-0001", "feedplane-test-secret-0001")


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
