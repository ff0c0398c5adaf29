"""Exchange adapters, keyed by ccxt exchange id (``control.topics.EXCHANGES``).

Adapters are pure (see ``base``: one typed contract per role); one instance per exchange is shared, and each
connection asks its adapter for a fresh ``new_parser()``. Each venue is a package ``workers/exchanges/<id>/`` whose
adapter points at its declaration in ``control/exchanges/<id>.py``; adding one is a package, a declaration and one
line here (``_template.py`` is the skeleton).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workers.exchanges.base import AdapterError, BookAdapter, ExchangeAdapter, PrivateAdapter, PublicAdapter
from workers.exchanges.binanceusdm import BinanceUsdmAdapter
from workers.exchanges.binanceusdm.orders import BinanceUsdmOrders
from workers.exchanges.bitmart import BitmartAdapter
from workers.exchanges.gateio import GateioAdapter
from workers.exchanges.gateio.orders import GateioOrders
from workers.exchanges.order_contract import OrderAdapter

if TYPE_CHECKING:
    from control.settings import Settings

__all__ = [
    "ORDER_ADAPTERS",
    "REGISTRY",
    "BookAdapter",
    "ExchangeAdapter",
    "PrivateAdapter",
    "PublicAdapter",
    "UnknownExchangeError",
    "configured_adapters",
    "get_adapter",
]

REGISTRY: dict[str, ExchangeAdapter] = {
    "bitmart": BitmartAdapter(),
    "binanceusdm": BinanceUsdmAdapter(),
    "gateio": GateioAdapter(),
}

#: Order execution (``workers.orders``), per exchange that has it. BitMart has none on purpose: it announced its
#: shutdown by 2027-01-31 (README "Orders").
ORDER_ADAPTERS: dict[str, OrderAdapter] = {
    "gateio": GateioOrders(),
    "binanceusdm": BinanceUsdmOrders(),
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
    """The adapters as ``settings`` configure them (what a worker runs with): each ``REGISTRY`` adapter's
    ``configured(settings)`` (the shared instance when the settings change nothing, e.g. Binance USD-M's ``trade``
    channel on the default ``BINANCE_USDM_TRADE_STREAM``)."""
    return {exchange_id: adapter.configured(settings) for exchange_id, adapter in REGISTRY.items()}
