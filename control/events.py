"""Normalized event shapes, as published to Redis and SSE (JSON objects, orjson-encoded).

Every price and size is the exchange's decimal string, untouched. Times are epoch
milliseconds (int). Exchange ids (trade ids) are strings. Adapters build these dicts
directly (no intermediate objects on the hot path); the TypedDicts document the shape.
"""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict


class KlineEvent(TypedDict):
    """A candle update. ``closed`` is true once the bar is final.

    ``open_time``/``close_time``: ms, ``close_time = open_time + timeframe_ms - 1``.
    ``ts_exchange``: exchange event time in ms, or None when the exchange sends none (BitMart).
    Exchanges without a closed flag (BitMart, Gate): the bar goes out closed by ``close_time +
    KLINE_CLOSE_GRACE_MS`` with the last values seen, once; ``correction`` (only then present, true) marks a
    closed bar sent again because an update changed it afterwards: its new final values (``workers.kline_close``).
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
    correction: NotRequired[bool]


class TradeEvent(TypedDict):
    """One public trade. ``side`` is the taker side (``buy``|``sell``), or None when the exchange did not say (a
    BitMart trade without ``m``: exchanges.md §1.6); ``trade_id`` a string."""

    type: Literal["trade"]
    exchange: str
    symbol: str
    trade_id: str
    price: str
    size: str
    side: Literal["buy", "sell"] | None
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


class TickerEvent(TypedDict):
    """24-hour ticker. Every value is the exchange's decimal string, or None where it sends none.

    ``change_pct_24h`` is in percent (BitMart's ``range`` ratio is scaled by 100 with Decimal math).
    """

    type: Literal["ticker"]
    exchange: str
    symbol: str
    last: str | None
    mark_price: str | None
    index_price: str | None
    high_24h: str | None
    low_24h: str | None
    volume_24h: str | None
    change_pct_24h: str | None
    funding_rate: str | None
    ts_exchange: int | None
    ts_received: int


class BookTickerEvent(TypedDict):
    """Best bid/ask. ``update_id`` is the exchange's book update id as a string, or None."""

    type: Literal["bookticker"]
    exchange: str
    symbol: str
    bid_price: str | None
    bid_size: str | None
    ask_price: str | None
    ask_size: str | None
    update_id: str | None
    ts_exchange: int | None
    ts_received: int


class DepthEvent(TypedDict):
    """Top-``levels`` order book snapshot, best first: ``bids``/``asks`` are ``[[price, size], ...]``.

    ``update_id``: the last exchange update id applied (string). Published at ``DEPTH_INTERVAL_MS``.
    """

    type: Literal["depth"]
    exchange: str
    symbol: str
    levels: int
    bids: list[list[str]]
    asks: list[list[str]]
    update_id: str
    ts_exchange: int | None
    ts_received: int


class DepthDeltaEvent(TypedDict):
    """One validated book update, as applied: absolute sizes, ``"0"`` deletes the level.

    ``first_update_id``/``last_update_id``: the exchange's ids (strings) this update covers.
    """

    type: Literal["depth_delta"]
    exchange: str
    symbol: str
    first_update_id: str
    last_update_id: str
    bids: list[list[str]]
    asks: list[list[str]]
    ts_exchange: int | None
    ts_received: int


class OrderEvent(TypedDict):
    """An order update of one account (private). Ids are strings; prices/sizes decimal strings as sent.

    ``status``: new | partially_filled | filled | canceled | expired | rejected (lowercase; the
    exchange's own word in ``status_raw``). ``snapshot`` is true for orders fetched over REST after a
    reconnect or a gap (consumers converge on them).
    """

    type: Literal["order"]
    exchange: str
    account: str
    symbol: str
    order_id: str
    client_order_id: str | None
    side: Literal["buy", "sell"]
    order_type: str
    status: str
    status_raw: str
    price: str | None
    size: str | None
    filled_size: str | None
    avg_fill_price: str | None
    reduce_only: bool | None
    ts_exchange: int | None
    ts_received: int
    snapshot: bool


class PositionEvent(TypedDict):
    """A position of one account (private). ``side``: long | short | both (one-way mode net position)."""

    type: Literal["position"]
    exchange: str
    account: str
    symbol: str
    side: str
    mode: str | None
    size: str
    entry_price: str | None
    mark_price: str | None
    liquidation_price: str | None
    leverage: str | None
    margin_mode: str | None
    unrealized_pnl: str | None
    ts_exchange: int | None
    ts_received: int
    snapshot: bool


class BalanceEvent(TypedDict):
    """One asset balance of one account (private): ``balance`` (wallet), ``available``, ``frozen``."""

    type: Literal["balance"]
    exchange: str
    account: str
    asset: str
    balance: str | None
    available: str | None
    frozen: str | None
    ts_exchange: int | None
    ts_received: int
    snapshot: bool
