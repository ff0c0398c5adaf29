"""Exchange adapters, keyed by ccxt exchange id (``control.topics.EXCHANGES``).

Adapters are pure (see ``base``); one instance per exchange is shared, and each connection asks
its adapter for a fresh ``new_parser()``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workers.exchanges.base import AdapterError, ExchangeAdapter
from workers.exchanges.binanceusdm import BinanceUsdmAdapter
from workers.exchanges.bitmart import BitmartAdapter
from workers.exchanges.gateio import GateioAdapter

if TYPE_CHECKING:
    from control.settings import Settings

__all__ = ["REGISTRY", "UnknownExchangeError", "configured_adapters", "get_adapter"]

REGISTRY: dict[str, ExchangeAdapter] = {
    "bitmart": BitmartAdapter(),
    "binanceusdm": BinanceUsdmAdapter(),
    "gateio": GateioAdapter(),
}


class UnknownExchangeError(AdapterError, KeyError):
    """No adapter is registered under that exchange id (an ``AdapterError`` that is also a ``KeyError``)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def get_adapter(exchange_id: str) -> ExchangeAdapter:
    """The adapter for ``exchange_id``; raises UnknownExchangeError (AdapterError, KeyError) if none."""
    try:
        return REGISTRY[exchange_id]
    except KeyError:
        raise UnknownExchangeError(f"unknown exchange {exchange_id!r}; known: {', '.join(sorted(REGISTRY))}") from None


def configured_adapters(settings: Settings) -> dict[str, ExchangeAdapter]:
    """The adapters as ``settings`` configure them (what a worker runs with): ``REGISTRY``, with Binance USD-M's
    ``trade`` channel on ``settings.binance_usdm_trade_stream`` (the shared instance when that is the default)."""
    adapters = dict(REGISTRY)
    binance = adapters["binanceusdm"]
    if getattr(binance, "trade_stream", None) != settings.binance_usdm_trade_stream:
        adapters["binanceusdm"] = BinanceUsdmAdapter(trade_stream=settings.binance_usdm_trade_stream)
    return adapters
