"""Shared constants and frame builders of the BitMart futures v2 adapter tests."""

from __future__ import annotations

import json
from typing import Any

from control.accounts import Account
from control.topics import Topic
from workers.exchanges.bitmart import BitmartAdapter, BitmartParser

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


# --- private channels: event keys (§1.7) and login vectors (§1.3) -----------------------------------------------------

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
