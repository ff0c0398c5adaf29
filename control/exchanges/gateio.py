"""Gate.io USDT futures v4: what the control plane validates against (facts: ``shared/reference/exchanges.md`` §2)."""

from __future__ import annotations

from control.exchanges.declaration import ExchangeDeclaration, ExchangeSetting

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
    depth_levels_cap=100,
    # private payloads name the user id (§2.6)
    credentials={"api_key": "GATEIO_API_KEY", "api_secret": "GATEIO_API_SECRET", "uid": "GATEIO_UID"},
    ws_url_env="GATEIO_WS_URI",
    rest_url_env="GATEIO_REST_URI",
    settings=(
        ExchangeSetting("GATEIO_WS_URI", "wss://fx-ws.gateio.ws/v4/ws/usdt", "ws_url",
                        "Gate.io USDT futures WebSocket, public and private (§2.1)"),
        ExchangeSetting("GATEIO_REST_URI", "https://api.gateio.ws", "http_url",
                        "Gate.io REST: depth snapshots and private snapshots (§2.5, §2.7)"),
        ExchangeSetting("GATEIO_API_KEY", "", "secret", "API key of the default Gate.io account"),
        ExchangeSetting("GATEIO_API_SECRET", "", "secret", "API secret of the default Gate.io account"),
        ExchangeSetting("GATEIO_UID", "", "secret", "user id of the default Gate.io account (private payloads, §2.6)"),
    ),
)  # fmt: skip
