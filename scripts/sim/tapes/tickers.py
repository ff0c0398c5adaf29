"""Tickers derived from the 2024 recorded Binance trades: Binance ``btcusdt@ticker``, BitMart
``futures/ticker:BTCUSDT`` and Gate ``futures.tickers:BTC_USDT``, once per second of tape time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

import orjson

from scripts.sim.tapes.bars import gate_frame, trade_fields
from scripts.sim.tapes.catalog import BINANCE, BITMART, GATE, GATE_BTC_USDT_MULTIPLIER, TapeBuilder, dec


@dataclass(frozen=True, slots=True)
class _Tick:
    """Aggregate of the recorded trades from the tape's first trade up to one second boundary."""

    ts: float  # tape time of the push (receive time of the first trade after the boundary)
    event_ms: int  # the boundary: end of the second just closed
    open_ms: int
    o: str
    h: str
    l: str
    c: str
    last_qty: str
    volume: Decimal  # BTC
    quote: Decimal  # USDT
    count: int
    first_id: int
    last_id: int


def _ticks(trades: Sequence[tuple[float, dict[str, object]]]) -> list[_Tick]:
    """One ``_Tick`` per second of trade time in which trades happened, plus one after the last trade.

    The window is the whole tape so far (not 24 h): the recording is six minutes long.
    """
    out: list[_Tick] = []
    if not trades:
        return out
    first_tt, o, _, _, _ = trade_fields(trades[0][1])
    h = lo = c = o
    hd = ld = Decimal(o)
    lq, v, q, n = "0", Decimal(0), Decimal(0), 0
    first_id = last_id = 0
    sec: int | None = None

    def tick(ts: float, event_ms: int) -> _Tick:
        return _Tick(ts, event_ms, first_tt, o, h, lo, c, lq, v, q, n, first_id, last_id)

    for ts, trade in trades:
        tt, p, qty, tid, _ = trade_fields(trade)
        if sec is not None and tt // 1000 != sec:
            out.append(tick(ts, (sec + 1) * 1000))
        sec = tt // 1000
        pd, qd = Decimal(p), Decimal(qty)
        if pd > hd:
            h, hd = p, pd
        if pd < ld:
            lo, ld = p, pd
        c, lq = p, qty
        v += qd
        q += pd * qd
        first_id = first_id or tid
        last_id = tid
        n += 1
    if sec is not None:
        end_ms = (sec + 1) * 1000
        last_ts, last_tt = trades[-1][0], trade_fields(trades[-1][1])[0]
        out.append(tick(last_ts + max(0, end_ms - last_tt) / 1000, end_ms))
    return out


def _pct(t: _Tick, scale: str, *, ratio: bool = False) -> str:
    change = (Decimal(t.c) - Decimal(t.o)) / Decimal(t.o)
    rounded = (change if ratio else change * 100).quantize(Decimal(scale))
    return dec(rounded.copy_abs() if rounded.is_zero() else rounded)  # no "-0.00"


def derive_tickers(
    b: TapeBuilder,
    trades: Sequence[tuple[float, dict[str, object]]],
    book_tickers: Sequence[tuple[float, dict[str, object]]],
) -> None:
    """Tickers once per second of tape time, from the recorded trades (window = tape so far, not 24 h).

    Binance ``btcusdt@ticker`` (binance_usdm.md §5 field set, ``O`` = first trade of the tape)::

        {"e":"24hrTicker","E":1723161257000,"s":"BTCUSDT","p":"-0.10","P":"-0.000","w":"61800.25",
         "c":"61800.20","Q":"0.002","o":"61800.30","h":"61800.30","l":"61800.20","v":"1.234",
         "q":"76261.51230","O":1723161256322,"C":1723161257000,"F":5266583935,"L":5266583960,"n":26}

    BitMart ``futures/ticker:BTCUSDT`` (exchanges.md §1.6; key order of the JKorf fixture)::

        {"group":"futures/ticker:BTCUSDT","data":{"symbol":"BTCUSDT","volume_24":"1.234",
         "mark_price":"61800.20","index_price":"61800.20","last_price":"61800.20","range":"-0.0000016181229773",
         "ask_price":"61800.30","ask_vol":"3.421","bid_price":"61800.20","bid_vol":"0.511"}}

    ``volume_24`` in BTC (real BitMart: contracts); ``mark_price``/``index_price`` are stand-ins equal
    to the last price (the recording has neither); ask/bid come from the latest recorded bookTicker.

    Gate ``futures.tickers:BTC_USDT`` (exchanges.md §2.5 subset)::

        {"time":1723161257,"time_ms":1723161257000,"channel":"futures.tickers","event":"update",
         "result":[{"contract":"BTC_USDT","last":"61800.20","change_percentage":"-0.00",
         "mark_price":"61800.20","index_price":"61800.20","volume_24h":"12340","volume_24h_base":"1.234",
         "volume_24h_quote":"76261.51230","volume_24h_settle":"76261.51230","low_24h":"61800.20",
         "high_24h":"61800.30"}]}

    ``volume_24h`` in contracts (BTC / ``GATE_BTC_USDT_MULTIPLIER``); funding and open-interest
    fields are omitted (nothing in the recording to derive them from).
    """
    bt_i, bt = 0, None
    for t in _ticks(trades):
        while bt_i < len(book_tickers) and book_tickers[bt_i][0] <= t.ts:
            bt = book_tickers[bt_i][1]
            bt_i += 1
        binance = {
            "e": "24hrTicker",
            "E": t.event_ms,
            "s": "BTCUSDT",
            "p": dec(Decimal(t.c) - Decimal(t.o)),
            "P": _pct(t, "0.001"),
            "w": dec((t.quote / t.volume).quantize(Decimal("0.01"))),
            "c": t.c,
            "Q": t.last_qty,
            "o": t.o,
            "h": t.h,
            "l": t.l,
            "v": dec(t.volume),
            "q": dec(t.quote),
            "O": t.open_ms,
            "C": t.event_ms,
            "F": t.first_id,
            "L": t.last_id,
            "n": t.count,
        }
        b.add(BINANCE, "btcusdt@ticker", t.ts, orjson.dumps(binance).decode())
        data: dict[str, object] = {
            "symbol": "BTCUSDT",
            "volume_24": dec(t.volume),
            "mark_price": t.c,
            "index_price": t.c,
            "last_price": t.c,
            "range": _pct(t, "1E-16", ratio=True),
        }
        if bt is not None:
            data |= {"ask_price": bt["a"], "ask_vol": bt["A"], "bid_price": bt["b"], "bid_vol": bt["B"]}
        group = "futures/ticker:BTCUSDT"
        b.add(BITMART, group, t.ts, orjson.dumps({"group": group, "data": data}).decode())
        row = {
            "contract": "BTC_USDT",
            "last": t.c,
            "change_percentage": _pct(t, "0.01"),
            "mark_price": t.c,
            "index_price": t.c,
            "volume_24h": dec(t.volume / GATE_BTC_USDT_MULTIPLIER),
            "volume_24h_base": dec(t.volume),
            "volume_24h_quote": dec(t.quote),
            "volume_24h_settle": dec(t.quote),
            "low_24h": t.l,
            "high_24h": t.h,
        }
        gate = gate_frame("futures.tickers", t.event_ms, [row])
        b.add(GATE, "futures.tickers:BTC_USDT", t.ts, gate)
