"""Server-Sent Events: ``GET /sse?topic=..``, ``/sse/klines/{symbol}?tf=..``, ``/sse/trades/{symbol}``, and one
account's private streams ``/sse/orders/{account}``, ``/sse/positions/{account}``, ``/sse/balances/{account}``
(``?exchange=``, default DEFAULT_EXCHANGE; topic ``{exchange}:order:{account}`` ...).

Auth (``app.auth``): public streams need the ``read`` scope; a private stream needs a control token or a token
listing ``exchange:account``. A browser EventSource cannot send headers, so every route here also takes the
token as ``?access_token=`` (cut from the query string before the route sees it; never logged). ``/sse``
refuses private topics: they are served only by the per-account routes, where the account is checked.

Each event: ``event:`` the stored event's ``type``; ``data:`` the JSON exactly as the worker stored it;
``id:`` the cursor (``app.sse_cursor``): ``<fp>:<id>,<id>..``, e.g. ``"5d41402a:1732300000000-0,1732300000123-4"``,
where ``fp`` (8 hex digits) fingerprints the topic set and the ids are each topic's position (the last
delivered stream id) in the topics' sorted order. Treat it as opaque. The first event carries ``retry: 2000``.

Order of a stream: ``gap`` events (see below), catch-up entries (resume, or ``?backlog=N``), then one ``ready``
event (``{"type":"ready","topics":[..]}``: caught up, live from here, and a cursor to resume from even when no
data came yet), then live entries. On server shutdown a final ``bye`` event (``reason: "shutdown"``); a client
whose socket takes nothing for SSE_SEND_TIMEOUT_S is cut, ending with ``bye`` (``reason: "slow_consumer"``)
when its socket still takes it (``app.sse_stream``). A keep-alive comment (``: ping``) after SSE_PING_S without
data. Resume with the ``Last-Event-ID`` header (or ``?last_event_id=``; the header wins): nothing lost, nothing repeated, within stream retention; the
same topics in another order resume exactly. A bare stream id (``1732300000000-0``) is accepted for a
one-topic stream.

Gap events of a resume, one per affected topic, ``{"type":"gap","topic","reason","since","until"}`` (ms or null):

* ``retention``: entries after the cursor were trimmed (``STREAM_MAXLEN``) before the client came back;
  ``since`` = the cursor's ms, ``until`` = the first entry still kept. The catch-up continues from there.
* ``stream_reset``: the stream is not the one the cursor came from (key deleted, in-memory Redis restarted,
  older data restored), so entries after the cursor may be lost; ``until`` = the first entry after the cursor
  when there is one. The catch-up sends everything the stream has that is new to the client.
* ``invalid_cursor``: the cursor is malformed, belongs to another topic set, or lies in the future (after
  Redis ``TIME`` and the stream's last id). The topic starts live (or with ``?backlog=N`` when the whole cursor
  was unusable), as for a new client; ``since``/``until`` are null. Never a 400: a browser's EventSource
  would stop for good, while the events' ids now carry a good cursor for its next reconnect.

Redis outages: a request that cannot read its start position answers 503 ``redis_unavailable`` (the error
envelope) with ``Retry-After: 2``. A stream already open stays open while Redis is away: keep-alive comments
continue, the hub's reader reconnects by itself (``app.sse_hub``), and a catch-up or registration that fails is
retried with backoff from the client's cursor, so the stream resumes without loss or repetition once Redis is
back. A client that reconnects with ``Last-Event-ID`` after the outage gets everything it missed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from marshmallow import ValidationError
from redis.asyncio import Redis
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app import schemas
from app.auth import PRIVATE_SSE_RULE, SSE_RULE, require_account
from app.errors import error_response
from app.observe import metrics_of
from app.query import check_query
from app.sse_client import RETRY_MS, UNREACHABLE, ClientStream
from app.sse_cursor import CursorError, invalid_cursor_gaps, parse_cursor, resume_positions
from app.sse_hub import ZERO_ID, SSEHub, StreamId, parse_stream_id
from app.sse_stream import SSEResponse, StreamTicker
from app.sse_wire import sse_frame
from control import keys
from control.events import GapEvent
from control.topics import TopicError, is_private, private_topic

logger = logging.getLogger(__name__)

#: ``Retry-After`` (seconds) of a 503 while Redis is unreachable: the same pace as the stream's ``retry:`` hint.
RETRY_AFTER_S = str(-(-RETRY_MS // 1000))
#: Seconds the streams get to send ``bye`` after shutdown is signalled (kept below half of DRAIN_TIMEOUT_S,
#: which app.serve uses as hypercorn's graceful_timeout).
SHUTDOWN_GRACE_S = 2.0
__all__ = ["POLICY", "ROUTES", "make_ticker", "sse_frame"]


def make_ticker(settings: Any) -> StreamTicker:
    """The process's ``StreamTicker`` for ``settings`` (SSE_PING_S, SSE_SEND_TIMEOUT_S, DRAIN_TIMEOUT_S)."""
    return StreamTicker(ping_s=settings.sse_ping_s, send_timeout_s=settings.sse_send_timeout_s,
                        grace_s=min(SHUTDOWN_GRACE_S, settings.drain_timeout_s / 2))  # fmt: skip


async def _start_cursor(redis: Redis, topics: Sequence[str], backlog: int) -> dict[str, StreamId]:
    """Positions for a fresh client: each stream's last id ("now"), or the id before its last ``backlog`` entries."""
    async with redis.pipeline(transaction=False) as pipe:
        for topic in topics:
            pipe.xrevrange(keys.event_stream(topic), max="+", min="-", count=backlog + 1)
        results = await pipe.execute()
    cursor = {}
    for topic, raw in zip(topics, results):
        if backlog == 0:
            cursor[topic] = parse_stream_id(raw[0][0]) if raw else ZERO_ID
        else:  # exclusive start: the (backlog+1)-th newest entry, or the beginning
            cursor[topic] = parse_stream_id(raw[-1][0]) if len(raw) > backlog else ZERO_ID
    return cursor


async def _respond(request: Request, topics: list[str]) -> Response:
    """Validate the cursor/backlog, read start positions (Redis unreachable -> 503 with Retry-After), then stream."""
    state = request.app.state
    backlog = schemas.backlog_count(request.query_params.get("backlog"))  # validated even when a cursor is given
    raw_cursor = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    resume: dict[str, StreamId] | None = None
    gaps: list[GapEvent] = []
    if raw_cursor:
        try:
            resume = parse_cursor(raw_cursor, topics)
        except CursorError as exc:  # not a 400: that would end a browser's EventSource for good
            logger.info("sse cursor refused, starting live: %s", exc)
            gaps = invalid_cursor_gaps(topics)
    hub: SSEHub = state.hub
    joined = hub.join(topics) if resume is None and backlog == 0 else None
    if joined is not None:  # a new client of topics the hub already reads: starts at the hub's position
        sub, cursor = joined
        stream = ClientStream(hub, state.sse_redis, topics, cursor, gaps, sub, metrics_of(request.app))
        return SSEResponse(stream, state.sse_ticker)  # type: ignore[return-value]
    try:
        if resume is not None:
            cursor, gaps = await resume_positions(state.sse_redis, topics, resume)
        else:
            cursor = await _start_cursor(state.sse_redis, topics, backlog)
    except UNREACHABLE as exc:
        if (metrics := metrics_of(request.app)) is not None:
            metrics.redis_error("sse")
        logger.warning("sse request refused: redis unavailable: %s: %s", type(exc).__name__, exc)
        return error_response(503, "redis_unavailable", "Redis is unreachable; retry shortly (Last-Event-ID resumes)",
                              headers={"Retry-After": RETRY_AFTER_S})  # fmt: skip
    stream = ClientStream(state.hub, state.sse_redis, topics, cursor, gaps, metrics=metrics_of(request.app))
    return SSEResponse(stream, state.sse_ticker)  # type: ignore[return-value]


async def sse(request: Request) -> Response:
    """``GET /sse?topic=T[&topic=U..][&backlog=N][&last_event_id=C]`` -> text/event-stream.

    400 for bad topics or ``backlog``; an unusable cursor (``Last-Event-ID``/``last_event_id``) is not an error:
    the stream starts live after one ``gap`` per topic with ``reason: "invalid_cursor"`` (module docstring).
    ---
    get:
      summary: Server-Sent Events of 1..50 public topics; resume with Last-Event-ID
      parameters: [{in: query, schema: SseQuerySchema}, LastEventId]
      responses: {200: EventStream}
    """
    check_query(request.query_params, schemas.SseQuerySchema)
    topics = schemas.sse_topics(request.query_params.getlist("topic"))
    private = {str(i): [f"{t} is a private topic; use /sse/{t.split(':')[1]}s/{{account}}"]
               for i, t in enumerate(topics) if is_private(t)}  # fmt: skip
    if private:
        raise ValidationError({"topic": private})
    return await _respond(request, topics)


async def sse_klines(request: Request) -> Response:
    """``GET /sse/klines/{symbol}?tf=1m[&tf=5m][&exchange=..]`` -> same as ``/sse`` for those kline topics.
    ---
    get:
      summary: Server-Sent Events of one symbol's klines (shortcut of /sse)
      parameters: [{in: query, schema: SseKlinesQuerySchema}, LastEventId]
      responses: {200: EventStream}
    """
    q = request.query_params
    check_query(q, schemas.SseKlinesQuerySchema)
    default = request.app.state.settings.default_exchange
    symbol = request.path_params["symbol"]
    topics = schemas.shortcut_topics("kline", symbol, q.get("exchange"), q.getlist("tf"), default)
    return await _respond(request, topics)


async def sse_trades(request: Request) -> Response:
    """``GET /sse/trades/{symbol}[?exchange=..]`` -> same as ``/sse`` for that trade topic.
    ---
    get:
      summary: Server-Sent Events of one symbol's public trades (shortcut of /sse)
      parameters: [{in: query, schema: SseExchangeQuerySchema}, LastEventId]
      responses: {200: EventStream}
    """
    check_query(request.query_params, schemas.SseExchangeQuerySchema)
    exchange = request.query_params.get("exchange")
    default = request.app.state.settings.default_exchange
    topics = schemas.shortcut_topics("trade", request.path_params["symbol"], exchange, [], default)
    return await _respond(request, topics)


async def private_stream(request: Request, channel: str, exchange: str, account: str) -> Response:
    """The SSE stream of ``{exchange}:{channel}:{account}`` (400 bad names, 403 when the token may not read it)."""
    try:
        topic = private_topic(exchange, channel, account)
    except TopicError as exc:
        raise ValidationError({exc.field: [str(exc)]}) from None
    require_account(request, topic.split(":", 1)[0], account)
    return await _respond(request, [topic])


def _private(channel: str) -> Any:
    async def endpoint(request: Request) -> Response:
        check_query(request.query_params, schemas.SseExchangeQuerySchema)
        exchange = request.query_params.get("exchange") or request.app.state.settings.default_exchange
        return await private_stream(request, channel, exchange, request.path_params["account"])

    endpoint.__name__ = f"sse_{channel}s"
    endpoint.__doc__ = (
        f"``GET /sse/{channel}s/{{account}}[?exchange=..]`` -> the ``{{exchange}}:{channel}:{{account}}`` stream, as "
        "``/sse`` (400 bad account/exchange, 403 when the token may not read that account).\n---\nget:\n"
        f"  summary: one account's private {channel} events (a control token or one listing the account)\n"
        "  parameters: [{in: query, schema: SseExchangeQuerySchema}, LastEventId]\n"
        "  responses: {200: EventStream}\n"
    )
    return endpoint


#: Every SSE route with its auth rule (``app.routes.access_policy``).
POLICY = [
    (Route("/sse", sse, methods=["GET"]), SSE_RULE),
    (Route("/sse/klines/{symbol}", sse_klines, methods=["GET"]), SSE_RULE),
    (Route("/sse/trades/{symbol}", sse_trades, methods=["GET"]), SSE_RULE),
    (Route("/sse/orders/{account}", _private("order"), methods=["GET"], name="sse_orders"), PRIVATE_SSE_RULE),
    (Route("/sse/positions/{account}", _private("position"), methods=["GET"], name="sse_positions"), PRIVATE_SSE_RULE),
    (Route("/sse/balances/{account}", _private("balance"), methods=["GET"], name="sse_balances"), PRIVATE_SSE_RULE),
]
ROUTES = [route for route, _ in POLICY]
