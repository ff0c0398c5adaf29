"""The keys of the normalized private events (``control.events``), the same on every exchange: the venue tests
assert each event has exactly these."""

ORDER_KEYS = [
    "type", "exchange", "account", "symbol", "order_id", "client_order_id", "side", "order_type", "status",
    "status_raw", "price", "size", "filled_size", "avg_fill_price", "reduce_only", "ts_exchange", "ts_received",
    "snapshot",
]  # fmt: skip
POSITION_KEYS = [
    "type", "exchange", "account", "symbol", "side", "mode", "size", "entry_price", "mark_price", "liquidation_price",
    "leverage", "margin_mode", "unrealized_pnl", "ts_exchange", "ts_received", "snapshot",
]  # fmt: skip
BALANCE_KEYS = [
    "type", "exchange", "account", "asset", "balance", "available", "frozen", "ts_exchange", "ts_received", "snapshot",
]  # fmt: skip
