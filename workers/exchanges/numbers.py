"""Exchange numbers as exact ``Decimal`` values, for the few checks an adapter computes (a fill complete, a size
zero). Published prices and sizes stay the exchange's own decimal strings; only these checks parse them."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any


def decimal_value(value: Any, name: str, exchange: str, *, kinds: tuple[type, ...] = (str,)) -> Decimal:
    """``value`` (one of ``kinds``: a decimal string by default; BitMart and Gate.io also send ints, Gate.io some
    floats) as a finite Decimal.

    Raises ValueError naming ``exchange`` and the field ``name`` for anything else (NaN, garbage, another type): a
    malformed frame is counted by the connection, never guessed at.
    """
    if type(value) not in kinds:
        raise ValueError(f"{exchange} {name} must be a decimal string, got {value!r}")
    try:
        number = Decimal(value)
    except InvalidOperation:
        number = None
    if number is None or not number.is_finite():
        raise ValueError(f"{exchange} {name} must be a decimal string, got {value!r}")
    return number
