"""Trades and bars derived from the 2024 recorded Binance trades: BitMart trades and klines, Binance klines,
Gate trades and candles (each documented with one sample push).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial

import orjson

from scripts.sim.tapes.catalog import (
    BINANCE,
    BINANCE_DERIVED_KLINES_MS,
    BINANCE_KLINE_THROTTLE_S,
    BITMART,
    BITMART_KLINE_THROTTLE_S,
    BITMART_TIMEFRAMES_S,
    GATE,
    GATE_BTC_USDT_MULTIPLIER,
    GATE_CANDLE_THROTTLE_S,
    TapeBuilder,
    dec,
)

# 1970-01-01 was a Thursday; weekly bars are assumed to open on Monday 00:00 UTC (UNVERIFIED for BitMart).
_WEEK_OFFSET_S = 4 * 86400


def _rfc3339_ns(ms: int) -> str:
    """Epoch ms -> ``2024-08-08T23:54:16.322000000Z`` (BitMart's nanosecond RFC 3339, §1.6)."""
    secs, rem = divmod(ms, 1000)
    return datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{rem * 1_000_000:09d}Z"


class Bar:
    """One OHLCV bar built from trades (prices as recorded strings, sums as Decimal)."""

    __slots__ = (
        "c",
        "dirty",
        "emit_t",
        "first",
        "h",
        "hd",
        "l",
        "last",
        "ld",
        "n",
        "o",
        "open_ms",
        "q",
        "qb",
        "v",
        "vb",
    )

    def __init__(self, open_ms: int, p: str, pd: Decimal) -> None:
        self.open_ms = open_ms
        self.o = self.h = self.l = self.c = p
        self.hd = self.ld = pd
        self.v = self.q = self.vb = self.qb = Decimal(0)
        self.n = 0
        self.first = self.last = 0
        self.dirty = False
        self.emit_t = 0.0

    def add(self, p: str, pd: Decimal, qd: Decimal, buyer_maker: bool, trade_id: int) -> None:
        if pd > self.hd:
            self.h, self.hd = p, pd
        if pd < self.ld:
            self.l, self.ld = p, pd
        self.c = p
        self.v += qd
        self.q += pd * qd
        if not buyer_maker:  # taker bought
            self.vb += qd
            self.qb += pd * qd
        if self.n == 0:
            self.first = trade_id
        self.last = trade_id
        self.n += 1


class ThrottledBars:
    """One timeframe's bars, pushed through ``emit(bar, tape_s, trade_ms)`` when a trade changes them.

    A bar's first state goes out at once, later changes at most every ``throttle_s`` of tape time; a
    pending change is flushed before the next bar's first push and by ``finish``, so the last push of
    each bar is its exact aggregate.
    """

    __slots__ = ("bar", "emit", "throttle_s")

    def __init__(self, throttle_s: float, emit: Callable[[Bar, float, int], None]) -> None:
        self.throttle_s, self.emit = throttle_s, emit
        self.bar: Bar | None = None

    def _push(self, bar: Bar, ts: float, tt: int) -> None:
        self.emit(bar, ts, tt)
        bar.dirty, bar.emit_t = False, ts

    def trade(self, open_ms: int, ts: float, tt: int, p: str, pd: Decimal, qd: Decimal, m: bool, tid: int) -> None:
        """Add one trade (bar open ``open_ms``, tape time ``ts`` s, trade time ``tt`` ms, price/qty, taker side, id)."""
        bar = self.bar
        if bar is None or bar.open_ms != open_ms:
            if bar is not None and bar.dirty:
                self._push(bar, ts, tt)
            bar = self.bar = Bar(open_ms, p, pd)
            bar.add(p, pd, qd, m, tid)
            self._push(bar, ts, tt)
            return
        bar.add(p, pd, qd, m, tid)
        if ts - bar.emit_t >= self.throttle_s:
            self._push(bar, ts, tt)
        else:
            bar.dirty = True

    def finish(self, ts: float, tt: int) -> None:
        """Push the open bar's pending change, if any (after the last trade)."""
        if self.bar is not None and self.bar.dirty:
            self._push(self.bar, ts, tt)


def trade_fields(t: dict[str, object]) -> tuple[int, str, str, int, bool]:
    """``(T, p, q, t, m)`` of a raw Binance trade payload."""
    return int(t["T"]), str(t["p"]), str(t["q"]), int(t["t"]), bool(t["m"])  # type: ignore[call-overload]


def derive_bitmart(b: TapeBuilder, trades: Sequence[tuple[float, dict[str, object]]]) -> None:
    """BitMart ``futures/trade:BTCUSDT`` and ``futures/klineBin<tf>:BTCUSDT`` from Binance trades.

    Trade push (exchanges.md §1.6 shape), one trade per frame::

        {"group":"futures/trade:BTCUSDT","data":[{"trade_id":5266583935,"symbol":"BTCUSDT",
         "deal_price":"61800.30","deal_vol":"0.006","way":1,"m":false,
         "created_at":"2024-08-08T23:54:16.322000000Z"}]}

    ``deal_vol`` is the Binance quantity in BTC (real BitMart sends contracts). ``way`` is 1
    (buy_open_long/sell_open_short) when the taker bought, 5 (sell_open_short/buy_open_long)
    when the taker sold — an assumption: the open/close half is invented; use ``m`` for the side.

    Kline push (§1.6 wire shape, ``ts`` = bar open in seconds, no closed flag)::

        {"group":"futures/klineBin1m:BTCUSDT","data":{"symbol":"BTCUSDT","items":[{"o":"61800.30",
         "h":"61800.30","l":"61790.00","c":"61795.10","v":"12.345","ts":1723161240}]}}

    Emitted when a trade changes the bar, at most once per ``BITMART_KLINE_THROTTLE_S`` of tape
    time per timeframe; a bar's pending change is flushed before the next bar's first push and at
    the end, so the last push of each bar is its exact aggregate. ``v`` sums ``deal_vol``.
    """
    def emit(tf: str, bar: Bar, t: float, _event_ms: int) -> None:
        item = {"o": bar.o, "h": bar.h, "l": bar.l, "c": bar.c, "v": dec(bar.v), "ts": bar.open_ms // 1000}
        group = f"futures/klineBin{tf}:BTCUSDT"
        b.add(
            BITMART, group, t, orjson.dumps({"group": group, "data": {"symbol": "BTCUSDT", "items": [item]}}).decode()
        )

    series = {tf: ThrottledBars(BITMART_KLINE_THROTTLE_S, partial(emit, tf)) for tf in BITMART_TIMEFRAMES_S}
    t_abs, tt = 0.0, 0
    for ts, trade in trades:
        t_abs = ts
        tt, p, q, tid, m = trade_fields(trade)
        row = {
            "trade_id": tid,
            "symbol": "BTCUSDT",
            "deal_price": p,
            "deal_vol": q,
            "way": 5 if m else 1,
            "m": m,
            "created_at": _rfc3339_ns(tt),
        }
        b.add(
            BITMART,
            "futures/trade:BTCUSDT",
            ts,
            orjson.dumps({"group": "futures/trade:BTCUSDT", "data": [row]}).decode(),
        )
        pd, qd = Decimal(p), Decimal(q)
        for tf, length_s in BITMART_TIMEFRAMES_S.items():
            offset = _WEEK_OFFSET_S if tf == "1W" else 0
            open_s = (tt // 1000 - offset) // length_s * length_s + offset
            series[tf].trade(open_s * 1000, ts, tt, p, pd, qd, m, tid)
    for bars in series.values():
        bars.finish(t_abs, tt)


def _binance_kline(bar: Bar, interval: str, length_ms: int, event_ms: int, closed: bool) -> str:
    k = {
        "t": bar.open_ms,
        "T": bar.open_ms + length_ms - 1,
        "s": "BTCUSDT",
        "i": interval,
        "f": bar.first,
        "L": bar.last,
        "o": bar.o,
        "c": bar.c,
        "h": bar.h,
        "l": bar.l,
        "v": dec(bar.v),
        "n": bar.n,
        "x": closed,
        "q": dec(bar.q),
        "V": dec(bar.vb),
        "Q": dec(bar.qb),
        "B": "0",
    }
    return orjson.dumps({"e": "kline", "E": event_ms, "s": "BTCUSDT", "k": k}).decode()


def derive_binance_klines(b: TapeBuilder, trades: Sequence[tuple[float, dict[str, object]]]) -> None:
    """Binance ``btcusdt@kline_1m`` / ``@kline_5m`` payloads (binance_usdm.md §5 shape) from trades.

    ``{"e":"kline","E":<ms>,"s":"BTCUSDT","k":{"t","T","s","i","f","L","o","c","h","l","v","n","x","q","V","Q","B"}}``.
    Pushed when a trade changes the bar, at most every ``BINANCE_KLINE_THROTTLE_S`` of tape time;
    when a trade opens a new bar, the previous bar goes out once more with ``x:true`` (``E`` = that
    trade's time) before the new bar's first push. After the last trade the open bar is closed
    with ``x:true`` at ``E = k.T + 1``, its tape time shifted by the same amount.
    """
    for interval, length_ms in BINANCE_DERIVED_KLINES_MS.items():
        bar: Bar | None = None
        last_ts, last_tt = 0.0, 0

        def emit(
            bar: Bar, t: float, event_ms: int, closed: bool, interval: str = interval, ln: int = length_ms
        ) -> None:
            b.add(BINANCE, f"btcusdt@kline_{interval}", t, _binance_kline(bar, interval, ln, event_ms, closed))
            bar.dirty, bar.emit_t = False, t

        for ts, trade in trades:
            tt, p, q, tid, m = trade_fields(trade)
            last_ts, last_tt = ts, tt
            open_ms = tt // length_ms * length_ms
            pd, qd = Decimal(p), Decimal(q)
            if bar is None or bar.open_ms != open_ms:
                if bar is not None:
                    emit(bar, ts, tt, True)
                bar = Bar(open_ms, p, pd)
                bar.add(p, pd, qd, m, tid)
                emit(bar, ts, tt, False)
                continue
            bar.add(p, pd, qd, m, tid)
            if ts - bar.emit_t >= BINANCE_KLINE_THROTTLE_S:
                emit(bar, ts, tt, False)
            else:
                bar.dirty = True
        if bar is not None:
            close_ms = bar.open_ms + length_ms
            emit(bar, last_ts + max(0, close_ms - last_tt) / 1000, close_ms, True)


def gate_frame(channel: str, time_ms: int, result: object) -> str:
    """A Gate ``event:update`` push of ``channel`` stamped ``time_ms``."""
    frame = {"time": time_ms // 1000, "time_ms": time_ms, "channel": channel, "event": "update", "result": result}
    return orjson.dumps(frame).decode()


def derive_gate(b: TapeBuilder, trades: Sequence[tuple[float, dict[str, object]]]) -> None:
    """Gate ``futures.trades:BTC_USDT`` and ``futures.candlesticks:1m_BTC_USDT`` from the Binance trades.

    Trade push, one trade per frame (exchanges.md §2.5; ``size`` in contracts as a decimal string,
    i.e. BTC / ``GATE_BTC_USDT_MULTIPLIER``, positive when the taker bought)::

        {"time":1723161256,"time_ms":1723161256329,"channel":"futures.trades","event":"update",
         "result":[{"size":"60","id":5266583935,"create_time":1723161256,"create_time_ms":1723161256322,
         "price":"61800.30","contract":"BTC_USDT"}]}

    Candle push (shape of the real 2023 frame: no ``a``; ``v`` an int of contracts), at most one per
    ``GATE_CANDLE_THROTTLE_S`` of tape time plus each bar's first and final state::

        {"time":1723161256,"time_ms":1723161256322,"channel":"futures.candlesticks","event":"update",
         "result":[{"t":1723161240,"v":60,"c":"61800.30","h":"61800.30","l":"61800.30","o":"61800.30",
         "n":"1m_BTC_USDT"}]}
    """
    def emit(bar: Bar, ts: float, time_ms: int) -> None:
        item = {
            "t": bar.open_ms // 1000,
            "v": int(bar.v / GATE_BTC_USDT_MULTIPLIER),
            "c": bar.c,
            "h": bar.h,
            "l": bar.l,
            "o": bar.o,
            "n": "1m_BTC_USDT",
        }
        b.add(GATE, "futures.candlesticks:1m_BTC_USDT", ts, gate_frame("futures.candlesticks", time_ms, [item]))

    candles = ThrottledBars(GATE_CANDLE_THROTTLE_S, emit)
    last_ts, last_tt = 0.0, 0
    for ts, trade in trades:
        tt, p, q, tid, m = trade_fields(trade)
        last_ts, last_tt = ts, tt
        qd = Decimal(q)
        contracts = dec(qd / GATE_BTC_USDT_MULTIPLIER)
        row = {
            "size": "-" + contracts if m else contracts,
            "id": tid,
            "create_time": tt // 1000,
            "create_time_ms": tt,
            "price": p,
            "contract": "BTC_USDT",
        }
        event_ms = int(trade.get("E", tt))  # type: ignore[call-overload]
        b.add(GATE, "futures.trades:BTC_USDT", ts, gate_frame("futures.trades", event_ms, [row]))
        candles.trade(tt // 60_000 * 60_000, ts, tt, p, Decimal(p), qd, m, tid)
    candles.finish(last_ts, last_tt)
