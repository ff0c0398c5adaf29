"""workers.orderbook: the book and the three sequencing rules (no I/O).

Hand-made sequences pin each rule's edge (stale, bridging, chain, gap, crossed, snapshots); the recorded
captures run through the adapters' real parsers in ``test_orderbook_tapes``.
"""

from __future__ import annotations

import pytest

from workers.exchanges import REGISTRY
from workers.exchanges.base import BookUpdate
from workers.exchanges.binanceusdm import BinanceSync
from workers.exchanges.bitmart import BitmartSync
from workers.exchanges.gateio import GateSync
from workers.orderbook import APPLIED, BUFFERED, GAP, NEED_SNAPSHOT, STALE, BookSync, OrderBook

TOPIC = "binanceusdm:depth:BTCUSDT"


def upd(
    first: int | None, last: int, prev: int | None = None, *, bids: tuple[tuple[str, str], ...] = (),
    asks: tuple[tuple[str, str], ...] = (), snapshot: bool = False,
) -> BookUpdate:
    return BookUpdate(TOPIC, "BTCUSDT", list(bids), list(asks), first, last, prev, snapshot)


def snap(last: int, bids: tuple[tuple[str, str], ...] = (("100", "1"),),
         asks: tuple[tuple[str, str], ...] = (("101", "1"),)) -> BookUpdate:
    return upd(None, last, bids=bids, asks=asks, snapshot=True)


# -- OrderBook --------------------------------------------------------------------------------------


def test_apply_sets_absolute_sizes_and_zero_deletes_numerically() -> None:
    book = OrderBook()
    book.replace([("100.0", "1"), ("99", "2"), ("98", "0")], [("101", "3"), ("102.50", "4")])
    assert len(book) == 4  # the zero-size snapshot level is skipped
    book.apply([("100", "5"), ("99.00", "0.000")], [("102.5", "0"), ("103", "1")])
    # "100" and "100.0" are one level; the string last set is kept.
    assert book.top(10) == ([["100", "5"]], [["101", "3"], ["103", "1"]])
    book.apply([("97", "0")], [])  # deleting an absent level is normal
    book.apply([("100", "0E-8")], [("101", "0.10")])  # decided numerically when the text is unusual
    assert book.top(10) == ([], [["101", "0.10"], ["103", "1"]])
    book.apply([("100", "5")], [("101", "3")])
    assert book.best_bid() == ("100", "5") and book.best_ask() == ("101", "3")


def test_top_is_best_first_and_bounded() -> None:
    book = OrderBook()
    book.replace([(str(p), "1") for p in range(90, 100)], [(str(p), "2") for p in range(100, 110)])
    bids, asks = book.top(3)
    assert bids == [["99", "1"], ["98", "1"], ["97", "1"]]
    assert asks == [["100", "2"], ["101", "2"], ["102", "2"]]
    assert [len(side) for side in book.top(50)] == [10, 10]
    assert OrderBook().top(5) == ([], [])


def test_best_and_crossed() -> None:
    book = OrderBook()
    assert book.best_bid() is None and book.best_ask() is None and not book.crossed()
    book.apply([("100", "1")], [])
    assert not book.crossed()  # one side only
    book.apply([], [("100.5", "1")])
    assert not book.crossed()
    book.apply([("100.5", "2")], [])
    assert book.crossed()  # equal prices count as crossed
    book.apply([("100.5", "0")], [("100.5", "0"), ("99", "1")])
    assert book.crossed()  # an ask below the bid


@pytest.mark.parametrize("level", [("abc", "1"), ("1", "x"), ("NaN", "1"), ("1", "-2"), ("1", "Infinity"), ("1", ""), ("", "1")])
def test_bad_levels_raise_value_error(level: tuple[str, str]) -> None:
    with pytest.raises(ValueError):
        OrderBook().apply([level], [])


def test_each_adapter_declares_its_rule() -> None:
    assert {a.book_sync.rule: a.book_sync for a in REGISTRY.values()} == {
        "binance": BinanceSync,
        "gate": GateSync,
        "bitmart": BitmartSync,
    }


# -- Binance: pu chain after a bridging frame ---------------------------------------------------------


def kinds(sync: BookSync, *updates: BookUpdate) -> list[str]:
    return [sync.feed(u).kind for u in updates]


def test_binance_buffers_until_snapshot_then_bridges_and_follows_pu() -> None:
    sync = BinanceSync()
    stale = upd(80, 90, 70, bids=(("1", "1"),))
    bridge = upd(95, 105, 90, bids=(("100", "2"),))
    after = upd(106, 110, 105, asks=(("101", "0"), ("102", "7")))
    assert kinds(sync, stale, bridge, after) == [NEED_SNAPSHOT, BUFFERED, BUFFERED]
    assert sync.buffered == 3 and not sync.synced
    outcome = sync.feed(snap(100))
    assert outcome.kind == APPLIED and outcome.applied == [bridge, after]
    assert sync.synced and sync.last_id == 110 and sync.buffered == 0
    assert sync.book.top(5) == ([["100", "2"]], [["102", "7"]])
    # pu chain: ids jump (U > prev u + 1) and that is fine on futures (§6).
    assert kinds(sync, upd(200, 210, 110), upd(300, 300, 210)) == [APPLIED, APPLIED]
    assert kinds(sync, upd(250, 260, 240)) == [STALE]  # u <= last u: an old frame
    # Empty updates still advance the ids.
    assert sync.last_id == 300


def test_binance_bridge_may_start_exactly_at_last_update_id() -> None:
    sync = BinanceSync()
    sync.feed(upd(100, 104, 90))
    assert sync.feed(snap(100)).applied[0].first_id == 100  # U == lastUpdateId (seen in the 2021 capture)


def test_binance_frame_ending_at_last_update_id_bridges() -> None:
    sync = BinanceSync()
    sync.feed(upd(90, 100, 80))
    assert len(sync.feed(snap(100)).applied) == 1  # U <= L <= u with u == L


def test_binance_snapshot_newer_than_the_buffer_waits_for_the_bridge() -> None:
    sync = BinanceSync()
    sync.feed(upd(80, 90, 70))
    outcome = sync.feed(snap(100))
    assert outcome.kind == APPLIED and outcome.applied == []  # all buffered frames were stale
    assert sync.synced and sync.last_id == 100
    assert kinds(sync, upd(91, 99, 90), upd(99, 103, 99), upd(104, 106, 103)) == [STALE, APPLIED, APPLIED]


def test_binance_snapshot_older_than_the_buffer_is_a_gap_keeping_the_newer_frames() -> None:
    sync = BinanceSync()
    first, second = upd(120, 130, 110), upd(131, 140, 130)
    kinds(sync, first, second)
    outcome = sync.feed(snap(100))  # nothing bridges 100: frames 101..119 were never seen
    assert outcome.kind == GAP and outcome.reason == "sequence"
    assert not sync.synced and sync.buffered == 2 and len(sync.book) == 0
    third = upd(141, 150, 140)
    assert sync.feed(third).kind == BUFFERED  # the keeper already asks for a snapshot
    assert sync.feed(snap(125)).applied == [first, second, third] and sync.last_id == 150


def test_binance_pu_break_is_a_gap_and_the_update_is_kept() -> None:
    sync = BinanceSync()
    sync.feed(upd(95, 105, 90))
    sync.feed(snap(100))
    breaking = upd(120, 125, 111)  # pu != 105
    outcome = sync.feed(breaking)
    assert outcome.kind == GAP and outcome.reason == "sequence"
    assert not sync.synced and sync.last_id is None and len(sync.book) == 0
    assert sync.buffered == 1 and sync._buffer[0] is breaking
    assert sync.feed(upd(126, 130, 125)).kind == BUFFERED
    assert [u.last_id for u in sync.feed(snap(122)).applied] == [125, 130]


def test_binance_a_first_frame_not_bridging_is_a_gap() -> None:
    sync = BinanceSync()
    sync.feed(snap(100))
    assert sync.feed(upd(101, 110, 100)).kind == GAP  # U > L: what happened in 101.. is unknown


def test_binance_crossed_after_apply_is_a_gap() -> None:
    sync = BinanceSync()
    sync.feed(upd(95, 105, 90))
    sync.feed(snap(100))
    outcome = sync.feed(upd(106, 107, 105, bids=(("101", "3"),)))  # bid 101 >= ask 101
    assert outcome.kind == GAP and outcome.reason == "crossed"
    assert not sync.synced


def test_crossed_snapshot_is_a_gap() -> None:
    sync = BinanceSync()
    outcome = sync.feed(snap(100, bids=(("102", "1"),), asks=(("101", "1"),)))
    assert outcome.kind == GAP and outcome.reason == "crossed"


def test_reset_forgets_everything() -> None:
    sync = BinanceSync()
    sync.feed(upd(95, 105, 90))
    sync.feed(snap(100))
    sync.reset()
    assert not sync.synced and sync.last_id is None and len(sync.book) == 0 and sync.buffered == 0
    assert sync.feed(upd(200, 201, 199)).kind == NEED_SNAPSHOT


def test_buffer_is_bounded_dropping_the_oldest() -> None:
    sync = BinanceSync(max_buffer=3)
    kinds(sync, *(upd(i, i, i - 1) for i in range(10)))
    assert sync.buffered == 3 and [u.last_id for u in sync._buffer] == [7, 8, 9]


# -- Gate: U == prev u + 1 after a bridging push ---------------------------------------------------------


def test_gate_bridges_b_plus_one_then_chains() -> None:
    sync = GateSync()
    stale, bridge, nxt = upd(90, 100), upd(99, 102, bids=(("100", "5"),)), upd(103, 105)
    assert kinds(sync, stale, bridge, nxt) == [NEED_SNAPSHOT, BUFFERED, BUFFERED]
    outcome = sync.feed(snap(100))  # B = 100: drop u < 101, first U <= 101 <= u
    assert outcome.applied == [bridge, nxt] and sync.last_id == 105
    assert sync.book.best_bid() == ("100", "5")
    assert kinds(sync, upd(106, 106), upd(100, 104)) == [APPLIED, STALE]  # empty push advances; old one dropped
    outcome = sync.feed(upd(108, 110))  # U != 107
    assert outcome.kind == GAP and outcome.reason == "sequence" and sync.buffered == 1


def test_gate_first_push_past_b_plus_one_is_a_gap() -> None:
    sync = GateSync()
    sync.feed(upd(102, 104))
    assert sync.feed(snap(100)).kind == GAP  # 101 is missing


def test_gate_bridge_starting_at_b_plus_one() -> None:
    sync = GateSync()
    sync.feed(upd(101, 101))
    assert len(sync.feed(snap(100)).applied) == 1


def test_gate_full_push_replaces_the_book_and_an_older_rest_snapshot_is_stale() -> None:
    sync = GateSync()
    assert sync.feed(upd(50, 60)).kind == NEED_SNAPSHOT
    full = upd(None, 200, bids=(("10", "1"),), asks=(("11", "1"),), snapshot=True)
    outcome = sync.feed(full)  # full:true on the socket
    assert outcome.kind == APPLIED and sync.synced and sync.last_id == 200
    assert sync.book.top(5) == ([["10", "1"]], [["11", "1"]])
    assert sync.feed(upd(201, 203, asks=(("12", "2"),))).kind == APPLIED
    assert sync.feed(snap(150)).kind == STALE  # the REST reply came back after the stream moved on
    assert sync.last_id == 203 and len(sync.book) == 3
    # A newer full push replaces everything again.
    sync.feed(upd(None, 300, bids=(("9", "1"),), asks=(), snapshot=True))
    assert sync.book.top(5) == ([["9", "1"]], [])


# -- BitMart: snapshot on the socket, then version + 1 ----------------------------------------------------


def test_bitmart_versions() -> None:
    sync = BitmartSync(requested=True)  # the subscribe brings the snapshot
    assert sync.feed(upd(9, 9)).kind == STALE  # before the snapshot: dropped, never buffered
    assert sync.buffered == 0
    outcome = sync.feed(upd(10, 10, bids=(("100", "1"),), asks=(("101", "1"),), snapshot=True))
    assert outcome.kind == APPLIED and outcome.applied == [] and sync.last_id == 10
    assert kinds(sync, upd(10, 10), upd(11, 11), upd(12, 12, asks=(("101", "0"),))) == [STALE, APPLIED, APPLIED]
    assert sync.book.top(5) == ([["100", "1"]], [])
    outcome = sync.feed(upd(14, 14))
    assert outcome.kind == GAP and outcome.reason == "sequence" and sync.buffered == 0
    assert sync.feed(upd(15, 15)).kind == STALE  # the keeper already sent the resync request
    assert sync.feed(upd(20, 20, bids=(("99", "1"),), snapshot=True)).kind == APPLIED
    assert sync.feed(upd(21, 21)).kind == APPLIED


def test_bitmart_update_without_a_pending_snapshot_asks_for_one_once() -> None:
    sync = BitmartSync()
    assert kinds(sync, upd(5, 5), upd(6, 6)) == [NEED_SNAPSHOT, STALE]
