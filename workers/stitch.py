"""Stitching two sockets of one connection into one gapless, duplicate-free event sequence (pure: no I/O).

Make-before-break (``workers.runtime``: a rebalancing handover between workers, or a connection's lifetime roll)
leaves a short overlap in which the old socket still publishes and the new one, subscribed and acknowledged,
only buffers. At the switch the new socket must continue exactly after the last event the old one got into the
topic's stream (its *marker*): for a real exchange both sockets carry the same live sequence, so the marker is
somewhere in the new socket's buffer, or (a quiet topic) before it.

``CatchUp(marker)`` is the per-topic filter the new socket's events pass through from the switch on, buffered ones
first, until it is *caught up*:

- an event equal to the marker (every field but ``ts_received``, which differs per socket) is dropped, and the
  filter is done: what follows is new;
- an event whose order key (``order_key``) is past the marker's is published, and the filter is done;
- an event before the marker (older trade id, older book update id, older bar) is dropped;
- a ``gap`` event is dropped (the old socket covered that time); an event with no comparable key ends the filter
  (published: better a possible repeat than a loss).

The same filter absorbs a new socket that is *behind* the old one (the local simulator replays each socket's tape
from its start): its repeated events are dropped until it reaches the marker, so the stream neither repeats nor
skips; it only pauses meanwhile.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

#: (kind tag, comparable values, unique): events compare only within one tag; ``unique`` keys name one event.
OrderKey = tuple[str, tuple[int | Decimal, ...], bool]


def _int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _volume(value: Any) -> Decimal | None:
    if not isinstance(value, str):
        return None
    try:
        volume = Decimal(value)
    except InvalidOperation:
        return None
    return volume if volume.is_finite() else None


def order_key(event: dict[str, Any]) -> OrderKey | None:
    """Where ``event`` sits in its topic's sequence, or None when it cannot be told (private events, gaps).

    Trades: the numeric trade id (unique). Order books: the last update id applied, a ``depth`` snapshot just
    after the ``depth_delta`` it follows (unique). Best bid/ask: the update id (unique). Klines: the bar's open
    time, then its volume, then the exchange time (several updates per bar: not unique). The volume of an open bar
    only grows (it is the bar's traded volume so far: binance_usdm.md §5 ``k.v``, exchanges.md §1.6 ``items[].v``),
    and it is what orders the updates of one bar where the exchange sends no event time (BitMart: without it, every
    buffered update of the current bar looked "not before the marker" and was published again). A closed bar comes
    after every update of its bar and is unique (two sockets close a quiet bar each on its own,
    ``workers.kline_close``, with the same values but possibly another exchange time); its corrections (a closed
    bar again, with a larger volume) follow it in volume order. Otherwise the exchange time
    (not unique).
    """
    kind = event.get("type")
    if kind == "trade":
        trade_id = _int(event.get("trade_id"))
        if trade_id is not None:
            return ("trade", (trade_id,), True)
    elif kind == "depth_delta":
        last = _int(event.get("last_update_id"))
        if last is not None:
            return ("book", (last, 0), True)
    elif kind == "depth":
        last = _int(event.get("update_id"))
        if last is not None:
            return ("book", (last, 1), True)
    elif kind == "bookticker":
        update_id = _int(event.get("update_id"))
        if update_id is not None:
            return ("bookticker", (update_id,), True)
    elif kind == "kline":
        open_time = _int(event.get("open_time"))
        if open_time is not None:
            volume = _volume(event.get("volume"))
            if event.get("closed") is True:  # the bar's final state after its updates; corrections by volume
                return ("kline", (open_time, 1) if volume is None else (open_time, 1, volume), True)
            values: tuple[int | Decimal, ...] = (open_time, 0)
            ts = _int(event.get("ts_exchange"))
            values += () if volume is None else (volume,)
            values += () if ts is None else (ts,)
            return ("kline", values, False)
    elif kind == "gap" or kind is None:
        return None
    ts = _int(event.get("ts_exchange"))
    return None if ts is None else (f"{kind}:ts", (ts,), False)


def identity(event: dict[str, Any]) -> dict[str, Any]:
    """``event`` without its receive time: the same exchange event seen on two sockets compares equal."""
    return {k: v for k, v in event.items() if k != "ts_received"}


class CatchUp:
    """The switch filter of one topic (see the module docstring). ``marker``: the last event in the stream."""

    __slots__ = ("_identity", "_key", "marker")

    def __init__(self, marker: dict[str, Any]) -> None:
        self.marker = marker
        self._identity = identity(marker)
        self._key = order_key(marker)

    def admit(self, event: dict[str, Any]) -> tuple[bool, bool]:
        """``(publish, done)`` for the next event of the new socket; once ``done`` the filter is dropped."""
        if event.get("type") == "gap":
            return False, False
        if identity(event) == self._identity:
            return False, True
        key, mine = order_key(event), self._key
        if key is None or mine is None or key[0] != mine[0]:
            return True, True
        if key[1] > mine[1]:
            return True, True
        if key[1] == mine[1]:
            return (False, True) if key[2] else (True, True)  # unique: the marker itself (fields may differ)
        return False, False
