"""Normalized event shapes, as published to Redis and SSE (JSON objects, orjson-encoded).

Every price and size is the exchange's decimal string, untouched. Times are epoch
milliseconds (int). Exchange ids (trade ids) are strings. Adapters build these dicts
directly (no intermediate objects on the hot path); the TypedDicts document the shape.
"""

from __future__ import annotations

from typing import Literal, TypedDict


class KlineEvent(TypedDict):
    """A candle update. ``closed`` is true once the bar is final.

    ``open_time``/``close_time``: ms, ``close_time = open_time + timeframe_ms - 1``.
    ``ts_exchange``: exchange event time in ms, or None when the exchange sends none (BitMart).
    """

    type: Literal["kline"]
    exchange: str
    symbol: str
    timeframe: str
    open_time: int
    close_time: int
    open: str
    high: str
    low: str
    close: str
    volume: str
    closed: bool
    ts_exchange: int | None
    ts_received: int


class TradeEvent(TypedDict):
    """One public trade. ``side`` is the taker side (``buy``|``sell``); ``trade_id`` a string."""

    type: Literal["trade"]
    exchange: str
    symbol: str
    trade_id: str
    price: str
    size: str
    side: Literal["buy", "sell"]
    ts_exchange: int | None
    ts_received: int


class GapEvent(TypedDict):
    """Tells a consumer that events of ``topic`` may be missing between two points.

    ``reason`` is a short code (``reconnect``, ``retention``); ``since``/``until`` in ms when known.
    """

    type: Literal["gap"]
    topic: str
    reason: str
    since: int | None
    until: int | None
