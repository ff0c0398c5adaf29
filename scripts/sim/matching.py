"""Venue-neutral matching engine of the simulator: one book per account, filled against the replayed tape's price.

Accounts do not trade with each other: every order trades against the tape. Rules (the simulator's own, chosen to
be simple and deterministic; the venue modules ``scripts.sim.gate_orders`` / ``binance_orders`` map them to each
exchange's wire):

- **Prices** per ``(exchange, symbol)``: ``last`` is the price of the latest trade frame the simulator sent on any
  socket for that symbol (trade streams registered with ``watch``), else the contract's fixed reference price;
  ``mark`` (and index) follows ``last`` unless set. ``set_price`` (control ``POST /_sim/price``) pins both: the tape
  no longer moves a pinned symbol until ``release``.
- **Market** orders fill completely at ``last``. **Limit** orders that cross on arrival (buy >= last, sell <= last)
  fill at ``last`` (taker); ``ioc``/``fok`` limits that do not cross expire; post-only ones that would cross are
  refused (``post_only_cross``); the rest rest and fill completely at their own price when the price reaches them
  (buy: last <= price; sell: last >= price).
- **Triggers** fire once when their price type (last, mark or index) reaches the trigger price (rule ``>=`` or
  ``<=``) and place their order (normally a reduce-only market close); a close with no position left fails.
- **Margin** (USDT): initial margin = notional / leverage (notional = |size| x multiplier x price); a new exposure
  needs ``available`` = balance - position margins - open-order margins to cover it, else ``insufficient_margin``.
  Reduce-only orders need none. Realized PnL moves the balance; there are no fees and no liquidation.
- **Positions**: one-way (one signed position per symbol) or dual (Gate dual mode: a long and a short leg).

Errors: ``Rejected(reason)`` with a venue-neutral reason (``matching_types.REASONS``; the types live there); the venue module turns it into the
exchange's own error body. Every state change is appended to ``changes`` and drained by the venue pushers.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from scripts.sim.matching_types import ZERO, Book, ContractSpec, Rejected, SimOrder, SimPosition, SimTrigger

__all__ = ["Change", "MatchingEngine"]

#: One state change for the pushers: (exchange, api_key, kind, object, extra); kind order|trigger|position|balance.
Change = tuple[str, str, str, Any, dict[str, Any]]


class MatchingEngine:
    """Books, prices and matching for every venue (see the module docstring).

    :param now_ms: the simulator clock (epoch ms). :param on_change: called (sync) after changes were appended, so
        the owner can schedule a push. ``default_balance``: USDT each new account starts with.
    """

    def __init__(self, now_ms: Callable[[], int], *, default_balance: Decimal = Decimal(100_000)) -> None:
        self.now_ms = now_ms
        self.default_balance = default_balance
        self.contracts: dict[tuple[str, str], ContractSpec] = {}
        self.books: dict[tuple[str, str], Book] = {}
        self.changes: list[Change] = []
        self.on_change: Callable[[], None] = lambda: None
        #: native stream -> (exchange, symbol, price extractor from the frame text); see ``watch``.
        self.watched: dict[str, tuple[str, str, Callable[[str], str]]] = {}
        self._last: dict[tuple[str, str], Decimal] = {}
        self._mark: dict[tuple[str, str], Decimal] = {}
        self._pinned: set[tuple[str, str]] = set()
        #: Latest unparsed tape frame per symbol (parsed when a price is asked for, or at once while ``_resting``).
        self._pending: dict[tuple[str, str], tuple[Callable[[str], str], str]] = {}
        #: Symbols with open limit orders or triggers somewhere: their tape frames are matched as they are sent.
        self._resting: set[tuple[str, str]] = set()
        self._ids = itertools.count(int(now_ms()) * 10)  # order / trigger ids, increasing, one space per simulator

    # ------------------------------------------------------------------ contracts, books, prices

    def add_contract(self, exchange: str, spec: ContractSpec) -> None:
        self.contracts[(exchange, spec.symbol)] = spec

    def contract(self, exchange: str, symbol: str) -> ContractSpec:
        """The contract; Rejected("unknown_symbol") when the simulator does not trade it."""
        spec = self.contracts.get((exchange, symbol))
        if spec is None:
            raise Rejected("unknown_symbol", symbol)
        return spec

    def book(self, exchange: str, api_key: str) -> Book:
        """The account's book, created with ``default_balance`` on first use."""
        key = (exchange, api_key)
        if key not in self.books:
            self.books[key] = Book(self.default_balance)
        return self.books[key]

    def next_id(self) -> int:
        return next(self._ids)

    def watch(self, native: str, exchange: str, symbol: str, extract: Callable[[str], str]) -> None:
        """Take ``symbol``'s last price from the frames of tape stream ``native`` (``extract`` returns the price text)."""
        self.watched[native] = (exchange, symbol, extract)

    def on_tape_frame(self, native: str, frame: str) -> None:
        """A tape frame of a watched stream was sent: it sets ``last`` (unless pinned). Matched at once when the
        symbol has open limit orders or triggers, else parsed only when the price is next needed (under 1 µs a
        frame instead of 6). A malformed latest frame leaves the last parsed price."""
        exchange, symbol, extract = self.watched[native]
        key = (exchange, symbol)
        if key in self._pinned:
            return
        self._pending[key] = (extract, frame)
        if key in self._resting:
            self.match(exchange, symbol)

    def set_price(self, exchange: str, symbol: str, last: Decimal, mark: Decimal | None = None) -> None:
        """Pin ``last`` (and ``mark``/index, default = last) of a traded symbol, then match. Raises Rejected."""
        self.contract(exchange, symbol)
        self._pinned.add((exchange, symbol))
        self._pending.pop((exchange, symbol), None)
        self._last[(exchange, symbol)] = last
        self._mark[(exchange, symbol)] = mark if mark is not None else last
        self.match(exchange, symbol)

    def release(self, exchange: str, symbol: str) -> None:
        """Unpin: the tape moves ``last`` again and ``mark`` follows it."""
        self._pinned.discard((exchange, symbol))
        self._mark.pop((exchange, symbol), None)

    def pinned(self, exchange: str, symbol: str) -> bool:
        """Whether ``set_price`` holds the symbol's price (the tape does not move it)."""
        return (exchange, symbol) in self._pinned

    def price(self, exchange: str, symbol: str, kind: str = "last") -> Decimal:
        """``last``, ``mark`` or ``index`` (= mark) price of a traded symbol."""
        pending = self._pending.pop((exchange, symbol), None)
        if pending is not None:
            extract, frame = pending
            try:
                self._last[(exchange, symbol)] = Decimal(extract(frame))
            except (ValueError, KeyError, TypeError, ArithmeticError):
                pass  # a malformed tape frame: the price stays
        last = self._last.get((exchange, symbol)) or self.contract(exchange, symbol).reference
        return last if kind == "last" else self._mark.get((exchange, symbol), last)

    # ------------------------------------------------------------------ orders

    def check(self, exchange: str, order: SimOrder) -> ContractSpec:
        """Tick/lot/minimum checks of a new order. Raises Rejected."""
        spec = self.contract(exchange, order.symbol)
        if order.price is not None and (order.price <= 0 or order.price % spec.tick):
            raise Rejected("bad_tick", f"price {order.price} is not a multiple of {spec.tick}")
        if not order.close_position:
            if order.size % spec.lot:
                raise Rejected("bad_lot", f"size {order.size} is not a multiple of {spec.lot}")
            if order.size < spec.min_size:
                raise Rejected("size_too_small", f"size {order.size} < {spec.min_size}")
        return spec

    def place(self, exchange: str, api_key: str, order: SimOrder) -> SimOrder:
        """Check, book and match a new order (``order_id`` set by the caller). A ``close_position`` order with an
        empty ``side`` takes the side that closes the position held then. Raises Rejected (nothing booked)."""
        book, spec = self.book(exchange, api_key), self.check(exchange, order)
        order.create_ms = order.update_ms = self.now_ms()
        if order.close_position and not order.side:  # a close that names no side closes whatever is held
            held = book.positions.get((order.symbol, order.leg if book.dual else "both"))
            signed = ZERO if held is None else (-held.size if held.leg == "short" else held.size)
            order.side = "sell" if signed > 0 else "buy"
        if order.reduce_only or order.close_position:
            pos = self._position(book, order)
            have = pos.size if pos.leg != "short" else -pos.size
            if have == 0 or (have > 0) == (order.side == "buy"):
                raise Rejected("position_empty" if have == 0 else "reduce_only", f"{order.symbol} {order.leg}")
            if order.close_position or order.size > abs(have):
                order.size = abs(have)  # a close takes the whole position; a reduce-only order is cut to it
        last = self.price(exchange, order.symbol)
        crosses = order.price is None or (last <= order.price if order.side == "buy" else last >= order.price)
        if order.tif == "poc" and crosses:
            raise Rejected("post_only_cross", f"price {order.price} would trade at {last}")
        if not order.reduce_only and not order.close_position:
            need = self._new_exposure(book, order) * spec.multiplier * (order.price or last) / self._lev(book, spec)
            if need > self.available(exchange, api_key):
                raise Rejected(
                    "insufficient_margin", f"needs {need:f} USDT, available {self.available(exchange, api_key):f}"
                )
        book.orders[order.order_id] = order
        if crosses:
            self._fill(exchange, api_key, order, last)
        elif order.tif in ("ioc", "fok"):
            self._finish(exchange, api_key, order, "ioc")
        else:
            self._resting.add((exchange, order.symbol))
            self._changed(exchange, api_key, "order", order)
        return order

    def cancel(self, exchange: str, api_key: str, order: SimOrder) -> SimOrder:
        """Cancel an open order (a finished one is returned as is)."""
        if order.status == "open":
            self._finish(exchange, api_key, order, "cancelled")
        return order

    def find(self, exchange: str, api_key: str, ident: str) -> SimOrder | None:
        """An order of the account by id (digits) or client id."""
        orders = self.book(exchange, api_key).orders
        if ident.isdigit() and int(ident) in orders:
            return orders[int(ident)]
        return next((o for o in orders.values() if o.client_id and o.client_id == ident), None)

    def add_trigger(self, exchange: str, api_key: str, trig: SimTrigger) -> SimTrigger:
        """Book a trigger. Raises Rejected (unknown symbol, bad tick, ``would_trigger`` when it would fire at once)."""
        spec = self.contract(exchange, trig.symbol)
        if trig.trigger <= 0 or trig.trigger % spec.tick:
            raise Rejected("bad_tick", f"trigger price {trig.trigger} is not a multiple of {spec.tick}")
        if self._fires(exchange, trig):
            raise Rejected("would_trigger", f"{trig.price_type} price already {trig.rule} {trig.trigger}")
        trig.create_ms = trig.update_ms = self.now_ms()
        self.book(exchange, api_key).triggers[trig.trigger_id] = trig
        self._resting.add((exchange, trig.symbol))
        self._changed(exchange, api_key, "trigger", trig)
        return trig

    def cancel_trigger(self, exchange: str, api_key: str, trig: SimTrigger) -> SimTrigger:
        if trig.status == "open":
            trig.status, trig.update_ms = "cancelled", self.now_ms()
            self._changed(exchange, api_key, "trigger", trig)
        return trig

    def set_leverage(self, exchange: str, api_key: str, symbol: str, leverage: int, cross_limit: int = 0) -> None:
        """Leverage 1..max (isolated) or 0 with ``cross_limit`` 0..max (cross). Raises Rejected."""
        spec = self.contract(exchange, symbol)
        if not (0 <= leverage <= spec.max_leverage and 0 <= cross_limit <= spec.max_leverage):
            raise Rejected("leverage_invalid", f"leverage {leverage or cross_limit} outside 1..{spec.max_leverage}")
        self.book(exchange, api_key).leverage[symbol] = (leverage, cross_limit)
        for pos in self.positions(exchange, api_key, symbol):
            self._changed(exchange, api_key, "position", pos)

    def leverage(self, exchange: str, api_key: str, symbol: str) -> tuple[int, int]:
        """(leverage, cross limit) of a symbol; default (10, 0): isolated 10x."""
        return self.book(exchange, api_key).leverage.get(symbol, (10, 0))

    def positions(self, exchange: str, api_key: str, symbol: str) -> list[SimPosition]:
        """The account's legs of ``symbol`` (created flat on first use): [both] or [long, short] in dual mode."""
        book = self.book(exchange, api_key)
        legs = ("long", "short") if book.dual else ("both",)
        return [book.positions.setdefault((symbol, leg), SimPosition(symbol, leg)) for leg in legs]

    def available(self, exchange: str, api_key: str) -> Decimal:
        """Balance less position and open-order margin (USDT)."""
        book = self.book(exchange, api_key)
        used = ZERO
        for pos in book.positions.values():
            spec = self.contracts[(exchange, pos.symbol)]
            used += abs(pos.size) * spec.multiplier * pos.entry / self._lev(book, spec)
        for o in book.orders.values():
            if o.status == "open" and not o.reduce_only and o.price is not None:
                spec = self.contracts[(exchange, o.symbol)]
                used += o.left * spec.multiplier * o.price / self._lev(book, spec)
        return book.balance - used

    # ------------------------------------------------------------------ matching

    def match(self, exchange: str, symbol: str) -> None:
        """Fill resting limit orders the price reached, then fire triggers, for every account; keeps ``_resting``."""
        last = self.price(exchange, symbol)
        waiting = False
        for (ex, key), book in list(self.books.items()):
            if ex != exchange:
                continue
            for o in list(book.orders.values()):
                if o.status != "open" or o.symbol != symbol or o.price is None:
                    continue
                if (o.side == "buy" and last <= o.price) or (o.side == "sell" and last >= o.price):
                    self._fill(ex, key, o, o.price)
                else:
                    waiting = True
            for t in list(book.triggers.values()):
                if t.status == "open" and t.symbol == symbol:
                    if self._fires(ex, t):
                        self._fire(ex, key, t)
                    else:
                        waiting = True
        if waiting:
            self._resting.add((exchange, symbol))
        else:
            self._resting.discard((exchange, symbol))

    def _fires(self, exchange: str, t: SimTrigger) -> bool:
        price = self.price(exchange, t.symbol, t.price_type)
        return price >= t.trigger if t.rule == ">=" else price <= t.trigger

    def _fire(self, exchange: str, api_key: str, t: SimTrigger) -> None:
        t.update_ms = self.now_ms()
        o = t.order
        o.order_id = self.next_id()
        try:
            self.place(exchange, api_key, o)
        except Rejected as exc:
            t.status, t.reason = "failed", exc.detail or exc.reason
        else:
            t.status, t.actual_id = "triggered", o.order_id
        self._changed(exchange, api_key, "trigger", t)

    def _fill(self, exchange: str, api_key: str, o: SimOrder, price: Decimal) -> None:
        book, spec = self.book(exchange, api_key), self.contracts[(exchange, o.symbol)]
        qty = o.left
        o.avg_price = (o.avg_price * o.filled + price * qty) / o.size if o.size else price
        o.filled = o.size
        pos = self._position(book, o)
        signed = qty if o.side == "buy" else -qty
        if pos.leg == "short":
            signed = -signed  # a short leg grows with sells
        pnl = ZERO
        if pos.size == 0 or (pos.size > 0) == (signed > 0):
            total = abs(pos.size) + qty
            pos.entry = (abs(pos.size) * pos.entry + qty * price) / total
        else:
            closed = min(qty, abs(pos.size))
            direction = 1 if (pos.size > 0) == (pos.leg != "short") else -1
            pnl = closed * spec.multiplier * (price - pos.entry) * direction
            if qty > abs(pos.size):
                pos.entry = price  # flipped through zero: the rest opens at the fill price
        pos.size += signed
        if pos.size == 0:
            pos.entry = ZERO
        pos.realised += pnl
        pos.update_ms = self.now_ms()
        book.balance += pnl  # before the pushes: a position push may carry the balance (Binance ACCOUNT_UPDATE)
        self._finish(exchange, api_key, o, "filled")
        self._changed(exchange, api_key, "position", pos, {"order": o})
        if pnl:
            self._changed(exchange, api_key, "balance", book, {"change": pnl, "reason": "pnl"})

    def _finish(self, exchange: str, api_key: str, o: SimOrder, finish_as: str) -> None:
        o.status, o.finish_as, o.update_ms = "finished", finish_as, self.now_ms()
        self._changed(exchange, api_key, "order", o)

    def _position(self, book: Book, o: SimOrder) -> SimPosition:
        if book.dual and o.leg == "both":
            opens_long = (o.side == "buy") != (o.reduce_only or o.close_position)
            o.leg = "long" if opens_long else "short"
        leg = o.leg if book.dual else "both"
        return book.positions.setdefault((o.symbol, leg), SimPosition(o.symbol, leg))

    def _new_exposure(self, book: Book, o: SimOrder) -> Decimal:
        """Size of ``o`` that opens rather than reduces (one-way mode nets against the position)."""
        if book.dual:
            return o.size
        pos = book.positions.get((o.symbol, "both"))
        held = pos.size if pos is not None else ZERO
        if held and (held > 0) != (o.side == "buy"):
            return max(ZERO, o.size - abs(held))
        return o.size

    def _lev(self, book: Book, spec: ContractSpec) -> Decimal:
        lev, cross = book.leverage.get(spec.symbol, (10, 0))
        return Decimal(lev or cross or spec.max_leverage)

    def _changed(self, exchange: str, api_key: str, kind: str, obj: Any, extra: dict[str, Any] | None = None) -> None:
        self.changes.append((exchange, api_key, kind, obj, extra or {}))
        self.on_change()
