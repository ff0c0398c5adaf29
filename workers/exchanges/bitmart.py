"""BitMart USDT-M futures v2 public WebSocket adapter: klines, trades, ticker, best bid/ask, order book (pure, no I/O).

Protocol facts are from ``shared/reference/exchanges.md`` §1; each is tagged with its section.

Wire shapes handled (§1.4, §1.5, §1.6)::

    ack   {"action":"subscribe","group":"futures/klineBin1m:BTCUSDT","success":true,"request":{...}}
    nack  {"action":"subscribe","group":"futures/klineBin1m:NOPEUSDT","success":false,"error":"Invalid channel: ..."}
    error {"success":false,"error":"Invalid message: message must be JSON: ..."}
    pong  {"group":"System","data":"pong+<uuid>"}
    kline {"group":"futures/klineBin1m:BTCUSDT","data":{"symbol":"BTCUSDT","items":[{"o","h","l","c","v","ts"}]}}
    trade {"group":"futures/trade:BTCUSDT","data":[{"trade_id":3000000389425121,"symbol":"BTCUSDT",
           "deal_price":"78727.3","deal_vol":"310","way":2,"m":true,"created_at":"2025-03-10T18:17:14.656686827Z"}]}
    ticker {"group":"futures/ticker:AXONUSDT@100ms","data":{"symbol":"AXONUSDT","volume_24":"246128",
           "mark_price":"567.02","index_price":"566.44","last_price":"566.92","range":"-0.0117663465058309",
           "ask_price":"568.75","ask_vol":"1","bid_price":"565.22","bid_vol":"1"}}
    bbo   {"group":"futures/bookticker:BTCUSDT","data":{"symbol":"BTCUSDT","best_bid_price":"1","best_bid_vol":"2",
           "best_ask_price":"3","best_ask_vol":"4","ms_t":1700000000000}}
    depth {"group":"futures/depthIncrease50:BTCUSDT@100ms","data":{"symbol":"BTCUSDT","asks":[{"price":"1","vol":"2"}],
           "bids":[],"ms_t":1700000000000,"version":42,"type":"snapshot"|"update"}}
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from control.topics import TIMEFRAME_MS, Topic
from workers.exchanges.base import Ack, AdapterError, BookUpdate, OutFrame, Parsed, SnapshotRequest

_loads = orjson.loads
_dumps = orjson.dumps

EXCHANGE_ID = "bitmart"
#: Extra HTTP headers for the WebSocket handshake: none (public socket, §1.1).
WS_HEADERS: dict[str, str] = {}
#: Canonical timeframe -> BitMart channel spelling; hours/days/weeks are upper case (§1.6).
TIMEFRAMES: dict[str, str] = {
    "1m": "1m",
    "5m": "5m",
    "15m": "15m",
    "30m": "30m",
    "1h": "1H",
    "2h": "2H",
    "4h": "4H",
    "1d": "1D",
    "1w": "1W",
}
_KLINE_PREFIX = "futures/klineBin"
_TRADE_CHANNEL = "futures/trade"
#: Per-symbol ticker, ``futures/ticker:<SYM>`` since 2025-02-11 (§1.6).
_TICKER_CHANNEL = "futures/ticker"
_BOOKTICKER_CHANNEL = "futures/bookticker"
#: Sequenced order book: snapshot then deltas, 50 levels (§1.6 depthIncrease). ``@100ms`` is asked for, but
#: BitMart pushes books about once a second whatever the speed (§1.6 observed cadence).
_DEPTH_CHANNEL = "futures/depthIncrease50"
_DEPTH_SPEED = "@100ms"
#: Native channel (the part of ``group`` before ``:``) -> (Feedplane channel, canonical timeframe).
_KLINE_CHANNELS: dict[str, str] = {_KLINE_PREFIX + native: tf for tf, native in TIMEFRAMES.items()}
_NATIVE_CHANNELS: dict[str, tuple[str, str | None]] = {
    **{channel: ("kline", tf) for channel, tf in _KLINE_CHANNELS.items()},
    _TRADE_CHANNEL: ("trade", None),
    _TICKER_CHANNEL: ("ticker", None),
    _BOOKTICKER_CHANNEL: ("bookticker", None),
    _DEPTH_CHANNEL: ("depth", None),
}
#: Feedplane channel -> native channel prefix, for the channels whose native topic is ``<prefix>:<SYMBOL>``.
_PLAIN_CHANNELS: dict[str, str] = {
    "trade": _TRADE_CHANNEL,
    "ticker": _TICKER_CHANNEL,
    "bookticker": _BOOKTICKER_CHANNEL,
}


def native_topic(topic: Topic) -> str:
    """The BitMart topic for ``topic`` (§1.6): ``futures/klineBin1H:BTCUSDT``, ``futures/trade:BTCUSDT``,
    ``futures/ticker:BTCUSDT``, ``futures/bookticker:BTCUSDT`` or ``futures/depthIncrease50:BTCUSDT@100ms``.

    Raises AdapterError for a channel or timeframe BitMart does not serve.
    """
    channel = topic.channel
    if channel == "kline":
        native = TIMEFRAMES.get(topic.timeframe or "")
        if native is None:
            raise AdapterError(f"bitmart has no {topic.timeframe!r} kline channel; use one of {' '.join(TIMEFRAMES)}")
        return f"{_KLINE_PREFIX}{native}:{topic.symbol}"
    if channel == "depth":
        return f"{_DEPTH_CHANNEL}:{topic.symbol}{_DEPTH_SPEED}"
    prefix = _PLAIN_CHANNELS.get(channel)
    if prefix is None:
        raise AdapterError(f"bitmart does not support channel {channel!r}")
    return f"{prefix}:{topic.symbol}"


def _split_group(group: str) -> tuple[str, str]:
    """``"futures/klineBin1m:BTCUSDT@100ms"`` -> ``("futures/klineBin1m", "BTCUSDT")``.

    ``group`` may carry an ``@<speed>`` suffix we never asked for (§1.6); it is dropped. A group
    without ``:`` (``System``, ``futures/order``) gives an empty symbol.
    """
    channel, _, rest = group.partition(":")
    return channel, rest.partition("@")[0]


def group_to_topic(group: str) -> str | None:
    """The Feedplane topic string for a BitMart ``group``, or None if it is not one of our channels.

    ``futures/klineBin1H:ETHUSDT@100ms`` -> ``bitmart:kline:ETHUSDT:1h``; ``futures/trade:BTCUSDT`` ->
    ``bitmart:trade:BTCUSDT``; ``futures/depthIncrease50:BTCUSDT@100ms`` -> ``bitmart:depth:BTCUSDT``.
    A group without a symbol (``futures/ticker``, all contracts) gives None.
    """
    channel, symbol = _split_group(group)
    known = _NATIVE_CHANNELS.get(channel)
    if known is None or not symbol:
        return None
    feed_channel, tf = known
    return f"bitmart:{feed_channel}:{symbol}:{tf}" if tf else f"bitmart:{feed_channel}:{symbol}"


_RFC3339 = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d+))?(?:([Zz])|([+-])(\d\d):(\d\d))", re.ASCII
)


def _days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm; integers only)."""
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def rfc3339_to_ms(text: str) -> int:
    """Epoch milliseconds of an RFC 3339 time such as ``2023-02-24T07:54:11.124940968Z`` (§1.6 ``created_at``).

    The fraction (any number of digits, optional) is truncated to milliseconds; the zone is ``Z`` or
    ``±HH:MM``. No floats are involved. Raises ValueError on anything else.
    """
    m = _RFC3339.fullmatch(text)
    if m is None:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    year, month, day, hh, mi, ss = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    if not (1 <= month <= 12 and 1 <= day <= 31 and hh <= 23 and mi <= 59 and ss <= 60):
        raise ValueError(f"out-of-range field in time {text!r}")
    frac = m.group(7)
    ms = int(frac[:3].ljust(3, "0")) if frac else 0
    seconds = _days_from_civil(year, month, day) * 86_400 + hh * 3_600 + mi * 60 + ss
    if m.group(9):
        offset = int(m.group(10)) * 3_600 + int(m.group(11)) * 60
        seconds -= offset if m.group(9) == "+" else -offset
    return seconds * 1000 + ms


def ratio_to_percent(ratio: str) -> str:
    """BitMart's ticker ``range`` (a **ratio**, §1.6) as a percent string, exactly.

    ``"-0.0117663465058309"`` -> ``"-1.17663465058309"``, ``"147.17"`` -> ``"14717"``, ``"0.5"`` -> ``"50"``.
    The decimal point moves two places (``Decimal`` exponent + 2: no context precision, no rounding); the result
    has no exponent and no trailing fractional zeros, and ``"-0"`` becomes ``"0"``. Raises ValueError for
    anything but a finite decimal number.
    """
    try:
        sign, digits, exponent = Decimal(ratio if type(ratio) is not float else repr(ratio)).as_tuple()
    except (InvalidOperation, TypeError, ValueError):
        raise ValueError(f"bitmart range must be a decimal number, got {ratio!r}") from None
    if type(exponent) is not int:  # NaN, Infinity
        raise ValueError(f"bitmart range must be finite, got {ratio!r}")
    text = format(Decimal((sign, digits, exponent + 2)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


class BitmartParser:
    """Parses frames of one BitMart public connection into ``Parsed`` results.

    State: the last kline seen per topic, used to infer bar closes — BitMart has **no closed
    flag**; a bar is final when a push with a larger ``ts`` arrives (§1.6). Order-book pushes are
    not sequence-checked here: they go out as ``Parsed.book`` for the book keeper (``book_rule``).

    Counters (read by the connection for metrics): ``stale_klines`` counts kline items older than
    the last bar seen for their topic (dropped); ``side_defaulted`` counts trades without ``m``
    whose side was set to ``"buy"`` (see ``_on_trade``).
    """

    __slots__ = ("_handlers", "_last_bar", "side_defaulted", "stale_klines")

    def __init__(self) -> None:
        self._last_bar: dict[str, dict[str, Any]] = {}
        self.stale_klines = 0
        self.side_defaulted = 0
        on_kline = self._on_kline
        # Dispatch on the native channel (the group before ':'), built once (style.md habit 3).
        self._handlers: dict[str, Callable[[str, str, Any, int], Parsed]] = {
            **{channel: on_kline for channel in _KLINE_CHANNELS},
            _TRADE_CHANNEL: self._on_trade,
            _TICKER_CHANNEL: _on_ticker,
            _BOOKTICKER_CHANNEL: _on_bookticker,
            _DEPTH_CHANNEL: _on_depth,
            "System": _on_system,
        }

    def parse(self, raw: str | bytes, ts_received_ms: int) -> Parsed:
        """Parse one text frame received at ``ts_received_ms`` (epoch ms).

        Returns events (kline/trade/ticker/bookticker dicts of ``control.events``), ``book`` (depthIncrease
        pushes as ``BookUpdate``), acks (``Ack.topic`` is the Feedplane topic string), ``pong``, ``error``
        (frame-level error without a group) or ``unknown`` (valid JSON we do not handle, e.g. login ``access``
        replies or other channels). Raises ValueError on invalid JSON or a known push with a malformed body.
        """
        msg = _loads(raw)
        if type(msg) is not dict:
            return Parsed(unknown=True)
        if "success" in msg:
            return _on_reply(msg)
        group = msg.get("group")
        if type(group) is str:
            channel, symbol = _split_group(group)
            handler = self._handlers.get(channel)
            if handler is not None:
                try:
                    return handler(channel, symbol, msg.get("data"), ts_received_ms)
                except (KeyError, TypeError, AttributeError, IndexError) as exc:
                    raise ValueError(f"malformed bitmart {channel} push: {exc!r}") from exc
        elif msg.get("action") == "pong":  # one third-party report of this reply shape (§1.5)
            return Parsed(pong=True)
        return Parsed(unknown=True)

    def _on_kline(self, channel: str, symbol: str, data: Any, ts_received_ms: int) -> Parsed:
        """Kline push (§1.6): ``data.items[]`` on the wire, or the documented flat ``data`` object.

        ``ts`` is the bar **open time in seconds**; emits ``open_time = ts * 1000`` (ms). When an item
        opens a newer bar, the previous bar of that topic is emitted again first with ``closed=True``.
        Items older than the last bar are dropped (``stale_klines``).
        """
        tf = _KLINE_CHANNELS[channel]
        if not symbol:
            symbol = data["symbol"]
        topic = f"bitmart:kline:{symbol}:{tf}"
        items = data.get("items") if type(data) is dict else data
        if items is None:
            items = (data,)  # documented flat shape
        elif len(items) > 1:
            items = sorted(items, key=_item_ts)
        tf_ms = TIMEFRAME_MS[tf]
        events: list[tuple[str, dict[str, Any]]] = []
        last = self._last_bar.get(topic)
        for item in items:
            open_time = _item_ts(item) * 1000
            if last is not None and open_time != last["open_time"]:
                if open_time < last["open_time"]:
                    self.stale_klines += 1
                    continue
                events.append((topic, {**last, "closed": True, "ts_received": ts_received_ms}))
            last = {
                "type": "kline",
                "exchange": EXCHANGE_ID,
                "symbol": symbol,
                "timeframe": tf,
                "open_time": open_time,
                "close_time": open_time + tf_ms - 1,
                "open": item["o"],
                "high": item["h"],
                "low": item["l"],
                "close": item["c"],
                "volume": item["v"],
                "closed": False,
                "ts_exchange": None,
                "ts_received": ts_received_ms,
            }
            events.append((topic, last))
        if last is not None:
            # a private copy: the emitted dict belongs to the consumer from here on
            self._last_bar[topic] = last.copy()
        return Parsed(events=events)

    def _on_trade(self, channel: str, symbol: str, data: Any, ts_received_ms: int) -> Parsed:
        """Trade push (§1.6): ``data`` is an array, newest first; events come out oldest first.

        The event symbol is the **group's** symbol (the subscribed topic), not ``data[].symbol``.
        ``side`` is the taker side from ``m`` (true = buyer is maker, so the taker sold). Without ``m``
        the side cannot be derived from a documented fact: the doc's ``way`` table (1-8) names both
        orders of a match but not which one was the taker, and the one wire sample (way 2, m true)
        contradicts ccxt's ``way < 5 -> buy`` reading. Such trades get ``side="buy"`` and are counted
        in ``side_defaulted``. ``created_at`` (RFC 3339, ns) -> ``ts_exchange`` in ms.
        """
        events: list[tuple[str, dict[str, Any]]] = []
        for trade in reversed(data):
            sym = symbol or trade["symbol"]
            m = trade.get("m")
            if m is None:
                self.side_defaulted += 1
                side = "buy"
            else:
                side = "sell" if m else "buy"
            created_at = trade.get("created_at")
            events.append(
                (
                    f"bitmart:trade:{sym}",
                    {
                        "type": "trade",
                        "exchange": EXCHANGE_ID,
                        "symbol": sym,
                        "trade_id": str(trade["trade_id"]),
                        "price": trade["deal_price"],
                        "size": trade["deal_vol"],
                        "side": side,
                        "ts_exchange": rfc3339_to_ms(created_at) if created_at is not None else None,
                        "ts_received": ts_received_ms,
                    },
                )
            )
        return Parsed(events=events)


def _on_ticker(channel: str, symbol: str, data: Any, ts_received_ms: int) -> Parsed:
    """Ticker push (§1.6): ``{symbol, last_price, volume_24, range, mark_price, index_price, ask_price, ask_vol,
    bid_price, bid_vol}``.

    ``range`` is a ratio and becomes ``change_pct_24h`` in percent (``ratio_to_percent``). BitMart sends no 24 h
    high/low, no funding rate (a separate channel) and no time. The group may carry ``@100ms`` (§1.6); the
    all-contracts group ``futures/ticker`` has no symbol, so ``data.symbol`` names the contract.
    """
    sym = symbol or data["symbol"]
    ratio = data.get("range")
    return Parsed(
        events=[
            (
                f"bitmart:ticker:{sym}",
                {
                    "type": "ticker",
                    "exchange": EXCHANGE_ID,
                    "symbol": sym,
                    "last": data.get("last_price"),
                    "mark_price": data.get("mark_price"),
                    "index_price": data.get("index_price"),
                    "high_24h": None,
                    "low_24h": None,
                    "volume_24h": data.get("volume_24"),
                    "change_pct_24h": None if ratio is None else ratio_to_percent(ratio),
                    "funding_rate": None,
                    "ts_exchange": None,
                    "ts_received": ts_received_ms,
                },
            )
        ]
    )


def _on_bookticker(channel: str, symbol: str, data: Any, ts_received_ms: int) -> Parsed:
    """Best bid/ask push (§1.6): ``{symbol, best_bid_price, best_bid_vol, best_ask_price, best_ask_vol, ms_t}``.

    BitMart has no update id; ``ms_t`` (ms) is the exchange time.
    """
    sym = symbol or data["symbol"]
    return Parsed(
        events=[
            (
                f"bitmart:bookticker:{sym}",
                {
                    "type": "bookticker",
                    "exchange": EXCHANGE_ID,
                    "symbol": sym,
                    "bid_price": data.get("best_bid_price"),
                    "bid_size": data.get("best_bid_vol"),
                    "ask_price": data.get("best_ask_price"),
                    "ask_size": data.get("best_ask_vol"),
                    "update_id": None,
                    "ts_exchange": data.get("ms_t"),
                    "ts_received": ts_received_ms,
                },
            )
        ]
    )


def _on_depth(channel: str, symbol: str, data: Any, ts_received_ms: int) -> Parsed:
    """depthIncrease push (§1.6): ``{symbol, asks:[{price,vol}], bids, ms_t, version, type}`` -> one ``BookUpdate``.

    ``type:"snapshot"`` replaces the book, ``"update"`` carries absolute sizes (``vol "0"`` deletes). ``version``
    goes into both ``first_id`` and ``last_id``: the keeper applies ``version == local + 1``, drops older ones
    and asks for a fresh snapshot (``resync_frame``) on a gap. Updates with empty or absent sides still advance
    the version. No checksum exists (§1.6). Raises ValueError for an unknown ``type`` or a non-integer version.
    """
    sym = symbol or data["symbol"]
    kind = data["type"]
    if kind == "update":
        snapshot = False
    elif kind == "snapshot":
        snapshot = True
    else:
        raise ValueError(f"bitmart depth type must be 'snapshot' or 'update', got {kind!r}")
    version = data["version"]
    if type(version) is not int:
        if type(version) is str and version.isdigit():
            version = int(version)
        else:
            raise ValueError(f"bitmart depth version must be an integer, got {version!r}")
    return Parsed(
        book=[
            BookUpdate(
                f"bitmart:depth:{sym}",
                sym,
                _levels(data.get("bids")),
                _levels(data.get("asks")),
                version,
                version,
                None,
                snapshot,
                data.get("ms_t"),
                ts_received_ms,
            )
        ]
    )


def _levels(levels: Any) -> list[tuple[str, str]]:
    """``[{"price":"1","vol":"2"}, ...]`` (None or empty: no change on that side) -> ``[("1", "2"), ...]``."""
    if not levels:
        return []
    return [(level["price"], level["vol"]) for level in levels]


def _item_ts(item: dict[str, Any]) -> int:
    """A kline item's ``ts`` (seconds) as an int; ValueError for anything but an integer."""
    ts = item["ts"]
    if type(ts) is int:
        return ts
    if type(ts) is str and ts.isdigit():
        return int(ts)
    raise ValueError(f"kline ts must be integer seconds, got {ts!r}")


def _on_system(channel: str, symbol: str, data: Any, ts_received_ms: int) -> Parsed:
    """``{"group":"System","data":"pong+<uuid>"}`` is the reply to ``{"action":"ping"}`` (§1.5)."""
    if type(data) is str and data.startswith("pong"):
        return Parsed(pong=True)
    return Parsed(unknown=True)


def _on_reply(msg: dict[str, Any]) -> Parsed:
    """A ``success`` reply: one ack per topic (§1.4), a frame-level error, or a login reply (§1.3).

    ``error`` texts are kept verbatim. Login (``access``) replies are ``unknown`` for now. Replies for
    channels that are not ours (and any ``request`` reply) are ``unknown`` when successful; failed ones become a
    frame-level ``error`` ``"<group>: <text>"`` so they are logged.
    """
    ok = msg["success"] is True
    error = None if ok else _error_text(msg.get("error"))
    action = msg.get("action")
    group = msg.get("group")
    if action in ("subscribe", "unsubscribe") and type(group) is str:
        topic = group_to_topic(group)
        if topic is not None:
            return Parsed(acks=[Ack(ok=ok, action=action, topic=topic, error=error)])
    if action == "access":  # login replies (§1.3): private channels come later
        return Parsed(unknown=True)
    if not ok:
        return Parsed(error=error if group is None else f"{group}: {error}")
    return Parsed(unknown=True)


def _error_text(error: Any) -> str:
    if type(error) is str:
        return error
    if error is None:
        return "request failed (no error text)"
    return _dumps(error).decode()


class BitmartAdapter:
    """BitMart futures v2 public market data (klines, trades, ticker, best bid/ask, order book) as data plus
    pure functions.

    Limits: 100 topics per socket worked on the wire (§1.5); a 2,186-byte subscribe frame closed the
    socket with 1009 while 2,020 bytes was accepted, so frames stay ≤ 2,000 bytes (§1.5); no
    documented message-rate limit (the connection spaces frames by ``SUBSCRIBE_DELAY_MS``). The
    client must send ``{"action":"ping"}`` (§1.5). Order books come as a snapshot on the socket followed by
    versioned deltas (§1.6 depthIncrease), so there is no REST snapshot.
    """

    id = EXCHANGE_ID
    channels = frozenset({"kline", "trade", "ticker", "bookticker", "depth"})
    timeframes = TIMEFRAMES
    max_topics_per_connection = 100
    max_subscribe_frame_bytes = 2000
    min_send_interval_ms = 0
    app_ping = True
    ws_headers = WS_HEADERS
    book_rule = "bitmart"

    def route(self, topic: Topic) -> str:
        """Always ``"public"``: one public socket carries every contract (§1.1)."""
        return "public"

    def ws_url(self, base_url: str, route: str) -> str:
        """``base_url`` unchanged (``wss://openapi-ws-v2.bitmart.com/api?protocol=1.1``, §1.1)."""
        return base_url

    def validate(self, topic: Topic) -> None:
        """Raise AdapterError unless ``topic`` is a bitmart kline (known timeframe), trade, ticker, bookticker
        or depth topic."""
        if topic.exchange != EXCHANGE_ID:
            raise AdapterError(f"topic {topic} is not a bitmart topic")
        native_topic(topic)

    def subscribe_frames(
        self, topics: list[Topic], batch_size: int, first_request_id: int, *, now_ms: int = 0
    ) -> list[OutFrame]:
        """``{"action":"subscribe","args":[...]}`` frames (§1.4), each ≤ ``batch_size`` topics and ≤ 2,000 bytes.

        BitMart acks per topic, so ``request_id`` is None and ``first_request_id`` is unused; so is ``now_ms``
        (BitMart frames carry no time). Raises AdapterError for a topic BitMart cannot serve, ValueError if
        ``batch_size < 1``.
        """
        return self._frames("subscribe", topics, batch_size)

    def unsubscribe_frames(
        self, topics: list[Topic], batch_size: int, first_request_id: int, *, now_ms: int = 0
    ) -> list[OutFrame]:
        """``{"action":"unsubscribe","args":[...]}`` frames, same rules as ``subscribe_frames``."""
        return self._frames("unsubscribe", topics, batch_size)

    def ping_frame(self, *, now_ms: int = 0) -> str | None:
        """``{"action":"ping"}``; plain ``ping`` is rejected as non-JSON on the futures host (§1.5).
        ``now_ms`` is unused."""
        return '{"action":"ping"}'

    def new_parser(self) -> BitmartParser:
        """A fresh parser (with empty kline state) for one connection."""
        return BitmartParser()

    # -- order books -------------------------------------------------------------------------------

    def snapshot_request(self, symbol: str, levels: int) -> SnapshotRequest | None:
        """None: the first depthIncrease push after subscribe is the snapshot (§1.6)."""
        return None

    def parse_snapshot(self, symbol: str, body: bytes, ts_received_ms: int) -> BookUpdate:
        """Never called for BitMart (``snapshot_request`` is None); raises AdapterError."""
        raise AdapterError("bitmart order-book snapshots arrive on the socket; there is no REST snapshot to parse")

    def resync_frame(self, topic: Topic) -> str | None:
        """``{"action":"request","args":["futures/depthIncrease50:<SYM>@100ms"]}``: after a version gap, ask for a
        fresh snapshot on the same topic (§1.6). Raises AdapterError unless ``topic`` is a bitmart depth topic."""
        if topic.exchange != EXCHANGE_ID or topic.channel != "depth":
            raise AdapterError(f"no order-book resync for {topic}")
        return _dumps({"action": "request", "args": [native_topic(topic)]}).decode()

    def _frames(self, action: str, topics: list[Topic], batch_size: int) -> list[OutFrame]:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        limit = self.max_subscribe_frame_bytes
        empty_bytes = len(_dumps({"action": action, "args": []}))
        batches: list[tuple[list[str], list[str]]] = []
        args: list[str] = []
        names: list[str] = []
        size = empty_bytes
        for topic in topics:
            self.validate(topic)
            arg = native_topic(topic)
            arg_bytes = len(_dumps(arg))  # quoted, UTF-8
            if args and (len(args) >= batch_size or size + 1 + arg_bytes > limit):
                batches.append((args, names))
                args, names, size = [], [], empty_bytes
            size += arg_bytes + (1 if args else 0)  # +1 for the comma
            if size > limit:
                raise AdapterError(f"topic {topic} alone exceeds the {limit}-byte subscribe frame limit")
            args.append(arg)
            names.append(str(topic))
        if args:
            batches.append((args, names))
        return [OutFrame(_dumps({"action": action, "args": a}).decode(), tuple(n)) for a, n in batches]
