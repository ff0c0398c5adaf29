"""workers.orderbook on the recorded captures: the tapes run through the adapters' real parsers (``parse``/
``parse_snapshot``): Binance 2024 (hftbacktest) and 2021 (cryptofeed), Gate 2023 (cryptofeed) and BitMart's
derived depthIncrease tape. Receive order is kept: a REST snapshot goes in where it was received.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest

from scripts import tapes
from scripts.sim import tapes as sim_tapes
from workers.exchanges import get_adapter
from workers.exchanges.base import BookUpdate
from workers.exchanges.gateio import GateSync
from workers.orderbook import APPLIED, GAP, BookSync

from .test_orderbook import TOPIC


@dataclass
class Replay:
    """Feeds updates to one sync per topic and counts what happened."""

    rule: type[BookSync]
    syncs: dict[str, BookSync] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    bridged: set[str] = field(default_factory=set)
    gaps: list[tuple[str, str | None]] = field(default_factory=list)

    def feed(self, update: BookUpdate) -> list[BookUpdate]:
        sync = self.syncs.setdefault(update.topic, self.rule())
        outcome = sync.feed(update)
        key = "snapshot" if update.snapshot else "update"
        self.counts[f"{key}:{outcome.kind}"] += 1
        self.counts["applied"] += len(outcome.applied)
        if outcome.kind == GAP:
            self.gaps.append((update.topic, outcome.reason))
        if outcome.applied and update.topic not in self.bridged:
            self.bridged.add(update.topic)
        return outcome.applied


def _binance_2024() -> Iterator[tuple[int, str]]:
    try:
        yield from tapes.read_hftbacktest()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


def test_binance_2024_tape_zero_gaps_and_best_levels_equal_book_ticker() -> None:
    """6,551 ``depth@0ms`` frames from the recorded REST snapshot: 4 stale, 6,547 applied, no gap.

    bookTicker ``u`` shares the depth id space (binance_usdm.md §5): the local book right after
    applying the frame whose last id ``u`` equals a bookTicker's ``u`` is the exchange's book at that
    id, so its best bid/ask (price and size) must equal the bookTicker's. Ids strictly inside a depth
    frame's ``[U, u)`` are intermediate states the diff stream never shows, so only equal-``u`` pairs
    are comparable; they are matched by id, not by arrival order (the two streams interleave freely).
    """
    adapter = get_adapter("binanceusdm")
    parser = adapter.new_parser()
    replay = Replay(adapter.book_sync)
    best_at: dict[int, tuple[object, object]] = {}
    tickers: list[dict[str, str]] = []
    depth_frames = 0
    for ts_ns, raw in _binance_2024():
        ts_ms = ts_ns // 1_000_000
        if not raw.startswith('{"stream"'):  # the REST snapshot line
            applied = replay.feed(adapter.parse_snapshot("BTCUSDT", raw.encode(), ts_ms))
        else:
            parsed = parser.parse(raw, ts_ms)
            tickers.extend(e for _, e in parsed.events if e["type"] == "bookticker")
            applied = []
            for update in parsed.book:
                depth_frames += 1
                applied += replay.feed(update)
        if applied:
            book = replay.syncs[TOPIC].book
            best_at[applied[-1].last_id] = (book.best_bid(), book.best_ask())
    assert replay.gaps == []
    assert depth_frames == 6551 and replay.counts["applied"] == 6547
    assert replay.counts["snapshot:applied"] == 1 and replay.counts["update:need_snapshot"] == 1
    assert replay.counts["update:gap"] == 0 and replay.counts["update:applied"] == 6545
    assert len(tickers) == 66089
    compared = matched = 0
    for t in tickers:
        at = best_at.get(int(t["update_id"]))
        if at is None:
            continue
        compared += 1
        matched += at == ((t["bid_price"], t["bid_size"]), (t["ask_price"], t["ask_size"]))
    assert compared >= 600  # 629 in the capture
    assert matched == compared


def test_binance_2024_tape_dropped_update_is_a_gap() -> None:
    adapter = get_adapter("binanceusdm")
    parser = adapter.new_parser()
    replay = Replay(adapter.book_sync)
    seen = 0
    for ts_ns, raw in _binance_2024():
        if not raw.startswith('{"stream"'):
            replay.feed(adapter.parse_snapshot("BTCUSDT", raw.encode(), ts_ns // 1_000_000))
            continue
        for update in parser.parse(raw, ts_ns // 1_000_000).book:
            seen += 1
            if seen == 1000:
                continue  # lost on the way
            replay.feed(update)
            if replay.gaps:
                break
        if replay.gaps or seen > 1100:
            break
    assert replay.gaps == [(TOPIC, "sequence")]
    assert seen == 1001  # the very next frame's pu does not match


def _http_snapshots(relative: str, param: str) -> list[tuple[float, str, str]]:
    """``(receive_ts_s, symbol, body)`` per REST snapshot of a cryptofeed ``*.http.*`` file."""
    return [(ts, parse_qs(urlsplit(url).query)[param][0], raw) for url, ts, raw in tapes.read_cryptofeed_http(relative)]


def _cryptofeed_replay(exchange: str, ws: str, http: str, param: str) -> tuple[Replay, int, set[str]]:
    """Replay a cryptofeed session in receive order, REST snapshots included; returns (replay, book updates, topics)."""
    adapter = get_adapter(exchange)
    parser = adapter.new_parser()
    replay = Replay(adapter.book_sync)
    try:
        timeline: list[tuple[float, int, str, str]] = [(ts, 0, "", raw) for ts, raw in tapes.read_cryptofeed_ws(ws)]
        timeline += [(ts, 1, symbol, raw) for ts, symbol, raw in _http_snapshots(http, param)]
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    timeline.sort(key=lambda item: item[:2])
    updates = 0
    topics: set[str] = set()
    for ts, is_rest, symbol, raw in timeline:
        ts_ms = int(ts * 1000)
        if is_rest:
            replay.feed(adapter.parse_snapshot(symbol, raw.encode(), ts_ms))
            continue
        for update in parser.parse(raw, ts_ms).book:
            updates += 1
            topics.add(update.topic)
            replay.feed(update)
    return replay, updates, topics


def test_binance_2021_tape_zero_gaps_for_four_symbols() -> None:
    replay, updates, topics = _cryptofeed_replay("binanceusdm", tapes.BINANCE_2021, tapes.BINANCE_2021_HTTP, "symbol")
    assert updates == 764 and len(topics) == 4
    assert replay.gaps == []
    assert replay.counts["snapshot:applied"] == 4
    assert replay.bridged == topics  # every snapshot was bridged by a buffered or a later frame
    assert replay.counts["applied"] == 752  # the other 12 frames predate their symbol's snapshot
    assert all(s.synced and s.buffered == 0 for s in replay.syncs.values())


def test_gate_2023_tape_zero_gaps_and_nine_of_ten_bridged() -> None:
    """352 ``order_book_update`` pushes, 10 contracts, REST snapshots with ``id`` (exchanges.md §2.5).

    DIA_USDT had only 2 pushes in the window, both before its snapshot, so 9 of 10 get a bridging push.
    """
    replay, updates, topics = _cryptofeed_replay("gateio", tapes.GATE_2023, tapes.GATE_2023_HTTP, "contract")
    assert updates == 352 and len(topics) == 10
    assert replay.gaps == []
    assert replay.counts["snapshot:applied"] == 10
    assert len(replay.bridged) == 9 and topics - replay.bridged == {"gateio:depth:DIA_USDT"}
    assert replay.counts["applied"] == 316  # the other 36 pushes predate their contract's snapshot


def test_gate_2023_tape_dropped_push_is_a_gap() -> None:
    adapter = get_adapter("gateio")
    parser = adapter.new_parser()
    try:
        snapshots = {f"gateio:depth:{s}": raw for _, s, raw in _http_snapshots(tapes.GATE_2023_HTTP, "contract")}
        frames = list(tapes.read_cryptofeed_ws(tapes.GATE_2023))
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    topic = "gateio:depth:RDNT_USDT"
    pushes = [u for ts, raw in frames for u in parser.parse(raw, int(ts * 1000)).book if u.topic == topic]
    sync = GateSync()
    assert sync.feed(adapter.parse_snapshot("RDNT_USDT", snapshots[topic].encode(), 0)).kind == APPLIED
    kinds_seen = [sync.feed(p).kind for p in pushes]  # the whole contract: stale, then one chain
    assert GAP not in kinds_seen and kinds_seen.count(APPLIED) >= 10
    first = kinds_seen.index(APPLIED)
    sync = GateSync()
    sync.feed(adapter.parse_snapshot("RDNT_USDT", snapshots[topic].encode(), 0))
    for push in pushes[: first + 5]:
        sync.feed(push)
    outcome = sync.feed(pushes[first + 6])  # pushes[first + 5] lost
    assert outcome.kind == GAP and outcome.reason == "sequence"


def test_bitmart_derived_depth_tape_zero_gaps() -> None:
    """The simulator's derived ``depthIncrease50`` tape (snapshot + version + 1 pushes) through the parser."""
    adapter = get_adapter("bitmart")
    try:
        tape = sim_tapes.get_tape("bitmart", "futures/depthIncrease50:BTCUSDT@100ms")
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    assert tape is not None
    parser = adapter.new_parser()
    replay = Replay(adapter.book_sync)
    updates = 0
    for i, frame in enumerate(tape.frames):
        for update in parser.parse(frame, i).book:
            updates += 1
            replay.feed(update)
    assert replay.gaps == []
    assert updates > 100 and replay.counts["applied"] == updates - 1  # all but the leading snapshot
    sync = replay.syncs["bitmart:depth:BTCUSDT"]
    assert sync.synced and not sync.book.crossed()
    first = orjson.loads(tape.frames[0])["data"]
    assert first["type"] == "snapshot"
