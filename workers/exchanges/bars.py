"""Kline bars for exchanges whose pushes carry no "closed" flag (BitMart, Gate.io): pure helpers.

Such an exchange pushes the forming bar again and again; a bar is known to be over when an item opens a later
one. Its adapter then emits the previous bar once more with ``closed: True`` (``workers.kline_close`` also closes
a quiet bar on time), and drops items older than the last bar it saw (counted by the adapter as
``stale_klines``).
"""

from __future__ import annotations

from typing import Any

#: ``bar_step`` verdicts: an update of the last bar (or the first bar), a later bar, an older bar.
SAME, NEXT, STALE = "same", "next", "stale"


def bar_step(last: dict[str, Any] | None, open_time: int) -> str:
    """Where an item opening at ``open_time`` (ms) stands against the topic's ``last`` bar event."""
    if last is None or open_time == last["open_time"]:
        return SAME
    return STALE if open_time < last["open_time"] else NEXT


def closed_again(last: dict[str, Any], ts_received_ms: int) -> dict[str, Any]:
    """``last`` once more as final (``closed: True``), received now; its own ``ts_exchange`` kept."""
    return {**last, "closed": True, "ts_received": ts_received_ms}


def kline_event(
    exchange: str, symbol: str, timeframe: str, timeframe_ms: int, open_time: int, item: dict[str, Any],
    volume: Any, ts_exchange: int | None, ts_received_ms: int,
) -> dict[str, Any]:
    """A forming bar (``control.events`` kline shape) from a wire item with ``o h l c`` decimal strings; times in ms,
    ``close_time = open_time + timeframe_ms - 1``."""
    return {
        "type": "kline",
        "exchange": exchange,
        "symbol": symbol,
        "timeframe": timeframe,
        "open_time": open_time,
        "close_time": open_time + timeframe_ms - 1,
        "open": item["o"],
        "high": item["h"],
        "low": item["l"],
        "close": item["c"],
        "volume": volume,
        "closed": False,
        "ts_exchange": ts_exchange,
        "ts_received": ts_received_ms,
    }
