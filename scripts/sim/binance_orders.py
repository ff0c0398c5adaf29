"""Simulated Binance USD-M order API on the matching engine (``scripts.sim.matching``); JSON shapes in
``scripts.sim.binance_order_wire``. One-way position mode only (``positionSide`` BOTH).

Endpoints (signed as ``BinancePrivate.authenticate``: HMAC-SHA256 of the query string + body, ``X-MBX-APIKEY``;
binance_usdm.md §8), under https://developers.binance.com/docs/derivatives/usds-margined-futures/trade/rest-api:

- ``POST /fapi/v1/order`` (New-Order: ``symbol, side, type LIMIT|MARKET, timeInForce GTC|IOC|FOK|GTX, quantity,
  price, reduceOnly, newClientOrderId, newOrderRespType ACK|RESULT``), ``GET /fapi/v1/order`` (Query-Order, by
  ``orderId`` or ``origClientOrderId``), ``DELETE /fapi/v1/order`` (Cancel-Order); ``GET /fapi/v1/openOrders`` and
  ``GET /fapi/v2/positionRisk`` (``BinancePrivate``).
- ``POST /fapi/v1/leverage`` (Change-Initial-Leverage), ``POST /fapi/v1/marginType`` (Change-Margin-Type,
  ``ISOLATED|CROSSED``; unchanged: -4046 "No need to change margin type.").
- Algo (conditional) orders since 2025-12-02 (binance_usdm.md §0): ``POST /fapi/v1/algoOrder`` (New-Algo-Order:
  ``algoType CONDITIONAL, symbol, side, type STOP_MARKET|TAKE_PROFIT_MARKET|STOP|TAKE_PROFIT, quantity`` or
  ``closePosition=true, price, triggerPrice, workingType CONTRACT_PRICE|MARK_PRICE, reduceOnly, clientAlgoId``),
  ``GET /fapi/v1/algoOrder`` (Query-Algo-Order, ``algoId`` or ``clientAlgoId``), ``DELETE /fapi/v1/algoOrder``
  (Cancel-Algo-Order: ``{"algoId","clientAlgoId","code":"200","msg":"success"}``, the shape nautilus_trader's
  ``BinanceFuturesAlgoOrderCancelResponse`` decodes), ``GET /fapi/v1/openAlgoOrders``; conditional types on
  ``/fapi/v1/order``: -4120 "Order type not supported for this endpoint. Please use the Algo Order API endpoints
  instead." (freqtrade/freqtrade#12610, ccxt/ccxt#27474).
- ``GET /fapi/v1/exchangeInfo`` (public): PRICE_FILTER ``tickSize``, LOT_SIZE ``stepSize``/``minQty``, MIN_NOTIONAL.

Triggers: STOP* fire when the price reaches ``triggerPrice`` against the side (BUY: >=, SELL: <=), TAKE_PROFIT*
with it (BUY: <=, SELL: >=); one that would fire at once: -2021. Pushes on the account's user-data sockets:
``ORDER_TRADE_UPDATE`` (NEW, then TRADE / CANCELED / EXPIRED), ``ACCOUNT_UPDATE`` (balance + position) and
``ALGO_UPDATE`` (NEW, CANCELED, TRIGGERED + FINISHED after the order it placed, REJECTED); a firing algo order's
ORDER_TRADE_UPDATE precedes its TRIGGERED (live Binance sends TRIGGERING/TRIGGERED first; UNVERIFIED order).
"""

from __future__ import annotations

import logging
import re
import secrets
import string
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from aiohttp import web

from scripts.sim import binance_order_wire as wire
from scripts.sim.binance_order_wire import BinanceError
from scripts.sim.conn import json_response
from scripts.sim.matching_types import ContractSpec, Rejected, SimOrder, SimTrigger
from scripts.sim.private import SimAccount, safe_path
from scripts.sim.tapes import BINANCE

if TYPE_CHECKING:
    from scripts.sim.binance import BinanceVenue

log = logging.getLogger(__name__)

__all__ = ["BINANCE_TRADED", "BinanceOrders"]

#: Symbols the engine trades; filters as on Binance's exchangeInfo for BTCUSDT/ETHUSDT (tick 0.10 / 0.01, step
#: 0.001, min notional 100 / 20; UNVERIFIED as of today). Reference prices near the 2024 tape.
BINANCE_TRADED = (
    ContractSpec("BTCUSDT", Decimal("0.10"), Decimal("0.001"), Decimal("0.001"), Decimal(1), 125,
                 Decimal("61800.00"), Decimal(100)),
    ContractSpec("ETHUSDT", Decimal("0.01"), Decimal("0.001"), Decimal("0.001"), Decimal(1), 100,
                 Decimal("2600.00"), Decimal(20)),
)  # fmt: skip
_CLIENT_ID = re.compile(r"[.A-Z:/a-z0-9_-]{1,36}")
_TIF = {"GTC": "gtc", "IOC": "ioc", "FOK": "fok", "GTX": "poc"}
_CONDITIONAL = ("STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET")
_ID_ALPHABET = string.ascii_letters + string.digits


class BinanceOrders:
    """Binance's order endpoints and pushes for one simulator (see the module docstring)."""

    def __init__(self, venue: BinanceVenue) -> None:
        self.venue, self.sim, self.engine = venue, venue.sim, venue.sim.engine
        self._margin: dict[tuple[str, str], str] = {}  # (api key, symbol) -> "cross" | "isolated"
        self._announced: set[int] = set()  # orders whose NEW was pushed
        for spec in BINANCE_TRADED:
            self.engine.add_contract(BINANCE, spec)
            for stream in ("trade", "aggTrade"):
                self.engine.watch(f"{spec.symbol.lower()}@{stream}", BINANCE, spec.symbol, wire.trade_price)

    def add_routes(self, r: web.UrlDispatcher) -> None:
        for method, handler in (("POST", self._place), ("GET", self._query), ("DELETE", self._cancel)):
            r.add_route(method, "/fapi/v1/order", self._h(handler))
        for method, handler in (("POST", self._place_algo), ("GET", self._query_algo), ("DELETE", self._cancel_algo)):
            r.add_route(method, "/fapi/v1/algoOrder", self._h(handler))
        r.add_get("/fapi/v1/openAlgoOrders", self._h(self._open_algo))
        r.add_post("/fapi/v1/leverage", self._h(self._leverage))
        r.add_post("/fapi/v1/marginType", self._h(self._margin_type))
        r.add_get("/fapi/v1/exchangeInfo", self._h_exchange_info)

    def active(self, acct: SimAccount) -> bool:
        """Whether the account used the order API (any order, trigger, position, leverage or margin call): its REST
        lists (open orders, positions) then come from the engine instead of the fixtures."""
        return (BINANCE, acct.api_key) in self.engine.books

    def _h(self, fn: Any) -> Any:
        """Wrap ``fn(account, params) -> JSON data`` with signing, error bodies, pushes and bookkeeping."""
        name = "binance_" + fn.__name__.strip("_")

        async def handler(request: web.Request) -> web.Response:
            self.venue.private.rest_start(name)
            auth = await self.venue.private.authenticate(request)
            if isinstance(auth, web.Response):
                return auth
            acct, params = auth
            try:
                data, status = fn(acct, params), 200
            except BinanceError as exc:
                data, status = {"code": exc.code, "msg": exc.msg}, exc.status
            except Rejected as exc:
                code, msg = wire.ERRORS.get(exc.reason, (-1000, exc.detail))
                data, status = {"code": code, "msg": msg}, 400
            except (TypeError, ValueError, ArithmeticError, AttributeError) as exc:  # a parameter of an unexpected form
                log.warning("binance %s: malformed request: %r", name, exc)
                data, status = {"code": -1100, "msg": "Illegal characters found in a parameter."}, 400
            await self.sim.flush_orders()  # pushes go out before the answer, in the engine's order
            return self.sim._rest_done(request, BINANCE, json_response(data, status), path_qs=safe_path(request))

        return handler

    # ------------------------------------------------------------------ orders

    def _place(self, acct: SimAccount, q: dict[str, str]) -> dict[str, Any]:
        spec = self.engine.contract(BINANCE, _need(q, "symbol"))
        side, kind = _side(q), _need(q, "type")
        if kind in _CONDITIONAL:
            raise BinanceError(  # the live text, e.g. freqtrade/freqtrade#12610 (2025-12-09)
                -4120, "Order type not supported for this endpoint. Please use the Algo Order API endpoints instead."
            )
        if kind not in ("LIMIT", "MARKET"):
            raise BinanceError(-1116, "Invalid orderType.")
        if q.get("positionSide", "BOTH") != "BOTH":
            raise BinanceError(-4061, "Order's position side does not match user's setting.")
        size = _decimal(q, "quantity", spec.lot)
        if kind == "LIMIT":
            tif, price = q.get("timeInForce") or _missing("timeInForce"), _decimal(q, "price", spec.tick)
        elif "price" in q:
            raise BinanceError(-1106, "Parameter 'price' sent when not required.")
        else:
            tif, price = "IOC", None
        if tif not in _TIF:
            raise BinanceError(-1115, "Invalid timeInForce.")
        client_id = q.get("newClientOrderId") or "".join(secrets.choice(_ID_ALPHABET) for _ in range(22))
        if not _CLIENT_ID.fullmatch(client_id):
            raise BinanceError(-4015, "Client order id is not valid.")
        book = self.engine.book(BINANCE, acct.api_key)
        if any(o.client_id == client_id and o.status == "open" for o in book.orders.values()):
            raise BinanceError(-4116, "ClientOrderId is duplicated.")
        reduce_only = q.get("reduceOnly", "false").lower() == "true"
        notional = size * (price or self.engine.price(BINANCE, spec.symbol))
        if not reduce_only and notional < spec.min_notional:
            raise BinanceError(-4164, f"Order's notional must be no smaller than {spec.min_notional:f} "
                                      "(unless you choose reduce only).")  # fmt: skip
        order = SimOrder(self.engine.next_id(), client_id, spec.symbol, side, size, price, _TIF[tif], reduce_only,
                         venue={"type": kind, "tif": tif, "maker": False})  # fmt: skip
        if q.get("newOrderRespType", "ACK") == "RESULT":
            return wire.order_json(self.engine, self.engine.place(BINANCE, acct.api_key, order))
        ack = wire.order_json(self.engine, order)  # ACK: the order as accepted, before matching
        self.engine.place(BINANCE, acct.api_key, order)
        return ack | {"orderId": order.order_id, "time": order.create_ms, "updateTime": order.create_ms}

    def _order(self, acct: SimAccount, q: dict[str, str]) -> SimOrder:
        self.engine.contract(BINANCE, _need(q, "symbol"))
        ident = q.get("orderId") or q.get("origClientOrderId")
        if not ident:
            raise BinanceError(-1102, "Either orderId or origClientOrderId must be sent.")
        order = self.engine.find(BINANCE, acct.api_key, ident)
        if order is None or order.symbol != q["symbol"]:
            raise BinanceError(-2013, "Order does not exist.")
        return order

    def _query(self, acct: SimAccount, q: dict[str, str]) -> dict[str, Any]:
        return wire.order_json(self.engine, self._order(acct, q))

    def _cancel(self, acct: SimAccount, q: dict[str, str]) -> dict[str, Any]:
        try:
            order = self._order(acct, q)
        except BinanceError as exc:
            if exc.code == -2013:
                raise BinanceError(-2011, "Unknown order sent.") from None
            raise
        if order.status != "open":
            raise BinanceError(-2011, "Unknown order sent.")
        return wire.order_json(self.engine, self.engine.cancel(BINANCE, acct.api_key, order))

    def open_orders(self, acct: SimAccount) -> list[dict[str, Any]]:
        """``GET /fapi/v1/openOrders`` of an account that traded here, oldest first."""
        orders = self.engine.book(BINANCE, acct.api_key).orders.values()
        return [wire.order_json(self.engine, o) for o in orders if o.status == "open"]

    def trades(self, symbol: str) -> bool:
        """Whether the engine trades ``symbol`` (``BINANCE_TRADED``)."""
        return any(spec.symbol == symbol for spec in BINANCE_TRADED)

    def position_risk(self, acct: SimAccount, symbols: list[str] | None = None) -> list[dict[str, Any]]:
        """``GET /fapi/v2/positionRisk`` from the engine: every traded symbol (or those of ``symbols``), flat ones
        too, one-way (``BOTH``) items."""
        return [
            wire.position_json(self.engine, acct.api_key, p, self._margin.get((acct.api_key, spec.symbol), "cross"))
            for spec in BINANCE_TRADED
            if symbols is None or spec.symbol in symbols
            for p in self.engine.positions(BINANCE, acct.api_key, spec.symbol)
        ]

    # ------------------------------------------------------------------ algo (conditional) orders

    def _place_algo(self, acct: SimAccount, q: dict[str, str]) -> dict[str, Any]:
        if q.get("algoType") != "CONDITIONAL":
            raise BinanceError(-1102, "Mandatory parameter 'algoType' was not sent, was empty/null, or malformed.")
        spec = self.engine.contract(BINANCE, _need(q, "symbol"))
        side, kind = _side(q), _need(q, "type")
        if kind not in _CONDITIONAL[:4]:
            raise BinanceError(-1116, "Invalid orderType.")
        close = q.get("closePosition", "false").lower() == "true"
        if close and "quantity" in q:
            raise BinanceError(-1106, "Parameter 'quantity' sent when not required.")
        size = Decimal(0) if close else _decimal(q, "quantity", spec.lot)
        price = _decimal(q, "price", spec.tick) if kind in ("STOP", "TAKE_PROFIT") else None
        trigger = _decimal(q, "triggerPrice", spec.tick)
        working = q.get("workingType", "CONTRACT_PRICE")
        if working not in ("CONTRACT_PRICE", "MARK_PRICE"):
            raise BinanceError(-1102, "Mandatory parameter 'workingType' was not sent, was empty/null, or malformed.")
        rule = (">=" if side == "buy" else "<=") if kind.startswith("STOP") else ("<=" if side == "buy" else ">=")
        client_id = q.get("clientAlgoId") or "".join(secrets.choice(_ID_ALPHABET) for _ in range(22))
        if not _CLIENT_ID.fullmatch(client_id):
            raise BinanceError(-4015, "Client order id is not valid.")
        tif = q.get("timeInForce", "GTC")
        template = SimOrder(0, client_id, spec.symbol, side, size, price, _TIF.get(tif, "gtc"),
                            reduce_only=close or q.get("reduceOnly", "false").lower() == "true", close_position=close,
                            venue={"type": "MARKET" if price is None else "LIMIT", "tif": tif, "maker": False})  # fmt: skip
        trig = SimTrigger(self.engine.next_id(), client_id, spec.symbol, trigger, rule,
                          "mark" if working == "MARK_PRICE" else "last", template, venue={"type": kind, "tif": tif})  # fmt: skip
        return wire.algo_json(self.engine, self.engine.add_trigger(BINANCE, acct.api_key, trig))

    def _algo(self, acct: SimAccount, q: dict[str, str]) -> SimTrigger:
        triggers = self.engine.book(BINANCE, acct.api_key).triggers
        if q.get("algoId", "").isdigit():
            found = triggers.get(int(q["algoId"]))
        elif q.get("clientAlgoId"):
            found = next((t for t in triggers.values() if t.client_id == q["clientAlgoId"]), None)
        else:
            raise BinanceError(-1102, "Either algoId or clientAlgoId must be sent.")
        if found is None:
            raise BinanceError(-2013, "Order does not exist.")
        return found

    def _query_algo(self, acct: SimAccount, q: dict[str, str]) -> dict[str, Any]:
        return wire.algo_json(self.engine, self._algo(acct, q))

    def _cancel_algo(self, acct: SimAccount, q: dict[str, str]) -> dict[str, Any]:
        try:
            trig = self._algo(acct, q)
        except BinanceError as exc:
            raise BinanceError(-2011, "Unknown order sent.") if exc.code == -2013 else exc from None
        if trig.status != "open":
            raise BinanceError(-2011, "Unknown order sent.")
        self.engine.cancel_trigger(BINANCE, acct.api_key, trig)
        return {"algoId": trig.trigger_id, "clientAlgoId": trig.client_id, "code": "200", "msg": "success"}

    def _open_algo(self, acct: SimAccount, q: dict[str, str]) -> list[dict[str, Any]]:
        triggers = self.engine.book(BINANCE, acct.api_key).triggers.values()
        symbol = q.get("symbol")
        return [wire.algo_json(self.engine, t) for t in triggers
                if t.status == "open" and (not symbol or t.symbol == symbol)]  # fmt: skip

    # ------------------------------------------------------------------ leverage, margin type, exchange info

    def _leverage(self, acct: SimAccount, q: dict[str, str]) -> dict[str, Any]:
        symbol, lev = _need(q, "symbol"), _need(q, "leverage")
        if not lev.isdigit() or not 1 <= int(lev) <= self.engine.contract(BINANCE, symbol).max_leverage:
            raise BinanceError(-4028, f"Leverage {lev} is not valid")
        self.engine.set_leverage(BINANCE, acct.api_key, symbol, int(lev))
        return {"leverage": int(lev), "maxNotionalValue": "10000000", "symbol": symbol}

    def _margin_type(self, acct: SimAccount, q: dict[str, str]) -> dict[str, Any]:
        symbol, wanted = _need(q, "symbol"), _need(q, "marginType")
        self.engine.contract(BINANCE, symbol)
        mode = {"ISOLATED": "isolated", "CROSSED": "cross"}.get(wanted.upper())
        if mode is None:
            raise BinanceError(-1102, "Mandatory parameter 'marginType' was not sent, was empty/null, or malformed.")
        self.engine.book(BINANCE, acct.api_key)
        if self._margin.get((acct.api_key, symbol), "cross") == mode:
            raise BinanceError(-4046, "No need to change margin type.")
        self._margin[(acct.api_key, symbol)] = mode
        return {"code": 200, "msg": "success"}

    async def _h_exchange_info(self, request: web.Request) -> web.Response:
        """``GET /fapi/v1/exchangeInfo`` (public): the traded symbols with their filters."""
        symbols = [{
            "symbol": s.symbol, "pair": s.symbol, "contractType": "PERPETUAL", "status": "TRADING",
            "baseAsset": s.symbol[:-4], "quoteAsset": "USDT", "marginAsset": "USDT",
            "pricePrecision": wire.places(s.tick), "quantityPrecision": wire.places(s.lot), "underlyingType": "COIN",
            "filters": [
                {"filterType": "PRICE_FILTER", "minPrice": str(s.tick), "maxPrice": "4529764", "tickSize": str(s.tick)},
                {"filterType": "LOT_SIZE", "stepSize": str(s.lot), "maxQty": "1000", "minQty": str(s.min_size)},
                {"filterType": "MARKET_LOT_SIZE", "stepSize": str(s.lot), "maxQty": "120", "minQty": str(s.min_size)},
                {"filterType": "MIN_NOTIONAL", "notional": str(s.min_notional)},
            ],
            "orderTypes": ["LIMIT", "MARKET", *_CONDITIONAL], "timeInForce": list(_TIF),
        } for s in BINANCE_TRADED]  # fmt: skip
        body = {"timezone": "UTC", "serverTime": self.sim._private.now_ms(), "rateLimits": [], "exchangeFilters": [],
                "assets": [{"asset": "USDT", "marginAvailable": True}], "symbols": symbols}  # fmt: skip
        return self.sim._rest_done(request, BINANCE, json_response(body))

    # ------------------------------------------------------------------ pushes

    def push_frames(self, api_key: str, kind: str, obj: Any, extra: dict[str, Any]) -> list[tuple[str, str]]:
        """``(channel, frame)`` pairs for one engine change on the account's user-data sockets."""
        now = self.sim._private.now_ms()
        frames: list[str] = []
        if kind == "order":
            if obj.order_id not in self._announced:
                self._announced.add(obj.order_id)
                frames.append(wire.order_update(self.engine, obj, now, "NEW"))
            if obj.status == "finished":
                execution = {"filled": "TRADE", "cancelled": "CANCELED"}.get(obj.finish_as, "EXPIRED")
                frames.append(wire.order_update(self.engine, obj, now, execution))
        elif kind == "position":
            mode = self._margin.get((api_key, obj.symbol), "cross")
            book = self.engine.book(BINANCE, api_key)
            frames.append(wire.account_update(self.engine, book, obj, mode, now))
        elif kind == "trigger":
            statuses = {"open": ["NEW"], "triggered": ["TRIGGERED", "FINISHED"], "cancelled": ["CANCELED"],
                        "failed": ["REJECTED"]}[obj.status]  # fmt: skip
            frames += [wire.algo_update(self.engine, obj, now, s) for s in statuses]
        return [("user", f) for f in frames]  # balance changes ride on the position's ACCOUNT_UPDATE


def _missing(param: str) -> str:
    raise BinanceError(-1102, f"Mandatory parameter '{param}' was not sent, was empty/null, or malformed.")


def _need(q: dict[str, str], param: str) -> str:
    return q.get(param) or _missing(param)


def _side(q: dict[str, str]) -> str:
    side = _need(q, "side")
    if side not in ("BUY", "SELL"):
        raise BinanceError(-1117, "Invalid side.")
    return side.lower()


def _decimal(q: dict[str, str], param: str, step: Decimal) -> Decimal:
    """A positive decimal parameter with at most ``step``'s decimals (-1111 beyond, -4003 / -1102 when not > 0)."""
    try:
        value = Decimal(_need(q, param))
    except InvalidOperation:
        _missing(param)
        raise  # unreachable: _missing raises
    if not value.is_finite() or value <= 0:
        if param == "quantity":
            raise BinanceError(-4003, "Quantity less than or equal to zero.")
        _missing(param)
    if -value.as_tuple().exponent > wire.places(step):  # type: ignore[operator]
        raise BinanceError(-1111, "Precision is over the maximum defined for this asset.")
    return value
