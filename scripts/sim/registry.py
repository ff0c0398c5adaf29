"""The simulated exchanges, in status and print order: one line per venue (see ``scripts.sim.venue``)."""

from __future__ import annotations

from scripts.sim.binance import BinanceVenue
from scripts.sim.bitmart import BitmartVenue
from scripts.sim.gate import GateVenue
from scripts.sim.venue import Venue

__all__ = ["VENUES"]

VENUES: tuple[type[Venue], ...] = (
    BitmartVenue,
    BinanceVenue,
    GateVenue,
)
