"""What the simulator can replay: exchange ids, source labels, symbol sets, the tape catalog and tape types.

Static data: answering "is there a tape for this stream, and where does it come from" reads no file.
Loading and caching live in ``scripts.sim.tapes.store``; the table of sources is in the package docstring.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import orjson

BITMART = "bitmart"
BINANCE = "binanceusdm"
GATE = "gateio"

SRC_BINANCE_2024 = "recorded: Binance USD-M BTCUSDT 2024-08-08 (hftbacktest capture)"
SRC_BINANCE_2021 = "recorded: Binance USD-M 2021-07-22 (cryptofeed capture)"
SRC_DERIVED = "derived from Binance 2024 recorded trades (hftbacktest btcusdt@trade); synthetic shape"
SRC_DERIVED_AGG = (
    "derived from Binance 2024 recorded trades (hftbacktest btcusdt@trade): consecutive trades with the same ms,"
    " price and side aggregated (scripts.sim.tapes.aggtrade); synthetic aggregate ids"
)
SRC_DERIVED_BOOK = (
    "derived from Binance 2024 recorded book (hftbacktest btcusdt@bookTicker, REST snapshot + btcusdt@depth@0ms);"
    " synthetic shape"
)
SRC_BITMART_FIXTURE = "JKorf BitMart.Net fixture push frame (not a live capture)"
SRC_GATE_2023 = "recorded: Gate.io USDT futures 2023-05-24 (cryptofeed capture)"
SRC_GATE_FIXTURE = "JKorf GateIo.Net fixture push frame (doc-derived, not a live capture)"

#: Symbols the simulated BitMart knows; other symbols get "Invalid channel" (exchanges.md §1.4).
BITMART_SYMBOLS = frozenset({"BTCUSDT", "ETHUSDT", "AXONUSDT"})
#: BitMart depthIncrease levels and speed suffixes -> push window in ms. No suffix is treated as
#: 100 ms (UNVERIFIED; the wire showed ~1 s cadence whatever was asked, exchanges.md §1.6).
BITMART_DEPTH_LEVELS = (5, 20, 50)
BITMART_DEPTH_SPEEDS_MS: dict[str, int] = {"": 100, "@100ms": 100, "@200ms": 200}
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
#: Diff-depth stream names that all play the one recorded diff-depth tape of their symbol.
_BINANCE_DIFF_DEPTH = re.compile(r"([a-z0-9_]+)@depth(?:@(?:0|100|500)ms)?")
#: Contracts of the 2023 Gate capture (each has order_book_update frames and a REST snapshot).
GATE_RECORDED_CONTRACTS = (
    "DIA_USDT",
    "RDNT_USDT",
    "LIT_USDT",
    "ZRX_USDT",
    "WOO_USDT",
    "QUICK_USDT",
    "OMG_USDT",
    "FRONT_USDT",
    "PHB_USDT",
    "SFP_USDT",
)
#: Contracts with futures.book_ticker frames in the capture (the other five sent none in the window).
GATE_BOOK_TICKER_CONTRACTS = ("DIA_USDT", "LIT_USDT", "PHB_USDT", "RDNT_USDT", "WOO_USDT")
#: Contracts the simulated Gate accepts: the capture's, ETH_USDT (JKorf fixtures), BTC_USDT (derived).
GATE_CONTRACTS = frozenset({*GATE_RECORDED_CONTRACTS, "ETH_USDT", "BTC_USDT"})
#: BTC per BTC_USDT contract: ``quanto_multiplier`` in the recorded contract list (GATEIO_FUTURES.0).
GATE_BTC_USDT_MULTIPLIER = Decimal("0.0001")
#: Derived Gate candles: at most one push per this much tape time (plus new bars). UNVERIFIED cadence.
GATE_CANDLE_THROTTLE_S = 0.5

#: Load groups: each is one pass over one source; ``store.load_group`` builds and caches it.
GROUP_HFT = "hft2024"  # one pass over the 2024 file builds its recorded and all derived tapes
GROUP_CF = "cf2021"
GROUP_JKORF = "jkorf"
GROUP_GATE = "gate2023"
#: Held while any tape group or private fixture set is loaded (``store``, ``userdata``): one load at a time.
LOAD_LOCK = threading.Lock()


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
        return self.source.startswith("derived")


@dataclass(frozen=True, slots=True)
class RestSnapshot:
    """One recorded REST order-book snapshot, served verbatim by the simulator.

    ``raw``: the response body exactly as recorded (Binance ``{lastUpdateId,E,T,bids,asks}``,
    Gate ``{current,update,asks,bids,id}``). ``update_id``: ``lastUpdateId`` / ``id``.
    """

    exchange: str
    symbol: str
    source: str
    raw: str
    update_id: int
    _bodies: dict[tuple[int, bool], str] = field(default_factory=dict, compare=False, repr=False)

    def body(self, limit: int, *, with_id: bool = True) -> str:
        """The body with at most ``limit`` levels per side (and Gate's ``id`` only ``with_id``).

        Verbatim when nothing is cut; otherwise re-serialized with the same keys, order and strings.
        """
        key = (limit, with_id)
        cached = self._bodies.get(key)
        if cached is not None:
            return cached
        data = orjson.loads(self.raw)
        if len(data["bids"]) <= limit and len(data["asks"]) <= limit and (with_id or "id" not in data):
            out = self.raw
        else:
            data["bids"], data["asks"] = data["bids"][:limit], data["asks"][:limit]
            if not with_id and self.exchange == GATE:
                data.pop("id", None)
            out = orjson.dumps(data).decode()
        self._bodies[key] = out
        return out


@dataclass(slots=True)
class TapeGroup:
    """The tapes and REST snapshots one load group yields."""

    tapes: dict[tuple[str, str], Tape] = field(default_factory=dict)
    rest: dict[tuple[str, str], RestSnapshot] = field(default_factory=dict)


def _catalog() -> dict[tuple[str, str], tuple[str, str]]:
    """(exchange, native) -> (load group, source label). Static: answering it reads no file."""
    cat: dict[tuple[str, str], tuple[str, str]] = {}
    for kind in ("trade", "bookTicker", "depth@0ms"):
        cat[(BINANCE, f"btcusdt@{kind}")] = (GROUP_HFT, SRC_BINANCE_2024)
    for tf in BINANCE_DERIVED_KLINES_MS:
        cat[(BINANCE, f"btcusdt@kline_{tf}")] = (GROUP_HFT, SRC_DERIVED)
    cat[(BINANCE, "btcusdt@aggTrade")] = (GROUP_HFT, SRC_DERIVED_AGG)
    for sym in BINANCE_2021_SYMBOLS:
        for kind in _BINANCE_2021_KINDS:
            cat[(BINANCE, f"{sym}@{kind}")] = (GROUP_CF, SRC_BINANCE_2021)
    for native in ("futures/klineBin1H:ETHUSDT", "futures/klineBin1D:ETHUSDT", "futures/trade:ETHUSDT"):
        cat[(BITMART, native)] = (GROUP_JKORF, SRC_BITMART_FIXTURE)
    cat[(BITMART, "futures/trade:BTCUSDT")] = (GROUP_HFT, SRC_DERIVED)
    for tf in BITMART_TIMEFRAMES_S:
        cat[(BITMART, f"futures/klineBin{tf}:BTCUSDT")] = (GROUP_HFT, SRC_DERIVED)
    cat[(BITMART, "futures/ticker")] = (GROUP_JKORF, SRC_BITMART_FIXTURE)
    cat[(BITMART, "futures/ticker:AXONUSDT")] = (GROUP_JKORF, SRC_BITMART_FIXTURE)
    cat[(BITMART, "futures/ticker:BTCUSDT")] = (GROUP_HFT, SRC_DERIVED)
    cat[(BITMART, "futures/bookticker:BTCUSDT")] = (GROUP_HFT, SRC_DERIVED_BOOK)
    for level in BITMART_DEPTH_LEVELS:
        for suffix in BITMART_DEPTH_SPEEDS_MS:
            cat[(BITMART, f"futures/depthIncrease{level}:BTCUSDT{suffix}")] = (GROUP_HFT, SRC_DERIVED_BOOK)
    cat[(BINANCE, "btcusdt@ticker")] = (GROUP_HFT, SRC_DERIVED)
    for contract in GATE_RECORDED_CONTRACTS:
        cat[(GATE, f"futures.order_book_update:{contract}")] = (GROUP_GATE, SRC_GATE_2023)
    for contract in GATE_BOOK_TICKER_CONTRACTS:
        cat[(GATE, f"futures.book_ticker:{contract}")] = (GROUP_GATE, SRC_GATE_2023)
    cat[(GATE, "futures.candlesticks:1m_FRONT_USDT")] = (GROUP_GATE, SRC_GATE_2023)
    for native in ("futures.trades:ETH_USDT", "futures.tickers:ETH_USDT"):
        cat[(GATE, native)] = (GROUP_GATE, SRC_GATE_FIXTURE)
    for native in ("futures.trades:BTC_USDT", "futures.candlesticks:1m_BTC_USDT", "futures.tickers:BTC_USDT"):
        cat[(GATE, native)] = (GROUP_HFT, SRC_DERIVED)
    return cat


def _rest_catalog() -> dict[tuple[str, str], tuple[str, str]]:
    """(exchange, SYMBOL as the REST API spells it) -> (load group, source label)."""
    cat = {(BINANCE, "BTCUSDT"): (GROUP_HFT, SRC_BINANCE_2024)}
    for sym in BINANCE_2021_SYMBOLS:
        cat[(BINANCE, sym.upper())] = (GROUP_CF, SRC_BINANCE_2021)
    for contract in GATE_RECORDED_CONTRACTS:
        cat[(GATE, contract)] = (GROUP_GATE, SRC_GATE_2023)
    return cat


CATALOG = _catalog()
REST_CATALOG = _rest_catalog()

def tape_key(exchange: str, native: str) -> str:
    """The catalogued stream whose tape plays for ``native`` (usually ``native`` itself).

    Binance diff depth: ``<s>@depth``, ``@depth@100ms``, ``@depth@500ms`` and ``@depth@0ms`` all play the
    symbol's one recorded diff-depth tape (2024 ``btcusdt@depth@0ms``, 2021 ``<s>@depth@100ms``). The
    frames keep their ``U``/``u``/``pu`` chain; only the cadence differs from what was asked.
    """
    if exchange == BINANCE and (m := _BINANCE_DIFF_DEPTH.fullmatch(native)):
        for recorded in (f"{m.group(1)}@depth@0ms", f"{m.group(1)}@depth@100ms"):
            if (BINANCE, recorded) in CATALOG:
                return recorded
    return native


def source_of(exchange: str, native: str) -> str | None:
    """Source label of the tape for ``native``, or None when the simulator has no frames for it."""
    entry = CATALOG.get((exchange, tape_key(exchange, native)))
    return entry[1] if entry else None


def dir_key(samples_dir: Path | None) -> str:
    """Cache key of a recordings folder ('' for the default one)."""
    return str(samples_dir.resolve()) if samples_dir is not None else ""


def rel_path(samples_dir: Path | None, relative: str) -> str:
    """``relative`` under ``samples_dir`` when one is given, else as ``scripts.tapes`` expects it."""
    # scripts.tapes joins samples_dir()/relative; an absolute path wins in a pathlib join.
    return str(samples_dir / relative) if samples_dir is not None else relative


class TapeBuilder:
    """Accumulates (time, frame) per native for one source."""

    def __init__(self, source_t0: float) -> None:
        self.t0 = source_t0
        self.times: dict[tuple[str, str], list[float]] = {}
        self.frames: dict[tuple[str, str], list[str]] = {}

    def add(self, exchange: str, native: str, t_abs_s: float, frame: str) -> None:
        k = (exchange, native)
        self.times.setdefault(k, []).append(t_abs_s - self.t0)
        self.frames.setdefault(k, []).append(frame)

    def group(self, rest: Iterable[RestSnapshot] = ()) -> TapeGroup:
        out = TapeGroup()
        for k, frames in self.frames.items():
            entry = CATALOG.get(k)
            if entry is not None:
                out.tapes[k] = Tape(k[0], k[1], entry[1], tuple(self.times[k]), tuple(frames))
        for snap in rest:
            out.rest[(snap.exchange, snap.symbol)] = snap
        return out


def dec(d: Decimal) -> str:
    """Plain decimal string (never exponent notation); Decimal addition keeps the tape's scale."""
    return format(d, "f")
