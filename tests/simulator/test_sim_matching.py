"""The simulator's matching engine on its own (no sockets): fills, position and PnL arithmetic, margin, triggers."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from scripts.sim.matching import MatchingEngine
from scripts.sim.matching_types import ContractSpec, Rejected, SimOrder, SimTrigger

SPEC = ContractSpec("BTC_USDT", D("0.1"), D(1), D(1), D("0.0001"), 100, D(60000))


def engine() -> MatchingEngine:
    e = MatchingEngine(lambda: 1_700_000_000_000, default_balance=D(1000))
    e.add_contract("x", SPEC)
    e.set_price("x", "BTC_USDT", D(60000))
    return e


def order(e: MatchingEngine, side: str, size: int, price: str | None = None, **kw: object) -> SimOrder:
    o = SimOrder(e.next_id(), "", "BTC_USDT", side, D(size), D(price) if price else None, **kw)  # type: ignore[arg-type]
    return e.place("x", "k", o)


def test_short_flip_and_realised_pnl() -> None:
    e = engine()
    order(e, "sell", 10)  # short 10 @ 60000
    (pos,) = e.positions("x", "k", "BTC_USDT")
    assert (pos.size, pos.entry) == (D(-10), D(60000))
    e.set_price("x", "BTC_USDT", D(59000))
    order(e, "buy", 15)  # closes 10 (+1000 x 10 x 0.0001 = +1), opens long 5 @ 59000
    assert (pos.size, pos.entry, pos.realised) == (D(5), D(59000), D(1))
    assert e.book("x", "k").balance == D(1001)
    order(e, "sell", 5, reduce_only=True)
    assert (pos.size, pos.entry) == (D(0), D(0))


def test_margin_counts_open_orders_and_positions() -> None:
    e = engine()  # 1000 USDT, 10x: 1 contract = 6 USDT of notional, 0.6 of margin
    order(e, "buy", 1000, "59000")  # rests: 590 USDT of margin
    assert e.available("x", "k") == D(410)
    with pytest.raises(Rejected) as exc:
        order(e, "buy", 700)  # 420 > 410
    assert exc.value.reason == "insufficient_margin"
    order(e, "sell", 1, reduce_only=False)  # a short of 1 needs 0.6
    assert e.available("x", "k") == D("409.4")


def test_limit_orders_fill_at_their_price_when_reached_and_post_only_refuses_to_take() -> None:
    e = engine()
    buy, sell = order(e, "buy", 2, "59900"), order(e, "sell", 1, "60100")
    e.set_price("x", "BTC_USDT", D(59950))
    assert buy.status == sell.status == "open"
    e.set_price("x", "BTC_USDT", D(59800))
    assert (buy.status, buy.finish_as, buy.avg_price) == ("finished", "filled", D(59900))
    e.set_price("x", "BTC_USDT", D(60200))
    assert (sell.avg_price, e.positions("x", "k", "BTC_USDT")[0].size) == (D(60100), D(1))
    with pytest.raises(Rejected, match="post_only_cross"):
        order(e, "buy", 1, "60300", tif="poc")
    assert order(e, "buy", 1, "60000", tif="ioc").finish_as == "ioc"
    with pytest.raises(Rejected, match="bad_tick"):
        order(e, "buy", 1, "60000.05")


def test_dual_mode_legs_and_trigger_close() -> None:
    e = engine()
    e.book("x", "k").dual = True
    order(e, "buy", 3)
    order(e, "sell", 2)
    long, short = e.positions("x", "k", "BTC_USDT")
    assert (long.size, short.size) == (D(3), D(2))
    close = SimOrder(0, "", "BTC_USDT", "buy", D(0), None, "ioc", reduce_only=True, close_position=True, leg="short")
    trig = e.add_trigger("x", "k", SimTrigger(e.next_id(), "", "BTC_USDT", D(59000), "<=", "mark", close))
    e.set_price("x", "BTC_USDT", D(60000), mark=D(58900))
    assert (trig.status, short.size, long.size) == ("triggered", D(0), D(3))
    assert short.realised == 0  # closed at the last price 60000 = its entry (the mark only triggered it)
    with pytest.raises(Rejected, match="would_trigger"):
        e.add_trigger("x", "k", SimTrigger(e.next_id(), "", "BTC_USDT", D(61000), "<=", "last", close))


def test_a_close_without_a_side_closes_whatever_is_held_when_it_fires() -> None:
    e = engine()
    order(e, "sell", 4)  # short 4
    close = SimOrder(0, "", "BTC_USDT", "", D(0), None, "ioc", reduce_only=True, close_position=True)
    trig = e.add_trigger("x", "k", SimTrigger(e.next_id(), "", "BTC_USDT", D(59000), "<=", "last", close))
    e.set_price("x", "BTC_USDT", D(59000))
    assert (trig.status, close.side, close.size, e.positions("x", "k", "BTC_USDT")[0].size) == (
        "triggered", "buy", D(4), D(0))  # fmt: skip


def test_tape_frames_move_the_price_and_fill_resting_orders_unless_pinned() -> None:
    e = MatchingEngine(lambda: 0)
    e.add_contract("x", SPEC)
    e.watch("trades", "x", "BTC_USDT", lambda frame: frame)  # the frame is the price text
    assert e.price("x", "BTC_USDT") == D(60000)  # the reference until a trade played
    e.on_tape_frame("trades", "61000.5")
    assert e.price("x", "BTC_USDT") == D("61000.5")
    e.on_tape_frame("trades", "not a price")  # malformed: the price stays
    assert e.price("x", "BTC_USDT") == D("61000.5")
    buy = order(e, "buy", 1, "60900")
    e.on_tape_frame("trades", "60950")
    assert buy.status == "open"
    e.on_tape_frame("trades", "60900")  # matched as it is sent: a resting order waits on this symbol
    assert (buy.status, buy.avg_price) == ("finished", D(60900))
    e.set_price("x", "BTC_USDT", D(62000))
    e.on_tape_frame("trades", "50000")
    assert e.price("x", "BTC_USDT") == D(62000)  # pinned
    e.release("x", "BTC_USDT")
    e.on_tape_frame("trades", "50000")
    assert e.price("x", "BTC_USDT") == D(50000)
