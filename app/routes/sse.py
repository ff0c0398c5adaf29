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
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any

import anyio
import orjson
from marshmallow import ValidationError
from redis.asyncio import Redis
from redis.backoff import EqualJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app import schemas
from app.auth import PRIVATE_SSE_RULE, SSE_RULE, require_account
from app.errors import error_response
from app.sse_cursor import CursorError, CursorFormat, invalid_cursor_gaps, parse_cursor, resume_positions
from app.sse_hub import ZERO_ID, Batch, SSEHub, StreamId, Subscription, catch_up, format_stream_id, parse_stream_id
from app.sse_stream import KEEPALIVE, SSEResponse, StreamState, StreamTicker
from app.sse_wire import sse_frame
from control import keys
from control.events import GapEvent
from control.topics import TopicError, is_private, private_topic

logger = logging.getLogger(__name__)

RETRY_MS = 2000
#: ``Retry-After`` (seconds) of a 503 while Redis is unreachable: the same pace as the stream's ``retry:`` hint.
RETRY_AFTER_S = str(-(-RETRY_MS // 1000))
#: Backoff of an open stream's Redis calls (registration, catch-up) while Redis is away: seconds, capped.
_OUTAGE_BACKOFF = EqualJitterBackoff(cap=1.0, base=0.05)
_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)
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


class _ClientStream(StreamState):
    """The event stream of one client (see module docstring). Ends quietly on Redis errors.

    ``cursor``: the start position of every topic; ``gaps``: the gap events to send before anything else.
    ``stopping`` (set by ``app.sse_stream`` at shutdown) ends the stream with ``bye``. Steps: ``_register``
    with the hub, ``gaps``, ``_catch_up``, ``ready``, then ``_live``; a Redis outage makes registration and
    catch-up wait (``_outage_wait``). Live entries are sent as the bytes the hub built once per topic.
    """

    def __init__(
        self,
        hub: SSEHub,
        redis: Redis,
        topics: list[str],
        cursor: dict[str, StreamId],
        gaps: list[GapEvent],
        joined: Subscription | None = None,
    ) -> None:
        super().__init__()
        self.hub = hub
        self.redis = redis
        self.topics = topics
        self.gaps = gaps
        #: Already registered at ``cursor`` by ``SSEHub.join``: no registration and no catch-up needed.
        self.joined = joined
        self.sub: Subscription | None = None
        self._wakeup = anyio.Event()  # wakes ``_outage_wait`` and a registration still in progress
        self.single = len(topics) == 1
        self.fmt = CursorFormat(topics)
        self.index = self.fmt.slot  # per topic: its index in ``last``/``ids``, the cursor's (sorted) order
        self.last = [cursor[t] for t in self.fmt.order]
        self.ids = [format_stream_id(s) for s in self.last]
        self.first = True

    def frame(self, event: str, data: bytes, retry_ms: int | None = None) -> bytes:
        """One event stamped with the current cursor; the first one carries ``retry: RETRY_MS``."""
        retry = RETRY_MS if self.first else retry_ms
        self.first = False
        return sse_frame(event, data, self.fmt.format(self.ids), retry)

    def accept(self, entries: Any, out: list[bytes]) -> None:
        """Append to ``out`` the frames of ``entries`` past the cursor, moving the cursor (never sends twice).

        A client of one topic sends ``entry.frame`` as the hub built it; of several, its own ``id:`` line (the
        cursor names every topic) before the shared ``entry.wire``."""
        index, last, ids = self.index, self.last, self.ids
        for entry in entries:
            i = index[entry.topic]
            if entry.sid > last[i]:
                last[i], ids[i] = entry.sid, entry.id
                if self.first or not entry.wire:
                    out.append(self.frame(entry.event, entry.data))
                elif self.single:
                    out.append(entry.frame)
                else:
                    out.append(b"id: " + self.fmt.format(ids).encode() + b"\n" + entry.wire)

    def wake(self) -> None:
        """Wake the stream's wait (``app.sse_stream`` flags: ping, shutdown, client gone)."""
        if self.sub is not None:
            self.sub.wake()
        self._wakeup.set()

    def release(self) -> None:
        """Leave the hub (idempotent; covers a ``join``ed subscription whose body never ran)."""
        for sub in (self.joined, self.sub):
            if sub is not None:
                self.hub.unsubscribe(sub)

    def farewell(self, reason: str) -> bytes:
        """The ``bye`` event of a stream cut for ``reason`` (``slow_consumer``), with the cursor to resume from."""
        return self.frame("bye", orjson.dumps({"type": "bye", "reason": reason}), RETRY_MS)

    async def _outage_wait(self, failures: int, what: str, exc: BaseException) -> bool:
        """Sleep before retrying ``what`` after a Redis error; True when the server is shutting down instead."""
        if failures == 1:
            logger.warning("sse stream for %d topics: %s waits for redis (%s: %s)", len(self.topics), what,
                           type(exc).__name__, exc)  # fmt: skip
        self._wakeup = anyio.Event()
        with anyio.move_on_after(_OUTAGE_BACKOFF.compute(failures - 1)):
            await self._wakeup.wait()
        return self.stopping or self.gone

    async def _register(self) -> Subscription | None:
        """Subscribe to the hub; the response has started, so wait for Redis rather than end the stream.
        None when the server shuts down first."""
        failures = 0
        while True:
            try:
                return await self.hub.subscribe(self.topics)
            except _UNREACHABLE as exc:
                failures += 1
                if await self._outage_wait(failures, "registration", exc):
                    return None

    async def _catch_up(self) -> AsyncIterator[bytes]:
        """Entries after the cursor up to the stream's end; while Redis is away, retried from the cursor."""
        failures = 0
        while True:
            out: list[bytes] = []
            try:
                async for entry in catch_up(self.redis, dict(zip(self.fmt.order, self.last))):
                    self.accept((entry,), out)
                    if len(out) >= 500:
                        yield b"".join(out)
                        out.clear()
            except _UNREACHABLE as exc:
                failures += 1
                if out:
                    yield b"".join(out)
                if await self._outage_wait(failures, "catch-up", exc):
                    return
                continue
            if out:
                yield b"".join(out)
            return

    async def _live(self, sub: Subscription) -> AsyncIterator[bytes]:
        """Entries as the hub delivers them, keep-alive comments when due, until shutdown (then ``bye``)."""
        while True:
            if self.gone:
                return
            if self.stopping:
                yield self.frame("bye", b'{"type":"bye","reason":"shutdown"}', RETRY_MS)
                return
            if self.ping_due:
                self.ping_due = False
                yield KEEPALIVE
                continue
            if sub.overflowed:  # queue was cleared: the stream still has everything after our cursor
                sub.overflowed = False
                async for chunk in self._catch_up():
                    yield chunk
                continue
            batches = sub.take_batches()
            if batches:
                out: list[bytes] = []
                for batch in batches:
                    # one topic, all new (a batch is in id order): the bytes shared by all of the topic's clients
                    if self.single and not self.first and isinstance(batch, Batch) and batch[0].sid > self.last[0]:
                        out.append(batch.frames)
                        self.last[0], self.ids[0] = batch[-1].sid, batch[-1].id
                    else:
                        self.accept(batch, out)
                if out:
                    yield b"".join(out)
                continue
            await sub.wait()

    async def body(self) -> AsyncGenerator[bytes, None]:
        """The stream's bytes: ``gaps``, catch-up, ready, live (``app.sse_stream.SSEResponse`` sends them)."""
        sub = self.sub = self.joined or await self._register()
        if sub is None:
            return
        try:
            for gap in self.gaps:
                yield self.frame("gap", orjson.dumps(gap))
            if self.joined is None:
                async for chunk in self._catch_up():
                    yield chunk
            yield self.frame("ready", orjson.dumps({"type": "ready", "topics": self.topics}))
            async for chunk in self._live(sub):
                yield chunk
        except (RedisError, OSError) as exc:
            logger.warning("sse stream for %d topics ended: redis %s: %s", len(self.topics), type(exc).__name__, exc)
        finally:
            self.hub.unsubscribe(sub)


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
        return SSEResponse(_ClientStream(hub, state.sse_redis, topics, cursor, gaps, sub), state.sse_ticker)  # type: ignore[return-value]
    try:
        if resume is not None:
            cursor, gaps = await resume_positions(state.sse_redis, topics, resume)
        else:
            cursor = await _start_cursor(state.sse_redis, topics, backlog)
    except _UNREACHABLE as exc:
        logger.warning("sse request refused: redis unavailable: %s: %s", type(exc).__name__, exc)
        return error_response(503, "redis_unavailable", "Redis is unreachable; retry shortly (Last-Event-ID resumes)",
                              headers={"Retry-After": RETRY_AFTER_S})  # fmt: skip
    return SSEResponse(_ClientStream(state.hub, state.sse_redis, topics, cursor, gaps), state.sse_ticker)  # type: ignore[return-value]


async def sse(request: Request) -> Response:
    """``GET /sse?topic=T[&topic=U..][&backlog=N][&last_event_id=C]`` -> text/event-stream.

    400 for bad topics or ``backlog``; an unusable cursor (``Last-Event-ID``/``last_event_id``) is not an error:
    the stream starts live after one ``gap`` per topic with ``reason: "invalid_cursor"`` (module docstring).
    """
    topics = schemas.sse_topics(request.query_params.getlist("topic"))
    private = {str(i): [f"{t} is a private topic; use /sse/{t.split(':')[1]}s/{{account}}"]
               for i, t in enumerate(topics) if is_private(t)}  # fmt: skip
    if private:
        raise ValidationError({"topic": private})
    return await _respond(request, topics)


async def sse_klines(request: Request) -> Response:
    """``GET /sse/klines/{symbol}?tf=1m[&tf=5m][&exchange=..]`` -> same as ``/sse`` for those kline topics."""
    q = request.query_params
    default = request.app.state.settings.default_exchange
    symbol = request.path_params["symbol"]
    topics = schemas.shortcut_topics("kline", symbol, q.get("exchange"), q.getlist("tf"), default)
    return await _respond(request, topics)


async def sse_trades(request: Request) -> Response:
    """``GET /sse/trades/{symbol}[?exchange=..]`` -> same as ``/sse`` for that trade topic."""
    exchange = request.query_params.get("exchange")
    default = request.app.state.settings.default_exchange
    topics = schemas.shortcut_topics("trade", request.path_params["symbol"], exchange, [], default)
    return await _respond(request, topics)


def _private(channel: str) -> Any:
    async def endpoint(request: Request) -> Response:
        exchange = request.query_params.get("exchange") or request.app.state.settings.default_exchange
        account = request.path_params["account"]
        try:
            topic = private_topic(exchange, channel, account)
        except TopicError as exc:
            raise ValidationError({exc.field: [str(exc)]}) from None
        require_account(request, topic.split(":", 1)[0], account)
        return await _respond(request, [topic])

    endpoint.__name__ = f"sse_{channel}s"
    endpoint.__doc__ = (
        f"``GET /sse/{channel}s/{{account}}[?exchange=..]`` -> the ``{{exchange}}:{channel}:{{account}}`` stream, as "
        "``/sse`` (400 bad account/exchange, 403 when the token may not read that account)."
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
