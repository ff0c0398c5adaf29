"""Binance USD-M futures: what the control plane validates against (facts: ``shared/reference/binance_usdm.md``)."""

from __future__ import annotations

from control.exchanges.declaration import ExchangeDeclaration, ExchangeSetting

BINANCEUSDM = ExchangeDeclaration(
    id="binanceusdm",
    name="Binance USD-M futures",
    channels=("kline", "trade", "ticker", "bookticker", "depth"),
    private_channels=("order", "position", "balance"),
    # kline intervals 1m ... 1M: every canonical timeframe under its own name (§5)
    timeframes=("1m", "5m", "15m", "30m", "1h", "2h", "4h", "1d", "1w"),
    # the @depth diff stream is not windowed and the REST snapshot has 1000 levels (§6): the API-wide
    # control.topics.DEPTH_LEVELS_MAX (100) applies
    depth_levels_cap=100,
    credentials={"api_key": "BINANCE_API_KEY", "api_secret": "BINANCE_API_SECRET"},
    ws_url_env="BINANCE_USDM_WS_URI",
    rest_url_env="BINANCE_USDM_REST_URI",
    settings=(
        ExchangeSetting("BINANCE_USDM_WS_URI", "wss://fstream.binance.com", "ws_url",
                        "Binance USD-M WebSocket base; routes /market, /public, /private are added (§1)"),
        ExchangeSetting("BINANCE_USDM_REST_URI", "https://fapi.binance.com", "http_url",
                        "Binance USD-M REST: depth snapshots, listenKeys, private snapshots (§6-§8)"),
        ExchangeSetting("BINANCE_USDM_TRADE_STREAM", "aggTrade", "choice",
                        "stream of trade topics: aggTrade (documented, /market) or trade (raw, /public) (§2, §5)",
                        choices=("aggTrade", "trade")),
        ExchangeSetting("BINANCE_API_KEY", "", "secret", "API key of the default Binance USD-M account"),
        ExchangeSetting("BINANCE_API_SECRET", "", "secret", "API secret of the default Binance USD-M account"),
    ),
)  # fmt: skip
