"""Replay tapes for the exchange simulator: recorded frames and frames derived from them.

A *tape* is one native stream's frames in order, each with a tape time (seconds since the
tape's source started, from the recorded receive timestamps). The simulator replays a tape
per (connection, subscribed stream). Everything is read in place through ``scripts.tapes``
(never copied into the tree), loaded lazily on first use and cached per process, because
parsing the 94k-line 2024 recording takes about a second and tests create many simulators.

Tapes and where each comes from (labels: the ``SRC_*`` constants; see ``../shared/exchange-ws-samples/README.md``):

==========================================  ===============================================================
native stream / topic                       source
==========================================  ===============================================================
Binance ``btcusdt@trade``                   recorded 2024-08-08, hftbacktest (21,313 frames)
Binance ``btcusdt@bookTicker``              recorded 2024-08-08, hftbacktest (66,089 frames)
Binance ``btcusdt@depth@0ms``               recorded 2024-08-08, hftbacktest (6,551 frames)
Binance ``btcusdt@kline_1m``, ``_5m``       DERIVED from the 2024 recorded trades (binance_usdm.md §5 shape)
Binance ``<sym>@kline_1m``, ``@aggTrade``,  recorded 2021-07-22, cryptofeed; sym in sushiusdt, akrousdt,
``@depth@100ms``, ``@bookTicker``           keepusdt, ctkusdt
BitMart ``futures/klineBin1H:ETHUSDT``,     JKorf BitMart.Net fixture push frames (Concurrent.txt, Klines.txt,
``klineBin1D:ETHUSDT``, ``trade:ETHUSDT``   Trades.txt), minified, one frame each
BitMart ``futures/trade:BTCUSDT``,          DERIVED from the Binance 2024 recorded trades — no real
``futures/klineBin<tf>:BTCUSDT`` (9 tfs)    multi-message BitMart recording exists (samples README)
==========================================  ===============================================================

Binance tapes hold the bare ``data`` payload text (sliced out of the recorded envelope, so it
is byte-identical to the recording); the simulator re-wraps it for ``/stream`` connections.
BitMart tapes hold whole push frames.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import orjson

from scripts import tapes

BITMART = "bitmart"
BINANCE = "binanceusdm"

SRC_BINANCE_2024 = "recorded: Binance USD-M BTCUSDT 2024-08-08 (hftbacktest capture)"
SRC_BINANCE_2021 = "recorded: Binance USD-M 2021-07-22 (cryptofeed capture)"
SRC_DERIVED = "derived from Binance 2024 recorded trades (hftbacktest btcusdt@trade); synthetic shape"
SRC_BITMART_FIXTURE = "JKorf BitMart.Net fixture push frame (not a live capture)"

#: Symbols the simulated BitMart knows; other symbols get "Invalid channel" (exchanges.md §1.4).
BITMART_SYMBOLS = frozenset({"BTCUSDT", "ETHUSDT"})
#: BitMart kline channel suffix -> bar length in seconds (exchanges.md §1.6 table).
BITMART_TIMEFRAMES_S: dict[str, int] = {
    "1m": 60,
    "5m": 300,
    "15m": 900,
    "30m": 1800,
    "1H": 3600,
    "2H": 7200,
    "4H": 14400,
    "1D": 86400,
    "1W": 604800,
}
#: Derived BitMart klines: at most one push per timeframe per this much tape time (plus new bars).
BITMART_KLINE_THROTTLE_S = 0.5
#: Derived Binance klines: "updates every 250 ms if something changed" (binance_usdm.md §5).
BINANCE_KLINE_THROTTLE_S = 0.25
BINANCE_DERIVED_KLINES_MS: dict[str, int] = {"1m": 60_000, "5m": 300_000}
BINANCE_2021_SYMBOLS = ("sushiusdt", "akrousdt", "keepusdt", "ctkusdt")
_BINANCE_2021_KINDS = ("kline_1m", "aggTrade", "depth@100ms", "bookTicker")
# 1970-01-01 was a Thursday; weekly bars are assumed to open on Monday 00:00 UTC (UNVERIFIED for BitMart).
_WEEK_OFFSET_S = 4 * 86400

_HFT = "hft2024"  # one pass over the 2024 file builds its recorded and all derived tapes
_CF = "cf2021"
_JKORF = "jkorf"


@dataclass(frozen=True, slots=True)
class Tape:
    """One stream's frames in replay order.

    ``times_s[i]``: tape time of frame ``i`` in seconds (recorded local receive time, relative
    to the start of its source file); non-decreasing. ``frames[i]``: the text to send
    (Binance: bare payload; BitMart: whole push frame).
    """

    exchange: str
    native: str
    source: str
    times_s: Sequence[float]
    frames: Sequence[str]

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def derived(self) -> bool:
        return self.source == SRC_DERIVED


def _catalog() -> dict[tuple[str, str], tuple[str, str]]:
    """(exchange, native) -> (load group, source label). Static: answering it reads no file."""
    cat: dict[tuple[str, str], tuple[str, str]] = {}
    for kind in ("trade", "bookTicker", "depth@0ms"):
        cat[(BINANCE, f"btcusdt@{kind}")] = (_HFT, SRC_BINANCE_2024)
    for tf in BINANCE_DERIVED_KLINES_MS:
        cat[(BINANCE, f"btcusdt@kline_{tf}")] = (_HFT, SRC_DERIVED)
    for sym in BINANCE_2021_SYMBOLS:
        for kind in _BINANCE_2021_KINDS:
            cat[(BINANCE, f"{sym}@{kind}")] = (_CF, SRC_BINANCE_2021)
    for native in ("futures/klineBin1H:ETHUSDT", "futures/klineBin1D:ETHUSDT", "futures/trade:ETHUSDT"):
        cat[(BITMART, native)] = (_JKORF, SRC_BITMART_FIXTURE)
    cat[(BITMART, "futures/trade:BTCUSDT")] = (_HFT, SRC_DERIVED)
    for tf in BITMART_TIMEFRAMES_S:
        cat[(BITMART, f"futures/klineBin{tf}:BTCUSDT")] = (_HFT, SRC_DERIVED)
    return cat


CATALOG = _catalog()

_cache: dict[tuple[str, str], dict[tuple[str, str], Tape]] = {}
_lock = threading.Lock()


def source_of(exchange: str, native: str) -> str | None:
    """Source label of the tape for ``native``, or None when the simulator has no frames for it."""
    entry = CATALOG.get((exchange, native))
    return entry[1] if entry else None


def cached_tape(exchange: str, native: str, samples_dir: Path | None = None) -> Tape | None:
    """The tape if its source is already loaded; raises LookupError if it still needs loading.

    Lets the async caller skip a thread hop on the common (cached) path.
    """
    entry = CATALOG.get((exchange, native))
    if entry is None:
        return None
    group = _cache.get((entry[0], _dir_key(samples_dir)))
    if group is None:
        raise LookupError(native)
    return group.get((exchange, native))


def get_tape(exchange: str, native: str, samples_dir: Path | None = None) -> Tape | None:
    """The tape for ``native`` (loading and caching its source file on first use), or None.

    Blocking: call it from a thread in async code. Raises FileNotFoundError when the
    recordings folder is missing (see ``scripts.tapes.samples_dir``).
    """
    entry = CATALOG.get((exchange, native))
    if entry is None:
        return None
    return _load_group(entry[0], samples_dir).get((exchange, native))


def preload(samples_dir: Path | None = None) -> None:
    """Load and cache every tape source now (about 1-2 s once per process)."""
    for group in (_JKORF, _CF, _HFT):
        _load_group(group, samples_dir)


def _dir_key(samples_dir: Path | None) -> str:
    return str(samples_dir.resolve()) if samples_dir is not None else ""


def _rel(samples_dir: Path | None, relative: str) -> str:
    # scripts.tapes joins samples_dir()/relative; an absolute path wins in a pathlib join.
    return str(samples_dir / relative) if samples_dir is not None else relative


def _load_group(group: str, samples_dir: Path | None) -> dict[tuple[str, str], Tape]:
    key = (group, _dir_key(samples_dir))
    with _lock:
        loaded = _cache.get(key)
        if loaded is None:
            builder = {_HFT: _build_hft, _CF: _build_cf, _JKORF: _build_jkorf}[group]
            loaded = _cache[key] = builder(samples_dir)
        return loaded


# ---------------------------------------------------------------- recorded Binance tapes


def _split_envelope(raw: str) -> tuple[str, str] | None:
    """``{"stream":"<name>","data":<payload>}`` -> (name, payload text), byte-exact; None otherwise."""
    if not raw.startswith('{"stream":"') or not raw.endswith("}"):
        return None
    end = raw.find('"', 11)
    if end < 0 or not raw.startswith(',"data":', end + 1):
        return None
    return raw[11:end], raw[end + 9 : -1]


class _TapeBuilder:
    """Accumulates (time, frame) per native for one source."""

    def __init__(self, source_t0: float) -> None:
        self.t0 = source_t0
        self.times: dict[tuple[str, str], list[float]] = {}
        self.frames: dict[tuple[str, str], list[str]] = {}

    def add(self, exchange: str, native: str, t_abs_s: float, frame: str) -> None:
        k = (exchange, native)
        self.times.setdefault(k, []).append(t_abs_s - self.t0)
        self.frames.setdefault(k, []).append(frame)

    def tapes(self) -> dict[tuple[str, str], Tape]:
        out: dict[tuple[str, str], Tape] = {}
        for k, frames in self.frames.items():
            entry = CATALOG.get(k)
            if entry is not None:
                out[k] = Tape(k[0], k[1], entry[1], tuple(self.times[k]), tuple(frames))
        return out


def _build_cf(samples_dir: Path | None) -> dict[tuple[str, str], Tape]:
    b: _TapeBuilder | None = None
    for ts, raw in tapes.read_cryptofeed_ws(_rel(samples_dir, tapes.BINANCE_2021)):
        parts = _split_envelope(raw)
        if parts is None:
            continue
        b = b or _TapeBuilder(ts)
        b.add(BINANCE, parts[0], ts, parts[1])
    return b.tapes() if b else {}


def _build_hft(samples_dir: Path | None) -> dict[tuple[str, str], Tape]:
    b: _TapeBuilder | None = None
    trades: list[tuple[float, dict[str, object]]] = []
    for ts_ns, raw in tapes.read_hftbacktest(_rel(samples_dir, tapes.BINANCE_2024)):
        ts = ts_ns / 1e9
        b = b or _TapeBuilder(ts)
        parts = _split_envelope(raw)
        if parts is None:  # the REST depth snapshot line
            continue
        name, payload = parts
        b.add(BINANCE, name, ts, payload)
        if name == "btcusdt@trade":
            trades.append((ts, orjson.loads(payload)))
    if b is None:
        return {}
    _derive_bitmart(b, trades)
    _derive_binance_klines(b, trades)
    return b.tapes()


# ---------------------------------------------------------------- BitMart fixtures


def _build_jkorf(samples_dir: Path | None) -> dict[tuple[str, str], Tape]:
    """One push per ETHUSDT topic; identical frames seen in two files are kept once."""
    b = _TapeBuilder(0.0)
    seen: set[str] = set()
    for name in ("Concurrent.txt", "Klines.txt", "Trades.txt"):
        for fr in tapes.read_jkorf(_rel(samples_dir, f"{tapes.BITMART_FIXTURES}/{name}")):
            if fr.direction != "=":
                continue
            frame = orjson.dumps(orjson.loads(fr.raw)).decode()  # minified, key order kept
            group = orjson.loads(frame)["group"]
            if frame not in seen:
                seen.add(frame)
                b.add(BITMART, group, 0.0, frame)
    return b.tapes()


# ---------------------------------------------------------------- derived tapes


def _dec(d: Decimal) -> str:
    """Plain decimal string (never exponent notation); Decimal addition keeps the tape's scale."""
    return format(d, "f")


def _rfc3339_ns(ms: int) -> str:
    """Epoch ms -> ``2024-08-08T23:54:16.322000000Z`` (BitMart's nanosecond RFC 3339, §1.6)."""
    secs, rem = divmod(ms, 1000)
    return datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{rem * 1_000_000:09d}Z"


class _Bar:
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


def _trade_fields(t: dict[str, object]) -> tuple[int, str, str, int, bool]:
    return int(t["T"]), str(t["p"]), str(t["q"]), int(t["t"]), bool(t["m"])  # type: ignore[call-overload]


def _derive_bitmart(b: _TapeBuilder, trades: Sequence[tuple[float, dict[str, object]]]) -> None:
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
    bars: dict[str, _Bar] = {}

    def emit(tf: str, bar: _Bar, t: float) -> None:
        item = {"o": bar.o, "h": bar.h, "l": bar.l, "c": bar.c, "v": _dec(bar.v), "ts": bar.open_ms // 1000}
        group = f"futures/klineBin{tf}:BTCUSDT"
        b.add(
            BITMART, group, t, orjson.dumps({"group": group, "data": {"symbol": "BTCUSDT", "items": [item]}}).decode()
        )
        bar.dirty, bar.emit_t = False, t

    t_abs = 0.0
    for ts, trade in trades:
        t_abs = ts
        tt, p, q, tid, m = _trade_fields(trade)
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
            bar = bars.get(tf)
            if bar is None or bar.open_ms != open_s * 1000:
                if bar is not None and bar.dirty:
                    emit(tf, bar, ts)
                bar = bars[tf] = _Bar(open_s * 1000, p, pd)
                bar.add(p, pd, qd, m, tid)
                emit(tf, bar, ts)
                continue
            bar.add(p, pd, qd, m, tid)
            if ts - bar.emit_t >= BITMART_KLINE_THROTTLE_S:
                emit(tf, bar, ts)
            else:
                bar.dirty = True
    for tf, bar in bars.items():
        if bar.dirty:
            emit(tf, bar, t_abs)


def _binance_kline(bar: _Bar, interval: str, length_ms: int, event_ms: int, closed: bool) -> str:
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
        "v": _dec(bar.v),
        "n": bar.n,
        "x": closed,
        "q": _dec(bar.q),
        "V": _dec(bar.vb),
        "Q": _dec(bar.qb),
        "B": "0",
    }
    return orjson.dumps({"e": "kline", "E": event_ms, "s": "BTCUSDT", "k": k}).decode()


def _derive_binance_klines(b: _TapeBuilder, trades: Sequence[tuple[float, dict[str, object]]]) -> None:
    """Binance ``btcusdt@kline_1m`` / ``@kline_5m`` payloads (binance_usdm.md §5 shape) from trades.

    ``{"e":"kline","E":<ms>,"s":"BTCUSDT","k":{"t","T","s","i","f","L","o","c","h","l","v","n","x","q","V","Q","B"}}``.
    Pushed when a trade changes the bar, at most every ``BINANCE_KLINE_THROTTLE_S`` of tape time;
    when a trade opens a new bar, the previous bar goes out once more with ``x:true`` (``E`` = that
    trade's time) before the new bar's first push. After the last trade the open bar is closed
    with ``x:true`` at ``E = k.T + 1``, its tape time shifted by the same amount.
    """
    for interval, length_ms in BINANCE_DERIVED_KLINES_MS.items():
        bar: _Bar | None = None
        last_ts, last_tt = 0.0, 0

        def emit(
            bar: _Bar, t: float, event_ms: int, closed: bool, interval: str = interval, ln: int = length_ms
        ) -> None:
            b.add(BINANCE, f"btcusdt@kline_{interval}", t, _binance_kline(bar, interval, ln, event_ms, closed))
            bar.dirty, bar.emit_t = False, t

        for ts, trade in trades:
            tt, p, q, tid, m = _trade_fields(trade)
            last_ts, last_tt = ts, tt
            open_ms = tt // length_ms * length_ms
            pd, qd = Decimal(p), Decimal(q)
            if bar is None or bar.open_ms != open_ms:
                if bar is not None:
                    emit(bar, ts, tt, True)
                bar = _Bar(open_ms, p, pd)
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
