"""Gate.io USDT futures v4 wire facts as data (channels, intervals, limits, headers, paths), the value formats Gate
sends, and its subscribe replies (pure; ``shared/reference/exchanges.md`` §2).

Replies (§2.2, §2.4)::

    ack     {"time":1684930165,"time_ms":0,"channel":"futures.trades","event":"subscribe","result":{"status":"success"}}
            (newer servers also echo "id","conn_id","trace_id","payload","requestId")
    error   {...,"event":"subscribe","error":{"code":2,"message":"unknown contract BTC_USDT_20220318"},
             "result":{"status":"fail"}}
    pong    {"time":1684930165,"time_ms":1684930165001,"channel":"futures.pong","event":"","result":null}

Sizes are "int or decimal string" (decimal with the ``X-Gate-Size-Decimal: 1`` handshake header, §2.4);
they are passed on as strings and never go through floats. Private pushes carry prices as JSON numbers
(§2.6): those go through ``repr`` (the shortest text that round-trips, i.e. the wire text for ordinary values).
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import orjson

from control.exchanges.gateio import GATEIO
from control.topics import Topic, TopicError, normalize_symbol
from workers.exchanges.base import Ack, AdapterError, Parsed
from workers.exchanges.checks import check_owner_and_account

_dumps = orjson.dumps

EXCHANGE_ID = GATEIO.id
#: Canonical timeframe -> ``futures.candlesticks`` interval (§2.5: 10s 1m 5m 15m 30m 1h 4h 8h 1d 7d).
#: 2h is not a documented WS interval, so it is refused rather than guessed; 10s/8h have no canonical name.
TIMEFRAMES: dict[str, str] = {
    "1m": "1m",
    "5m": "5m",
    "15m": "15m",
    "30m": "30m",
    "1h": "1h",
    "4h": "4h",
    "1d": "1d",
    "1w": "7d",
}
INTERVALS: dict[str, str] = {native: tf for tf, native in TIMEFRAMES.items()}

CANDLESTICKS = "futures.candlesticks"
TRADES = "futures.trades"
TICKERS = "futures.tickers"
BOOK_TICKER = "futures.book_ticker"
ORDER_BOOK_UPDATE = "futures.order_book_update"
#: Feedplane channel -> Gate channel. Candlesticks and order_book_update take ONE contract per
#: request; the other three take a list of contracts (§2.4 "Args per request").
NATIVE_CHANNELS: dict[str, str] = {
    "kline": CANDLESTICKS,
    "trade": TRADES,
    "ticker": TICKERS,
    "bookticker": BOOK_TICKER,
    "depth": ORDER_BOOK_UPDATE,
}
LIST_CHANNELS = frozenset({TRADES, TICKERS, BOOK_TICKER})
_FEED_CHANNELS: dict[str, str] = {native: channel for channel, native in NATIVE_CHANNELS.items()}
#: ``order_book_update`` subscription: 100 ms pushes of the top 100 levels (§2.5; the REST snapshot
#: ``limit`` must equal the level, see ``snapshot_request``).
BOOK_FREQUENCY = "100ms"
BOOK_LEVEL = "100"
SNAPSHOT_PATH = "/api/v4/futures/usdt/order_book"
#: Handshake headers: ``X-Gate-Size-Decimal: 1`` makes sizes decimal strings (needed for contracts with
#: ``enable_decimal``; set by ccxt and gocryptotrader, not in the scraped docs, §2.4).
WS_HEADERS: dict[str, str] = {"X-Gate-Size-Decimal": "1"}
INT32_MAX = 2**31 - 1  # ccxt: Gate support said ``id`` must fit in int32 (§2.2, UNVERIFIED)
#: ``Parsed.reconnect`` of a frame with ``"event": "upgrade"``: the official SDK (gatews ``Connection._read``) closes
#: the socket and reconnects on it, whatever the channel (§2.4; not in the futures doc).
UPGRADE_REASON = "server asked to reconnect (event upgrade)"
#: The contract named by an error text, e.g. ``unknown contract BTC_USDT_20220318`` (§2.4).
_ERROR_CONTRACT = re.compile(r"\bcontract ([A-Za-z0-9_]+)")
KLINE_FIELDS = frozenset({"t", "o", "h", "l", "c", "v", "n"})
#: The per-connection subscription count is undocumented (a maintainer said "no limit", §2.4): 200 is our own cap;
#: no documented frame-size or message-rate limit, so 8192 bytes and 50 ms between frames are ours too.
MAX_TOPICS_PER_CONNECTION = 200
MAX_SUBSCRIBE_FRAME_BYTES = 8192
MIN_SEND_INTERVAL_MS = 50

# -- private channels (§2.3, §2.6, §2.7) ----------------------------------------------------------------------------
ORDERS = "futures.orders"
POSITIONS = "futures.positions"
BALANCES = "futures.balances"
#: Feedplane private channel -> Gate channel (§2.6). Payloads: ``[uid, "!all"]`` for orders and positions (all
#: contracts; for positions the uid is a deprecated placeholder), ``[uid]`` for balances.
PRIVATE_CHANNELS: dict[str, str] = {"order": ORDERS, "position": POSITIONS, "balance": BALANCES}
PRIVATE_FEED: dict[str, str] = {native: channel for channel, native in PRIVATE_CHANNELS.items()}
#: REST snapshots after a (re)connect (§2.7), on ``https://api.gateio.ws`` (the path carries ``/api/v4``).
OPEN_ORDERS_PATH = "/api/v4/futures/usdt/orders"
POSITIONS_PATH = "/api/v4/futures/usdt/positions"
#: Extra REST header: decimal-string sizes, as on the socket (§2.4; ccxt sends it on every futures call). Not signed.
REST_HEADERS: dict[str, str] = {"X-Gate-Size-Decimal": "1"}


def native_payload(topic: Topic) -> tuple[str, list[str]]:
    """``(gate channel, payload)`` for ``topic``; for list channels the payload is its one contract.

    ``gateio:kline:BTC_USDT:1w`` -> ``("futures.candlesticks", ["7d", "BTC_USDT"])``;
    ``gateio:depth:BTC_USDT`` -> ``("futures.order_book_update", ["BTC_USDT", "100ms", "100"])``.
    Raises AdapterError for a channel or timeframe Gate does not serve here.
    """
    native = NATIVE_CHANNELS.get(topic.channel)
    if native is None:
        raise AdapterError(f"gateio does not support channel {topic.channel!r}")
    if native == CANDLESTICKS:
        interval = TIMEFRAMES.get(topic.timeframe or "")
        if interval is None:
            raise AdapterError(f"gateio has no {topic.timeframe!r} candlesticks; use one of {' '.join(TIMEFRAMES)}")
        return native, [interval, topic.symbol]
    if native == ORDER_BOOK_UPDATE:
        return native, [topic.symbol, BOOK_FREQUENCY, BOOK_LEVEL]
    return native, [topic.symbol]


def route(topic: Topic) -> str:
    """``"usdt"`` for market data: one socket type carries every USDT contract and channel (§2.1);
    ``"private:<account>"`` for an account's order/position/balance topics."""
    if topic.channel in PRIVATE_CHANNELS:
        return f"private:{topic.symbol}"
    return "usdt"


def validate(topic: Topic) -> None:
    """Raise AdapterError unless ``topic`` is a gateio topic of a served channel (and timeframe), or a private
    order/position/balance topic with a valid account name."""
    if not check_owner_and_account(topic, EXCHANGE_ID, PRIVATE_CHANNELS):
        native_payload(topic)


# -- subscribe replies (§2.4) ---------------------------------------------------------------------------------------


def on_reply(msg: dict[str, Any], action: str, private_topics: dict[str, str]) -> Parsed:
    """A subscribe/unsubscribe reply (§2.4) -> one ``Ack``.

    ``request_id`` is the echoed ``id`` (newer servers); the connection maps it to the topics it sent.
    ``topic`` is set when the echoed ``payload`` names exactly one Feedplane topic. The 2023 server
    echoes neither (``shared/exchange-ws-samples/cryptofeed/GATEIO_FUTURES.ws.1.0``): such acks carry
    ``channel`` (the Feedplane channel of the Gate channel) and ``symbols`` (the contracts of an echoed payload
    that names several, and the one an error text names, ``"unknown contract X"``), and the connection ties them
    to a request with ``base.match_request``, so a refused subscribe fails its own topic. A private channel's reply names the account's topic (``private_topics``: Gate
    channel -> topic) whatever its payload: one topic per channel and account. ``error`` is ``"<code>: <message>"``
    verbatim (bad auth: code 4, §2.4).
    """
    request_id = msg.get("id")
    if type(request_id) is not int:
        request_id = None
    error_obj = msg.get("error")
    result = msg.get("result")
    if error_obj is not None:
        error: str | None = _error_text(error_obj)
    elif type(result) is dict and result.get("status") not in (None, "success"):
        error = f"request failed (status {result.get('status')!r})"
    else:
        error = None
    channel = msg.get("channel")
    payload = msg.get("payload")
    topic = private_topics.get(channel) if type(channel) is str else None
    if topic is None:
        topic = _reply_topic(channel, payload) if type(channel) is str and type(payload) is list else None
    if request_id is not None or topic is not None:
        return Parsed(acks=[Ack(ok=error is None, action=action, topic=topic, request_id=request_id, error=error)])
    feed_channel = _FEED_CHANNELS.get(channel) if type(channel) is str else None
    named = _ERROR_CONTRACT.search(error) if error is not None else None
    symbols = tuple(p for p in payload if _is_contract(p)) if type(payload) is list else ()
    if named is not None and named.group(1) not in symbols:
        symbols += (named.group(1),)
    ack = Ack(ok=error is None, action=action, error=error, channel=feed_channel, symbols=symbols)
    return Parsed(acks=[ack])


def _reply_topic(channel: str, payload: list[Any]) -> str | None:
    """The one Feedplane topic an echoed ``payload`` names, or None (several contracts, unknown channel)."""
    feed_channel = _FEED_CHANNELS.get(channel)
    if feed_channel is None or not payload:
        return None
    if channel == CANDLESTICKS:
        if len(payload) != 2:
            return None
        tf = INTERVALS.get(payload[0])
        contract = payload[1]
        return f"gateio:kline:{contract}:{tf}" if tf and _is_contract(contract) else None
    if channel in LIST_CHANNELS and len(payload) != 1:
        return None
    contract = payload[0]  # order_book_update: [contract, frequency, level]
    return f"gateio:{feed_channel}:{contract}" if _is_contract(contract) else None


def _is_contract(value: Any) -> bool:
    """True for a Gate contract name as we subscribe it (upper case, ``BTC_USDT``)."""
    if type(value) is not str:
        return False
    try:
        return normalize_symbol(value) == value
    except TopicError:
        return False


def _error_text(error: Any) -> str:
    """``{"code":2,"message":"unknown contract X"}`` -> ``"2: unknown contract X"`` (§2.4)."""
    if type(error) is dict:
        code, message = error.get("code"), error.get("message")
        if code is not None and message is not None:
            return f"{code}: {message}"
        if code is not None or message is not None:
            return str(code if message is None else message)
        return _dumps(error).decode()
    return error if type(error) is str else _dumps(error).decode()


# -- value formats ------------------------------------------------------------------------------------------------


def _bar_start(item: dict[str, Any]) -> int:
    """A candle's ``t`` (seconds) as an int; ValueError for anything but an integer."""
    t = item["t"]
    if type(t) is int:
        return t
    if type(t) is str and t.isdigit():
        return int(t)
    raise ValueError(f"candle t must be integer seconds, got {t!r}")


def _int(value: Any) -> int:
    """An id that must be an integer (``U``, ``u``, snapshot ``id``); digit strings are accepted."""
    if type(value) is int:
        return value
    if type(value) is str and value.isdigit():
        return int(value)
    raise ValueError(f"expected an integer id, got {value!r}")


def _size(value: Any) -> str:
    """A size as a decimal string: strings as sent, ints via ``str``; floats (and bools) are refused."""
    if type(value) is str:
        return value
    if type(value) is int:
        return str(value)
    raise ValueError(f"size must be an integer or a decimal string, got {value!r}")


def _text(value: Any) -> str | None:
    """An optional ticker value as a string: ``""``/missing -> None, ints via ``str``, floats via ``repr``
    (the shortest text that round-trips, i.e. what was on the wire for ordinary values)."""
    t = type(value)
    if t is str:
        return value or None
    if value is None:
        return None
    if t is int or t is float:
        return repr(value)
    raise ValueError(f"expected a decimal value, got {value!r}")


def _frame_ms(msg: dict[str, Any]) -> int | None:
    """The frame's ``time_ms`` when it is a positive int (the 2023 acks carry ``0``), else None."""
    t = msg.get("time_ms")
    return t if type(t) is int and t > 0 else None


def _ms(value: Any) -> int | None:
    """Epoch ms from an int, a float or a decimal string (``"1545136464123.123"``), truncated; exact
    (Decimal / int conversion, no float arithmetic). None stays None."""
    t = type(value)
    if t is int:
        return value  # type: ignore[no-any-return]  # an int (type() checks are the fast path here)
    if value is None:
        return None
    if t is float or t is str:
        return _decimal_int(value, 1)
    raise ValueError(f"expected a millisecond time, got {value!r}")


def _seconds_to_ms(value: Any) -> int | None:
    """Epoch ms from seconds given as an int, a float (REST ``current``) or a decimal string; exact."""
    t = type(value)
    if t is int:
        return value * 1000  # type: ignore[no-any-return]  # an int
    if value is None:
        return None
    if t is float or t is str:
        return _decimal_int(value, 1000)
    raise ValueError(f"expected a time in seconds, got {value!r}")


def _decimal_int(value: float | str, scale: int) -> int:
    # repr(float) is the shortest text that round-trips: 1684930166.384 stays 1684930166.384, not ...383999
    try:
        return int(Decimal(repr(value) if type(value) is float else value) * scale)
    except (ArithmeticError, ValueError) as exc:  # decimal.InvalidOperation is an ArithmeticError
        raise ValueError(f"not a decimal time: {value!r}") from exc
