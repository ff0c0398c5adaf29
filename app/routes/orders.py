"""Order routes: ``POST /orders``, ``POST /positions/close``, ``DELETE /orders/{order_id}``, ``GET /orders/{order_id}``,
``GET /orders/client/{client_order_id}``, ``POST /trading/halt``, ``POST /trading/resume``.

Each handler validates (``app.order_schemas``), checks that orders are on (``ORDERS_ENABLED=1``, else 409
``orders_disabled``, a 4xx), the caller (a control token, or an account token for its own account: ``require_account``),
the kill switch (423 ``trading_halted``) and the account's symbol and leverage guards (403 ``guard_*``), subscribes
the account's order topic when it is not yet (the order's updates arrive there), then hands the request to the
workers through Redis and waits for the answer (``OrderGateway``; README "Orders" explains why not arq). The
answer's status and body are the worker's: 201 placed, 502 ``exchange_error`` with the exchange's code and message
and the steps done, 504 ``order_timeout`` when no worker answered in ``ORDERS_TIMEOUT_S`` (retry with the same
``client_order_id``: it is never placed twice). Request bodies are never logged.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import orjson
from marshmallow import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app import order_schemas
from app.auth import CONTROL_RULE, PRIVATE_SSE_RULE, Rule, auth_context, require_account
from app.errors import ApiError, error_response, now_ms
from app.query import OrderClientQuerySchema, OrderRefQuerySchema, check_query
from app.routes.control import read_json
from control import keys
from control.accounts import CONTROL, api_account_records, configured_accounts
from control.orders import (
    CANCEL,
    CANCEL_OPEN,
    CLOSE,
    GET,
    HALT,
    HALT_ALL,
    PLACE,
    QUEUE,
    OrderRequest,
    halted,
    reply_key,
)

#: Orders (and account tokens) use the ``account`` rule: any valid token, then ``require_account`` in the handler.
ORDER_RULE = Rule(PRIVATE_SSE_RULE.access)


def new_client_order_id() -> str:
    """``fp`` + 22 hex characters: valid as a Gate ``text`` (after ``t-``) and a Binance ``newClientOrderId``."""
    return "fp" + secrets.token_hex(11)


class OrderGateway:
    """Puts order requests on ``fp:orders:queue`` and waits (BLPOP) for the worker's answer."""

    def __init__(self, request: Request) -> None:
        self.settings = request.app.state.settings
        self.redis = request.app.state.store.redis

    def request(self, op: str, exchange: str, account: str, args: dict[str, Any]) -> OrderRequest:
        """A request whose deadline is ``ORDERS_TIMEOUT_S`` from now."""
        sent = now_ms()
        deadline = sent + int(self.settings.orders_timeout_s * 1000)
        return OrderRequest(op, exchange, account, args, deadline_ms=deadline, sent_ms=sent)

    async def ask(self, op: str, exchange: str, account: str, args: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Queue a request and wait for its answer."""
        req = self.request(op, exchange, account, args)
        await self.redis.lpush(QUEUE, req.encode())
        return await self.wait(req)

    async def wait(self, req: OrderRequest) -> tuple[int, dict[str, Any]]:
        """``(status, body)`` of the worker's answer to ``req``; 504 ``order_timeout`` after ``ORDERS_TIMEOUT_S``."""
        timeout_s = self.settings.orders_timeout_s
        got = await self.redis.blpop([reply_key(req.id)], timeout=timeout_s)
        if got is None:
            details = {"client_order_id": req.args.get("client_order_id")} if req.op in (PLACE, CLOSE) else {}
            return 504, {"error": {"code": "order_timeout", "message": f"no worker answered within {timeout_s:g} s; "
                         "the outcome is unknown: retry with the same client_order_id (never placed twice), or read "
                         "the order with GET /orders/client/{client_order_id}", "details": details}}  # fmt: skip
        reply = orjson.loads(got[1])
        return int(reply["status"]), reply["body"]


def _respond(status: int, body: dict[str, Any]) -> Response:
    if status >= 400 and "error" in body:
        e = body["error"]
        return error_response(status, e["code"], e["message"], e.get("details"))
    return JSONResponse(body, status_code=status)


def _enabled(request: Request) -> None:
    """403 for a token that may trade no account (before anything else), then 409 ``orders_disabled`` when
    ``ORDERS_ENABLED`` is not 1 (a 4xx: a disabled feature is no server error)."""
    ctx = auth_context(request)
    grant = ctx.grant if ctx is not None else None
    if ctx is None or (grant is not None and CONTROL not in grant.scopes and not any(
            ref.partition(":")[0] in order_schemas.ORDER_EXCHANGES for ref in grant.accounts)):
        raise ApiError(403, "forbidden", "this token may not trade: a control token, or a token listing the account")
    if not request.app.state.settings.orders_enabled:
        raise ApiError(409, "orders_disabled", "order execution is off: set ORDERS_ENABLED=1 (control server and "
                       "workers) to turn it on")  # fmt: skip


async def submit(request: Request, op: str, exchange: str, account: str, args: dict[str, Any]) -> Response:
    """Check, queue and answer one request (see the module docstring).

    One Redis round trip carries the checks (account known, kill switch, order topic subscribed); only a request
    that passes them is queued (``LPUSH``): a refused request (unknown account 400, halted 423) changes nothing in
    Redis. Then ``BLPOP`` for the worker's answer (the worker checks account and kill switch again)."""
    require_account(request, exchange, account)
    settings = request.app.state.settings
    new = op in (PLACE, CLOSE)
    if new:
        refusal = settings.order_guard(exchange, account).refusal(args["symbol"], args.get("leverage"))
        if refusal is not None:
            raise ApiError(403, refusal[0], refusal[1])
        args["client_order_id"] = args.get("client_order_id") or new_client_order_id()
    gateway = OrderGateway(request)
    req = gateway.request(op, exchange, account, args)
    ref, topic = f"{exchange}:{account}", f"{exchange}:order:{account}"
    async with gateway.redis.pipeline(transaction=False) as pipe:
        pipe.hexists(keys.ACCOUNTS, ref)
        pipe.hgetall(HALT)
        pipe.hexists(keys.DESIRED, topic)
        stored, halts, subscribed = await pipe.execute()
    if not (any(a.ref == ref for a in configured_accounts(settings)) or (stored and settings.secret_key)):
        message = f"unknown account {ref}: configure it (environment, ACCOUNTS_FILE, POST /accounts)"
        raise ValidationError({"account": [message]})
    if new and (halt_ref := halted(halts, exchange, account)) is not None:
        raise ApiError(423, "trading_halted", f"trading is halted for {halt_ref} (POST /trading/resume)")
    await gateway.redis.lpush(QUEUE, req.encode())
    if new and not subscribed:  # the order's updates arrive on the account's order topic
        await request.app.state.dispatcher.subscribe([topic], now_ms())
    return _respond(*await gateway.wait(req))


async def place_order(request: Request) -> Response:
    """``POST /orders`` -> 201 ``{"order", "take_profit", "stop_loss", "client_order_id", "steps", "recovered"}``.
    ---
    post:
      summary: place an order (then its take-profit/stop-loss); idempotent by client_order_id (ORDERS_ENABLED=1)
      requestBody: {required: true, content: {application/json: {schema: OrderSchema}}}
      x-orders: placed
    """
    _enabled(request)
    check_query(request.query_params)
    body = await read_json(request)
    exchange, account, args = order_schemas.order_args(body, request.app.state.settings.default_exchange)
    return await submit(request, PLACE, exchange, account, args)


async def close_position(request: Request) -> Response:
    """``POST /positions/close`` -> 201 ``{"order", "client_order_id", ...}``; 409 ``no_position`` when flat.
    ---
    post:
      summary: reduce-only market close of a whole position (ORDERS_ENABLED=1)
      requestBody: {required: true, content: {application/json: {schema: CloseSchema}}}
      x-orders: placed
    """
    _enabled(request)
    check_query(request.query_params)
    body = await read_json(request)
    exchange, account, args = order_schemas.close_args(body, request.app.state.settings.default_exchange)
    return await submit(request, CLOSE, exchange, account, args)


async def order(request: Request) -> Response:
    """``GET /orders/{order_id}`` -> 200 ``{"order"}`` (404 ``order_not_found``); ``DELETE`` -> 200 ``{"order",
    "take_profit", "stop_loss", "steps"}`` cancelling it and, with ``tp_id``/``sl_id``, its trigger orders.
    ---
    get:
      summary: an order as the exchange has it now (ORDERS_ENABLED=1)
      parameters: [{in: query, schema: OrderRefQuerySchema}]
      x-orders: one
    delete:
      summary: cancel an order and, with tp_id/sl_id, its take-profit/stop-loss (ORDERS_ENABLED=1)
      parameters: [{in: query, schema: OrderRefQuerySchema}]
      x-orders: canceled
    """
    _enabled(request)
    check_query(request.query_params, OrderRefQuerySchema)
    default = request.app.state.settings.default_exchange
    exchange, account, args = order_schemas.order_ref(request.query_params, request.path_params["order_id"], None,
                                                      default)  # fmt: skip
    return await submit(request, CANCEL if request.method == "DELETE" else GET, exchange, account, args)


async def order_by_client_id(request: Request) -> Response:
    """``GET /orders/client/{client_order_id}`` -> 200 ``{"order"}`` (404 ``order_not_found``).
    ---
    get:
      summary: an order by its client order id (ORDERS_ENABLED=1)
      parameters: [{in: query, schema: OrderClientQuerySchema}]
      x-orders: one
    """
    _enabled(request)
    check_query(request.query_params, OrderClientQuerySchema)
    default = request.app.state.settings.default_exchange
    exchange, account, args = order_schemas.order_ref(request.query_params, None,
                                                      request.path_params["client_order_id"], default)  # fmt: skip
    return await submit(request, GET, exchange, account, args)


async def _order_accounts(request: Request) -> list[tuple[str, str]]:
    """Every known account on an exchange with orders."""
    settings = request.app.state.settings
    refs = {(a.exchange, a.account) for a in configured_accounts(settings)}
    if settings.secret_key:
        refs.update((r["exchange"], r["account"]) for r in await api_account_records(request.app.state.store.redis))
    return sorted(r for r in refs if r[0] in order_schemas.ORDER_EXCHANGES)


async def halt(request: Request) -> Response:
    """``POST /trading/halt`` (control scope) -> 200 ``{"halted": "<exchange:account>"|"*", "cancel_open": [...]}``.

    New orders and closes are refused at once (control server and workers both check). With ``cancel_open`` the
    open orders and trigger orders of the account (or of every account) are cancelled; each account's outcome is
    listed (``status``, ``canceled``, ``failed``; an unknown account: ``status`` 400, ``error`` unknown_account).
    ---
    post:
      summary: "kill switch: refuse new orders and closes; cancel_open cancels open orders too (ORDERS_ENABLED=1)"
      requestBody: {required: false, content: {application/json: {schema: HaltSchema}}}
      responses:
        200: {description: halted, content: {application/json: {schema: HaltResponseSchema}}}
      x-orders: switch
    """
    _enabled(request)
    check_query(request.query_params)
    data = order_schemas.halt_args(await read_json(request, optional=True))
    ref = f"{data['exchange']}:{data['account']}" if data["exchange"] else HALT_ALL
    record = orjson.dumps({"since": now_ms(), "reason": data["reason"]}).decode()
    await request.app.state.store.redis.hset(HALT, ref, record)
    result: dict[str, Any] = {"halted": ref, "cancel_open": []}
    if data["cancel_open"]:
        known = await _order_accounts(request)
        targets = [(data["exchange"], data["account"])] if data["exchange"] else known
        for exchange, account in [t for t in targets if t not in known]:  # no worker can act for it: not asked
            result["cancel_open"].append({"exchange": exchange, "account": account, "status": 400, "error": {
                "code": "unknown_account", "message": f"unknown account {exchange}:{account}", "details": {}}})
        targets = [t for t in targets if t in known]
        gateway = OrderGateway(request)
        answers = await asyncio.gather(*(gateway.ask(CANCEL_OPEN, e, a, {}) for e, a in targets))
        for (exchange, account), (status, body) in zip(targets, answers, strict=True):
            result["cancel_open"].append({"exchange": exchange, "account": account, "status": status, **body})
    return JSONResponse(result)


async def resume(request: Request) -> Response:
    """``POST /trading/resume`` (control scope) -> 200 ``{"resumed": [...], "still_halted": bool}``: without a body
    every halt entry goes; with ``exchange``+``account`` that account's (a global halt still holds it).
    ---
    post:
      summary: lift the kill switch (every halt, or one account's) (ORDERS_ENABLED=1)
      requestBody: {required: false, content: {application/json: {schema: HaltSchema}}}
      responses:
        200: {description: resumed, content: {application/json: {schema: ResumeResponseSchema}}}
      x-orders: switch
    """
    _enabled(request)
    check_query(request.query_params)
    data = order_schemas.halt_args(await read_json(request, optional=True))
    redis = request.app.state.store.redis
    entries = await redis.hgetall(HALT)
    refs = list(entries) if not data["exchange"] else [f"{data['exchange']}:{data['account']}"]
    if refs:
        await redis.hdel(HALT, *refs)
    still = HALT_ALL in entries and HALT_ALL not in refs
    return JSONResponse({"resumed": [r for r in refs if r in entries], "still_halted": still})


POLICY = [
    (Route("/orders", place_order, methods=["POST"], name="orders_place"), ORDER_RULE),
    (Route("/orders/client/{client_order_id}", order_by_client_id, methods=["GET"], name="orders_client"),
     ORDER_RULE),
    (Route("/orders/{order_id}", order, methods=["GET", "DELETE"], name="orders_one"), ORDER_RULE),
    (Route("/positions/close", close_position, methods=["POST"], name="positions_close"), ORDER_RULE),
    (Route("/trading/halt", halt, methods=["POST"], name="trading_halt"), CONTROL_RULE),
    (Route("/trading/resume", resume, methods=["POST"], name="trading_resume"), CONTROL_RULE),
]  # fmt: skip
ROUTES = [route for route, _ in POLICY]
