"""Control endpoints: subscribe/unsubscribe klines, trades, ticker, best bid/ask and order books; one account's
private orders, positions and balances; stop/start.

Handlers validate everything (body, query) before calling ``app.dispatch.Dispatcher``, the only writer.
Request bodies are never logged (later versions may carry secrets).

Private streams (``/orders``, ``/positions``, ``/balances``): the body is optional, ``{"exchange", "account"}``
(DEFAULT_EXCHANGE and ``default`` when left out); the topic is ``{exchange}:{order|position|balance}:{account}``.
Subscribing needs a known account (environment, ACCOUNTS_FILE, or POST /accounts): an unknown one is 400
``validation_error`` and nothing is written. Unsubscribing does not check it, so topics of a deleted account can
still be removed. The workers open one socket per account and publish a ``gap`` then a REST snapshot
(``snapshot: true``) on each (re)connect. Read them with ``GET /sse/{orders,positions,balances}/{account}``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import orjson
from marshmallow import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app import schemas
from app.errors import ApiError, now_ms
from app.query import check_query
from app.routes.status import decorate_subscriptions
from control.accounts import api_account_records, configured_accounts
from control.store import ACTIVE, FAILED

#: How often ``?wait=`` re-reads subscription states (workers do not publish state changes reliably).
WAIT_POLL_S = 0.1


async def read_json(request: Request, *, optional: bool = False) -> Any:
    """The body as a JSON object (``{}`` for an absent optional body: zero bytes). Raises ApiError
    ``invalid_json`` (400), also for a body of only whitespace (not JSON, and not absent either)."""
    body = await request.body()
    if not body and optional:
        return {}
    if not body.strip():
        raise ApiError(400, "invalid_json", "request body must be a JSON object")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"request body is not valid JSON: {exc.msg}") from None
    if not isinstance(value, dict):
        raise ApiError(400, "invalid_json", f"request body must be a JSON object, not {type(value).__name__}")
    return value


async def _wait_settled(request: Request, topics: list[str], wait_s: float) -> tuple[bool, list[dict[str, Any]]]:
    """Re-read states every WAIT_POLL_S until every topic is active or failed, at most ``wait_s`` seconds."""
    store = request.app.state.store
    deadline = time.monotonic() + wait_s
    while True:
        records = await store.subscriptions(topics)
        settled = all(r["state"] in (ACTIVE, FAILED) for r in records)
        remaining = deadline - time.monotonic()
        if settled or remaining <= 0:
            return settled, decorate_subscriptions(records, request.app.state.settings, now_ms())
        await asyncio.sleep(min(WAIT_POLL_S, remaining))


def _subscribe(topics_of: Callable[[Any, str], Any]) -> Callable[[Request], Any]:
    """A subscribe endpoint; ``topics_of`` returns topics, or (topics, options) for depth."""

    async def endpoint(request: Request) -> Response:
        check_query(request.query_params, schemas.WaitQuerySchema)
        wait_s = schemas.wait_seconds(request.query_params.get("wait"))
        parsed = topics_of(await read_json(request), request.app.state.settings.default_exchange)
        topics, options = parsed if isinstance(parsed, tuple) else (parsed, None)
        result = await request.app.state.dispatcher.subscribe(topics, now_ms(), options)
        status = 202
        if wait_s is not None:
            settled, records = await _wait_settled(request, topics, wait_s)
            result["subscriptions"] = records
            status = 200 if settled else 202
        return JSONResponse(result, status_code=status)

    endpoint.__doc__ = "POST body -> 202 {accepted, added, already, paused} (200 + subscriptions when ?wait settles)."
    return endpoint


_SUBSCRIBED = """
      responses:
        202:
          description: accepted (workers subscribe shortly)
          content: {application/json: {schema: SubscribeResponseSchema}}
        200:
          description: with ?wait, every topic settled (active or failed); each topic's state included
          content: {application/json: {schema: SubscribeResponseSchema}}"""
_UNSUBSCRIBED = """
      responses:
        200:
          description: removed (workers unsubscribe shortly)
          content: {application/json: {schema: UnsubscribeResponseSchema}}"""


def _doc(summary: str, schema: str, answers: str, *, wait: bool, body_required: bool = True, text: str = "") -> str:
    """The endpoint's docstring (``text``, else ``summary``) with its OpenAPI operation (``app.openapi``): JSON
    body ``schema``, ``?wait`` when ``wait``, the ``answers`` YAML."""
    params = "\n      parameters: [{in: query, schema: WaitQuerySchema}]" if wait else ""
    return (
        f"{text or summary}\n---\npost:\n      summary: {json.dumps(summary)}{params}\n"
        f"      requestBody:\n        required: {str(body_required).lower()}\n"
        f"        content: {{application/json: {{schema: {schema}}}}}{answers}\n"
    )


def _documented(endpoint: Callable[[Request], Any], doc: str) -> Callable[[Request], Any]:
    endpoint.__doc__ = doc
    return endpoint


def _unsubscribe(topics_of: Callable[[Any, str], list[str]]) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> Response:
        check_query(request.query_params)
        topics = topics_of(await read_json(request), request.app.state.settings.default_exchange)
        return JSONResponse(await request.app.state.dispatcher.unsubscribe(topics))

    endpoint.__doc__ = "POST body -> 200 {removed, not_subscribed}."
    return endpoint


async def stop(request: Request) -> Response:
    """``POST /stop`` (optional ``{"clear": bool}``) -> 200 ``{"stopped": true, "paused", "cleared"}``.
    ---
    post:
      summary: pause streaming in every worker (desired state kept); clear=true forgets every subscription
      requestBody:
        required: false
        content: {application/json: {schema: StopRequestSchema}}
      responses:
        200: {description: stopped, content: {application/json: {schema: StopResponseSchema}}}
    """
    check_query(request.query_params)
    clear = schemas.stop_clear(await read_json(request, optional=True))
    return JSONResponse(await request.app.state.dispatcher.stop(clear))


async def start(request: Request) -> Response:
    """``POST /start`` -> 200 ``{"started": true, "topics": n}``.
    ---
    post:
      summary: resume streaming the desired state
      responses:
        200: {description: started, content: {application/json: {schema: StartResponseSchema}}}
    """
    check_query(request.query_params)
    return JSONResponse(await request.app.state.dispatcher.start())


async def known_accounts(request: Request) -> set[str]:
    """``"exchange:account"`` of every account workers can use: environment and ACCOUNTS_FILE, plus those added
    with POST /accounts when FEEDPLANE_SECRET_KEY is set (workers cannot open them otherwise). No secret is read."""
    settings = request.app.state.settings
    refs = {account.ref for account in configured_accounts(settings)}
    if settings.secret_key:
        refs.update(f"{r['exchange']}:{r['account']}" for r in await api_account_records(request.app.state.store.redis))
    return refs


def _private_subscribe(channel: str) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> Response:
        check_query(request.query_params, schemas.WaitQuerySchema)
        wait_s = schemas.wait_seconds(request.query_params.get("wait"))
        body = await read_json(request, optional=True)
        topic, exchange, account = schemas.private_request(channel, body, request.app.state.settings.default_exchange)
        if f"{exchange}:{account}" not in await known_accounts(request):
            message = f"unknown account {exchange}:{account}: configure it (environment, ACCOUNTS_FILE, POST /accounts)"
            raise ValidationError({"account": [message]})
        result = await request.app.state.dispatcher.subscribe([topic], now_ms())
        status = 202
        if wait_s is not None:
            settled, records = await _wait_settled(request, [topic], wait_s)
            result["subscriptions"] = records
            status = 200 if settled else 202
        return JSONResponse(result, status_code=status)

    text = (
        f"POST optional body {{exchange, account}} -> 202 {{accepted, added, already, paused}} for the topic "
        f"``{{exchange}}:{channel}:{{account}}`` (200 + subscriptions when ?wait settles; 400 unknown account)."
    )
    summary = f"subscribe one account's {channel}s (topic exchange:{channel}:account; 400 for an unknown account)"
    endpoint.__doc__ = _doc(summary, "PrivateRequestSchema", _SUBSCRIBED, wait=True, body_required=False, text=text)
    return endpoint


def _private_unsubscribe(channel: str) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> Response:
        check_query(request.query_params)
        body = await read_json(request, optional=True)
        topic, _, _ = schemas.private_request(channel, body, request.app.state.settings.default_exchange)
        return JSONResponse(await request.app.state.dispatcher.unsubscribe([topic]))

    text = f"POST optional body {{exchange, account}} -> 200 {{removed, not_subscribed}} ({channel} topic)."
    summary = f"unsubscribe one account's {channel}s"
    endpoint.__doc__ = _doc(summary, "PrivateRequestSchema", _UNSUBSCRIBED, wait=False, body_required=False, text=text)
    return endpoint


_PUBLIC_CHANNELS = [
    # (path part, topics_of for subscribe, for unsubscribe, body schema, what)
    ("klines", schemas.kline_topics, schemas.kline_topics, "KlinesRequestSchema", "klines"),
    ("trades", schemas.trade_topics, schemas.trade_topics, "SymbolsRequestSchema", "public trades"),
    ("ticker", schemas.ticker_topics, schemas.ticker_topics, "SymbolsRequestSchema", "24 h tickers"),
    ("bookticker", schemas.bookticker_topics, schemas.bookticker_topics, "SymbolsRequestSchema", "best bid/ask"),
    ("depth", schemas.depth_request, schemas.depth_topics, "DepthRequestSchema", "order books (top-N snapshots)"),
]


def _public_routes() -> list[Route]:
    routes = []
    for part, sub, unsub, schema, what in _PUBLIC_CHANNELS:
        routes.append(Route(f"/{part}/subscribe", _documented(_subscribe(sub), _doc(
            f"subscribe {what} (one symbol or up to {schemas.MAX_SYMBOLS})", schema, _SUBSCRIBED, wait=True)),
            methods=["POST"], name=f"{part}_subscribe"))  # fmt: skip
        routes.append(Route(f"/{part}/unsubscribe", _documented(_unsubscribe(unsub), _doc(
            f"unsubscribe {what}", schema, _UNSUBSCRIBED, wait=False)),
            methods=["POST"], name=f"{part}_unsubscribe"))  # fmt: skip
    return routes


ROUTES = [
    *_public_routes(),
    Route("/orders/subscribe", _private_subscribe("order"), methods=["POST"], name="orders_subscribe"),
    Route("/orders/unsubscribe", _private_unsubscribe("order"), methods=["POST"], name="orders_unsubscribe"),
    Route("/positions/subscribe", _private_subscribe("position"), methods=["POST"], name="positions_subscribe"),
    Route("/positions/unsubscribe", _private_unsubscribe("position"), methods=["POST"], name="positions_unsubscribe"),
    Route("/balances/subscribe", _private_subscribe("balance"), methods=["POST"], name="balances_subscribe"),
    Route("/balances/unsubscribe", _private_unsubscribe("balance"), methods=["POST"], name="balances_unsubscribe"),
    Route("/stop", stop, methods=["POST"]),
    Route("/start", start, methods=["POST"]),
]
