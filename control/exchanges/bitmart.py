"""BitMart USDT-M futures v2: what the control plane validates against (facts: ``shared/reference/exchanges.md`` §1)."""

from __future__ import annotations

from control.exchanges.declaration import ExchangeDeclaration, ExchangeSetting

BITMART = ExchangeDeclaration(
    id="bitmart",
    name="BitMart USDT-M futures",
    channels=("kline", "trade", "ticker", "bookticker", "depth"),
    private_channels=("order", "position", "balance"),
    # futures/klineBin{1m,5m,15m,30m,1H,2H,4H,1D,1W} (§1.6)
    timeframes=("1m", "5m", "15m", "30m", "1h", "2h", "4h", "1d", "1w"),
    # futures/depthIncrease50 keeps 50 levels; levels outside never get updates (§1.6)
    depth_levels_cap=50,
    # every signature covers "<ts>#<memo>#<payload>" (§1.3): the memo is required
    credentials={"api_key": "BITMART_API_KEY", "api_secret": "BITMART_API_SECRET", "memo": "BITMART_API_MEMO"},
    ws_url_env="BITMART_PUBLIC_WS_URI",
    private_ws_url_env="BITMART_PRIVATE_WS_URI",
    rest_url_env="BITMART_REST_URI",
    settings=(
        ExchangeSetting("BITMART_PUBLIC_WS_URI", "wss://openapi-ws-v2.bitmart.com/api?protocol=1.1", "ws_url",
                        "BitMart public futures WebSocket (§1.1)"),
        ExchangeSetting("BITMART_PRIVATE_WS_URI", "wss://openapi-ws-v2.bitmart.com/user?protocol=1.1", "ws_url",
                        "BitMart private futures WebSocket, login first (§1.1, §1.3)"),
        ExchangeSetting("BITMART_REST_URI", "https://api-cloud-v2.bitmart.com", "http_url",
                        "BitMart futures REST: open orders and positions after a (re)connect (§1.1)"),
        ExchangeSetting("BITMART_API_KEY", "", "secret", "API key of the default BitMart account"),
        ExchangeSetting("BITMART_API_SECRET", "", "secret", "API secret of the default BitMart account"),
        ExchangeSetting("BITMART_API_MEMO", "", "secret", "API memo of the default BitMart account (signed, §1.3)"),
    ),
)  # fmt: skip
