"""The ``/ws`` wire protocol: client messages validated with marshmallow into topics, server messages built as text.

Client -> server (one JSON object per frame)::

    {"type": "subscribe", "channel": "candles", "instruments": ["BTCUSDT"], "exchange": "bitmart",
     "parameters": {"timeframe": "1m"}, "since": {"bitmart:kline:BTCUSDT:1m": "1732300000000-0"},
     "ensure": false, "id": "c1"}
    {"type": "subscribe", "topics": ["bitmart:trade:BTCUSDT"], "since": "1732300000000-4"}
    {"type": "unsubscribe", "channel": "trades", "instruments": ["BTCUSDT"]}
    {"type": "pong"} / {"type": "ping"}

``channel`` is one of the realtime spec's names (``CHANNEL_MAP``: ``candles`` -> ``kline``, ``trades`` and
``ticks`` -> ``trade`` (Feedplane has no separate tick stream: a trade is the tick), ``orderbook`` -> ``depth``,
``bookticker``, ``orders``/``positions``/``balances`` -> the private ``order``/``position``/``balance``) or a
Feedplane channel name (``kline trade ticker bookticker depth order position balance``). Private channels take
the account in ``parameters.account`` (default ``default``) instead of ``instruments``. ``topics`` lists whole
topics instead. ``since`` is a per-topic stream id (``ms-seq``, the ``cursor`` of the last event received), or
one id when the message names one topic. ``id`` (string or integer) is echoed in the answer.

Server -> client: ``connected``, ``subscribed``, ``unsubscribed``, ``ping``/``pong``, ``error`` (the spec's
``{"type":"error","error":{"code","message","timestamp"}}``), and events: ``{"type": <the event's own type:
kline, trade, depth, ..., gap>, "topic", "cursor", "data": <the event exactly as in the Stream>}``. Decimal strings
stay strings. Timestamps are epoch milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from app.sse_hub import Entry, StreamId, parse_stream_id
from control.topics import DEPTH_LEVELS_MAX, PRIVATE_CHANNELS, Topic, TopicError, make_topic

#: Realtime-spec channel -> Feedplane channel; Feedplane's own names map to themselves.
CHANNEL_MAP: dict[str, str] = {
    "candles": "kline",
    "trades": "trade",
    "ticks": "trade",
    "orderbook": "depth",
    "bookticker": "bookticker",
    "ticker": "ticker",
    "orders": "order",
    "positions": "position",
    "balances": "balance",
    **{c: c for c in ("kline", "trade", "depth", "order", "position", "balance")},
}
MAX_INSTRUMENTS = 200
MAX_TOPICS = 200
DEFAULT_TIMEFRAME = "1m"
DEFAULT_ACCOUNT = "default"
PROTOCOL = "feedplane-ws/1"

# error codes of the realtime spec
RATE_LIMITED = "RATE_LIMITED"
UNAUTHORIZED = "UNAUTHORIZED"
INVALID_SUBSCRIPTION = "INVALID_SUBSCRIPTION"
CONNECTION_LOST = "CONNECTION_LOST"


class ParametersSchema(Schema):
    """``parameters``: ``timeframe`` (candles), ``depth`` (order-book levels, used with ``ensure``), ``account``."""

    class Meta:
        unknown = RAISE

    timeframe = fields.String(load_default=DEFAULT_TIMEFRAME)
    depth = fields.Integer(strict=True, validate=validate.Range(min=1, max=DEPTH_LEVELS_MAX))
    account = fields.String(load_default=DEFAULT_ACCOUNT)


def _request_id(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (str, int)) or (isinstance(value, str) and len(value) > 64):
        raise ValidationError("must be a string (at most 64 characters) or an integer")
    return value


class ClientMessageSchema(Schema):
    """One client frame (see module docstring); ``channel`` or ``topics``, not both."""

    class Meta:
        unknown = RAISE

    type = fields.String(required=True, validate=validate.OneOf(("subscribe", "unsubscribe", "ping", "pong")))
    id = fields.Raw(validate=_request_id)
    channel = fields.String(validate=validate.OneOf(tuple(CHANNEL_MAP)))
    instruments = fields.List(fields.String(), validate=validate.Length(min=1, max=MAX_INSTRUMENTS))
    exchange = fields.String()
    parameters = fields.Nested(ParametersSchema)
    topics = fields.List(fields.String(), validate=validate.Length(min=1, max=MAX_TOPICS))
    since = fields.Raw()
    ensure = fields.Boolean(load_default=False)

    @validates_schema
    def _one_target(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data["type"] not in ("subscribe", "unsubscribe"):
            return
        if ("channel" in data) == ("topics" in data):
            raise ValidationError("give either channel (with instruments) or topics", field_name="channel")
        if "topics" in data and ("instruments" in data or "parameters" in data or "exchange" in data):
            raise ValidationError("instruments/exchange/parameters go with channel, not topics", field_name="topics")


_SCHEMA = ClientMessageSchema()


@dataclass(frozen=True, slots=True)
class Request:
    """A validated subscribe/unsubscribe: canonical ``topics`` (request order), ``since`` per topic, ``options``
    (``{"levels": N}`` for order books) for ``ensure``; ``channel`` as the client named it (None with ``topics``)."""

    kind: str
    topics: list[str]
    id: Any = None
    channel: str | None = None
    since: dict[str, StreamId] = field(default_factory=dict)
    ensure: bool = False
    options: dict[str, Any] | None = None


def parse_message(raw: str | bytes, default_exchange: str) -> tuple[str, Any, Request | None]:
    """One client frame -> ``(type, id, Request or None)`` (None for ping/pong).

    Raises ValidationError with field messages (bad JSON under ``_schema``, bad topics under ``topics`` or
    ``instruments``, bad cursors under ``since``).
    """
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValidationError(f"not valid JSON: {exc.msg}") from None
    if not isinstance(value, dict):
        raise ValidationError("a message is a JSON object with a type")
    data: dict[str, Any] = _SCHEMA.load(value)
    kind, request_id = data["type"], data.get("id")
    if kind in ("ping", "pong"):
        return kind, request_id, None
    if "topics" in data:
        topics = _whole_topics(data["topics"])
    else:
        topics = _channel_topics(data, default_exchange)
    since = _since(data.get("since"), topics) if kind == "subscribe" else {}
    options = None
    if data.get("parameters", {}).get("depth") is not None and CHANNEL_MAP[data["channel"]] == "depth":
        options = {"levels": data["parameters"]["depth"]}
    request = Request(kind, topics, request_id, data.get("channel"), since, bool(data["ensure"]), options)
    return kind, request_id, request


def _whole_topics(raw: list[str]) -> list[str]:
    out: dict[str, None] = {}
    for index, text in enumerate(raw):
        try:
            out[str(Topic.parse(text))] = None
        except TopicError as exc:
            raise ValidationError({"topics": {str(index): [str(exc)]}}) from None
    return list(out)


def _channel_topics(data: dict[str, Any], default_exchange: str) -> list[str]:
    channel = CHANNEL_MAP[data["channel"]]
    exchange = data.get("exchange", default_exchange)
    params = data.get("parameters") or ParametersSchema().load({})
    out: dict[str, None] = {}
    if channel in PRIVATE_CHANNELS:
        if "instruments" in data:
            raise ValidationError({"instruments": ["private channels take parameters.account, not instruments"]})
        names: list[tuple[str, str]] = [(params["account"], "parameters")]
    else:
        if "instruments" not in data:
            raise ValidationError({"instruments": [f'give 1 to {MAX_INSTRUMENTS} instruments, e.g. ["BTCUSDT"]']})
        names = [(s, f"instruments.{i}") for i, s in enumerate(data["instruments"])]
    for name, where in names:
        try:
            tf = params["timeframe"] if channel == "kline" else None
            out[str(make_topic(exchange, channel, name, tf))] = None
        except TopicError as exc:
            location = exc.field if exc.field in ("exchange", "channel") else where.split(".")[0]
            raise ValidationError({location: [str(exc)]}) from None
    return list(out)


def _since(raw: Any, topics: list[str]) -> dict[str, StreamId]:
    if raw is None:
        return {}
    if isinstance(raw, str):
        if len(topics) != 1:
            raise ValidationError({"since": ["one cursor fits one topic; give {topic: cursor} for several"]})
        raw = {topics[0]: raw}
    if not isinstance(raw, dict):
        raise ValidationError({"since": ["must be a cursor string or an object {topic: cursor}"]})
    out: dict[str, StreamId] = {}
    for topic, cursor in raw.items():
        if topic not in topics:
            raise ValidationError({"since": {topic: ["not one of this message's topics"]}})
        try:
            out[topic] = parse_stream_id(cursor if isinstance(cursor, str) else "")
        except ValueError:
            raise ValidationError({"since": {topic: ["must be a stream id ms-seq, the cursor of an event"]}}) from None
    return out


# -- server messages ---------------------------------------------------------------------------------------


def dumps(message: dict[str, Any]) -> str:
    """A control message as JSON text."""
    return orjson.dumps(message).decode()


def error(code: str, message: str, now_ms: int, request_id: Any = None, **extra: Any) -> str:
    """The spec's error event: ``{"type":"error","error":{"code","message","timestamp", **extra}}`` (+ ``id``)."""
    body: dict[str, Any] = {"type": "error", "error": {"code": code, "message": message, "timestamp": now_ms, **extra}}
    if request_id is not None:
        body["id"] = request_id
    return dumps(body)


def event_text(entry: Entry) -> str:
    """``{"type": <event type>, "topic", "cursor", "data": <raw event>}`` for one stream entry.

    The event's JSON is spliced in as written by the worker (never re-encoded); ``topic``/``id`` are ASCII
    without quotes (checked by ``Topic.parse`` and ``parse_stream_id``) and ``event`` comes from the JSON.
    """
    kind = entry.event if entry.event.isidentifier() else "message"
    return (
        f'{{"type":"{kind}","topic":"{entry.topic}","cursor":"{entry.id}","data":'
        + entry.data.decode("utf-8", "replace")
        + "}"
    )
