"""The data of the simulator's matching engine (``scripts.sim.matching``): contracts, orders, triggers, positions,
account books and the refusal exception. Sizes are Decimal venue units (Gate contracts, Binance base asset), prices
Decimal USDT, times epoch ms."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

__all__ = ["REASONS", "ZERO", "Book", "ContractSpec", "Rejected", "SimOrder", "SimPosition", "SimTrigger"]

#: Venue-neutral refusal reasons (the venue modules map each to the exchange's code and text).
REASONS = frozenset({
    "unknown_symbol", "bad_tick", "bad_lot", "size_too_small", "insufficient_margin", "reduce_only", "position_empty",
    "post_only_cross", "leverage_invalid", "would_trigger", "duplicate_client_id",
})  # fmt: skip
ZERO = Decimal(0)


class Rejected(Exception):
    """An order or setting the engine refuses; ``reason`` is one of ``REASONS``, ``detail`` free text."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class ContractSpec:
    """One tradable symbol: ``tick`` price step, ``lot`` size step and ``min_size`` (venue size units: Gate
    contracts, Binance base asset), ``multiplier`` (base asset per size unit), ``max_leverage``, ``reference``
    price used until the tape or ``set_price`` gives one, ``min_notional`` (USDT, 0 = none)."""

    symbol: str
    tick: Decimal
    lot: Decimal
    min_size: Decimal
    multiplier: Decimal
    max_leverage: int
    reference: Decimal
    min_notional: Decimal = ZERO


@dataclass(eq=False)
class SimOrder:
    """An order. ``side`` buy|sell; ``size``/``filled`` Decimal size units; ``price`` None for market;
    ``tif`` gtc|ioc|fok|poc; ``leg`` both|long|short (the position it acts on); ``status`` open|finished;
    ``finish_as`` filled|cancelled|ioc|failed|''; times epoch ms; ``venue`` extra wire fields."""

    order_id: int
    client_id: str
    symbol: str
    side: str
    size: Decimal
    price: Decimal | None
    tif: str = "gtc"
    reduce_only: bool = False
    close_position: bool = False
    leg: str = "both"
    status: str = "open"
    finish_as: str = ""
    filled: Decimal = ZERO
    avg_price: Decimal = ZERO
    create_ms: int = 0
    update_ms: int = 0
    venue: dict[str, Any] = field(default_factory=dict)

    @property
    def left(self) -> Decimal:
        return self.size - self.filled


@dataclass(eq=False)
class SimTrigger:
    """A trigger (TP/SL) order: fires when ``price_type`` (last|mark|index) price ``rule`` (>=|<=) ``trigger``,
    then places ``order`` (a template: its id is set on firing, ``actual_id``). ``status`` open|triggered|cancelled|
    failed; ``reason`` text on failure."""

    trigger_id: int
    client_id: str
    symbol: str
    trigger: Decimal
    rule: str
    price_type: str
    order: SimOrder
    status: str = "open"
    reason: str = ""
    actual_id: int = 0
    create_ms: int = 0
    update_ms: int = 0
    venue: dict[str, Any] = field(default_factory=dict)


@dataclass(eq=False)
class SimPosition:
    """A position leg: ``size`` signed for leg both (+ long), positive for long/short legs; ``entry`` price."""

    symbol: str
    leg: str
    size: Decimal = ZERO
    entry: Decimal = ZERO
    realised: Decimal = ZERO
    update_ms: int = 0


@dataclass(eq=False)
class Book:
    """One account: ``balance`` (USDT), ``leverage[symbol]`` = (leverage, cross limit; leverage 0 = cross),
    ``dual`` (two legs per symbol), orders and triggers by id, positions by (symbol, leg)."""

    balance: Decimal
    dual: bool = False
    leverage: dict[str, tuple[int, int]] = field(default_factory=dict)
    orders: dict[int, SimOrder] = field(default_factory=dict)
    triggers: dict[int, SimTrigger] = field(default_factory=dict)
    positions: dict[tuple[str, str], SimPosition] = field(default_factory=dict)
