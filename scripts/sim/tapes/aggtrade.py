"""Binance USD-M ``<s>@aggTrade`` payloads derived from recorded raw ``<s>@trade`` payloads (pure, no I/O).

The 2024 recording (hftbacktest, ``btcusdt@trade``) holds raw trades only; ``scripts.sim_tapes`` uses this to give
the simulator an aggTrade tape for the same trades, so the documented stream (binance_usdm.md §2, §5) and the raw one
replay the same market.

Aggregation rule: maximal runs of *consecutive* trades (contiguous trade ids, in tape order) with the same trade time
``T``, price ``p`` and taker side ``m`` form one aggregate. Binance documents the stream as "aggregated for fills
with same price and taking side every 100 milliseconds" and says insurance-fund and ADL fills are not aggregated
("Aggregate Trade Streams", https://developers.binance.com/docs/derivatives/usds-margined-futures/
websocket-market-streams/Aggregate-Trade-Streams); grouping within one millisecond is the conservative reading (it
never merges fills of different taker orders that happen to repeat a price later in the window). Every trade of the
2024 recording is ``"X":"MARKET"`` (§5), so none is exempt. The 21,313 recorded trades give 10,447 aggregates.

Payload (field order of the 2021 recorded aggTrade frames; no ``nq``, which Binance added in 2025-11 and the 2024
recording cannot supply)::

    {"e":"aggTrade","E":<E of the run's last trade>,"a":<aggregate id>,"s":"BTCUSDT","p":"61800.30",
     "q":<sum of the run's q, same scale>,"f":<first trade id>,"l":<last trade id>,"T":<T>,"m":<m>}

``a`` is synthetic (the recording has no aggregate ids): ``first_id`` + the run's index, so aggregate ids are
contiguous like Binance's. The tape time of an aggregate is the receive time of its last trade (it is complete then).
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

import orjson

#: First synthetic aggregate id of a derived tape. Any value works; this one is far below the 2024 trade ids
#: (~5.27e9), as real aggregate ids are, so the two id spaces never look alike in a test failure.
FIRST_AGG_ID = 2_000_000_000


def aggregate_trades(
    trades: Sequence[tuple[float, dict[str, object]]], first_id: int = FIRST_AGG_ID
) -> list[tuple[float, str]]:
    """``[(tape time s, raw trade payload dict)]`` in tape order -> ``[(tape time s, aggTrade payload text)]``.

    Raises KeyError/ValueError for a trade without ``t``/``T``/``p``/``q``/``m``/``s``/``E`` or with a non-decimal ``q``.
    """
    out: list[tuple[float, str]] = []
    run: list[tuple[float, dict[str, object]]] = []

    def flush() -> None:
        first, (last_ts, last) = run[0][1], run[-1]
        qty = sum((Decimal(str(t["q"])) for _, t in run), Decimal(0))
        payload = {
            "e": "aggTrade",
            "E": last["E"],
            "a": first_id + len(out),
            "s": first["s"],
            "p": first["p"],
            "q": format(qty, "f"),
            "f": first["t"],
            "l": last["t"],
            "T": first["T"],
            "m": first["m"],
        }
        out.append((last_ts, orjson.dumps(payload).decode()))
        run.clear()

    for ts, trade in trades:
        if run:
            prev = run[-1][1]
            same = (trade["T"], trade["p"], trade["m"], trade["s"]) == (prev["T"], prev["p"], prev["m"], prev["s"])
            if not same or trade["t"] != int(prev["t"]) + 1:  # type: ignore[call-overload]
                flush()
        run.append((ts, trade))
    if run:
        flush()
    return out
