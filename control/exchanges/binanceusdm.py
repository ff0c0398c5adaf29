"""Binance USD-M futures: what the control plane validates against (facts: ``shared/reference/binance_usdm.md``)."""

from __future__ import annotations

from control.exchanges.declaration import ExchangeDeclaration
from control.setting_spec import API_KEY, API_SECRET, HTTP_URL, KEEPALIVE_S, REST, TEXT, WS, WS_URL, Setting, one_of

#: Native stream of ``trade`` topics: ``aggTrade`` (documented, on /market; trade_id = aggregate id) or ``trade``
#: (raw trades; not in the official stream list, on /public) (§2, §5). Read with ``Settings.value(TRADE_STREAM)``.
TRADE_STREAM: Setting[str] = Setting(
    "BINANCE_USDM_TRADE_STREAM", "aggTrade", one_of(("aggTrade", "trade")),
    "native stream of `trade` topics: `aggTrade` (the documented `<s>@aggTrade` on `/market`; one event per "
    "aggregate of fills with one price and taker side, `trade_id` = the aggregate id, `size` = their sum) or "
    "`trade` (raw `<s>@trade` on `/public`, not in Binance's official stream list: if Binance stopped serving "
    "it, the subscription would be acked and stay silent); trade ids change meaning when you switch")  # fmt: skip
#: listenKey keepalive (PUT) period; a key lives 60 min, keep it <= 30 min (§7). ``Settings.value(...)``.
LISTEN_KEY_KEEPALIVE: Setting[float] = Setting(
    "LISTEN_KEY_KEEPALIVE_S", 1800.0, KEEPALIVE_S, "Binance USD-M listenKey keepalive period (a key lives 60 min)")  # fmt: skip

BINANCEUSDM = ExchangeDeclaration(
    id="binanceusdm",
    name="Binance USD-M futures",
    channels=("kline", "trade", "ticker", "bookticker", "depth"),
    private_channels=("order", "position", "balance"),
    # kline intervals 1m ... 1M: every canonical timeframe under its own name (§5)
    timeframes=("1m", "5m", "15m", "30m", "1h", "2h", "4h", "1d", "1w"),
    # the @depth diff stream is not windowed and the REST snapshot has 1000 levels (§6): the API-wide
    # control.topics.DEPTH_LEVELS_MAX (100) applies
    orders=True,  # workers/exchanges/<id>/orders.py
    depth_levels_cap=100,
    settings=(
        # one base; routes /market, /public, /private are added (§1)
        Setting("BINANCE_USDM_WS_URI", "wss://fstream.binance.com", WS_URL,
                "base URL; workers add the route: `/market` for klines, tickers and aggTrades, `/public` for raw "
                "trades (per `BINANCE_USDM_TRADE_STREAM`), best bid/ask and books (since 2026-04-23 an unrouted URL "
                "acks kline subscriptions and sends nothing)", role=WS),
        # depth snapshots, listenKeys, private snapshots (§6-§8)
        Setting("BINANCE_USDM_REST_URI", "https://fapi.binance.com", HTTP_URL, "REST (order-book snapshots, listenKey)",
                role=REST),
        TRADE_STREAM,
        LISTEN_KEY_KEEPALIVE,
        Setting("BINANCE_API_KEY", "", TEXT, "default Binance USD-M account: API key", secret=True, role=API_KEY),
        Setting("BINANCE_API_SECRET", "", TEXT, "default Binance USD-M account: API secret (required with the key)",
                secret=True, role=API_SECRET),
    ),
)  # fmt: skip
