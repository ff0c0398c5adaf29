"""Binance USD-M futures order execution (``OrderAdapter``): signed REST calls and their answers (pure).

Endpoints (base ``BINANCE_USDM_REST_URI``; every private call is signed as binance_usdm.md §8: the parameters, then
``recvWindow``, ``timestamp`` and ``signature`` = hex HMAC-SHA256 of that query, key in ``X-MBX-APIKEY``;
``private.signed_request``):

=================================  =================================================================================
``POST /fapi/v1/order``            place (``symbol, side, type, quantity, price, timeInForce, positionSide,
                                   reduceOnly, newClientOrderId, newOrderRespType=RESULT``) —
                                   https://developers.binance.com/docs/derivatives/usds-margined-futures/trade/rest-api
``GET /fapi/v1/order``             one order by ``orderId`` or ``origClientOrderId`` —
                                   https://developers.binance.com/docs/derivatives/usds-margined-futures/trade/rest-api/Query-Order
``DELETE /fapi/v1/order``          cancel — https://developers.binance.com/docs/derivatives/usds-margined-futures/trade/rest-api/Cancel-Order
``POST /fapi/v1/leverage``         ``symbol, leverage`` —
                                   https://developers.binance.com/docs/derivatives/usds-margined-futures/trade/rest-api/Change-Initial-Leverage
``POST /fapi/v1/marginType``       ``symbol, marginType=ISOLATED|CROSSED`` —
                                   https://developers.binance.com/docs/derivatives/usds-margined-futures/trade/rest-api/Change-Margin-Type
``GET /fapi/v2/positionRisk``      ``symbol``: ``positionAmt``, ``positionSide`` (BOTH one-way, LONG/SHORT hedge),
                                   ``leverage``, ``marginType`` (isolated|cross) —
                                   https://developers.binance.com/docs/derivatives/usds-margined-futures/trade/rest-api/Position-Information-V2
``POST /fapi/v1/algoOrder``        take-profit/stop-loss since 2025-12 (conditional orders left ``/fapi/v1/order``):
                                   ``algoType=CONDITIONAL, symbol, side, positionSide, type=TAKE_PROFIT_MARKET|
                                   STOP_MARKET, triggerPrice, workingType=CONTRACT_PRICE|MARK_PRICE,
                                   closePosition=true, clientAlgoId`` -> ``{"algoId", "clientAlgoId", ...}`` —
                                   https://developers.binance.com/docs/derivatives/usds-margined-futures/trade/rest-api/New-Algo-Order
``DELETE /fapi/v1/algoOrder``      ``algoId`` — https://developers.binance.com/docs/derivatives/usds-margined-futures/trade/rest-api/Cancel-Algo-Order
``GET /fapi/v1/openAlgoOrders``    open conditional orders —
                                   https://developers.binance.com/docs/derivatives/usds-margined-futures/trade/rest-api/Current-All-Algo-Open-Orders
``GET /fapi/v1/exchangeInfo``      ``PRICE_FILTER.tickSize``, ``LOT_SIZE.stepSize/minQty`` (public) —
                                   https://developers.binance.com/docs/derivatives/usds-margined-futures/market-data/rest-api/Exchange-Information
=================================  =================================================================================

Facts used: ``timeInForce`` GTX is post-only; ``reduceOnly`` is refused in hedge mode (``positionSide`` closes
there); ``newClientOrderId``/``clientAlgoId`` match ``^[\\.A-Z\\:/a-z0-9_-]{1,36}$``; triggers have no index-price
type; errors are ``{"code": <negative int>, "msg"}`` (binance_usdm.md §9), ``-2013`` "Order does not exist",
``-2011`` "Unknown order sent", ``-4046`` "No need to change margin type" (the wanted state: not a refusal).
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import orjson

from workers.exchanges.base import AdapterError, Credentials, RestRequest, SnapshotRequest
from workers.exchanges.binanceusdm.private import REST_ORDER_FIELDS, order_event, signed_request
from workers.exchanges.binanceusdm.wire import EXCHANGE_ID, POSITIONS_PATH
from workers.exchanges.order_contract import ContractRules, OrderSpec, PositionInfo, TriggerSpec, VenueRefusal

ORDER_PATH = "/fapi/v1/order"
LEVERAGE_PATH = "/fapi/v1/leverage"
MARGIN_TYPE_PATH = "/fapi/v1/marginType"
ALGO_PATH = "/fapi/v1/algoOrder"
OPEN_ALGO_PATH = "/fapi/v1/openAlgoOrders"
EXCHANGE_INFO_PATH = "/fapi/v1/exchangeInfo"
_CLIENT_ID_RE = re.compile(r"[.A-Z:/a-z0-9_-]{1,36}")
_TIF = {"gtc": "GTC", "ioc": "IOC", "fok": "FOK", "post_only": "GTX"}
_WORKING_TYPES = {"last": "CONTRACT_PRICE", "mark": "MARK_PRICE"}
_NOT_FOUND = ("-2013", "-2011")
_ALREADY_SO = -4046


def _loads(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ValueError(f"binanceusdm answer is not JSON: {body[:80]!r}") from None


def _need_symbol(symbol: str) -> str:
    if not symbol:
        raise AdapterError("binanceusdm needs the order's symbol (?symbol=)")
    return symbol


class BinanceUsdmOrders:
    """Binance USD-M's ``OrderAdapter``. Client order ids are sent as they are (``newClientOrderId``)."""

    id = EXCHANGE_ID
    price_types = frozenset(_WORKING_TYPES)
    contract_sized = False

    def client_order_id(self, value: str | None, fresh: str) -> str:
        """``value``, or ``fp<fresh[:22]>``; AdapterError when Binance's pattern refuses it."""
        text = f"fp{fresh[:22]}" if value is None else value
        if not _CLIENT_ID_RE.fullmatch(text):
            raise AdapterError("binanceusdm client_order_id: 1 to 36 of . A-Z : / a-z 0-9 _ -")
        return text

    def refusal(self, status: int, body: bytes) -> VenueRefusal | None:
        """``{"code","msg"}`` with a status >= 400 -> VenueRefusal(status, str(code), msg); ``-4046`` (margin type
        already so) is no refusal."""
        if status < 400:
            return None
        try:
            msg = orjson.loads(body)
        except orjson.JSONDecodeError:
            msg = None
        if isinstance(msg, dict) and "code" in msg:
            if msg["code"] == _ALREADY_SO:
                return None
            return VenueRefusal(status, str(msg["code"]), str(msg.get("msg") or ""))
        return VenueRefusal(status, f"HTTP_{status}", body[:200].decode(errors="replace"))

    def is_not_found(self, refusal: VenueRefusal) -> bool:
        """``-2013`` Order does not exist, ``-2011`` Unknown order sent."""
        return refusal.code in _NOT_FOUND

    # -- positions, leverage, margin mode ---------------------------------------------------------------------

    def positions_request(self, creds: Credentials, symbol: str, now_ms: int) -> RestRequest:
        """``GET /fapi/v2/positionRisk?symbol=``."""
        return signed_request(creds, "GET", POSITIONS_PATH, {"symbol": symbol}, now_ms)

    def parse_positions(self, body: bytes, symbol: str) -> list[PositionInfo]:
        """One item in one-way mode (``BOTH``), LONG and SHORT in hedge mode."""
        items = _loads(body)
        if not isinstance(items, list):
            raise ValueError("binanceusdm positionRisk answer is not a list")  # noqa: TRY004 (an exchange answer)
        out = []
        for p in items:
            if not isinstance(p, dict) or p.get("symbol") != symbol:
                continue
            side = str(p.get("positionSide", "BOTH"))
            margin = p.get("marginType")
            out.append(PositionInfo(symbol, {"LONG": "long", "SHORT": "short"}.get(side, "both"),
                                    str(p.get("positionAmt", "0")), str(p["leverage"]) if "leverage" in p else None,
                                    None if margin is None else "isolated" if margin == "isolated" else "cross",
                                    side != "BOTH"))  # fmt: skip
        return out

    def leverage_requests(
        self, creds: Credentials, symbol: str, leverage: int | None, margin_mode: str | None,
        positions: list[PositionInfo], now_ms: int,
    ) -> list[tuple[str, RestRequest]]:
        """``marginType`` then ``leverage``, each only when ``positions`` show another value."""
        current = positions[0] if positions else None
        steps = []
        if margin_mode is not None and (current is None or current.margin_mode != margin_mode):
            params = {"symbol": symbol, "marginType": "ISOLATED" if margin_mode == "isolated" else "CROSSED"}
            steps.append(("margin_mode", signed_request(creds, "POST", MARGIN_TYPE_PATH, params, now_ms)))
        if leverage is not None and (current is None or current.leverage is None
                                     or Decimal(current.leverage) != leverage):  # fmt: skip
            params = {"symbol": symbol, "leverage": str(leverage)}
            steps.append(("leverage", signed_request(creds, "POST", LEVERAGE_PATH, params, now_ms)))
        return steps

    # -- orders --------------------------------------------------------------------------------------------

    def order_request(self, creds: Credentials, spec: OrderSpec, now_ms: int) -> RestRequest:
        """``POST /fapi/v1/order`` (parameters in the signed query string)."""
        params = {"symbol": spec.symbol, "side": spec.side.upper(), "type": spec.type.upper(), "quantity": spec.size}
        if spec.type == "limit":
            if spec.price is None:
                raise AdapterError("a limit order needs a price")
            params["price"] = spec.price
            params["timeInForce"] = _TIF[spec.time_in_force]
        if spec.position_side is not None:
            params["positionSide"] = spec.position_side.upper()
        elif spec.reduce_only:
            params["reduceOnly"] = "true"
        params["newClientOrderId"] = spec.client_order_id
        params["newOrderRespType"] = "RESULT"
        return signed_request(creds, "POST", ORDER_PATH, params, now_ms)

    def get_request(
        self, creds: Credentials, symbol: str, order_id: str | None, client_order_id: str | None, now_ms: int
    ) -> RestRequest:
        """``GET /fapi/v1/order?symbol=&orderId=`` (or ``origClientOrderId``)."""
        params = {"symbol": _need_symbol(symbol)}
        if order_id:
            params["orderId"] = order_id
        elif client_order_id:
            params["origClientOrderId"] = client_order_id
        else:
            raise AdapterError("an order id or a client order id is needed")
        return signed_request(creds, "GET", ORDER_PATH, params, now_ms)

    def cancel_request(self, creds: Credentials, symbol: str, order_id: str, now_ms: int) -> RestRequest:
        """``DELETE /fapi/v1/order?symbol=&orderId=``."""
        return signed_request(creds, "DELETE", ORDER_PATH, {"symbol": _need_symbol(symbol), "orderId": order_id},
                              now_ms)  # fmt: skip

    def parse_order(self, body: bytes, account: str, ts_received_ms: int) -> dict[str, Any]:
        """An order answer (``RESULT``) as an OrderEvent (``private.order_event`` with the REST field names)."""
        o = _loads(body)
        if not isinstance(o, dict):
            raise ValueError("binanceusdm order answer is not an object")  # noqa: TRY004 (an exchange answer)
        try:
            return order_event(o, REST_ORDER_FIELDS, account, o.get("updateTime"), ts_received_ms, False)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed binanceusdm order: {exc!r}") from None

    def close_spec(self, symbol: str, side: str, positions: list[PositionInfo], client_order_id: str) -> OrderSpec | None:
        """A market order of the position's whole quantity: ``reduceOnly`` in one-way mode, ``positionSide`` in hedge
        mode; None when flat."""
        for p in positions:
            size = Decimal(p.size)
            if size == 0:
                continue
            close_side = "sell" if side == "long" else "buy"
            if p.hedge and p.side == side:
                return OrderSpec(symbol, close_side, "market", format(abs(size), "f"), None, "gtc", False,
                                 client_order_id, position_side=side)  # fmt: skip
            if not p.hedge and (size > 0) == (side == "long"):
                return OrderSpec(symbol, close_side, "market", format(abs(size), "f"), None, "gtc", True,
                                 client_order_id)  # fmt: skip
        return None

    # -- take-profit / stop-loss (Algo orders) -----------------------------------------------------------------

    def trigger_request(self, creds: Credentials, spec: TriggerSpec, now_ms: int) -> RestRequest:
        """``POST /fapi/v1/algoOrder``: a ``TAKE_PROFIT_MARKET``/``STOP_MARKET`` with ``closePosition=true``."""
        if spec.price_type not in _WORKING_TYPES:
            raise AdapterError("binanceusdm triggers fire on the last (contract) or mark price, not the index")
        params = {"algoType": "CONDITIONAL", "symbol": spec.symbol, "side": "SELL" if spec.position == "long" else "BUY"}
        if spec.hedge:
            params["positionSide"] = spec.position.upper()
        params.update(type="TAKE_PROFIT_MARKET" if spec.kind == "take_profit" else "STOP_MARKET",
                      triggerPrice=spec.price, workingType=_WORKING_TYPES[spec.price_type], closePosition="true",
                      clientAlgoId=spec.client_order_id)  # fmt: skip
        return signed_request(creds, "POST", ALGO_PATH, params, now_ms)

    def parse_trigger(self, body: bytes) -> str:
        """``{"algoId": 2146760, ...}`` -> ``"2146760"``."""
        msg = _loads(body)
        if not isinstance(msg, dict) or msg.get("algoId") is None:
            raise ValueError("binanceusdm algo order answer has no algoId")
        return str(msg["algoId"])

    def cancel_trigger_request(self, creds: Credentials, symbol: str, trigger_id: str, now_ms: int) -> RestRequest:
        """``DELETE /fapi/v1/algoOrder?algoId=``."""
        return signed_request(creds, "DELETE", ALGO_PATH, {"algoId": trigger_id}, now_ms)

    def open_triggers_request(self, creds: Credentials, now_ms: int) -> RestRequest:
        """``GET /fapi/v1/openAlgoOrders``."""
        return signed_request(creds, "GET", OPEN_ALGO_PATH, {}, now_ms)

    def parse_open_triggers(self, body: bytes) -> list[tuple[str, str]]:
        """``(symbol, algoId)`` of each open algo order (a list, or ``{"orders": [...]}``)."""
        msg = _loads(body)
        items = msg.get("orders", []) if isinstance(msg, dict) else msg
        if not isinstance(items, list):
            raise ValueError("binanceusdm openAlgoOrders answer is not a list")  # noqa: TRY004 (an exchange answer)
        return [(str(t.get("symbol", "")), str(t["algoId"])) for t in items if isinstance(t, dict) and "algoId" in t]

    # -- contract rules ----------------------------------------------------------------------------------------

    def contract_request(self, symbol: str) -> SnapshotRequest:
        """``GET /fapi/v1/exchangeInfo`` (public; every symbol)."""
        return SnapshotRequest(EXCHANGE_INFO_PATH, {})

    def parse_contract(self, body: bytes, symbol: str) -> ContractRules:
        """``PRICE_FILTER.tickSize`` and ``LOT_SIZE.stepSize``/``minQty`` of ``symbol``; multiplier 1 (quantities are
        base units); no price in exchangeInfo."""
        info = _loads(body)
        for s in info.get("symbols", []) if isinstance(info, dict) else []:
            if isinstance(s, dict) and s.get("symbol") == symbol:
                filters = {f.get("filterType"): f for f in s.get("filters", []) if isinstance(f, dict)}
                price, lot = filters.get("PRICE_FILTER", {}), filters.get("LOT_SIZE", {})
                return ContractRules(symbol, tick=price.get("tickSize"), lot=lot.get("stepSize"),
                                     min_size=lot.get("minQty"))  # fmt: skip
        raise ValueError(f"no binanceusdm symbol {symbol}")
