"""Replay tapes for the exchange simulator: recorded frames and frames derived from them.

A *tape* is one native stream's frames in order, each with a tape time (seconds since the
tape's source started, from the recorded receive timestamps). The simulator replays a tape
per (connection, subscribed stream). Everything is read in place through ``scripts.tapes``
(never copied into the tree), loaded lazily on first use and cached per process, because
parsing the 94k-line 2024 recording and deriving its tapes takes about two seconds and tests
create many simulators.

Tapes and where each comes from (labels: the ``SRC_*`` constants; see ``../shared/exchange-ws-samples/README.md``):

==========================================  ===============================================================
native stream / topic                       source
==========================================  ===============================================================
Binance ``btcusdt@trade``                   recorded 2024-08-08, hftbacktest (21,313 frames)
Binance ``btcusdt@aggTrade``                DERIVED: the 2024 recorded trades aggregated (10,447 frames,
                                            ``scripts.sim_aggtrade``: same ms, price and side; synthetic ``a``)
Binance ``btcusdt@bookTicker``              recorded 2024-08-08, hftbacktest (66,089 frames)
Binance ``btcusdt@depth@0ms``               recorded 2024-08-08, hftbacktest (6,551 frames)
Binance ``btcusdt@kline_1m``, ``_5m``       DERIVED from the 2024 recorded trades (binance_usdm.md §5 shape)
Binance ``<sym>@kline_1m``, ``@aggTrade``,  recorded 2021-07-22, cryptofeed; sym in sushiusdt, akrousdt,
``@depth@100ms``, ``@bookTicker``           keepusdt, ctkusdt
BitMart ``futures/klineBin1H:ETHUSDT``,     JKorf BitMart.Net fixture push frames (Concurrent.txt, Klines.txt,
``klineBin1D:ETHUSDT``, ``trade:ETHUSDT``   Trades.txt), minified, one frame each
BitMart ``futures/trade:BTCUSDT``,          DERIVED from the Binance 2024 recorded trades — no real
``futures/klineBin<tf>:BTCUSDT`` (9 tfs)    multi-message BitMart recording exists (samples README)
BitMart ``futures/ticker`` (all contracts)  JKorf ``Ticker.txt`` fixture (doc example; its symbol is BTCUSDT)
BitMart ``futures/ticker:AXONUSDT``         JKorf ``TickerAlternateIdentifier.txt`` (group ``...AXONUSDT@100ms``)
BitMart ``futures/ticker:BTCUSDT``          DERIVED: 2024 trades, one push per second of tape time
BitMart ``futures/bookticker:BTCUSDT``      DERIVED: one push per recorded 2024 ``btcusdt@bookTicker`` frame
BitMart ``futures/depthIncrease{5,20,50}``  DERIVED: 2024 REST snapshot + ``btcusdt@depth@0ms``;
``:BTCUSDT[@100ms|@200ms]``                 ``_derive_bitmart_depth``
Binance ``btcusdt@ticker``                  DERIVED: 2024 trades, one 24hrTicker per second of tape time
Binance ``btcusdt@depth[@100ms|@500ms]``    alias of the recorded ``btcusdt@depth@0ms`` (``tape_key``)
Binance ``<2021 sym>@depth[@0ms|@500ms]``   alias of the recorded ``<sym>@depth@100ms``
Gate ``futures.order_book_update:<C>``      recorded 2023-05-24, cryptofeed (10 contracts, ``GATE_RECORDED_CONTRACTS``)
Gate ``futures.book_ticker:<C>``            recorded 2023-05-24 (5 contracts had frames: ``GATE_BOOK_TICKER_CONTRACTS``)
Gate ``futures.candlesticks:1m_FRONT_USDT`` recorded 2023-05-24 (the capture's only candle frame)
Gate ``futures.trades:ETH_USDT``,           JKorf GateIo.Net fixture push frames (doc-derived)
``futures.tickers:ETH_USDT``
Gate ``futures.trades:BTC_USDT``,           DERIVED from the Binance 2024 recorded trades (``_derive_gate``,
``futures.candlesticks:1m_BTC_USDT``,       ``_derive_tickers``)
``futures.tickers:BTC_USDT``
==========================================  ===============================================================

Fixture frames are served only on the channel and symbol they were written for: JKorf's BitMart
``Ticker.txt`` (a doc example whose symbol is BTCUSDT, last price 146.24) only on the all-contracts
``futures/ticker``, never on ``futures/ticker:BTCUSDT``; nautilus ``ticker_stream.json`` (BTCUSDT,
2023 values) is not served at all, since ``btcusdt@ticker`` is derived from the 2024 tape and the
two would mix prices 45k apart.

REST snapshots (``rest_snapshot``), served verbatim: Binance ``BTCUSDT`` (the 2024 capture's REST
line), ``SUSHIUSDT``/``AKROUSDT``/``KEEPUSDT``/``CTKUSDT`` (``BINANCE_FUTURES.http.0.0``, 2021) and the
10 Gate contracts (``GATEIO_FUTURES.http.0.0``, 2023, with ``id``). Each recording's snapshot is
bridged by a frame near the start of the matching depth tape (binance_usdm.md §6, exchanges.md
§2.5), and every replay starts at the tape's first frame: a client that buffers from its
subscribe and then fetches the snapshot finds the bridging frame in its buffer. The snapshot is
static, so a resync in mid-stream must also restart the stream (resubscribe or reconnect).

Binance tapes hold the bare ``data`` payload text (sliced out of the recorded envelope, so it
is byte-identical to the recording); the simulator re-wraps it for ``/stream`` connections.
BitMart and Gate tapes hold whole push frames (Gate's recorded ones verbatim).
"""

from __future__ import annotations

import bisect
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import orjson

from scripts import sim_aggtrade, tapes

BITMART = "bitmart"
BINANCE = "binanceusdm"
GATE = "gateio"

SRC_BINANCE_2024 = "recorded: Binance USD-M BTCUSDT 2024-08-08 (hftbacktest capture)"
SRC_BINANCE_2021 = "recorded: Binance USD-M 2021-07-22 (cryptofeed capture)"
SRC_DERIVED = "derived from Binance 2024 recorded trades (hftbacktest btcusdt@trade); synthetic shape"
SRC_DERIVED_AGG = (
    "derived from Binance 2024 recorded trades (hftbacktest btcusdt@trade): consecutive trades with the same ms,"
    " price and side aggregated (scripts.sim_aggtrade); synthetic aggregate ids"
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
# 1970-01-01 was a Thursday; weekly bars are assumed to open on Monday 00:00 UTC (UNVERIFIED for BitMart).
_WEEK_OFFSET_S = 4 * 86400

_HFT = "hft2024"  # one pass over the 2024 file builds its recorded and all derived tapes
_CF = "cf2021"
_JKORF = "jkorf"
_GATE = "gate2023"


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
class _Group:
    tapes: dict[tuple[str, str], Tape] = field(default_factory=dict)
    rest: dict[tuple[str, str], RestSnapshot] = field(default_factory=dict)


def _catalog() -> dict[tuple[str, str], tuple[str, str]]:
    """(exchange, native) -> (load group, source label). Static: answering it reads no file."""
    cat: dict[tuple[str, str], tuple[str, str]] = {}
    for kind in ("trade", "bookTicker", "depth@0ms"):
        cat[(BINANCE, f"btcusdt@{kind}")] = (_HFT, SRC_BINANCE_2024)
    for tf in BINANCE_DERIVED_KLINES_MS:
        cat[(BINANCE, f"btcusdt@kline_{tf}")] = (_HFT, SRC_DERIVED)
    cat[(BINANCE, "btcusdt@aggTrade")] = (_HFT, SRC_DERIVED_AGG)
    for sym in BINANCE_2021_SYMBOLS:
        for kind in _BINANCE_2021_KINDS:
            cat[(BINANCE, f"{sym}@{kind}")] = (_CF, SRC_BINANCE_2021)
    for native in ("futures/klineBin1H:ETHUSDT", "futures/klineBin1D:ETHUSDT", "futures/trade:ETHUSDT"):
        cat[(BITMART, native)] = (_JKORF, SRC_BITMART_FIXTURE)
    cat[(BITMART, "futures/trade:BTCUSDT")] = (_HFT, SRC_DERIVED)
    for tf in BITMART_TIMEFRAMES_S:
        cat[(BITMART, f"futures/klineBin{tf}:BTCUSDT")] = (_HFT, SRC_DERIVED)
    cat[(BITMART, "futures/ticker")] = (_JKORF, SRC_BITMART_FIXTURE)
    cat[(BITMART, "futures/ticker:AXONUSDT")] = (_JKORF, SRC_BITMART_FIXTURE)
    cat[(BITMART, "futures/ticker:BTCUSDT")] = (_HFT, SRC_DERIVED)
    cat[(BITMART, "futures/bookticker:BTCUSDT")] = (_HFT, SRC_DERIVED_BOOK)
    for level in BITMART_DEPTH_LEVELS:
        for suffix in BITMART_DEPTH_SPEEDS_MS:
            cat[(BITMART, f"futures/depthIncrease{level}:BTCUSDT{suffix}")] = (_HFT, SRC_DERIVED_BOOK)
    cat[(BINANCE, "btcusdt@ticker")] = (_HFT, SRC_DERIVED)
    for contract in GATE_RECORDED_CONTRACTS:
        cat[(GATE, f"futures.order_book_update:{contract}")] = (_GATE, SRC_GATE_2023)
    for contract in GATE_BOOK_TICKER_CONTRACTS:
        cat[(GATE, f"futures.book_ticker:{contract}")] = (_GATE, SRC_GATE_2023)
    cat[(GATE, "futures.candlesticks:1m_FRONT_USDT")] = (_GATE, SRC_GATE_2023)
    for native in ("futures.trades:ETH_USDT", "futures.tickers:ETH_USDT"):
        cat[(GATE, native)] = (_GATE, SRC_GATE_FIXTURE)
    for native in ("futures.trades:BTC_USDT", "futures.candlesticks:1m_BTC_USDT", "futures.tickers:BTC_USDT"):
        cat[(GATE, native)] = (_HFT, SRC_DERIVED)
    return cat


def _rest_catalog() -> dict[tuple[str, str], tuple[str, str]]:
    """(exchange, SYMBOL as the REST API spells it) -> (load group, source label)."""
    cat = {(BINANCE, "BTCUSDT"): (_HFT, SRC_BINANCE_2024)}
    for sym in BINANCE_2021_SYMBOLS:
        cat[(BINANCE, sym.upper())] = (_CF, SRC_BINANCE_2021)
    for contract in GATE_RECORDED_CONTRACTS:
        cat[(GATE, contract)] = (_GATE, SRC_GATE_2023)
    return cat


CATALOG = _catalog()
REST_CATALOG = _rest_catalog()

_cache: dict[tuple[str, str], _Group] = {}
_lock = threading.Lock()


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


def cached_tape(exchange: str, native: str, samples_dir: Path | None = None) -> Tape | None:
    """The tape if its source is already loaded; raises LookupError if it still needs loading.

    Lets the async caller skip a thread hop on the common (cached) path.
    """
    key = (exchange, tape_key(exchange, native))
    entry = CATALOG.get(key)
    if entry is None:
        return None
    group = _cache.get((entry[0], _dir_key(samples_dir)))
    if group is None:
        raise LookupError(native)
    return group.tapes.get(key)


def get_tape(exchange: str, native: str, samples_dir: Path | None = None) -> Tape | None:
    """The tape for ``native`` (loading and caching its source file on first use), or None.

    Blocking: call it from a thread in async code. Raises FileNotFoundError when the
    recordings folder is missing (see ``scripts.tapes.samples_dir``).
    """
    key = (exchange, tape_key(exchange, native))
    entry = CATALOG.get(key)
    if entry is None:
        return None
    return _load_group(entry[0], samples_dir).tapes.get(key)


def cached_rest_snapshot(exchange: str, symbol: str, samples_dir: Path | None = None) -> RestSnapshot | None:
    """Like ``cached_tape`` for REST snapshots: None if unknown, LookupError if not loaded yet."""
    entry = REST_CATALOG.get((exchange, symbol))
    if entry is None:
        return None
    group = _cache.get((entry[0], _dir_key(samples_dir)))
    if group is None:
        raise LookupError(symbol)
    return group.rest.get((exchange, symbol))


def rest_snapshot(exchange: str, symbol: str, samples_dir: Path | None = None) -> RestSnapshot | None:
    """The recorded REST snapshot for ``symbol`` (``BTCUSDT``, ``RDNT_USDT``), or None. Blocking."""
    entry = REST_CATALOG.get((exchange, symbol))
    if entry is None:
        return None
    return _load_group(entry[0], samples_dir).rest.get((exchange, symbol))


def preload(samples_dir: Path | None = None) -> None:
    """Load and cache every tape source now (about 2 s once per process)."""
    for group in (_JKORF, _CF, _GATE, _HFT):
        _load_group(group, samples_dir)


def _dir_key(samples_dir: Path | None) -> str:
    return str(samples_dir.resolve()) if samples_dir is not None else ""


def _rel(samples_dir: Path | None, relative: str) -> str:
    # scripts.tapes joins samples_dir()/relative; an absolute path wins in a pathlib join.
    return str(samples_dir / relative) if samples_dir is not None else relative


def _load_group(group: str, samples_dir: Path | None) -> _Group:
    key = (group, _dir_key(samples_dir))
    with _lock:
        loaded = _cache.get(key)
        if loaded is None:
            builder = {_HFT: _build_hft, _CF: _build_cf, _JKORF: _build_jkorf, _GATE: _build_gate}[group]
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

    def group(self, rest: Iterable[RestSnapshot] = ()) -> _Group:
        out = _Group()
        for k, frames in self.frames.items():
            entry = CATALOG.get(k)
            if entry is not None:
                out.tapes[k] = Tape(k[0], k[1], entry[1], tuple(self.times[k]), tuple(frames))
        for snap in rest:
            out.rest[(snap.exchange, snap.symbol)] = snap
        return out


def _rest_snapshots(
    samples_dir: Path | None, relative: str, exchange: str, param: str, source: str
) -> list[RestSnapshot]:
    """The REST order-book responses of a cryptofeed ``*.http.*`` file, keyed by the URL's ``param``."""
    out = []
    for url, _, raw in tapes.read_cryptofeed_http(_rel(samples_dir, relative)):
        symbol = parse_qs(urlsplit(url).query).get(param, [""])[0]
        data = orjson.loads(raw)
        update_id = data.get("lastUpdateId", data.get("id"))
        if symbol and isinstance(update_id, int):
            out.append(RestSnapshot(exchange, symbol, source, raw, update_id))
    return out


def _build_cf(samples_dir: Path | None) -> _Group:
    b: _TapeBuilder | None = None
    for ts, raw in tapes.read_cryptofeed_ws(_rel(samples_dir, tapes.BINANCE_2021)):
        parts = _split_envelope(raw)
        if parts is None:
            continue
        b = b or _TapeBuilder(ts)
        b.add(BINANCE, parts[0], ts, parts[1])
    rest = _rest_snapshots(samples_dir, tapes.BINANCE_2021_HTTP, BINANCE, "symbol", SRC_BINANCE_2021)
    return (b or _TapeBuilder(0.0)).group(rest)


def _build_hft(samples_dir: Path | None) -> _Group:
    b: _TapeBuilder | None = None
    trades: list[tuple[float, dict[str, object]]] = []
    book_tickers: list[tuple[float, dict[str, object]]] = []
    depth: list[tuple[float, dict[str, object]]] = []
    snapshot: tuple[float, RestSnapshot] | None = None
    for ts_ns, raw in tapes.read_hftbacktest(_rel(samples_dir, tapes.BINANCE_2024)):
        ts = ts_ns / 1e9
        b = b or _TapeBuilder(ts)
        parts = _split_envelope(raw)
        if parts is None:  # the REST depth snapshot line
            if raw.startswith('{"lastUpdateId":'):
                snap = RestSnapshot(BINANCE, "BTCUSDT", SRC_BINANCE_2024, raw, orjson.loads(raw)["lastUpdateId"])
                snapshot = (ts, snap)
            continue
        name, payload = parts
        b.add(BINANCE, name, ts, payload)
        if name == "btcusdt@trade":
            trades.append((ts, orjson.loads(payload)))
        elif name == "btcusdt@bookTicker":
            book_tickers.append((ts, orjson.loads(payload)))
        elif name == "btcusdt@depth@0ms":
            depth.append((ts, orjson.loads(payload)))
    if b is None:
        return _Group()
    for ts, frame in sim_aggtrade.aggregate_trades(trades):
        b.add(BINANCE, "btcusdt@aggTrade", ts, frame)
    _derive_bitmart(b, trades)
    _derive_binance_klines(b, trades)
    _derive_tickers(b, trades, book_tickers)
    _derive_gate(b, trades)
    _derive_bitmart_bookticker(b, book_tickers)
    if snapshot is not None:
        _derive_bitmart_depth(b, snapshot[0], orjson.loads(snapshot[1].raw), depth)
    return b.group([snapshot[1]] if snapshot else [])


# ---------------------------------------------------------------- fixtures and the Gate capture


def _build_jkorf(samples_dir: Path | None) -> _Group:
    """One push per BitMart fixture topic; identical frames seen in two files are kept once.

    The native is the topic as subscribed: ``TickerAlternateIdentifier.txt`` subscribes
    ``futures/ticker:AXONUSDT`` and its push says ``group: futures/ticker:AXONUSDT@100ms``.
    """
    b = _TapeBuilder(0.0)
    seen: set[str] = set()
    names = ("Concurrent.txt", "Klines.txt", "Trades.txt", "Ticker.txt", "TickerAlternateIdentifier.txt")
    for name in names:
        for fr in tapes.read_jkorf(_rel(samples_dir, f"{tapes.BITMART_FIXTURES}/{name}")):
            if fr.direction != "=":
                continue
            frame = orjson.dumps(orjson.loads(fr.raw)).decode()  # minified, key order kept
            group = orjson.loads(frame)["group"]
            native = group.partition("@")[0] if group.startswith("futures/ticker") else group
            if frame not in seen:
                seen.add(frame)
                b.add(BITMART, native, 0.0, frame)
    return b.group()


def _build_gate(samples_dir: Path | None) -> _Group:
    """Gate 2023 capture (update frames verbatim), its REST snapshots, and two JKorf Gate fixtures.

    Natives: ``futures.order_book_update:<C>``, ``futures.book_ticker:<C>`` (contract from ``result.s``),
    ``futures.candlesticks:<n>`` (``n`` = ``1m_FRONT_USDT``), ``futures.trades:<C>`` / ``futures.tickers:<C>``.
    """
    b: _TapeBuilder | None = None
    for ts, raw in tapes.read_cryptofeed_ws(_rel(samples_dir, tapes.GATE_2023)):
        b = b or _TapeBuilder(ts)
        if '"event":"update"' not in raw:
            continue  # subscribe acks
        frame = orjson.loads(raw)
        channel, result = frame.get("channel"), frame.get("result")
        if isinstance(result, list):
            natives = dict.fromkeys(f"{channel}:{item.get('n') or item.get('contract')}" for item in result)
        elif isinstance(result, dict):
            natives = {f"{channel}:{result.get('s')}": None}
        else:
            continue
        for native in natives:
            b.add(GATE, native, ts, raw)
    b = b or _TapeBuilder(0.0)
    for name in ("SubscribeToTradeUpdates.txt", "SubscribeToTickerUpdates.txt"):
        for fr in tapes.read_jkorf(_rel(samples_dir, f"jkorf-gateio-net/{name}")):
            if fr.direction == "=":
                frame = orjson.loads(fr.raw)
                native = f"{frame['channel']}:{frame['result'][0]['contract']}"
                b.add(GATE, native, b.t0, orjson.dumps(frame).decode())
    return b.group(_rest_snapshots(samples_dir, tapes.GATE_2023_HTTP, GATE, "contract", SRC_GATE_2023))


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


# ---------------------------------------------------------------- derived tickers (Binance, BitMart, Gate)


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
    first_tt, o, _, _, _ = _trade_fields(trades[0][1])
    h = lo = c = o
    hd = ld = Decimal(o)
    lq, v, q, n = "0", Decimal(0), Decimal(0), 0
    first_id = last_id = 0
    sec: int | None = None

    def tick(ts: float, event_ms: int) -> _Tick:
        return _Tick(ts, event_ms, first_tt, o, h, lo, c, lq, v, q, n, first_id, last_id)

    for ts, trade in trades:
        tt, p, qty, tid, _ = _trade_fields(trade)
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
        last_ts, last_tt = trades[-1][0], _trade_fields(trades[-1][1])[0]
        out.append(tick(last_ts + max(0, end_ms - last_tt) / 1000, end_ms))
    return out


def _pct(t: _Tick, scale: str, *, ratio: bool = False) -> str:
    change = (Decimal(t.c) - Decimal(t.o)) / Decimal(t.o)
    rounded = (change if ratio else change * 100).quantize(Decimal(scale))
    return _dec(rounded.copy_abs() if rounded.is_zero() else rounded)  # no "-0.00"


def _derive_tickers(
    b: _TapeBuilder,
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
            "p": _dec(Decimal(t.c) - Decimal(t.o)),
            "P": _pct(t, "0.001"),
            "w": _dec((t.quote / t.volume).quantize(Decimal("0.01"))),
            "c": t.c,
            "Q": t.last_qty,
            "o": t.o,
            "h": t.h,
            "l": t.l,
            "v": _dec(t.volume),
            "q": _dec(t.quote),
            "O": t.open_ms,
            "C": t.event_ms,
            "F": t.first_id,
            "L": t.last_id,
            "n": t.count,
        }
        b.add(BINANCE, "btcusdt@ticker", t.ts, orjson.dumps(binance).decode())
        data = {
            "symbol": "BTCUSDT",
            "volume_24": _dec(t.volume),
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
            "volume_24h": _dec(t.volume / GATE_BTC_USDT_MULTIPLIER),
            "volume_24h_base": _dec(t.volume),
            "volume_24h_quote": _dec(t.quote),
            "volume_24h_settle": _dec(t.quote),
            "low_24h": t.l,
            "high_24h": t.h,
        }
        gate = _gate_frame("futures.tickers", t.event_ms, [row])
        b.add(GATE, "futures.tickers:BTC_USDT", t.ts, gate)


# ---------------------------------------------------------------- derived Gate trades and candles


def _gate_frame(channel: str, time_ms: int, result: object) -> str:
    frame = {"time": time_ms // 1000, "time_ms": time_ms, "channel": channel, "event": "update", "result": result}
    return orjson.dumps(frame).decode()


def _derive_gate(b: _TapeBuilder, trades: Sequence[tuple[float, dict[str, object]]]) -> None:
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
    bar: _Bar | None = None
    last_ts, last_tt = 0.0, 0

    def emit(bar: _Bar, ts: float, time_ms: int) -> None:
        item = {
            "t": bar.open_ms // 1000,
            "v": int(bar.v / GATE_BTC_USDT_MULTIPLIER),
            "c": bar.c,
            "h": bar.h,
            "l": bar.l,
            "o": bar.o,
            "n": "1m_BTC_USDT",
        }
        b.add(GATE, "futures.candlesticks:1m_BTC_USDT", ts, _gate_frame("futures.candlesticks", time_ms, [item]))
        bar.dirty, bar.emit_t = False, ts

    for ts, trade in trades:
        tt, p, q, tid, m = _trade_fields(trade)
        last_ts, last_tt = ts, tt
        qd = Decimal(q)
        contracts = _dec(qd / GATE_BTC_USDT_MULTIPLIER)
        row = {
            "size": "-" + contracts if m else contracts,
            "id": tid,
            "create_time": tt // 1000,
            "create_time_ms": tt,
            "price": p,
            "contract": "BTC_USDT",
        }
        event_ms = int(trade.get("E", tt))  # type: ignore[call-overload]
        b.add(GATE, "futures.trades:BTC_USDT", ts, _gate_frame("futures.trades", event_ms, [row]))
        open_ms = tt // 60_000 * 60_000
        pd = Decimal(p)
        if bar is None or bar.open_ms != open_ms:
            if bar is not None and bar.dirty:
                emit(bar, ts, tt)
            bar = _Bar(open_ms, p, pd)
            bar.add(p, pd, qd, m, tid)
            emit(bar, ts, tt)
            continue
        bar.add(p, pd, qd, m, tid)
        if ts - bar.emit_t >= GATE_CANDLE_THROTTLE_S:
            emit(bar, ts, tt)
        else:
            bar.dirty = True
    if bar is not None and bar.dirty:
        emit(bar, last_ts, last_tt)


# ---------------------------------------------------------------- derived BitMart book channels


def _derive_bitmart_bookticker(b: _TapeBuilder, book_tickers: Sequence[tuple[float, dict[str, object]]]) -> None:
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


def _derive_bitmart_depth(
    b: _TapeBuilder, snap_ts: float, snapshot: dict[str, object], depth: Sequence[tuple[float, dict[str, object]]]
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


# ---------------------------------------------------------------- private (user-data) fixtures

SRC_BINANCE_USER_FIXTURE = "nautilus Binance USD-M user-data fixture (not a live capture)"
#: Private channel keys: BitMart topics as subscribed, Gate channels, and Binance's one user stream.
BINANCE_USER_STREAM = "user-data"
_BITMART_PRIVATE_FILES = ("Orders.txt", "Positions.txt", "Balances.txt")
_GATE_PRIVATE_FILES = (
    "SubscribeToOrderUpdates.txt",
    "SubscribeToPositionUpdates.txt",
    "SubscribeToBalanceUpdates.txt",
)
#: ``algo_update_new.json``: a resting TAKE_PROFIT in the Algo Service (ALGO_UPDATE, binance_usdm.md §7). Its
#: ``algo_update_canceled.json`` twin is left out: both carry the same ``E``, so their order would be arbitrary.
_BINANCE_USER_FILES = ("order_update_*.json", "account_update*.json", "algo_update_new.json")
_private_cache: dict[str, dict[tuple[str, str], tuple[str, ...]]] = {}


def private_frames(exchange: str, channel: str, samples_dir: Path | None = None) -> tuple[str, ...]:
    """The fixture pushes of one private channel, minified with key order kept; () when there are none.

    - BitMart (``channel`` = topic): ``futures/order`` (``Orders.txt``), ``futures/position``
      (``Positions.txt``), ``futures/asset:BTC`` (``Balances.txt``, whose only push is BTC; USDT and ETH
      have no fixture frame). Each served only on the topic its ``group`` names.
    - Gate (``channel`` = ``futures.orders`` | ``futures.positions`` | ``futures.balances``): the JKorf
      ``SubscribeTo{Order,Position,Balance}Updates.txt`` pushes, verbatim values (contract ``BTC_USD``,
      ``user`` "110"/"211", sizes as decimal strings).
    - Binance (``channel`` = ``BINANCE_USER_STREAM``): the nautilus ``order_update_*.json``,
      ``account_update*.json`` and ``algo_update_new.json`` (a resting conditional order) payloads (bare, ws
      mode), ordered by ``E`` then file name — so an order's NEW precedes its TRADEs (binance_usdm.md §7: sort
      by ``E``).

    Small files, read once per process (blocking, a few ms). Raises FileNotFoundError without the samples.
    """
    key = _dir_key(samples_dir)
    with _lock:
        loaded = _private_cache.get(key)
        if loaded is None:
            loaded = _private_cache[key] = _load_private(samples_dir)
    return loaded.get((exchange, channel), ())


def _load_private(samples_dir: Path | None) -> dict[tuple[str, str], tuple[str, ...]]:
    out: dict[tuple[str, str], list[str]] = {}
    for name in _BITMART_PRIVATE_FILES:
        for fr in tapes.read_jkorf(_rel(samples_dir, f"{tapes.BITMART_FIXTURES}/{name}")):
            if fr.direction == "=":
                frame = orjson.loads(fr.raw)
                out.setdefault((BITMART, frame["group"]), []).append(orjson.dumps(frame).decode())
    for name in _GATE_PRIVATE_FILES:
        for fr in tapes.read_jkorf(_rel(samples_dir, f"jkorf-gateio-net/{name}")):
            if fr.direction == "=":
                frame = orjson.loads(fr.raw)
                out.setdefault((GATE, frame["channel"]), []).append(orjson.dumps(frame).decode())
    folder = (samples_dir or tapes.samples_dir()) / "nautilus" / "binance-futures"
    events = []
    for pattern in _BINANCE_USER_FILES:
        for path in folder.glob(pattern):
            payload = orjson.loads(path.read_bytes())
            events.append((int(payload["E"]), path.name, orjson.dumps(payload).decode()))
    if not events:
        raise FileNotFoundError(f"no Binance user-data fixtures in {folder}")
    out[(BINANCE, BINANCE_USER_STREAM)] = [frame for _, _, frame in sorted(events)]
    return {k: tuple(v) for k, v in out.items()}


def bitmart_open_orders(samples_dir: Path | None = None) -> list[dict[str, object]]:
    """``GET /contract/private/get-open-orders`` ``data``: the ``futures/order`` fixture orders still open.

    Open = ``state`` 1 (approval) or 2 (check); the last push of an ``order_id`` wins. Fields are the
    push's ``order`` object less the push-only ``last_trade`` and ``plan_order_id`` (the REST doc's
    example has neither); REST-only fields the fixture lacks (``position_mode``, preset TP/SL) are
    left out.
    """
    orders: dict[str, dict[str, object]] = {}
    for raw in private_frames(BITMART, "futures/order", samples_dir):
        for item in orjson.loads(raw)["data"]:
            order = {k: v for k, v in item["order"].items() if k not in ("last_trade", "plan_order_id")}
            orders[str(order["order_id"])] = order
    return [o for o in orders.values() if o.get("state") in (1, 2)]


def bitmart_positions(samples_dir: Path | None = None) -> list[dict[str, object]]:
    """``GET /contract/private/position`` ``data``, mapped from the ``futures/position`` fixture pushes.

    Push field -> REST field: ``hold_volume`` -> ``current_amount``, ``hold_avg_price`` -> ``entry_price``,
    ``close_volume`` -> ``close_vol``, ``create_time`` -> ``open_timestamp``, ``update_time`` ->
    ``timestamp``, ``open_type`` 1/2 -> ``margin_type`` Isolated/Cross, ``liquidate_price`` ->
    ``liquidation_price`` (that REST name is UNVERIFIED: the doc example has no liquidation price);
    ``symbol``, ``position_type``, ``open_avg_price``, ``close_avg_price`` as pushed. REST fields the push
    lacks (leverage, mark price, values, fees, position_mode) are left out. Mapping UNVERIFIED (no fixture
    pairs a push with a REST answer).
    """
    out = []
    for raw in private_frames(BITMART, "futures/position", samples_dir):
        for p in orjson.loads(raw)["data"]:
            out.append(
                {
                    "symbol": p["symbol"],
                    "timestamp": p["update_time"],
                    "open_timestamp": p["create_time"],
                    "margin_type": "Isolated" if p["open_type"] == 1 else "Cross",
                    "close_vol": p["close_volume"],
                    "close_avg_price": p["close_avg_price"],
                    "open_avg_price": p["open_avg_price"],
                    "entry_price": p["hold_avg_price"],
                    "current_amount": p["hold_volume"],
                    "liquidation_price": p["liquidate_price"],
                    "position_type": p["position_type"],
                    "account": "futures",
                }
            )
    return out


def binance_open_orders(samples_dir: Path | None = None) -> list[dict[str, object]]:
    """``GET /fapi/v1/openOrders``: the fixture orders whose last ``ORDER_TRADE_UPDATE`` is NEW or PARTIALLY_FILLED.

    Mapped from ``o``: ``i`` orderId, ``c`` clientOrderId, ``s``, ``S`` side, ``o`` type, ``ot`` origType,
    ``f`` timeInForce, ``q`` origQty, ``z`` executedQty, ``p`` price, ``ap`` avgPrice, ``sp`` stopPrice,
    ``ps`` positionSide, ``R`` reduceOnly, ``cp`` closePosition, ``wt`` workingType, ``pP`` priceProtect,
    ``V`` selfTradePreventionMode, ``AP``/``cr`` activatePrice/priceRate (trailing stops only), ``T``
    time and updateTime; cumQuote = ``z`` x ``ap`` (derived). UNVERIFIED where the fixtures are silent
    (order creation time, priceMatch, goodTillDate: left out).
    """
    last: dict[int, dict[str, object]] = {}
    for raw in private_frames(BINANCE, BINANCE_USER_STREAM, samples_dir):
        event = orjson.loads(raw)
        if event.get("e") == "ORDER_TRADE_UPDATE":
            last[int(event["o"]["i"])] = event["o"]
    out = []
    for o in last.values():
        if o["X"] not in ("NEW", "PARTIALLY_FILLED"):
            continue
        order: dict[str, object] = {
            "orderId": o["i"],
            "symbol": o["s"],
            "status": o["X"],
            "clientOrderId": o["c"],
            "price": o["p"],
            "avgPrice": o["ap"],
            "origQty": o["q"],
            "executedQty": o["z"],
            "cumQuote": _dec(Decimal(str(o["z"])) * Decimal(str(o["ap"]))),
            "timeInForce": o["f"],
            "type": o["o"],
            "reduceOnly": o["R"],
            "closePosition": o["cp"],
            "side": o["S"],
            "positionSide": o["ps"],
            "stopPrice": o["sp"],
            "workingType": o["wt"],
            "priceProtect": o["pP"],
            "origType": o["ot"],
            "selfTradePreventionMode": o["V"],
            "time": o["T"],
            "updateTime": o["T"],
        }
        if o["o"] == "TRAILING_STOP_MARKET":
            order["activatePrice"], order["priceRate"] = o["AP"], o["cr"]
        out.append(order)
    return out


def binance_position_risk(samples_dir: Path | None = None) -> list[dict[str, object]]:
    """``GET /fapi/v2/positionRisk``: the positions of the fixture ``ACCOUNT_UPDATE`` events, last per ``(s, ps)``.

    Mapped from ``a.P[]``: ``s`` symbol, ``pa`` positionAmt, ``ep`` entryPrice, ``bep`` breakEvenPrice,
    ``up`` unRealizedProfit, ``mt`` marginType, ``iw`` isolatedWallet, ``ps`` positionSide, the event's
    ``E`` updateTime. markPrice, liquidationPrice, leverage, notional and maxNotionalValue are not in the
    fixtures and are left out (UNVERIFIED shape beyond these keys).
    """
    positions: dict[tuple[str, str], dict[str, object]] = {}
    for raw in private_frames(BINANCE, BINANCE_USER_STREAM, samples_dir):
        event = orjson.loads(raw)
        if event.get("e") != "ACCOUNT_UPDATE":
            continue
        for p in event["a"]["P"]:
            positions[(p["s"], p["ps"])] = {
                "symbol": p["s"],
                "positionAmt": p["pa"],
                "entryPrice": p["ep"],
                "breakEvenPrice": p["bep"],
                "unRealizedProfit": p["up"],
                "marginType": p["mt"],
                "isolatedWallet": p["iw"],
                "positionSide": p["ps"],
                "updateTime": event["E"],
            }
    return list(positions.values())


def gate_orders(status: str, samples_dir: Path | None = None) -> list[dict[str, object]]:
    """``GET /api/v4/futures/usdt/orders?status=…``: the ``futures.orders`` fixture orders.

    ``finished``: verbatim. ``open``: the same orders restated as still open — ``status`` "open",
    ``finish_as`` "_new", ``finish_time``/``finish_time_ms`` 0 — because the only fixture order is
    finished (it is partly filled, ``left`` 0.5 of 1.5, so it reads as a resting order). DERIVED.
    """
    out = []
    for raw in private_frames(GATE, "futures.orders", samples_dir):
        for order in orjson.loads(raw)["result"]:
            if status == "open":
                order = order | {"status": "open", "finish_as": "_new", "finish_time": 0, "finish_time_ms": 0}
            out.append(order)
    return out


def gate_positions(samples_dir: Path | None = None) -> list[dict[str, object]]:
    """``GET /api/v4/futures/usdt/positions``: the ``futures.positions`` fixture positions, verbatim."""
    return [p for raw in private_frames(GATE, "futures.positions", samples_dir) for p in orjson.loads(raw)["result"]]
