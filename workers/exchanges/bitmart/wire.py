"""BitMart futures v2 wire facts as data: URLs' channel spellings, limits, private topics, REST paths, and how
Feedplane topics become native topics and subscribe frames (pure; ``shared/reference/exchanges.md`` §1).

Wire shapes (§1.4, §1.5)::

    subscribe {"action":"subscribe","args":["futures/klineBin1m:BTCUSDT","futures/trade:BTCUSDT"]}
    ack       {"action":"subscribe","group":"futures/klineBin1m:BTCUSDT","success":true,"request":{...}}
    ping      {"action":"ping"}   ->   {"group":"System","data":"pong+<uuid>"}
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from control.exchanges.bitmart import BITMART
from control.topics import Topic
from workers.exchanges.base import AdapterError, OutFrame
from workers.exchanges.checks import check_owner_and_account

_dumps = orjson.dumps

EXCHANGE_ID = BITMART.id
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
TRADE_CHANNEL = "futures/trade"
#: Per-symbol ticker, ``futures/ticker:<SYM>`` since 2025-02-11 (§1.6).
TICKER_CHANNEL = "futures/ticker"
BOOKTICKER_CHANNEL = "futures/bookticker"
#: Sequenced order book: snapshot then deltas, 50 levels (§1.6 depthIncrease). ``@100ms`` is asked for, but
#: BitMart pushes books about once a second whatever the speed (§1.6 observed cadence). Levels outside the 50 never
#: get updates (§1.6), so a depth topic publishes at most ``DEPTH_LEVELS`` (``control.topics.DEPTH_LEVELS_CAP``).
DEPTH_LEVELS = 50
DEPTH_CHANNEL = f"futures/depthIncrease{DEPTH_LEVELS}"
_DEPTH_SPEED = "@100ms"
#: Native channel (the part of ``group`` before ``:``) -> (Feedplane channel, canonical timeframe).
KLINE_CHANNELS: dict[str, str] = {_KLINE_PREFIX + native: tf for tf, native in TIMEFRAMES.items()}
_NATIVE_CHANNELS: dict[str, tuple[str, str | None]] = {
    **{channel: ("kline", tf) for channel, tf in KLINE_CHANNELS.items()},
    TRADE_CHANNEL: ("trade", None),
    TICKER_CHANNEL: ("ticker", None),
    BOOKTICKER_CHANNEL: ("bookticker", None),
    DEPTH_CHANNEL: ("depth", None),
}
#: Feedplane channel -> native channel prefix, for the channels whose native topic is ``<prefix>:<SYMBOL>``.
_PLAIN_CHANNELS: dict[str, str] = {
    "trade": TRADE_CHANNEL,
    "ticker": TICKER_CHANNEL,
    "bookticker": BOOKTICKER_CHANNEL,
}
#: 100 topics per socket worked on the wire (§1.5).
MAX_TOPICS_PER_CONNECTION = 100
#: A 2,186-byte subscribe frame closed the socket with 1009 while 2,020 bytes was accepted (§1.5).
MAX_SUBSCRIBE_FRAME_BYTES = 2000
#: No documented message-rate limit: the connection spaces frames by ``SUBSCRIBE_DELAY_MS``.
MIN_SEND_INTERVAL_MS = 0
#: The client must ping; plain ``ping`` is rejected as non-JSON on the futures host (§1.5).
PING_FRAME = '{"action":"ping"}'

# -- private channels (§1.7) ----------------------------------------------------------------------------------------
ORDER_CHANNEL = "futures/order"
POSITION_CHANNEL = "futures/position"
ASSET_CHANNEL = "futures/asset"
#: The balance topic subscribes ``futures/asset:USDT`` only: USDT is the margin asset of the USDT-M contracts Feedplane
#: relays; BTC and ETH (the other documented CCYs, §1.7) margin coin-M contracts. Pushes and acks of any
#: ``futures/asset:<CCY>`` still map to the account's balance topic, so adding a currency is a one-line change.
BALANCE_CURRENCY = "USDT"
#: Feedplane private channel -> the BitMart topic subscribed for it (§1.7; no symbol filter: one topic per account).
PRIVATE_TOPICS: dict[str, str] = {
    "order": ORDER_CHANNEL,
    "position": POSITION_CHANNEL,
    "balance": f"{ASSET_CHANNEL}:{BALANCE_CURRENCY}",
}
#: Native channel (``group`` before ``:``) -> Feedplane private channel.
PRIVATE_NATIVE: dict[str, str] = {ORDER_CHANNEL: "order", POSITION_CHANNEL: "position", ASSET_CHANNEL: "balance"}
#: The fixed payload of the login signature (§1.3).
LOGIN_PAYLOAD = "bitmart.WebSocket"
#: REST snapshots after a (re)connect, on ``https://api-cloud-v2.bitmart.com`` (§1.1). Both are KEYED endpoints in the
#: futures v2 doc (X-BM-KEY alone would do); they are sent signed anyway (§1.3 REST signing), which SIGNED endpoints
#: require and KEYED ones are expected to ignore (UNVERIFIED).
OPEN_ORDERS_PATH = "/contract/private/get-open-orders"
POSITIONS_PATH = "/contract/private/position"
#: ``order.side`` (§1.7): hedge mode 1 buy_open_long, 2 buy_close_short, 3 sell_close_long, 4 sell_open_short;
#: one-way mode 1 buy, 2 buy reduce-only, 3 sell reduce-only, 4 sell. The direction is the same in both modes.
ORDER_SIDES: dict[int, str] = {1: "buy", 2: "buy", 3: "sell", 4: "sell"}
REDUCING_SIDES = frozenset({2, 3})
#: ``order.state`` 4 = finished (1 approval and 2 check are open states, §1.7).
STATE_FINISHED = 4
#: Push ``action``s that cancel the order: 3 cancel, 4 liquidate-cancel, 5 ADL-cancel (§1.7).
CANCEL_ACTIONS = frozenset({3, 4, 5})
#: ``position_mode`` (§1.7) -> PositionEvent ``mode``; the same two words as Binance and Gate map to.
POSITION_MODES: dict[str, str] = {"hedge_mode": "hedge", "one_way_mode": "one_way"}
POSITION_SIDES: dict[int, str] = {1: "long", 2: "short"}
#: Position push ``open_type`` is numeric (1 isolated, 2 cross, §1.7); orders and REST spell it out.
MARGIN_MODES: dict[int | str, str] = {1: "isolated", 2: "cross", "isolated": "isolated", "cross": "cross"}


def native_topic(topic: Topic) -> str:
    """The BitMart topic for ``topic`` (§1.6): ``futures/klineBin1H:BTCUSDT``, ``futures/trade:BTCUSDT``,
    ``futures/ticker:BTCUSDT``, ``futures/bookticker:BTCUSDT`` or ``futures/depthIncrease50:BTCUSDT@100ms``; for the
    private ``order``/``position``/``balance`` topics ``futures/order``, ``futures/position``, ``futures/asset:USDT``
    (§1.7).

    Raises AdapterError for a channel or timeframe BitMart does not serve.
    """
    channel = topic.channel
    private = PRIVATE_TOPICS.get(channel)
    if private is not None:
        return private
    if channel == "kline":
        native = TIMEFRAMES.get(topic.timeframe or "")
        if native is None:
            raise AdapterError(f"bitmart has no {topic.timeframe!r} kline channel; use one of {' '.join(TIMEFRAMES)}")
        return f"{_KLINE_PREFIX}{native}:{topic.symbol}"
    if channel == "depth":
        return f"{DEPTH_CHANNEL}:{topic.symbol}{_DEPTH_SPEED}"
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


def route(topic: Topic) -> str:
    """``"public"`` for market data: one public socket carries every contract (§1.1); ``"private:<account>"``
    for an account's order/position/balance topics (one logged-in ``/user`` socket per account, §1.3)."""
    if topic.channel in PRIVATE_TOPICS:
        return f"private:{topic.symbol}"
    return "public"


def validate(topic: Topic) -> None:
    """Raise AdapterError unless ``topic`` is a bitmart kline (known timeframe), trade, ticker, bookticker,
    depth, or private order/position/balance topic (valid account name)."""
    if not check_owner_and_account(topic, EXCHANGE_ID, PRIVATE_TOPICS):
        native_topic(topic)


def frames(action: str, topics: list[Topic], batch_size: int) -> list[OutFrame]:
    """``{"action":"subscribe"|"unsubscribe","args":[...]}`` frames (§1.4), each ≤ ``batch_size`` topics and
    ≤ ``MAX_SUBSCRIBE_FRAME_BYTES``. Private topics become ``futures/order``, ``futures/position``,
    ``futures/asset:USDT`` (§1.7); send them on the account's logged-in socket. BitMart acks per topic, so
    ``request_id`` is None. Raises AdapterError for a topic BitMart cannot serve, ValueError if ``batch_size < 1``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    limit = MAX_SUBSCRIBE_FRAME_BYTES
    empty_bytes = len(_dumps({"action": action, "args": []}))
    batches: list[tuple[list[str], list[str]]] = []
    args: list[str] = []
    names: list[str] = []
    size = empty_bytes
    for topic in topics:
        validate(topic)
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


def ratio_to_percent(ratio: Any) -> str:
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
