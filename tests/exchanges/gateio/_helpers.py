"""Shared constants and frame builders of the Gate.io futures v4 adapter tests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import orjson

from control.accounts import Account
from control.topics import Topic
from scripts.tapes import read_jkorf
from workers.exchanges.gateio import GateioAdapter, GateioParser

ADAPTER = GateioAdapter()
JKORF = "jkorf-gateio-net"
KLINE_KEYS = [
    "type", "exchange", "symbol", "timeframe", "open_time", "close_time",
    "open", "high", "low", "close", "volume", "closed", "ts_exchange", "ts_received",
]  # fmt: skip
TRADE_KEYS = ["type", "exchange", "symbol", "trade_id", "price", "size", "side", "ts_exchange", "ts_received"]
TICKER_KEYS = [
    "type", "exchange", "symbol", "last", "mark_price", "index_price", "high_24h", "low_24h",
    "volume_24h", "change_pct_24h", "funding_rate", "ts_exchange", "ts_received",
]  # fmt: skip
BOOKTICKER_KEYS = [
    "type", "exchange", "symbol", "bid_price", "bid_size", "ask_price", "ask_size",
    "update_id", "ts_exchange", "ts_received",
]  # fmt: skip


def parser() -> GateioParser:
    return ADAPTER.new_parser()


def push(channel: str, result: Any, time_ms: int = 1_700_000_000_123) -> str:
    return json.dumps(
        {"time": time_ms // 1000, "time_ms": time_ms, "channel": channel, "event": "update", "result": result}
    )


def candle(t: int, close: str, n: str = "1m_BTC_USDT", v: int | str = 3) -> dict[str, Any]:
    return {"t": t, "v": v, "c": close, "h": "110", "l": "90", "o": "100", "n": n}


def trade(size: int | str, **kw: Any) -> dict[str, Any]:
    item = {"size": size, "id": 7, "create_time": 1545136464, "create_time_ms": 1545136464123, "price": "96.4"}
    return {**item, "contract": "ETH_USDT", **kw}


# --- JKorf fixture conversations (doc-derived, decimal-string sizes) ------------------------------


def fixture(name: str, direction: str) -> list[str]:
    # Concurrent.txt carries a literal |id| placeholder in its acks
    return [f.raw.replace("|id|", "7") for f in read_jkorf(f"{JKORF}/{name}.txt") if f.direction == direction]


# --- frames we send --------------------------------------------------------------------------


def topics(*texts: str) -> list[Topic]:
    return [Topic.parse(t) for t in texts]


def sent(frames: list[Any]) -> list[dict[str, Any]]:
    return [orjson.loads(f.text) for f in frames]
#: exchanges.md §2.3 vector: key, secret and the uid ccxt was given.
CREDS = Account("gateio", "main", "gatekey_0123456789abcdef", "gatesecret_fedcba9876543210", uid="123456")
PRIVATE = [Topic.parse(f"gateio:{channel}:main") for channel in ("order", "position", "balance")]
ORDERS_SIGN = (
    "7ea8581ea4ed064655c445ad7d464ee76ecf4f356d321c08d47efb5cb7a29f40"
    "0786abc686338b36545b8f3f6d576dcbf1f8f60f753484a2430fa03ee06b0330"
)


@dataclass(frozen=True)
class BareCreds:
    """A Credentials without ``uid``: Gate's user id travels in ``memo``."""

    exchange: str
    account: str
    api_key: str
    api_secret: str
    memo: str
