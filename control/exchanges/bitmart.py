"""BitMart USDT-M futures v2: what the control plane validates against (facts: ``shared/reference/exchanges.md`` §1)."""

from __future__ import annotations

from control.exchanges.declaration import ExchangeDeclaration
from control.setting_spec import API_KEY, API_SECRET, HTTP_URL, MEMO, PRIVATE_WS, REST, TEXT, WS, WS_URL, Setting

BITMART = ExchangeDeclaration(
    id="bitmart",
    name="BitMart USDT-M futures",
    channels=("kline", "trade", "ticker", "bookticker", "depth"),
    private_channels=("order", "position", "balance"),
    # futures/klineBin{1m,5m,15m,30m,1H,2H,4H,1D,1W} (§1.6)
    timeframes=("1m", "5m", "15m", "30m", "1h", "2h", "4h", "1d", "1w"),
    # futures/depthIncrease50 keeps 50 levels; levels outside never get updates (§1.6)
    depth_levels_cap=50,
    settings=(
        # public and private futures sockets; the private one logs in first (§1.1, §1.3)
        Setting("BITMART_PUBLIC_WS_URI", "wss://openapi-ws-v2.bitmart.com/api?protocol=1.1", WS_URL,
                "BitMart public socket", role=WS),
        Setting("BITMART_PRIVATE_WS_URI", "wss://openapi-ws-v2.bitmart.com/user?protocol=1.1", WS_URL,
                "BitMart private socket (orders, positions, balances)", role=PRIVATE_WS),
        # futures REST: open orders and positions after a (re)connect (§1.1)
        Setting("BITMART_REST_URI", "https://api-cloud-v2.bitmart.com", HTTP_URL,
                "BitMart REST (open-order and position snapshots)", role=REST),
        # every signature covers "<ts>#<memo>#<payload>" (§1.3): the memo is required
        Setting("BITMART_API_KEY", "", TEXT, "default BitMart account: API key", secret=True, role=API_KEY),
        Setting("BITMART_API_SECRET", "", TEXT, "default BitMart account: API secret (required with the key)",
                secret=True, role=API_SECRET),
        Setting("BITMART_API_MEMO", "", TEXT, "default BitMart account: API memo", secret=True, role=MEMO),
    ),
)  # fmt: skip
