"""Builders of the load groups: recorded frames read in place, plus the tapes derived from the 2024 recording.

Each ``build_*`` makes one ``TapeGroup`` in one pass over its source (``scripts.tapes`` readers); the
derivations themselves live in ``bars``, ``tickers`` and ``book``.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import orjson

from scripts import tapes
from scripts.sim.tapes import aggtrade
from scripts.sim.tapes.bars import derive_binance_klines, derive_bitmart, derive_gate
from scripts.sim.tapes.book import derive_bitmart_bookticker, derive_bitmart_depth
from scripts.sim.tapes.catalog import (
    BINANCE,
    BITMART,
    GATE,
    SRC_BINANCE_2021,
    SRC_BINANCE_2024,
    SRC_GATE_2023,
    RestSnapshot,
    TapeBuilder,
    TapeGroup,
    rel_path,
)
from scripts.sim.tapes.tickers import derive_tickers


def split_envelope(raw: str) -> tuple[str, str] | None:
    """``{"stream":"<name>","data":<payload>}`` -> (name, payload text), byte-exact; None otherwise."""
    if not raw.startswith('{"stream":"') or not raw.endswith("}"):
        return None
    end = raw.find('"', 11)
    if end < 0 or not raw.startswith(',"data":', end + 1):
        return None
    return raw[11:end], raw[end + 9 : -1]


def rest_snapshots(
    samples_dir: Path | None, relative: str, exchange: str, param: str, source: str
) -> list[RestSnapshot]:
    """The REST order-book responses of a cryptofeed ``*.http.*`` file, keyed by the URL's ``param``."""
    out = []
    for url, _, raw in tapes.read_cryptofeed_http(rel_path(samples_dir, relative)):
        symbol = parse_qs(urlsplit(url).query).get(param, [""])[0]
        data = orjson.loads(raw)
        update_id = data.get("lastUpdateId", data.get("id"))
        if symbol and isinstance(update_id, int):
            out.append(RestSnapshot(exchange, symbol, source, raw, update_id))
    return out


def build_cf(samples_dir: Path | None) -> TapeGroup:
    b: TapeBuilder | None = None
    for ts, raw in tapes.read_cryptofeed_ws(rel_path(samples_dir, tapes.BINANCE_2021)):
        parts = split_envelope(raw)
        if parts is None:
            continue
        b = b or TapeBuilder(ts)
        b.add(BINANCE, parts[0], ts, parts[1])
    rest = rest_snapshots(samples_dir, tapes.BINANCE_2021_HTTP, BINANCE, "symbol", SRC_BINANCE_2021)
    return (b or TapeBuilder(0.0)).group(rest)


def build_hft(samples_dir: Path | None) -> TapeGroup:
    b: TapeBuilder | None = None
    trades: list[tuple[float, dict[str, object]]] = []
    book_tickers: list[tuple[float, dict[str, object]]] = []
    depth: list[tuple[float, dict[str, object]]] = []
    snapshot: tuple[float, RestSnapshot] | None = None
    for ts_ns, raw in tapes.read_hftbacktest(rel_path(samples_dir, tapes.BINANCE_2024)):
        ts = ts_ns / 1e9
        b = b or TapeBuilder(ts)
        parts = split_envelope(raw)
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
        return TapeGroup()
    for ts, frame in aggtrade.aggregate_trades(trades):
        b.add(BINANCE, "btcusdt@aggTrade", ts, frame)
    derive_bitmart(b, trades)
    derive_binance_klines(b, trades)
    derive_tickers(b, trades, book_tickers)
    derive_gate(b, trades)
    derive_bitmart_bookticker(b, book_tickers)
    if snapshot is not None:
        derive_bitmart_depth(b, snapshot[0], orjson.loads(snapshot[1].raw), depth)
    return b.group([snapshot[1]] if snapshot else [])


# ---------------------------------------------------------------- fixtures and the Gate capture


def build_jkorf(samples_dir: Path | None) -> TapeGroup:
    """One push per BitMart fixture topic; identical frames seen in two files are kept once.

    The native is the topic as subscribed: ``TickerAlternateIdentifier.txt`` subscribes
    ``futures/ticker:AXONUSDT`` and its push says ``group: futures/ticker:AXONUSDT@100ms``.
    """
    b = TapeBuilder(0.0)
    seen: set[str] = set()
    names = ("Concurrent.txt", "Klines.txt", "Trades.txt", "Ticker.txt", "TickerAlternateIdentifier.txt")
    for name in names:
        for fr in tapes.read_jkorf(rel_path(samples_dir, f"{tapes.BITMART_FIXTURES}/{name}")):
            if fr.direction != "=":
                continue
            frame = orjson.dumps(orjson.loads(fr.raw)).decode()  # minified, key order kept
            group = orjson.loads(frame)["group"]
            native = group.partition("@")[0] if group.startswith("futures/ticker") else group
            if frame not in seen:
                seen.add(frame)
                b.add(BITMART, native, 0.0, frame)
    return b.group()


def build_gate(samples_dir: Path | None) -> TapeGroup:
    """Gate 2023 capture (update frames verbatim), its REST snapshots, and two JKorf Gate fixtures.

    Natives: ``futures.order_book_update:<C>``, ``futures.book_ticker:<C>`` (contract from ``result.s``),
    ``futures.candlesticks:<n>`` (``n`` = ``1m_FRONT_USDT``), ``futures.trades:<C>`` / ``futures.tickers:<C>``.
    """
    b: TapeBuilder | None = None
    for ts, raw in tapes.read_cryptofeed_ws(rel_path(samples_dir, tapes.GATE_2023)):
        b = b or TapeBuilder(ts)
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
    b = b or TapeBuilder(0.0)
    for name in ("SubscribeToTradeUpdates.txt", "SubscribeToTickerUpdates.txt"):
        for fr in tapes.read_jkorf(rel_path(samples_dir, f"jkorf-gateio-net/{name}")):
            if fr.direction == "=":
                frame = orjson.loads(fr.raw)
                native = f"{frame['channel']}:{frame['result'][0]['contract']}"
                b.add(GATE, native, b.t0, orjson.dumps(frame).decode())
    return b.group(rest_snapshots(samples_dir, tapes.GATE_2023_HTTP, GATE, "contract", SRC_GATE_2023))
