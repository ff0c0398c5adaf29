"""Simulated Gate.io USDT futures order API on the matching engine (``scripts.sim.matching``); wire shapes here.

Endpoints (signed as ``GatePrivate.authenticate``, exchanges.md §2.7; doc https://www.gate.com/docs/developers/apiv4/,
models https://github.com/gateio/gateapi-python/tree/master/docs ``FuturesOrder.md``, ``FuturesPriceTriggeredOrder.md``,
``FuturesInitialOrder.md``, ``FuturesPriceTrigger.md``, ``Position.md``, ``Contract.md``):

- ``POST /api/v4/futures/usdt/orders`` ``{"contract","size","price","tif","text","reduce_only","close","auto_size"}``
  (``GET`` list: ``GatePrivate``); ``GET``/``DELETE /api/v4/futures/usdt/orders/{order_id}`` (id or ``t-…`` text).
- ``POST``/``GET /api/v4/futures/usdt/price_orders``, ``GET``/``DELETE …/price_orders/{order_id}`` (TP/SL).
- ``GET /api/v4/futures/usdt/positions/{contract}``, ``POST …/positions/{contract}/leverage?leverage=&cross_leverage_limit=``
  and the dual-mode ``…/dual_comp/positions/{contract}[/leverage]``; ``POST …/dual_mode?dual_mode=true|false``;
  ``GET …/accounts``; ``GET …/contracts/{contract}`` (public).

Errors ``{"label","message"}`` with labels from Gate's list (as mapped by ccxt ``gate.py`` ``exceptions``):
``CONTRACT_NOT_FOUND``, ``INVALID_PARAM_VALUE``, ``SIZE_TOO_SMALL``, ``INSUFFICIENT_AVAILABLE``, ``POSITION_EMPTY``,
``INCREASE_POSITION``, ``ORDER_POC_IMMEDIATE``, ``LEVERAGE_TOO_HIGH``, ``ORDER_NOT_FOUND`` (404), ``ORDER_FINISHED``;
HTTP 400 unless noted; the ``message`` texts are UNVERIFIED. Sizes are contracts (ints; decimal strings when the
request carries ``X-Gate-Size-Decimal: 1``); prices decimal strings. Pushes: ``futures.orders``, ``futures.positions``,
``futures.balances`` (exchanges.md §2.6) and ``futures.autoorders`` (item = the price order object, UNVERIFIED shape).
"""

from __future__ import annotations

import logging
import re
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from aiohttp import web

from scripts.sim.conn import json_response
from scripts.sim.gate_order_wire import (
    GateError,
    bad,
    dec,
    number,
    order_json,
    parse_object,
    position_json,
    push_frame,
    required,
    trade_price,
    trigger_json,
)
from scripts.sim.matching_types import ContractSpec, Rejected, SimOrder, SimTrigger
from scripts.sim.private import SimAccount
from scripts.sim.tapes import GATE

if TYPE_CHECKING:
    from scripts.sim.gate import GateVenue

log = logging.getLogger(__name__)

__all__ = ["GATE_TRADED", "GateOrders"]

BASE = "/api/v4/futures/usdt"
#: Contracts the engine trades: BTC_USDT as in ccxt's recorded Gate contract list (multiplier 0.0001, price round
#: 0.1, size min 1); ETH_USDT multiplier 0.01 / round 0.01 (UNVERIFIED). Reference prices: near the 2024 tape.
GATE_TRADED = (
    ContractSpec("BTC_USDT", Decimal("0.1"), Decimal(1), Decimal(1), Decimal("0.0001"), 100, Decimal("61800.0")),
    ContractSpec("ETH_USDT", Decimal("0.01"), Decimal(1), Decimal(1), Decimal("0.01"), 100, Decimal("2600.00")),
)
_TEXT = re.compile(r"t-[0-9A-Za-z_.\-]{1,28}")
_LABELS = {  # engine reason -> (HTTP status, label)
    "unknown_symbol": (400, "CONTRACT_NOT_FOUND"), "bad_tick": (400, "INVALID_PARAM_VALUE"),
    "bad_lot": (400, "INVALID_PARAM_VALUE"), "size_too_small": (400, "SIZE_TOO_SMALL"),
    "insufficient_margin": (400, "INSUFFICIENT_AVAILABLE"), "reduce_only": (400, "INCREASE_POSITION"),
    "position_empty": (400, "POSITION_EMPTY"), "post_only_cross": (400, "ORDER_POC_IMMEDIATE"),
    "leverage_invalid": (400, "LEVERAGE_TOO_HIGH"), "would_trigger": (400, "INVALID_PARAM_VALUE"),
}  # fmt: skip
_PRICE_TYPES = {0: "last", 1: "mark", 2: "index"}


class GateOrders:
    """Gate's order endpoints and pushes for one simulator (see the module docstring)."""

    def __init__(self, venue: GateVenue) -> None:
        self.venue, self.sim = venue, venue.sim
        self.engine = venue.sim.engine
        for spec in GATE_TRADED:
            self.engine.add_contract(GATE, spec)
            self.engine.watch(f"futures.trades:{spec.symbol}", GATE, spec.symbol, trade_price)

    def add_routes(self, r: web.UrlDispatcher) -> None:
        r.add_post(f"{BASE}/orders", self._h(self._place))
        r.add_get(f"{BASE}/orders/{{order_id}}", self._h(self._get))
        r.add_delete(f"{BASE}/orders/{{order_id}}", self._h(self._cancel))
        r.add_post(f"{BASE}/price_orders", self._h(self._place_trigger))
        r.add_get(f"{BASE}/price_orders", self._h(self._list_triggers))
        r.add_get(f"{BASE}/price_orders/{{order_id}}", self._h(self._get_trigger))
        r.add_delete(f"{BASE}/price_orders/{{order_id}}", self._h(self._cancel_trigger))
        for prefix in ("positions", "dual_comp/positions"):
            r.add_get(f"{BASE}/{prefix}/{{contract}}", self._h(self._position))
            r.add_post(f"{BASE}/{prefix}/{{contract}}/leverage", self._h(self._leverage))
        r.add_post(f"{BASE}/dual_mode", self._h(self._dual_mode))
        r.add_get(f"{BASE}/accounts", self._h(self._account))
        r.add_get(f"{BASE}/contracts/{{contract}}", self._h_contract)

    def active(self, acct: SimAccount) -> bool:
        """Whether the account used the order API (any order, trigger, position, leverage or margin call): its REST
        lists (open orders, positions) then come from the engine instead of the fixtures."""
        return (GATE, acct.api_key) in self.engine.books

    # ------------------------------------------------------------------ handler plumbing

    def _h(self, fn: Any) -> Any:
        """Wrap ``fn(request, account, body) -> JSON data`` with signing, error bodies, pushes and bookkeeping."""
        name = "gate_" + fn.__name__.strip("_")

        async def handler(request: web.Request) -> web.Response:
            self.venue.private.rest_start(name)
            auth = await self.venue.private.authenticate(request)
            if isinstance(auth, web.Response):
                return auth
            acct, body = auth
            try:
                data, status = fn(request, acct, body), 200
            except GateError as exc:
                data, status = {"label": exc.label, "message": exc.message}, exc.status
            except Rejected as exc:
                status, label = _LABELS.get(exc.reason, (400, "INVALID_PARAM_VALUE"))
                data = {"label": label, "message": exc.detail or exc.reason}
            except (TypeError, ValueError, ArithmeticError, AttributeError) as exc:  # a field of an unexpected type
                log.warning("gate %s: malformed request: %r", name, exc)
                data, status = {"label": "INVALID_PARAM_VALUE", "message": "Invalid request parameter"}, 400
            await self.sim.flush_orders()  # pushes go out before the answer, in the engine's order
            return self.sim._rest_done(request, GATE, json_response(data, status))

        return handler

    async def _h_contract(self, request: web.Request) -> web.Response:
        contract = request.match_info["contract"]
        try:
            spec = self.engine.contract(GATE, contract)
        except Rejected:
            body = {"label": "CONTRACT_NOT_FOUND", "message": f"Contract {contract} not found"}
            return self.sim._rest_done(request, GATE, json_response(body, 400))
        last, mark = self.engine.price(GATE, contract), self.engine.price(GATE, contract, "mark")
        data = {
            "name": spec.symbol, "type": "direct", "quanto_multiplier": dec(spec.multiplier), "leverage_min": "1",
            "leverage_max": str(spec.max_leverage), "maintenance_rate": "0.005", "mark_type": "index",
            "last_price": dec(last), "mark_price": dec(mark), "index_price": dec(mark), "maker_fee_rate": "0",
            "taker_fee_rate": "0", "order_price_round": dec(spec.tick), "mark_price_round": dec(spec.tick),
            "order_size_min": int(spec.min_size), "order_size_max": 1000000, "order_price_deviate": "0.5",
            "funding_rate": "0", "funding_interval": 28800, "in_delisting": False, "orders_limit": 50,
        }  # fmt: skip
        return self.sim._rest_done(request, GATE, json_response(data))

    # ------------------------------------------------------------------ orders

    def _place(self, request: web.Request, acct: SimAccount, body: bytes) -> dict[str, Any]:
        """``POST /orders``: size > 0 buys, < 0 sells; ``price`` "0" + ``tif`` ioc is a market order; size 0 +
        ``close`` (one-way) or ``auto_size`` close_long|close_short (dual mode) closes the whole position."""
        req = parse_object(body)
        contract = required(req, "contract")
        self.engine.contract(GATE, contract)
        decimal = _decimal_sizes(request)
        size = number(req.get("size", 0), "size", integral=not decimal)
        price = number(req.get("price", "0"), "price")
        tif = req.get("tif", "gtc")
        if tif not in ("gtc", "ioc", "poc", "fok"):
            raise bad("tif")
        if price == 0 and tif not in ("ioc", "fok"):
            raise bad("tif", "a market order (price 0) must be ioc")
        text = req.get("text", "api")
        if text != "api" and (not isinstance(text, str) or not _TEXT.fullmatch(text)):
            raise bad("text", 'must be "t-" followed by at most 28 of [0-9A-Za-z_.-]')
        close, auto_size = req.get("close") is True, req.get("auto_size") or ""
        book = self.engine.book(GATE, acct.api_key)
        if auto_size not in ("", "close_long", "close_short") or (auto_size and not book.dual):
            raise bad("auto_size")
        if (close and book.dual) or ((close or auto_size) and size != 0) or (size == 0 and not (close or auto_size)):
            raise bad("size", "0 only with close (one-way) or auto_size (dual mode)")
        closing = bool(close or auto_size)
        if closing:
            pos = next(p for p in self.engine.positions(GATE, acct.api_key, contract)
                       if p.leg == {"close_long": "long", "close_short": "short"}.get(auto_size, p.leg))  # fmt: skip
            held = -pos.size if pos.leg == "short" else pos.size
            side = "sell" if held > 0 else "buy"
            leg = pos.leg
        else:
            side, leg = ("buy" if size > 0 else "sell"), "both"
        order = SimOrder(
            self.engine.next_id(), text if text != "api" else "", contract, side, abs(size),
            None if price == 0 else price, tif, reduce_only=req.get("reduce_only") is True or closing,
            close_position=closing, leg=leg,
            venue={"text": text, "decimal": decimal, "close": closing, "auto_size": auto_size, "uid": acct.memo},
        )  # fmt: skip
        return order_json(self.engine.place(GATE, acct.api_key, order))

    def _order(self, request: web.Request, acct: SimAccount) -> SimOrder:
        ident = request.match_info["order_id"]
        order = self.engine.find(GATE, acct.api_key, ident)
        if order is None:
            raise GateError(404, "ORDER_NOT_FOUND", "Order not found")
        return order

    def _get(self, request: web.Request, acct: SimAccount, body: bytes) -> dict[str, Any]:
        """``GET /orders/{order_id}``: by id or by the ``t-…`` text it was placed with."""
        return order_json(self._order(request, acct))

    def _cancel(self, request: web.Request, acct: SimAccount, body: bytes) -> dict[str, Any]:
        """``DELETE /orders/{order_id}``: the order, finished as ``cancelled``; a finished one: ``ORDER_FINISHED``."""
        order = self._order(request, acct)
        if order.status != "open":
            raise GateError(400, "ORDER_FINISHED", "Order finished")
        return order_json(self.engine.cancel(GATE, acct.api_key, order))

    def orders_rest(self, request: web.Request, acct: SimAccount, status: str) -> list[dict[str, Any]]:
        """The account's orders with ``status`` open|finished, newest first (``GET /orders``)."""
        orders = self.engine.book(GATE, acct.api_key).orders.values()
        return [order_json(o) for o in sorted(orders, key=lambda o: -o.order_id) if o.status == status]

    def positions_rest(self, request: web.Request, acct: SimAccount) -> list[dict[str, Any]]:
        """The account's positions (``GET /positions``): every leg that is not flat."""
        book = self.engine.book(GATE, acct.api_key)
        return [
            position_json(self.engine, acct.api_key, acct.memo, p, decimal=_decimal_sizes(request))
            for p in book.positions.values()
            if p.size
        ]

    # ------------------------------------------------------------------ price (trigger) orders

    def _place_trigger(self, request: web.Request, acct: SimAccount, body: bytes) -> dict[str, Any]:
        """``POST /price_orders`` ``{"initial":{contract,size,price,close,tif,text,reduce_only,auto_size},
        "trigger":{strategy_type 0,price_type 0|1|2,price,rule 1 (>=)|2 (<=),expiration},"order_type"}`` -> ``{"id"}``.
        A close (``close`` or ``auto_size`` with size 0, or ``order_type`` close-*-position) takes the whole
        position when it fires; a trigger the price already meets: ``INVALID_PARAM_VALUE``."""
        req = parse_object(body)
        initial, trigger = req.get("initial"), req.get("trigger")
        if not isinstance(initial, dict) or not isinstance(trigger, dict):
            raise GateError(400, "MISSING_REQUIRED_PARAM", "Missing required parameter: initial, trigger")
        contract = required(initial, "contract")
        self.engine.contract(GATE, contract)
        decimal = _decimal_sizes(request)
        size = number(initial.get("size", 0), "initial.size", integral=not decimal)
        price = number(initial.get("price", "0"), "initial.price")
        raw_type, raw_rule = trigger.get("price_type", 0), trigger.get("rule")
        price_type = _PRICE_TYPES.get(raw_type) if type(raw_type) is int else None
        rule = {1: ">=", 2: "<="}.get(raw_rule) if type(raw_rule) is int else None
        if price_type is None or rule is None or trigger.get("strategy_type", 0) != 0:
            raise bad("trigger", "strategy_type 0, price_type 0|1|2, rule 1|2")
        order_type, auto_size = req.get("order_type", ""), initial.get("auto_size") or ""
        if not isinstance(order_type, str) or auto_size not in ("", "close_long", "close_short"):
            raise bad("order_type" if not isinstance(order_type, str) else "initial.auto_size")
        closing = initial.get("close") is True or bool(auto_size) or str(order_type).endswith("-position")
        if size == 0 and not closing:
            raise bad("initial.size")
        leg = {"close_long": "long", "close_short": "short"}.get(auto_size, "both")
        if "long" in order_type or "short" in order_type or auto_size:
            side = "sell" if "long" in order_type or auto_size == "close_long" else "buy"
        elif closing:
            side = ""  # close=true, size 0: the side that closes the position held when it fires
        else:
            side = "buy" if size > 0 else "sell"
        text = initial.get("text") or "api"
        tif = initial.get("tif") or ("ioc" if price == 0 else "gtc")
        if not isinstance(text, str) or tif not in ("gtc", "ioc", "poc", "fok"):
            raise bad("initial.text" if not isinstance(text, str) else "initial.tif")
        template = SimOrder(0, text if text != "api" else "", contract, side, abs(size), None if price == 0 else price,
                            tif, reduce_only=initial.get("reduce_only") is True or closing, close_position=closing,
                            leg=leg, venue={"text": text, "decimal": decimal, "close": closing, "auto_size": auto_size,
                                            "uid": acct.memo})  # fmt: skip
        trig = SimTrigger(self.engine.next_id(), "", contract, number(trigger.get("price"), "trigger.price"), rule,
                          price_type, template, venue={"initial": initial, "trigger": trigger, "order_type": order_type,
                                                       "uid": acct.memo})  # fmt: skip
        self.engine.add_trigger(GATE, acct.api_key, trig)
        return {"id": trig.trigger_id}

    def _trigger(self, request: web.Request, acct: SimAccount) -> SimTrigger:
        ident = request.match_info["order_id"]
        trig = self.engine.book(GATE, acct.api_key).triggers.get(int(ident)) if ident.isdigit() else None
        if trig is None:
            raise GateError(404, "ORDER_NOT_FOUND", "Order not found")
        return trig

    def _list_triggers(self, request: web.Request, acct: SimAccount, body: bytes) -> list[dict[str, Any]]:
        """``GET /price_orders?status=open|finished[&contract=C]``, newest first."""
        status, contract = request.query.get("status"), request.query.get("contract")
        if status not in ("open", "finished"):
            raise GateError(400, "MISSING_REQUIRED_PARAM" if status is None else "INVALID_PARAM_VALUE", "status")
        triggers = self.engine.book(GATE, acct.api_key).triggers.values()
        out = [trigger_json(t) for t in sorted(triggers, key=lambda t: -t.trigger_id)]
        return [t for t in out if t["status"] == status and (not contract or t["initial"]["contract"] == contract)]

    def _get_trigger(self, request: web.Request, acct: SimAccount, body: bytes) -> dict[str, Any]:
        return trigger_json(self._trigger(request, acct))

    def _cancel_trigger(self, request: web.Request, acct: SimAccount, body: bytes) -> dict[str, Any]:
        """``DELETE /price_orders/{id}``: the price order, finished as ``cancelled`` (a finished one is returned)."""
        return trigger_json(self.engine.cancel_trigger(GATE, acct.api_key, self._trigger(request, acct)))

    # ------------------------------------------------------------------ positions, leverage, account

    def _position(self, request: web.Request, acct: SimAccount, body: bytes) -> Any:
        """``GET /positions/{contract}``: the Position (one-way); ``/dual_comp/…`` or dual mode: both legs."""
        contract = request.match_info["contract"]
        self.engine.contract(GATE, contract)
        legs = [
            position_json(self.engine, acct.api_key, acct.memo, p, decimal=_decimal_sizes(request))
            for p in self.engine.positions(GATE, acct.api_key, contract)
        ]
        return legs if "dual_comp" in request.path or len(legs) > 1 else legs[0]

    def _leverage(self, request: web.Request, acct: SimAccount, body: bytes) -> Any:
        """``POST /positions/{contract}/leverage?leverage=N[&cross_leverage_limit=M]``: N > 0 isolated, 0 cross
        (with M); answers the position (like ``GET``)."""
        q = request.query
        if "leverage" not in q:
            raise GateError(400, "MISSING_REQUIRED_PARAM", "Missing required parameter: leverage")
        lev = number(q["leverage"], "leverage", integral=True)
        cross = number(q.get("cross_leverage_limit", "0"), "cross_leverage_limit", integral=True)
        self.engine.set_leverage(GATE, acct.api_key, request.match_info["contract"], int(lev), int(cross))
        return self._position(request, acct, body)

    def _dual_mode(self, request: web.Request, acct: SimAccount, body: bytes) -> dict[str, Any]:
        """``POST /dual_mode?dual_mode=true|false``: refused while any position is open; answers the account."""
        on = request.query.get("dual_mode")
        if on not in ("true", "false"):
            raise bad("dual_mode")
        book = self.engine.book(GATE, acct.api_key)
        if any(p.size for p in book.positions.values()):
            raise GateError(400, "POSITION_HOLDING", "Position holding, cannot change dual mode")  # UNVERIFIED label
        book.dual = on == "true"
        book.positions.clear()
        return self._account(request, acct, body)

    def _account(self, request: web.Request, acct: SimAccount, body: bytes) -> dict[str, Any]:
        """``GET /accounts``: ``total``, ``available``, ``currency`` USDT, ``in_dual_mode`` (decimal strings)."""
        book = self.engine.book(GATE, acct.api_key)
        available = self.engine.available(GATE, acct.api_key)
        return {"total": dec(book.balance), "available": dec(available), "unrealised_pnl": "0", "currency": "USDT",
                "position_margin": dec(book.balance - available), "order_margin": "0", "point": "0",
                "in_dual_mode": book.dual}  # fmt: skip

    def push_frames(self, api_key: str, kind: str, obj: Any, extra: dict[str, Any]) -> list[tuple[str, str]]:
        """``(channel, frame)`` pairs for one engine change (``gate_order_wire.push_frame``)."""
        acct = self.sim._private.account(GATE, api_key)
        return [
            push_frame(self.engine, api_key, acct.memo if acct else "", self.sim._private.now_ms(), kind, obj, extra)
        ]


def _decimal_sizes(request: web.Request) -> bool:
    """``X-Gate-Size-Decimal: 1``: sizes are sent and answered as decimal strings (exchanges.md §2.7)."""
    return request.headers.get("X-Gate-Size-Decimal") == "1"
