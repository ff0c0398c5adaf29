"""Request validation (marshmallow 4): bodies and query values in, canonical topic strings out.

Every function here raises ``marshmallow.ValidationError`` whose ``messages`` are field-level, e.g.
``{"tfs": {"0": ["unknown timeframe '3m'; use one of 1m 5m ..."]}}``. Unknown fields are rejected
(``unknown = RAISE``). Nothing here touches Redis: callers validate everything before writing.
"""

from __future__ import annotations

from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate

from control.topics import (
    DEPTH_LEVELS_CAP,
    DEPTH_LEVELS_DEFAULT,
    DEPTH_LEVELS_MAX,
    EXCHANGES,
    TIMEFRAME_MS,
    Topic,
    TopicError,
    depth_levels_max,
    make_topic,
    private_topic,
)

MAX_SYMBOLS = 200
MAX_TIMEFRAMES = 9
MAX_WAIT_S = 30.0
MAX_SSE_TOPICS = 50
MAX_BACKLOG = 1000
#: The account a private request without ``account`` means (the environment's API key defines it).
DEFAULT_ACCOUNT = "default"

_TF_HELP = " ".join(TIMEFRAME_MS)


class _SymbolsSchema(Schema):
    class Meta:
        unknown = RAISE

    exchange = fields.String(metadata={"description": f"one of {', '.join(EXCHANGES)}; default DEFAULT_EXCHANGE"})
    symbol = fields.String(metadata={"description": "exchange-native symbol, e.g. BTCUSDT"})
    symbols = fields.List(fields.String(), validate=validate.Length(max=MAX_SYMBOLS))


class KlinesRequestSchema(_SymbolsSchema):
    """``{"symbol": "BTCUSDT", "tfs": ["1m", "5m"], "symbols": [...], "exchange": "bitmart"}``."""

    tfs = fields.List(
        fields.String(),
        required=True,
        validate=validate.Length(min=1, max=MAX_TIMEFRAMES),
        metadata={"description": f"1..{MAX_TIMEFRAMES} of {_TF_HELP} (1H 1D 1W accepted)"},
    )


class SymbolsRequestSchema(_SymbolsSchema):
    """Trades, ticker, best bid/ask: ``{"symbol": "BTCUSDT"}`` or ``{"symbols": [...]}``, optional ``exchange``."""


_DEPTH_CAPS = ", ".join(f"{exchange} {cap}" for exchange, cap in DEPTH_LEVELS_CAP.items())


class DepthRequestSchema(_SymbolsSchema):
    """``{"symbol": "BTCUSDT", "levels": 20}``: order book, top ``levels`` (1..100, at most the exchange's cap: see
    ``control.topics.DEPTH_LEVELS_CAP``) in published snapshots."""

    levels = fields.Integer(
        strict=True,
        load_default=DEPTH_LEVELS_DEFAULT,
        validate=validate.Range(min=1, max=DEPTH_LEVELS_MAX),
        metadata={"description": f"levels per side in depth snapshots, 1..{DEPTH_LEVELS_MAX}; at most {_DEPTH_CAPS}"},
    )


class PrivateRequestSchema(Schema):
    """Orders, positions, balances of one account: ``{"exchange": "bitmart", "account": "alice"}``; both optional
    (DEFAULT_EXCHANGE, and the account ``default``: the one the environment's API key defines)."""

    class Meta:
        unknown = RAISE

    exchange = fields.String(metadata={"description": f"one of {', '.join(EXCHANGES)}; default DEFAULT_EXCHANGE"})
    account = fields.String(
        load_default=DEFAULT_ACCOUNT, metadata={"description": "account name (ACCOUNTS_FILE, POST /accounts)"}
    )


class StrictBoolean(fields.Boolean):
    """A JSON ``true``/``false`` only: marshmallow's Boolean also takes 0, 1, "yes", "on" ... in a body."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


class StopRequestSchema(Schema):
    """``{"clear": bool}`` (optional body of ``POST /stop``)."""

    class Meta:
        unknown = RAISE

    clear = StrictBoolean(load_default=False)


_WAIT_ERROR = f"must be a number of seconds with 0 < wait <= {MAX_WAIT_S:g}"
_BACKLOG_ERROR = f"must be an integer from 0 to {MAX_BACKLOG}"


class WaitQuerySchema(Schema):
    """``?wait=S`` of the subscribe endpoints: wait up to S seconds until every topic is active or failed."""

    wait = fields.Float(
        validate=validate.Range(min=0, min_inclusive=False, max=MAX_WAIT_S, error=_WAIT_ERROR),
        error_messages={"invalid": _WAIT_ERROR, "special": _WAIT_ERROR},
        metadata={"description": f"seconds, 0 < wait <= {MAX_WAIT_S:g}; 200 with states when all settle"},
    )


class _SseQuerySchema(Schema):
    backlog = fields.Integer(
        strict=False,
        validate=validate.Range(min=0, max=MAX_BACKLOG, error=_BACKLOG_ERROR),
        error_messages={"invalid": _BACKLOG_ERROR},
        metadata={"description": f"send the last N (0..{MAX_BACKLOG}) entries of each topic first"},
    )
    last_event_id = fields.String(
        metadata={"description": "resume cursor (the Last-Event-ID header wins); an unusable one is a gap event"}
    )


class SseQuerySchema(_SseQuerySchema):
    """``GET /sse``: repeated ``topic`` (1..50 canonical topics), ``backlog``, ``last_event_id``."""

    topic = fields.List(
        fields.String(),
        required=True,
        validate=validate.Length(min=1, max=MAX_SSE_TOPICS),
        metadata={"description": "e.g. bitmart:kline:BTCUSDT:1m (public topics only); repeat for more"},
    )


class SseKlinesQuerySchema(_SseQuerySchema):
    """``GET /sse/klines/{symbol}``: repeated ``tf``, optional ``exchange``."""

    tf = fields.List(fields.String(), required=True, validate=validate.Length(min=1, max=MAX_TIMEFRAMES),
                     metadata={"description": f"timeframes: {_TF_HELP}"})  # fmt: skip
    exchange = fields.String(metadata={"description": f"one of {', '.join(EXCHANGES)}; default DEFAULT_EXCHANGE"})


class SseExchangeQuerySchema(_SseQuerySchema):
    """``GET /sse/trades/{symbol}`` and the private streams: optional ``exchange``."""

    exchange = fields.String(metadata={"description": f"one of {', '.join(EXCHANGES)}; default DEFAULT_EXCHANGE"})


_KLINES = KlinesRequestSchema()
_SYMBOLS = SymbolsRequestSchema()
_DEPTH = DepthRequestSchema()
_STOP = StopRequestSchema()
_PRIVATE = PrivateRequestSchema()
_WAIT = WaitQuerySchema()
_BACKLOG = _SseQuerySchema(only=("backlog",))


def _symbols(data: dict[str, Any]) -> list[tuple[str, tuple[str, ...]]]:
    """(symbol, error location) pairs from ``symbol`` and ``symbols``; raises when none is given."""
    out: list[tuple[str, tuple[str, ...]]] = []
    if "symbol" in data:
        out.append((data["symbol"], ("symbol",)))
    out.extend((s, ("symbols", str(i))) for i, s in enumerate(data.get("symbols") or []))
    if not out:
        raise ValidationError({"symbol": ["give symbol or symbols (at least one)"]})
    if len(out) > MAX_SYMBOLS:
        raise ValidationError({"symbols": [f"at most {MAX_SYMBOLS} symbols per request"]})
    return out


def _add_error(errors: dict[str, Any], location: tuple[str, ...], message: str) -> None:
    node = errors
    for part in location[:-1]:
        node = node.setdefault(part, {})
    bucket = node.setdefault(location[-1], [])
    if message not in bucket:
        bucket.append(message)


def _location(exc: TopicError, symbol_loc: tuple[str, ...], tf_index: int | None) -> tuple[str, ...]:
    if exc.field == "symbol":
        return symbol_loc
    if exc.field == "tfs" and tf_index is not None:
        return ("tfs", str(tf_index))
    if exc.field in ("exchange", "tfs"):
        return (exc.field,)
    return ("_schema",)


def _build(channel: str, payload: Any, default_exchange: str) -> list[str]:
    return _build_with(channel, _load(channel, payload), default_exchange)


def _load(channel: str, payload: Any) -> dict[str, Any]:
    schema = {"kline": _KLINES, "depth": _DEPTH}.get(channel, _SYMBOLS)
    data: dict[str, Any] = schema.load(payload)
    return data


def _build_with(channel: str, data: dict[str, Any], default_exchange: str) -> list[str]:
    exchange = data.get("exchange", default_exchange)
    symbols = _symbols(data)
    tfs: list[str | None] = list(data["tfs"]) if channel == "kline" else [None]
    errors: dict[str, Any] = {}
    topics: dict[str, None] = {}  # ordered set
    for symbol, symbol_loc in symbols:
        for tf_index, tf in enumerate(tfs):
            try:
                topics[str(make_topic(exchange, channel, symbol, tf))] = None
            except TopicError as exc:
                _add_error(errors, _location(exc, symbol_loc, tf_index if tf is not None else None), str(exc))
                if exc.field == "exchange":
                    raise ValidationError(errors) from None
    if errors:
        raise ValidationError(errors)
    return list(topics)


def kline_topics(payload: Any, default_exchange: str) -> list[str]:
    """Validate a ``/klines/*`` body; returns canonical topics (``bitmart:kline:BTCUSDT:1h``), deduplicated.

    Order: symbols in request order (``symbol`` first), then timeframes in request order.
    Raises ValidationError (unknown field, wrong types, bad symbol/timeframe/exchange, limits).
    """
    return _build("kline", payload, default_exchange)


def trade_topics(payload: Any, default_exchange: str) -> list[str]:
    """Validate a ``/trades/*`` body; returns canonical topics (``bitmart:trade:BTCUSDT``). Raises ValidationError."""
    return _build("trade", payload, default_exchange)


def ticker_topics(payload: Any, default_exchange: str) -> list[str]:
    """Validate a ``/ticker/*`` body; returns topics (``binanceusdm:ticker:BTCUSDT``). Raises ValidationError."""
    return _build("ticker", payload, default_exchange)


def bookticker_topics(payload: Any, default_exchange: str) -> list[str]:
    """Validate a ``/bookticker/*`` body; returns topics (``gateio:bookticker:BTC_USDT``). Raises ValidationError."""
    return _build("bookticker", payload, default_exchange)


def depth_request(payload: Any, default_exchange: str) -> tuple[list[str], dict[str, Any]]:
    """Validate a ``/depth/subscribe`` body; returns (topics ``bitmart:depth:BTCUSDT``, ``{"levels": N}``).

    Raises ValidationError for levels outside 1..100, and ``{"levels": [...]}`` naming the cap for more levels than
    the exchange keeps its book in (``control.topics.DEPTH_LEVELS_CAP``; BitMart 50): the levels beyond it would
    never be updated.
    """
    data = _load("depth", payload)
    topics = _build_with("depth", data, default_exchange)
    exchange = topics[0].partition(":")[0]  # canonical id (aliases resolved); one exchange per request
    cap = depth_levels_max(exchange)
    if data["levels"] > cap:
        message = f"{exchange} keeps at most {cap} order-book levels per side; ask for 1..{cap}"
        raise ValidationError({"levels": [message]})
    return topics, {"levels": data["levels"]}


def depth_topics(payload: Any, default_exchange: str) -> list[str]:
    """Validate a ``/depth/unsubscribe`` body (``levels`` accepted, 1..100, and ignored); returns topics."""
    return _build_with("depth", _load("depth", payload), default_exchange)


def private_request(channel: str, payload: Any, default_exchange: str) -> tuple[str, str, str]:
    """Validate a ``/orders|positions|balances/*`` body (may be ``{}``); returns ``(topic, exchange, account)``,
    e.g. ``("bitmart:order:alice", "bitmart", "alice")``. Raises ValidationError (unknown field, bad exchange or
    account name); whether the account exists is the caller's check (it needs Redis)."""
    data = _PRIVATE.load(payload)
    try:
        topic = private_topic(data.get("exchange", default_exchange), channel, data["account"])
    except TopicError as exc:
        raise ValidationError({exc.field: [str(exc)]}) from None
    exchange, _, account = topic.split(":", 2)
    return topic, exchange, account


def stop_clear(payload: Any) -> bool:
    """Validate the optional ``POST /stop`` body; returns ``clear``. Raises ValidationError."""
    return bool(_STOP.load(payload)["clear"])


def wait_seconds(raw: str | None) -> float | None:
    """Parse ``?wait=S`` (seconds, 0 < S <= 30, float; ``WaitQuerySchema``); None when absent. Raises
    ValidationError."""
    if raw is None:
        return None
    value: float = _WAIT.load({"wait": raw})["wait"]
    return value


def backlog_count(raw: str | None) -> int:
    """Parse ``?backlog=N`` (entries per topic, 0..1000; ``SseQuerySchema``); 0 when absent. Raises
    ValidationError."""
    if raw is None:
        return 0
    if not raw.isdigit():  # no sign, space or "1_000": digits only
        raise ValidationError({"backlog": [_BACKLOG_ERROR]})
    value: int = _BACKLOG.load({"backlog": raw})["backlog"]
    return value


def sse_topics(raw: list[str]) -> list[str]:
    """Parse repeated ``?topic=`` values with ``Topic.parse``; canonical, deduplicated, 1..50.

    Raises ValidationError ``{"topic": {...}}`` naming the first bad value.
    """
    if not raw:
        raise ValidationError({"topic": ["give 1 to 50 topic parameters, e.g. ?topic=bitmart:kline:BTCUSDT:1m"]})
    topics: dict[str, None] = {}
    for index, text in enumerate(raw):
        try:
            topics[str(Topic.parse(text))] = None
        except TopicError as exc:
            raise ValidationError({"topic": {str(index): [str(exc)]}}) from None
    if len(topics) > MAX_SSE_TOPICS:
        raise ValidationError({"topic": [f"at most {MAX_SSE_TOPICS} topics per stream"]})
    return list(topics)


def shortcut_topics(
    channel: str, symbol: str, exchange: str | None, tfs: list[str], default_exchange: str
) -> list[str]:
    """Topics for ``/sse/klines/{symbol}?tf=..`` and ``/sse/trades/{symbol}``; raises ValidationError."""
    if channel == "kline":
        if not tfs:
            raise ValidationError({"tf": ["give at least one ?tf= (e.g. tf=1m)"]})
        payload: dict[str, Any] = {"symbol": symbol, "tfs": tfs}
    else:
        payload = {"symbol": symbol}
    if exchange is not None:
        payload["exchange"] = exchange
    try:
        return _build(channel, payload, default_exchange)
    except ValidationError as exc:
        messages = exc.normalized_messages()
        if isinstance(messages, dict) and "tfs" in messages:  # query parameter is called tf here
            messages["tf"] = messages.pop("tfs")
        raise ValidationError(messages) from None
