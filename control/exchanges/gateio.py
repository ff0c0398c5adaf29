"""Gate.io USDT futures v4: what the control plane validates against (facts: ``shared/reference/exchanges.md`` §2)."""

from __future__ import annotations

from control.exchanges.declaration import ExchangeDeclaration
from control.setting_spec import API_KEY, API_SECRET, HTTP_URL, REST, TEXT, UID, WS, WS_URL, Setting

GATEIO = ExchangeDeclaration(
    id="gateio",
    name="Gate.io USDT futures",
    aliases=("gate",),  # ccxt knows Gate.io as both
    channels=("kline", "trade", "ticker", "bookticker", "depth"),
    private_channels=("order", "position", "balance"),
    # futures.candlesticks intervals 10s 1m 5m 15m 30m 1h 4h 8h 1d 7d (§2.5); 7d is our 1w. 2h is not in the WS doc,
    # so a 2h subscription is refused rather than guessed.
    timeframes=("1m", "5m", "15m", "30m", "1h", "4h", "1d", "1w"),
    # futures.order_book_update level "100" notifies updates within the top 100; the REST snapshot takes limit=100
    orders=True,  # workers/exchanges/<id>/orders.py
    depth_levels_cap=100,
    settings=(
        # one USDT futures socket for public and private channels (§2.1)
        Setting("GATEIO_WS_URI", "wss://fx-ws.gateio.ws/v4/ws/usdt", WS_URL, "Gate.io USDT futures socket", role=WS),
        # depth snapshots and private snapshots (§2.5, §2.7)
        Setting("GATEIO_REST_URI", "https://api.gateio.ws", HTTP_URL,
                "Gate.io REST (order-book and private snapshots)", role=REST),
        Setting("GATEIO_API_KEY", "", TEXT, "default Gate.io account: API key", secret=True, role=API_KEY),
        Setting("GATEIO_API_SECRET", "", TEXT, "default Gate.io account: API secret (required with the key)",
                secret=True, role=API_SECRET),
        # private payloads name the user id (§2.6)
        Setting("GATEIO_UID", "", TEXT, "default Gate.io account: user id", secret=True, role=UID),
    ),
)  # fmt: skip
