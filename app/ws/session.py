"""What one ``/ws`` client asked for: its subscribe/unsubscribe messages, answered in order.

Subscribe, step by step (every refusal is one ``error`` event carrying the message's ``id``; nothing of a
refused step is kept):

1. validate (``app.ws.protocol``) -> ``INVALID_SUBSCRIPTION`` with the field messages;
2. rights (``app.ws.access.Access.refusal``) -> ``UNAUTHORIZED``;
3. at most ``WS_SUBSCRIPTIONS_MAX`` topics on the connection -> ``RATE_LIMITED``;
4. ``ensure: true`` (control token): the topics are added to the desired state as ``POST /…/subscribe`` does
   (``Dispatcher.subscribe``; private topics need a known account). Without it the desired state is untouched;
5. each topic's record (``ControlStore.subscriptions``, the one ``/status`` shows): a topic nobody streams (not
   desired) is refused with ``INVALID_SUBSCRIPTION`` and the hint how to start it; the others are accepted;
6. start positions: ``since`` is checked against the stream (``app.sse_cursor.resume_positions``: trimmed or
   reset streams give a ``gap`` event first); without it the stream's last id;
7. one hub subscription for the accepted new topics, the ack ``{"type":"subscribed","id","channel",
   "subscriptions":[{"topic","state":"pending"|"active"|"failed","error","cursor"}],"timestamp"}``, the gaps,
   then the events (``app.ws.feed``).

A topic already subscribed on this connection is acknowledged again with its state and not replayed.
Unsubscribe answers ``{"type":"unsubscribed","id","topics":[...],"not_subscribed":[...]}`` and never changes
the desired state (other consumers may read the topic).
"""

from __future__ import annotations

import logging
from typing import Any, cast

from marshmallow import ValidationError
from redis.asyncio import Redis
from starlette.requests import Request
from starlette.websockets import WebSocket

from app.errors import now_ms
from app.routes.control import known_accounts
from app.sse_cursor import resume_positions
from app.sse_entries import READ_ERRORS
from app.sse_hub import ZERO_ID, SSEHub, StreamId, format_stream_id, parse_stream_id
from app.ws import protocol as p
from app.ws.access import Access
from app.ws.connection import Connection
from app.ws.feed import Group
from control import keys
from control.topics import is_private

logger = logging.getLogger(__name__)

NOT_STREAMED_HINT = ("nobody streams it: subscribe it with POST /{path}/subscribe (control token), or send "
                     '"ensure": true with a control token')  # fmt: skip
_PATHS = {"kline": "klines", "trade": "trades", "ticker": "ticker", "bookticker": "bookticker", "depth": "depth",
          "order": "orders", "position": "positions", "balance": "balances"}  # fmt: skip


class Session:
    """The subscriptions of one connection (module docstring). ``redis``: the bytes client of the SSE routes."""

    def __init__(self, ws: WebSocket, conn: Connection, access: Access, hub: SSEHub, redis: Redis) -> None:
        state = ws.app.state
        self.ws = ws
        self.conn = conn
        self.access = access
        self.hub = hub
        self.redis = redis
        self.store = state.store
        self.dispatcher = state.dispatcher
        self.default_exchange: str = state.settings.default_exchange
        self.owner: dict[str, Group] = {}
        self.last: dict[str, StreamId] = {}

    def close(self) -> None:
        """Leave the hub for every group (the connection cancels their tasks)."""
        for group in {id(g): g for g in self.owner.values()}.values():
            group.stop()
        self.owner.clear()

    async def handle(self, text: str) -> None:
        """Answer one client frame."""
        try:
            kind, request_id, request = p.parse_message(text, self.default_exchange)
        except ValidationError as exc:
            request_id = _peek_id(text)
            self._error(p.INVALID_SUBSCRIPTION, "invalid message", request_id, details=exc.normalized_messages())
            return
        if kind == "ping":
            self.conn.send_control(p.dumps({"type": "pong", "timestamp": now_ms()}))
        elif request is not None and kind == "subscribe":
            try:
                await self.subscribe(request)
            except READ_ERRORS as exc:
                logger.warning("ws %s: subscribe failed, redis: %s: %s", self.conn.id, type(exc).__name__, exc)
                self._error(p.CONNECTION_LOST, "Redis is unreachable; send the subscribe again shortly", request_id)
        elif request is not None:
            self.unsubscribe(request)

    def _error(self, code: str, message: str, request_id: Any, **extra: Any) -> None:
        self.conn.send_control(p.error(code, message, now_ms(), request_id, **extra))

    async def subscribe(self, req: p.Request) -> None:
        """Steps 2-7 of the module docstring. Raises redis errors (the caller answers CONNECTION_LOST)."""
        refusal = self.access.refusal(req.topics, req.ensure)
        if refusal:
            self._error(p.UNAUTHORIZED, refusal, req.id)
            return
        new = [t for t in req.topics if t not in self.owner]
        limit = self.conn.limits.subscriptions_max
        if len(self.owner) + len(new) > limit:
            self._error(p.RATE_LIMITED, f"at most {limit} subscriptions per connection ({len(self.owner)} held)",
                        req.id)  # fmt: skip
            return
        if req.ensure and not await self._ensure(req):
            return
        records = {r["topic"]: r for r in await self.store.subscriptions(req.topics)}
        missing = [t for t in req.topics if t not in records]
        if missing:
            hint = NOT_STREAMED_HINT.format(path=_PATHS[missing[0].split(":")[1]])
            self._error(p.INVALID_SUBSCRIPTION, f"not streamed: {', '.join(missing)}; {hint}", req.id, topics=missing)
        accepted_new = [t for t in new if t in records]
        starts, gaps = await self._starts(accepted_new, req.since)
        group = None
        if accepted_new:
            sub = await self.hub.subscribe(accepted_new)
            group = Group(self.conn, self.hub, self.redis, sub, accepted_new, self.owner, self.last)
            for topic in accepted_new:
                self.owner[topic] = group
                self.last[topic] = starts[topic]
            self.conn.set_idle(False)
        acked = [t for t in req.topics if t in records]
        if acked:
            subs = [{"topic": t, "state": records[t]["state"], "error": records[t]["error"],
                     "cursor": format_stream_id(self.last[t])} for t in acked]  # fmt: skip
            ack = {"type": "subscribed", "id": req.id, "channel": req.channel, "subscriptions": subs,
                   "timestamp": now_ms()}  # fmt: skip
            self.conn.send_control(p.dumps(ack))
        for gap in gaps:
            cursor = format_stream_id(starts[gap["topic"]])
            self.conn.send_control(p.dumps({"type": "gap", "topic": gap["topic"], "cursor": cursor, "data": gap}))
        if group is not None:
            group.start()

    async def _ensure(self, req: p.Request) -> bool:
        """Add the topics to the desired state (control token checked by the caller); False when refused."""
        unknown = []
        for topic in req.topics:
            if is_private(topic):
                exchange, _, account = topic.split(":", 2)
                if f"{exchange}:{account}" not in await known_accounts(cast(Request, self.ws)):
                    unknown.append(topic)
        if unknown:
            self._error(p.INVALID_SUBSCRIPTION, f"unknown account for {', '.join(unknown)}: configure it "
                                                "(environment, ACCOUNTS_FILE, POST /accounts)", req.id)  # fmt: skip
            return False
        await self.dispatcher.subscribe(req.topics, now_ms(), req.options)
        return True

    async def _starts(self, topics: list[str], since: dict[str, StreamId]) -> tuple[dict[str, StreamId], list[Any]]:
        """Start id per topic (before joining the hub) and the gap events of resumed topics."""
        resumed = [t for t in topics if t in since]
        fresh = [t for t in topics if t not in since]
        starts: dict[str, StreamId] = {}
        gaps: list[Any] = []
        if resumed:
            positions, gaps = await resume_positions(self.redis, resumed, {t: since[t] for t in resumed})
            starts.update(positions)
        if fresh:
            async with self.redis.pipeline(transaction=False) as pipe:
                for topic in fresh:
                    pipe.xrevrange(keys.event_stream(topic), max="+", min="-", count=1)
                results = await pipe.execute()
            for topic, raw in zip(fresh, results):
                starts[topic] = parse_stream_id(raw[0][0]) if raw else ZERO_ID
        return starts, list(gaps)

    def unsubscribe(self, req: p.Request) -> None:
        """Forget the topics on this connection (desired state untouched); a group left without topics stops."""
        removed, absent = [], []
        for topic in req.topics:
            group = self.owner.pop(topic, None)
            if group is None:
                absent.append(topic)
                continue
            removed.append(topic)
            self.last.pop(topic, None)
            if not group.mine():
                group.stop()
        self.conn.send_control(p.dumps({"type": "unsubscribed", "id": req.id, "topics": removed,
                                        "not_subscribed": absent, "timestamp": now_ms()}))  # fmt: skip
        if not self.owner:
            self.conn.set_idle(True)


def _peek_id(text: str) -> Any:
    """The ``id`` of a message that failed validation, when it is a plain string or integer."""
    try:
        value = p.orjson.loads(text)
    except p.orjson.JSONDecodeError:
        return None
    rid = value.get("id") if isinstance(value, dict) else None
    return rid if isinstance(rid, (str, int)) and not isinstance(rid, bool) and len(str(rid)) <= 64 else None
