"""BitMart USDT-M futures v2 public WebSocket adapter: klines and trades (pure, no I/O).

Protocol facts are from ``shared/reference/exchanges.md`` §1; each is tagged with its section.

Wire shapes handled (§1.4, §1.5, §1.6)::

    ack   {"action":"subscribe","group":"futures/klineBin1m:BTCUSDT","success":true,"request":{...}}
    nack  {"action":"subscribe","group":"futures/klineBin1m:NOPEUSDT","success":false,"error":"Invalid channel: ..."}
    error {"success":false,"error":"Invalid message: message must be JSON: ..."}
    pong  {"group":"System","data":"pong+<uuid>"}
    kline {"group":"futures/klineBin1m:BTCUSDT","data":{"symbol":"BTCUSDT","items":[{"o","h","l","c","v","ts"}]}}
    trade {"group":"futures/trade:BTCUSDT","data":[{"trade_id":3000000389425121,"symbol":"BTCUSDT",
           "deal_price":"78727.3","deal_vol":"310","way":2,"m":true,"created_at":"2025-03-10T18:17:14.656686827Z"}]}
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import orjson

from control.topics import TIMEFRAME_MS, Topic
from workers.exchanges.base import Ack, AdapterError, OutFrame, Parsed

_loads = orjson.loads
_dumps = orjson.dumps

EXCHANGE_ID = "bitmart"
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
#: Native channel (the part of ``group`` before ``:``) -> (Feedplane channel, canonical timeframe).
_KLINE_CHANNELS: dict[str, str] = {_KLINE_PREFIX + native: tf for tf, native in TIMEFRAMES.items()}
_NATIVE_CHANNELS: dict[str, tuple[str, str | None]] = {
    **{channel: ("kline", tf) for channel, tf in _KLINE_CHANNELS.items()},
    _TRADE_CHANNEL: ("trade", None),
}


def native_topic(topic: Topic) -> str:
    """The BitMart topic for ``topic``: ``futures/klineBin1H:BTCUSDT`` or ``futures/trade:BTCUSDT`` (§1.6).

    Raises AdapterError for a channel or timeframe BitMart does not serve.
    """
    if topic.channel == "kline":
        native = TIMEFRAMES.get(topic.timeframe or "")
        if native is None:
            raise AdapterError(f"bitmart has no {topic.timeframe!r} kline channel; use one of {' '.join(TIMEFRAMES)}")
        return f"{_KLINE_PREFIX}{native}:{topic.symbol}"
    if topic.channel == "trade":
        return f"{_TRADE_CHANNEL}:{topic.symbol}"
    raise AdapterError(f"bitmart does not support channel {topic.channel!r}")


def _split_group(group: str) -> tuple[str, str]:
    """``"futures/klineBin1m:BTCUSDT@100ms"`` -> ``("futures/klineBin1m", "BTCUSDT")``.

    ``group`` may carry an ``@<speed>`` suffix we never asked for (§1.6); it is dropped. A group
    without ``:`` (``System``, ``futures/order``) gives an empty symbol.
    """
    channel, _, rest = group.partition(":")
    return channel, rest.partition("@")[0]


def group_to_topic(group: str) -> str | None:
    """The Feedplane topic string for a BitMart ``group``, or None if it is not a kline/trade channel.

    ``futures/klineBin1H:ETHUSDT@100ms`` -> ``bitmart:kline:ETHUSDT:1h``; ``futures/trade:BTCUSDT`` ->
    ``bitmart:trade:BTCUSDT``.
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


class BitmartParser:
    """Parses frames of one BitMart public connection into ``Parsed`` results.

    State: the last kline seen per topic, used to infer bar closes — BitMart has **no closed
    flag**; a bar is final when a push with a larger ``ts`` arrives (§1.6).

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
            "System": _on_system,
        }

    def parse(self, raw: str | bytes, ts_received_ms: int) -> Parsed:
        """Parse one text frame received at ``ts_received_ms`` (epoch ms).

        Returns events (kline/trade dicts of ``control.events``), acks (``Ack.topic`` is the Feedplane
        topic string), ``pong``, ``error`` (frame-level error without a group) or ``unknown`` (valid JSON
        we do not handle, e.g. login ``access`` replies or other channels). Raises ValueError on invalid
        JSON or a known push with a malformed body.
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
    channels other than kline/trade are ``unknown`` when successful; failed ones become a frame-level
    ``error`` ``"<group>: <text>"`` so they are logged.
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
    """BitMart futures v2 public market data (klines, trades) as data plus pure functions.

    Limits: 100 topics per socket worked on the wire (§1.5); a 2,186-byte subscribe frame closed the
    socket with 1009 while 2,020 bytes was accepted, so frames stay ≤ 2,000 bytes (§1.5); no
    documented message-rate limit (the connection spaces frames by ``SUBSCRIBE_DELAY_MS``). The
    client must send ``{"action":"ping"}`` (§1.5).
    """

    id = EXCHANGE_ID
    channels = frozenset({"kline", "trade"})
    timeframes = TIMEFRAMES
    max_topics_per_connection = 100
    max_subscribe_frame_bytes = 2000
    min_send_interval_ms = 0
    app_ping = True

    def route(self, topic: Topic) -> str:
        """Always ``"public"``: one public socket carries every contract (§1.1)."""
        return "public"

    def ws_url(self, base_url: str, route: str) -> str:
        """``base_url`` unchanged (``wss://openapi-ws-v2.bitmart.com/api?protocol=1.1``, §1.1)."""
        return base_url

    def validate(self, topic: Topic) -> None:
        """Raise AdapterError unless ``topic`` is a bitmart kline (known timeframe) or trade topic."""
        if topic.exchange != EXCHANGE_ID:
            raise AdapterError(f"topic {topic} is not a bitmart topic")
        native_topic(topic)

    def subscribe_frames(self, topics: list[Topic], batch_size: int, first_request_id: int) -> list[OutFrame]:
        """``{"action":"subscribe","args":[...]}`` frames (§1.4), each ≤ ``batch_size`` topics and ≤ 2,000 bytes.

        BitMart acks per topic, so ``request_id`` is None and ``first_request_id`` is unused.
        Raises AdapterError for a topic BitMart cannot serve, ValueError if ``batch_size < 1``.
        """
        return self._frames("subscribe", topics, batch_size)

    def unsubscribe_frames(self, topics: list[Topic], batch_size: int, first_request_id: int) -> list[OutFrame]:
        """``{"action":"unsubscribe","args":[...]}`` frames, same rules as ``subscribe_frames``."""
        return self._frames("unsubscribe", topics, batch_size)

    def ping_frame(self) -> str | None:
        """``{"action":"ping"}``; plain ``ping`` is rejected as non-JSON on the futures host (§1.5)."""
        return '{"action":"ping"}'

    def new_parser(self) -> BitmartParser:
        """A fresh parser (with empty kline state) for one connection."""
        return BitmartParser()

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
