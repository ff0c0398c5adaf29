"""The exchange registry of the control plane: one declaration module per exchange (``control/exchanges/<id>.py``).

Adding an exchange here is one module and one line in ``DECLARATIONS``; ``control.topics`` derives ``EXCHANGES``,
``EXCHANGE_ALIASES``, ``CAPABILITIES`` and ``DEPTH_LEVELS_CAP`` from it. Imports nothing of ``workers`` or ``app``.
"""

from __future__ import annotations

from control.exchanges.binanceusdm import BINANCEUSDM
from control.exchanges.bitmart import BITMART
from control.exchanges.declaration import ExchangeDeclaration, ExchangeSetting
from control.exchanges.gateio import GATEIO

__all__ = ["DECLARATIONS", "ExchangeDeclaration", "ExchangeSetting"]

#: Exchange id -> declaration, in the order exchanges are listed to users (``control.topics.EXCHANGES``).
DECLARATIONS: dict[str, ExchangeDeclaration] = {d.id: d for d in (BITMART, BINANCEUSDM, GATEIO)}
