"""BitMart book channels derived from the 2024 recorded Binance book: ``futures/bookticker:BTCUSDT`` and
``futures/depthIncrease{5,20,50}:BTCUSDT[@100ms|@200ms]``, plus the fresh snapshot a ``request`` answers.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from decimal import Decimal

import orjson

from scripts.sim.tapes.catalog import BITMART, BITMART_DEPTH_LEVELS, BITMART_DEPTH_SPEEDS_MS, Tape, TapeBuilder


def derive_bitmart_bookticker(b: TapeBuilder, book_tickers: Sequence[tuple[float, dict[str, object]]]) -> None:
    """``futures/bookticker:BTCUSDT``: one push per recorded Binance bookTicker frame (exchanges.md §1.6)::

        {"group":"futures/bookticker:BTCUSDT","data":{"symbol":"BTCUSDT","best_bid_price":"61800.20",
         "best_bid_vol":"2.909","best_ask_price":"61800.30","best_ask_vol":"3.421","ms_t":1723161256493}}

    Sizes in BTC (real BitMart: contracts); ``ms_t`` is the Binance transaction time ``T``.
    """
    group = "futures/bookticker:BTCUSDT"
    prefix = '{"group":"' + group + '","data":'
    for ts, bt in book_tickers:
        data = {
            "symbol": "BTCUSDT",
            "best_bid_price": bt["b"],
            "best_bid_vol": bt["B"],
            "best_ask_price": bt["a"],
            "best_ask_vol": bt["A"],
            "ms_t": bt["T"],
        }
        b.add(BITMART, group, ts, prefix + orjson.dumps(data).decode() + "}")


class _BookSide:
    """One side of a price-level book: sorted Decimal prices plus the recorded strings."""

    __slots__ = ("keys", "levels", "prices")

    def __init__(self) -> None:
        self.prices: list[Decimal] = []  # ascending
        self.keys: dict[str, Decimal] = {}  # price string as recorded -> its Decimal
        self.levels: dict[Decimal, tuple[str, str]] = {}

    def apply(self, updates: Iterable[Sequence[str]]) -> None:
        """Set each ``[price, qty]`` level; a zero qty (``"0"``, ``"0.000"``) removes it."""
        keys, levels, prices = self.keys, self.levels, self.prices
        for price, qty in updates:
            key = keys.get(price)
            if not qty.strip("0."):
                if key is not None:
                    del keys[price], levels[key]
                    del prices[bisect.bisect_left(prices, key)]
                continue
            if key is None:
                key = keys[price] = Decimal(price)
                if key in levels:  # same price spelled differently
                    del keys[levels[key][0]]
                else:
                    bisect.insort(prices, key)
            levels[key] = (price, qty)

    def top(self, n: int, *, descending: bool) -> list[tuple[str, str]]:
        keys = self.prices[-n:][::-1] if descending else self.prices[:n]
        return [self.levels[k] for k in keys]


def _view_diff(
    old: list[tuple[str, str]], new: list[tuple[str, str]], side: _BookSide, *, descending: bool
) -> list[dict[str, str]]:
    """Levels that entered or changed (their vol) or left (vol ``"0"``) the top-N view, best first."""
    before, after = dict(old), dict(new)
    changed = [(p, v) for p, v in new if before.get(p) != v]
    left = [(p, "0") for p, _ in old if p not in after]
    if left:  # each list is best-first already; only the merge needs prices
        memo = side.keys  # a level that left the book has no entry there any more

        def price(level: tuple[str, str]) -> Decimal:
            return memo.get(level[0]) or Decimal(level[0])

        changed = sorted(changed + left, key=price, reverse=descending)
    return [{"price": p, "vol": v} for p, v in changed]


def _bitmart_depth_data(
    asks: list[dict[str, str]], bids: list[dict[str, str]], ms_t: int, version: int, kind: str
) -> str:
    data = {"symbol": "BTCUSDT", "asks": asks, "bids": bids, "ms_t": ms_t, "version": version, "type": kind}
    return orjson.dumps(data).decode()


def _levels(view: list[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"price": p, "vol": v} for p, v in view]


def derive_bitmart_depth(
    b: TapeBuilder, snap_ts: float, snapshot: dict[str, object], depth: Sequence[tuple[float, dict[str, object]]]
) -> None:
    """``futures/depthIncrease{5,20,50}:BTCUSDT[@100ms|@200ms]`` from the 2024 REST snapshot and diff stream.

    The Binance book is rebuilt by the documented procedure (binance_usdm.md §6: snapshot, drop
    ``u < lastUpdateId``, apply from the bridging frame on). BitMart pushes (exchanges.md §1.6 shape)::

        {"group":"futures/depthIncrease5:BTCUSDT@100ms","data":{"symbol":"BTCUSDT",
         "asks":[{"price":"61800.30","vol":"3.421"}],"bids":[{"price":"61800.20","vol":"2.909"}],
         "ms_t":1723161256501,"version":1,"type":"snapshot"}}

    First push: ``type:"snapshot"``, the top N levels of the REST snapshot, ``version`` 1, at the
    snapshot's tape time. Then, per window of exchange time (``BITMART_DEPTH_SPEEDS_MS``; no suffix =
    100 ms) in which the top-N view changed, one ``type:"update"`` with ``version`` + 1 carrying the
    levels that entered or changed in the top N (absolute vol) and those that left it (vol ``"0"``,
    whether deleted or pushed below level N), so snapshot + updates is exactly the top-N book. Windows
    that leave the top N unchanged send nothing. ``ms_t`` is the last applied Binance ``E``; vol in BTC.
    """
    asks, bids = _BookSide(), _BookSide()
    bids.apply(snapshot["bids"])  # type: ignore[arg-type]
    asks.apply(snapshot["asks"])  # type: ignore[arg-type]
    last_id = int(snapshot["lastUpdateId"])  # type: ignore[call-overload]
    frames = [(ts, d) for ts, d in depth if int(d["u"]) >= last_id]  # type: ignore[call-overload]
    if not frames or int(frames[0][1]["U"]) > last_id:  # type: ignore[call-overload]
        return  # no bridging frame: nothing consistent to derive
    top = max(BITMART_DEPTH_LEVELS)
    snap_ms = int(snapshot["E"])  # type: ignore[call-overload]
    first_asks, first_bids = asks.top(top, descending=False), bids.top(top, descending=True)
    # per (window ms, level): the last emitted view, its version, and the pushes so far
    emitted: dict[tuple[int, int], tuple[list[tuple[str, str]], list[tuple[str, str]]]] = {}
    versions: dict[tuple[int, int], int] = {}
    out: dict[tuple[int, int], list[tuple[float, str]]] = {}
    for window in sorted(set(BITMART_DEPTH_SPEEDS_MS.values())):
        for level in BITMART_DEPTH_LEVELS:
            a, bb = first_asks[:level], first_bids[:level]
            emitted[(window, level)] = (a, bb)
            versions[(window, level)] = 1
            out[(window, level)] = [(snap_ts, _bitmart_depth_data(_levels(a), _levels(bb), snap_ms, 1, "snapshot"))]

    def flush(window: int, ts: float, ms_t: int) -> None:
        view_asks, view_bids = asks.top(top, descending=False), bids.top(top, descending=True)
        for level in BITMART_DEPTH_LEVELS:
            key = (window, level)
            old_asks, old_bids = emitted[key]
            new_asks, new_bids = view_asks[:level], view_bids[:level]
            if new_asks == old_asks and new_bids == old_bids:
                continue
            d_asks = _view_diff(old_asks, new_asks, asks, descending=False)
            d_bids = _view_diff(old_bids, new_bids, bids, descending=True)
            if d_asks or d_bids:
                versions[key] += 1
                emitted[key] = (new_asks, new_bids)
                data = _bitmart_depth_data(d_asks, d_bids, ms_t, versions[key], "update")
                out[key].append((max(ts, snap_ts), data))

    windows = sorted(set(BITMART_DEPTH_SPEEDS_MS.values()))
    current: dict[int, int] = {}  # window size -> index of the open window
    prev_ts, prev_ms = snap_ts, snap_ms
    for ts, frame in frames:
        event_ms = int(frame["E"])  # type: ignore[call-overload]
        for window in windows:
            idx = event_ms // window
            if window in current and current[window] != idx:
                flush(window, prev_ts, prev_ms)
            current[window] = idx
        bids.apply(frame["b"])  # type: ignore[arg-type]
        asks.apply(frame["a"])  # type: ignore[arg-type]
        prev_ts, prev_ms = ts, event_ms
    for window in current:
        flush(window, prev_ts, prev_ms)
    for level in BITMART_DEPTH_LEVELS:
        for suffix, window in BITMART_DEPTH_SPEEDS_MS.items():
            group = f"futures/depthIncrease{level}:BTCUSDT{suffix}"
            prefix = '{"group":"' + group + '","data":'
            for ts, data in out[(window, level)]:
                b.add(BITMART, group, ts, prefix + data + "}")


def bitmart_depth_snapshot(tape: Tape, index: int) -> str:
    """A ``type:"snapshot"`` push of the book after ``tape.frames[0..index]`` of a depthIncrease tape.

    Carries that frame's ``version`` and ``ms_t`` — what ``{"action":"request","args":[topic]}``
    answers (exchanges.md §1.6). ``index`` is clamped to the tape.
    """
    index = max(0, min(index, len(tape) - 1))
    asks: dict[str, str] = {}
    bids: dict[str, str] = {}
    group, data = "", {}
    for raw in tape.frames[: index + 1]:
        frame = orjson.loads(raw)
        group, data = frame["group"], frame["data"]
        if data["type"] == "snapshot":
            asks, bids = {}, {}
        for side, book in (("asks", asks), ("bids", bids)):
            for level in data[side]:
                if level["vol"].strip("0."):
                    book[level["price"]] = level["vol"]
                else:
                    book.pop(level["price"], None)
    a = sorted(asks.items(), key=lambda level: Decimal(level[0]))
    bb = sorted(bids.items(), key=lambda level: Decimal(level[0]), reverse=True)
    body = _bitmart_depth_data(_levels(a), _levels(bb), data["ms_t"], data["version"], "snapshot")
    return '{"group":"' + group + '","data":' + body + "}"
