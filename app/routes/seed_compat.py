"""The seed Gate.io connector's routes, unchanged for its clients, on top of the order routes (Gate.io only).

==============================================================  ============================================
``POST /gate/place-futures-order``                               ``POST /orders`` (exchange gateio)
``POST /gate/close-futures-order``                               ``POST /positions/close``
``DELETE /gate/cancel-futures-order?trade_id=&tp_id=&sl_id=``    ``DELETE /orders/{trade_id}``
``GET /gate/get-futures-order?trade_id=``                        ``GET /orders/{trade_id}``
``GET /sse/sse/orders/{userId}``                                 ``GET /sse/orders/{userId}?exchange=gateio``
==============================================================  ============================================

Body of a place (the connector's zod schema): ``userId`` (the account; also the Gate user id), ``market_type``
market|limit, ``price`` (a JSON number; ignored for market), ``contract``, ``leverage``, ``leverage_type``
ISOLATED|CROSS, ``size`` (a JSON integer: contracts), ``position_type`` long|short, ``take_profit``/``stop_loss``
``{"enabled", "price", "price_type"}``, optional ``reduce_only``. Numbers are read exactly: the body is parsed with
``Decimal`` for every JSON number, so ``50000.1`` stays ``"50000.1"``. The account of other routes comes from
``userId`` in the body or the query (``default`` when absent).

Headers ``api-key`` and ``api-secret`` store or refresh account ``gateio:{userId}`` exactly as ``POST /accounts`` does
(encrypted under FEEDPLANE_SECRET_KEY, uid = userId), and only for a control token or in open loopback mode (403
otherwise; 403 ``accounts_disabled`` without FEEDPLANE_SECRET_KEY). They are never logged or echoed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from decimal import Decimal
from typing import Any

from marshmallow import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app import order_schemas
from app.auth import PRIVATE_SSE_RULE, auth_context
from app.errors import ApiError, now_ms
from app.routes import orders
from app.routes.sse import private_stream
from control.accounts import API, CONTROL, configured_accounts, parse_account, put_api_account

logger = logging.getLogger(__name__)

EXCHANGE = "gateio"


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        value = json.loads(raw, parse_float=Decimal, parse_int=Decimal) if raw.strip() else None
    except ValueError as exc:
        raise ApiError(400, "invalid_json", f"request body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ApiError(400, "invalid_json", "request body must be a JSON object")
    return value


def _text(value: Any, name: str) -> str:
    """A JSON number (parsed as Decimal) or a decimal string -> its exact decimal text."""
    if isinstance(value, Decimal) and value.is_finite():
        return format(value.normalize(), "f") if value == value.to_integral_value() else format(value, "f")
    if isinstance(value, str):
        return value
    raise ValidationError({name: ["must be a number"]})


def _user(data: dict[str, Any], request: Request) -> str:
    user = data.get("userId", data.get("user_id")) or request.query_params.get("userId") or "default"
    return _text(user, "userId") if isinstance(user, Decimal) else str(user)


async def _store_keys(request: Request, user: str) -> None:
    """The ``api-key``/``api-secret`` headers -> account ``gateio:{user}`` (see the module docstring)."""
    key, secret = request.headers.get("api-key"), request.headers.get("api-secret")
    if key is None and secret is None:
        return
    ctx = auth_context(request)
    if ctx is None or (ctx.grant is not None and CONTROL not in ctx.grant.scopes):
        raise ApiError(403, "forbidden", "api-key/api-secret headers store an account: a control token is needed")
    settings = request.app.state.settings
    if not settings.secret_key:
        raise ApiError(403, "accounts_disabled", "storing the api-key/api-secret headers needs FEEDPLANE_SECRET_KEY "
                       "(accounts are stored only encrypted)")  # fmt: skip
    entry = {"exchange": EXCHANGE, "account": user, "api_key": key or "", "api_secret": secret or ""}
    if user.isdigit():
        entry["uid"] = user
    account = parse_account(entry, source=API)
    if any(a.ref == account.ref for a in configured_accounts(settings)):
        raise ApiError(409, "account_exists", f"{account.ref} is configured in the environment or ACCOUNTS_FILE")
    digest = hashlib.sha256(f"{account.api_key}\n{account.api_secret}\n{account.uid}".encode()).hexdigest()
    stored: dict[str, str] = request.app.state.__dict__.setdefault("seed_account_digests", {})
    if stored.get(account.ref) == digest:
        return  # unchanged since this process stored it: no rewrite, no worker reload
    await put_api_account(request.app.state.store.redis, account, key=settings.secret_key, now_ms=now_ms())
    stored[account.ref] = digest
    logger.info("account %s stored from api-key headers (key %s)", account.ref, account.fingerprint)


def _trigger(value: Any, name: str) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - {"enabled", "price", "price_type"}:
        raise ValidationError({name: ["expected {enabled, price, price_type}"]})
    if not value.get("enabled"):
        return None
    if value.get("price") is None:
        raise ValidationError({name: ["price is required when enabled is true"]})
    return {"price": _text(value["price"], f"{name}.price"), "price_type": value.get("price_type") or "last"}


def order_body(data: dict[str, Any], user: str) -> dict[str, Any]:
    """The seed's place body as a ``POST /orders`` body (exact decimal texts). Raises ValidationError (400)."""
    order_schemas.SEED_PLACE.load(data)  # its shape: fields known, types (the values are checked below)
    market = data.get("market_type")
    body: dict[str, Any] = {
        "exchange": EXCHANGE, "account": user, "symbol": data.get("contract"), "type": market,
        "position_type": data.get("position_type"), "size": _text(data.get("size"), "size"),
        "take_profit": _trigger(data.get("take_profit"), "take_profit"),
        "stop_loss": _trigger(data.get("stop_loss"), "stop_loss"),
    }  # fmt: skip
    if market == "limit":
        body["price"] = _text(data.get("price"), "price")
    if data.get("leverage") is not None:
        leverage = data["leverage"]
        if not isinstance(leverage, Decimal) or leverage != leverage.to_integral_value():
            raise ValidationError({"leverage": ["must be an integer"]})
        body["leverage"] = int(leverage)
    if data.get("leverage_type") is not None:
        kind = str(data["leverage_type"]).lower()
        if kind not in ("isolated", "cross"):
            raise ValidationError({"leverage_type": ["must be ISOLATED or CROSS"]})
        body["margin_mode"] = kind
    if data.get("reduce_only") is not None:
        body["reduce_only"] = data["reduce_only"]
    return {k: v for k, v in body.items() if v is not None}


async def place(request: Request) -> Response:
    """``POST /gate/place-futures-order`` -> as ``POST /orders``.
    ---
    post:
      summary: the seed Gate.io connector's place (as POST /orders on gateio; api-key/api-secret headers store it)
      parameters: [{in: query, schema: SeedQuerySchema}, ApiKey, ApiSecret]
      requestBody: {required: true, content: {application/json: {schema: SeedPlaceSchema}}}
      x-orders: placed
    """
    orders._enabled(request)
    data = await _body(request)
    user = _user(data, request)
    payload = order_body(data, user)
    exchange, account, args = order_schemas.order_args(payload, EXCHANGE)
    await _store_keys(request, user)
    return await orders.submit(request, orders.PLACE, exchange, account, args)


async def close(request: Request) -> Response:
    """``POST /gate/close-futures-order`` ``{"contract", "auto_size": "close_long"|"close_short"}`` -> as
    ``POST /positions/close``.
    ---
    post:
      summary: the seed Gate.io connector's close (as POST /positions/close on gateio)
      parameters: [{in: query, schema: SeedQuerySchema}, ApiKey, ApiSecret]
      requestBody: {required: true, content: {application/json: {schema: SeedCloseSchema}}}
      x-orders: placed
    """
    orders._enabled(request)
    data = await _body(request)
    order_schemas.SEED_CLOSE.load(data)
    user = _user(data, request)
    payload = {"exchange": EXCHANGE, "account": user, "symbol": data.get("contract"), "auto_size": data.get("auto_size")}
    exchange, account, args = order_schemas.close_args(payload, EXCHANGE)
    await _store_keys(request, user)
    return await orders.submit(request, orders.CLOSE, exchange, account, args)


async def _by_trade_id(request: Request, op: str) -> Response:
    orders._enabled(request)
    q = request.query_params
    trade_id = q.get("trade_id")
    if not trade_id:
        raise ValidationError({"trade_id": ["required"]})
    user = _user({}, request)
    query = {"exchange": EXCHANGE, "account": user, "tp_id": q.get("tp_id"), "sl_id": q.get("sl_id"),
             "symbol": q.get("contract")}  # fmt: skip
    exchange, account, args = order_schemas.order_ref({k: v for k, v in query.items() if v}, trade_id, None, EXCHANGE)
    await _store_keys(request, user)
    return await orders.submit(request, op, exchange, account, args)


async def cancel(request: Request) -> Response:
    """``DELETE /gate/cancel-futures-order?trade_id=&tp_id=&sl_id=`` -> as ``DELETE /orders/{trade_id}``.
    ---
    delete:
      summary: the seed Gate.io connector's cancel (as DELETE /orders/{trade_id} on gateio)
      parameters: [{in: query, schema: SeedTradeQuerySchema}, ApiKey, ApiSecret]
      x-orders: canceled
    """
    return await _by_trade_id(request, orders.CANCEL)


async def get_order(request: Request) -> Response:
    """``GET /gate/get-futures-order?trade_id=`` -> as ``GET /orders/{trade_id}``.
    ---
    get:
      summary: the seed Gate.io connector's order lookup (as GET /orders/{trade_id} on gateio)
      parameters: [{in: query, schema: SeedTradeQuerySchema}, ApiKey, ApiSecret]
      x-orders: one
    """
    return await _by_trade_id(request, orders.GET)


async def sse_orders(request: Request) -> Response:
    """``GET /sse/sse/orders/{userId}`` -> the ``gateio:order:{userId}`` stream, as ``/sse/orders/{account}``.
    ---
    get:
      summary: the seed connector's order stream (as GET /sse/orders/{userId}?exchange=gateio)
      parameters: [LastEventId]
      responses: {200: EventStream}
    """
    return await private_stream(request, "order", EXCHANGE, request.path_params["userId"])


POLICY = [
    (Route("/gate/place-futures-order", place, methods=["POST"]), orders.ORDER_RULE),
    (Route("/gate/close-futures-order", close, methods=["POST"]), orders.ORDER_RULE),
    (Route("/gate/cancel-futures-order", cancel, methods=["DELETE"]), orders.ORDER_RULE),
    (Route("/gate/get-futures-order", get_order, methods=["GET"]), orders.ORDER_RULE),
    (Route("/sse/sse/orders/{userId}", sse_orders, methods=["GET"], name="sse_seed_orders"), PRIVATE_SSE_RULE),
]
