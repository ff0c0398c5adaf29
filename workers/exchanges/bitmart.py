"""BitMart USDT-M futures v2 WebSocket adapter: public market data (klines, trades, ticker, best bid/ask, order
book) and one account's private orders, positions and balances (pure: no I/O, no clock; time comes in as ``now_ms``).

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

Private socket (``/user?protocol=1.1``, login first; §1.3, §1.7)::

    login    {"action":"access","args":["<api key>","<ts ms>","<hex HMAC-SHA256(secret, ts#memo#bitmart.WebSocket)>","web"]}
    login ok {"action":"access","success":true}   fail: {"action":"access","success":false,"error":"access failed: ..."}
    order    {"group":"futures/order","data":[{"action":3,"order":{"order_id":"220906179895578","client_order_id":"BM1234",
              "price":"1","size":"1000","symbol":"BTCUSDT","state":2,"side":1,"type":"limit","deal_avg_price":"0",
              "deal_size":"1000","update_time":1662368173000,...}}]}
    position {"group":"futures/position","data":[{"symbol":"BTCUSDT","hold_volume":"2000","position_type":1,"open_type":1,
              "hold_avg_price":"19406.2092","open_avg_price":"19406.2092","liquidate_price":"15621.998406",
              "update_time":1662692862255,...}]}
    asset    {"group":"futures/asset:BTC","data":{"currency":"BTC","available_balance":"1000","position_deposit":"1000",
              "frozen_balance":"1000"}}

REST (``https://api-cloud-v2.bitmart.com``, §1.1, §1.3): headers ``X-BM-KEY``, ``X-BM-TIMESTAMP``, ``X-BM-SIGN`` = hex
HMAC-SHA256(secret, ``<ts ms>#<memo>#<payload>``), payload = query string (GET) or JSON body (POST); replies
``{"code":1000,"message":"Ok","data":[...],"trace":"..."}``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from control.topics import TIMEFRAME_MS, Topic, validate_account
from workers.exchanges.base import (
    Ack,
    AdapterError,
    BookUpdate,
    Credentials,
    OutFrame,
    Parsed,
    RestRequest,
    SnapshotRequest,
)
from workers.exchanges.signing import check_credentials, hmac_sha256_hex

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
#: BitMart pushes books about once a second whatever the speed (§1.6 observed cadence). Levels outside the 50 never
#: get updates (§1.6), so a depth topic publishes at most ``DEPTH_LEVELS`` (``control.topics.DEPTH_LEVELS_CAP``).
DEPTH_LEVELS = 50
_DEPTH_CHANNEL = f"futures/depthIncrease{DEPTH_LEVELS}"
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

# -- private channels (§1.7) ----------------------------------------------------------------------------------------
_ORDER_CHANNEL = "futures/order"
_POSITION_CHANNEL = "futures/position"
_ASSET_CHANNEL = "futures/asset"
#: The balance topic subscribes ``futures/asset:USDT`` only: USDT is the margin asset of the USDT-M contracts Feedplane
#: relays; BTC and ETH (the other documented CCYs, §1.7) margin coin-M contracts. Pushes and acks of any
#: ``futures/asset:<CCY>`` still map to the account's balance topic, so adding a currency is a one-line change.
BALANCE_CURRENCY = "USDT"
#: Feedplane private channel -> the BitMart topic subscribed for it (§1.7; no symbol filter: one topic per account).
PRIVATE_TOPICS: dict[str, str] = {
    "order": _ORDER_CHANNEL,
    "position": _POSITION_CHANNEL,
    "balance": f"{_ASSET_CHANNEL}:{BALANCE_CURRENCY}",
}
#: Native channel (``group`` before ``:``) -> Feedplane private channel.
_PRIVATE_NATIVE: dict[str, str] = {_ORDER_CHANNEL: "order", _POSITION_CHANNEL: "position", _ASSET_CHANNEL: "balance"}
#: The fixed payload of the login signature (§1.3).
LOGIN_PAYLOAD = "bitmart.WebSocket"
#: REST snapshots after a (re)connect, on ``https://api-cloud-v2.bitmart.com`` (§1.1). Both are KEYED endpoints in the
#: futures v2 doc (X-BM-KEY alone would do); they are sent signed anyway (§1.3 REST signing), which SIGNED endpoints
#: require and KEYED ones are expected to ignore (UNVERIFIED).
OPEN_ORDERS_PATH = "/contract/private/get-open-orders"
POSITIONS_PATH = "/contract/private/position"
#: ``order.side`` (§1.7): hedge mode 1 buy_open_long, 2 buy_close_short, 3 sell_close_long, 4 sell_open_short;
#: one-way mode 1 buy, 2 buy reduce-only, 3 sell reduce-only, 4 sell. The direction is the same in both modes.
_ORDER_SIDES: dict[int, str] = {1: "buy", 2: "buy", 3: "sell", 4: "sell"}
_REDUCING_SIDES = frozenset({2, 3})
#: ``order.state`` 4 = finished (1 approval and 2 check are open states, §1.7).
_STATE_FINISHED = 4
#: Push ``action``s that cancel the order: 3 cancel, 4 liquidate-cancel, 5 ADL-cancel (§1.7).
_CANCEL_ACTIONS = frozenset({3, 4, 5})
#: ``position_mode`` (§1.7) -> PositionEvent ``mode``; the same two words as Binance and Gate map to.
_POSITION_MODES: dict[str, str] = {"hedge_mode": "hedge", "one_way_mode": "one_way"}
_POSITION_SIDES: dict[int, str] = {1: "long", 2: "short"}
#: Position push ``open_type`` is numeric (1 isolated, 2 cross, §1.7); orders and REST spell it out.
_MARGIN_MODES: dict[int | str, str] = {1: "isolated", 2: "cross", "isolated": "isolated", "cross": "cross"}


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


# -- signing (§1.3) -----------------------------------------------------------------------------------------------


def sign(secret: str, timestamp_ms: int | str, memo: str, payload: str) -> str:
    """Hex HMAC-SHA256 keyed with ``secret`` of ``"<timestamp_ms>#<memo>#<payload>"`` (§1.3).

    ``payload`` is ``bitmart.WebSocket`` for the socket login, the query string (GET) or the JSON body (POST) for REST.
    Doc vector: secret ``6c6c9854…9df9``, memo ``test001``, ts ``1589267764859``, payload ``bitmart.WebSocket`` ->
    ``3ceeb7e1…4556``.
    """
    return hmac_sha256_hex(secret, f"{timestamp_ms}#{memo}#{payload}")


def _signing_creds(creds: Credentials | None) -> Credentials:
    creds = check_credentials(creds, EXCHANGE_ID)
    if not creds.memo:  # the memo is part of every signed string; BitMart asks for one when a key is created (§1.3)
        raise AdapterError(f"bitmart:{creds.account} has no API memo; BitMart signatures need it")
    return creds


def login_frame(creds: Credentials, now_ms: int) -> str:
    """``{"action":"access","args":[api_key, "<now_ms>", sign, "web"]}``: the private socket's login (§1.3).

    ``sign`` = ``sign(secret, now_ms, memo, "bitmart.WebSocket")``; the server accepts a timestamp within 60 s and
    answers ``{"action":"access","success":true|false}`` (see ``BitmartParser``; it drops the socket on failure).
    The frame carries the API key and a signature: do not log it. Raises AdapterError for credentials of another
    exchange or without key, secret or memo.
    """
    creds = _signing_creds(creds)
    args = [creds.api_key, str(now_ms), sign(creds.api_secret, now_ms, creds.memo, LOGIN_PAYLOAD), "web"]
    return _dumps({"action": "access", "args": args}).decode()


def rest_headers(creds: Credentials, now_ms: int, payload: str) -> dict[str, str]:
    """``{"X-BM-KEY", "X-BM-TIMESTAMP", "X-BM-SIGN"}`` for a REST call whose query string (GET) or JSON body (POST)
    is ``payload`` (``""`` for none), signed at ``now_ms`` (§1.3). Raises AdapterError as ``login_frame``."""
    creds = _signing_creds(creds)
    return {
        "X-BM-KEY": creds.api_key,
        "X-BM-TIMESTAMP": str(now_ms),
        "X-BM-SIGN": sign(creds.api_secret, now_ms, creds.memo, payload),
    }


def open_orders_request(creds: Credentials, now_ms: int) -> RestRequest:
    """``GET /contract/private/get-open-orders`` (all symbols), signed over the empty query string.

    The endpoint returns at most 100 orders (its ``limit`` default and maximum, futures v2 doc): more open orders
    than that are not all in the snapshot.
    """
    return RestRequest("GET", OPEN_ORDERS_PATH, {}, rest_headers(creds, now_ms, ""))


def positions_request(creds: Credentials, now_ms: int) -> RestRequest:
    """``GET /contract/private/position`` (all symbols), signed over the empty query string."""
    return RestRequest("GET", POSITIONS_PATH, {}, rest_headers(creds, now_ms, ""))


class BitmartParser:
    """Parses frames of one BitMart connection into ``Parsed`` results.

    ``account`` names the private topics this parser emits (``bitmart:order:<account>`` ...): give it for the private
    socket of that account. Without it, private pushes and their acks are ``unknown`` (a public socket never gets
    them). Login replies are ``Ack(action="login")`` either way.

    State: the last kline seen per topic, used to infer bar closes — BitMart has **no closed
    flag**; a bar is final when a push with a larger ``ts`` arrives (§1.6), or at its deadline: the connection's
    ``workers.kline_close.KlineCloser`` closes it on time and drops this parser's repeat. Order-book pushes are
    not sequence-checked here: they go out as ``Parsed.book`` for the book keeper (``book_rule``).

    Counters (``counters()``; the connection shows them in its status record under ``parser``): ``stale_klines``
    counts kline items older than the last bar seen for their topic (dropped); ``trades_without_side`` counts trades
    without ``m``, published with ``side: None`` (see ``_on_trade``).
    """

    __slots__ = ("_handlers", "_last_bar", "_private_topics", "account", "stale_klines", "trades_without_side")

    def __init__(self, account: str | None = None) -> None:
        self.account = None if account is None else validate_account(account)
        # native private channel -> this account's topic; empty without an account
        self._private_topics: dict[str, str] = (
            {} if account is None else {native: f"bitmart:{ch}:{account}" for native, ch in _PRIVATE_NATIVE.items()}
        )
        self._last_bar: dict[str, dict[str, Any]] = {}
        self.stale_klines = 0
        self.trades_without_side = 0
        on_kline = self._on_kline
        # Dispatch on the native channel (the group before ':'), built once (style.md habit 3).
        self._handlers: dict[str, Callable[[str, str, Any, int], Parsed]] = {
            **{channel: on_kline for channel in _KLINE_CHANNELS},
            _TRADE_CHANNEL: self._on_trade,
            _TICKER_CHANNEL: _on_ticker,
            _BOOKTICKER_CHANNEL: _on_bookticker,
            _DEPTH_CHANNEL: _on_depth,
            "System": _on_system,
            _ORDER_CHANNEL: self._on_orders,
            _POSITION_CHANNEL: self._on_positions,
            _ASSET_CHANNEL: self._on_asset,
        }

    def parse(self, raw: str | bytes, ts_received_ms: int) -> Parsed:
        """Parse one text frame received at ``ts_received_ms`` (epoch ms).

        Returns events (kline/trade/ticker/bookticker dicts and, with an account, order/position/balance dicts of
        ``control.events``), ``book`` (depthIncrease pushes as ``BookUpdate``), acks (``Ack.topic`` is the Feedplane
        topic string; login replies are ``Ack(action="login")``), ``pong``, ``error`` (frame-level error without a
        group) or ``unknown`` (valid JSON we do not handle, e.g. other channels). Raises ValueError on invalid JSON
        or a known push with a malformed body.
        """
        msg = _loads(raw)
        if type(msg) is not dict:
            return Parsed(unknown=True)
        if "success" in msg:
            return _on_reply(msg, self._private_topics)
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

    def counters(self) -> dict[str, int]:
        """``{"stale_klines": n, "trades_without_side": n}``, cumulative for this parser (one socket)."""
        return {"stale_klines": self.stale_klines, "trades_without_side": self.trades_without_side}

    # -- private pushes (§1.7) ---------------------------------------------------------------------------------------

    def _on_orders(self, channel: str, symbol: str, data: Any, ts_received_ms: int) -> Parsed:
        """``futures/order``: ``data`` is an array of ``{"action": <int>, "order": {...}}``; one OrderEvent each
        (see ``order_event`` for the field and status mapping)."""
        topic = self._private_topics.get(channel)
        if topic is None:
            return Parsed(unknown=True)
        account = self.account or ""
        return Parsed(
            events=[(topic, order_event(item["order"], account, ts_received_ms, item.get("action"))) for item in data]
        )

    def _on_positions(self, channel: str, symbol: str, data: Any, ts_received_ms: int) -> Parsed:
        """``futures/position`` (pushed on change and every 10 s, §1.7): ``data`` is an array; one PositionEvent each.

        ``hold_volume`` -> ``size`` (unsigned; ``position_type`` 1 long / 2 short gives ``side``), ``hold_avg_price``
        (else ``open_avg_price``) -> ``entry_price``, ``liquidate_price`` -> ``liquidation_price``, ``open_type``
        1 isolated / 2 cross -> ``margin_mode``, ``position_mode`` hedge_mode / one_way_mode -> ``mode`` hedge /
        one_way (None when absent, as in the doc example), ``update_time`` -> ``ts_exchange``. The push has no mark
        price, leverage or PnL: those are None.
        """
        topic = self._private_topics.get(channel)
        if topic is None:
            return Parsed(unknown=True)
        account = self.account or ""
        events = []
        for p in data:
            entry = p.get("hold_avg_price")
            events.append(
                (
                    topic,
                    {
                        "type": "position",
                        "exchange": EXCHANGE_ID,
                        "account": account,
                        "symbol": p["symbol"],
                        "side": _POSITION_SIDES[p["position_type"]],
                        "mode": _POSITION_MODES.get(p.get("position_mode") or ""),
                        "size": p["hold_volume"],
                        "entry_price": entry if entry is not None else p.get("open_avg_price"),
                        "mark_price": None,
                        "liquidation_price": p.get("liquidate_price"),
                        "leverage": None,
                        "margin_mode": _margin_mode(p.get("open_type")),
                        "unrealized_pnl": None,
                        "ts_exchange": p.get("update_time"),
                        "ts_received": ts_received_ms,
                        "snapshot": False,
                    },
                )
            )
        return Parsed(events=events)

    def _on_asset(self, channel: str, symbol: str, data: Any, ts_received_ms: int) -> Parsed:
        """``futures/asset:<CCY>``: ``data`` is one object ``{currency, available_balance, position_deposit,
        frozen_balance}`` (§1.7) -> one BalanceEvent.

        ``available`` = ``available_balance``, ``frozen`` = ``frozen_balance``. ``balance`` is None: the push has no
        wallet or equity figure, and the reference does not say how ``available_balance``, ``frozen_balance`` and
        ``position_deposit`` (margin held by positions) add up to one, nor whether unrealized PnL is in any of them,
        so no sum is invented (UNVERIFIED: REST ``assets-detail`` would have ``equity``). The push has no time: ``ts_exchange`` is None. A list ``data`` gives one event per item.
        """
        topic = self._private_topics.get(channel)
        if topic is None:
            return Parsed(unknown=True)
        account = self.account or ""
        items = data if type(data) is list else (data,)
        return Parsed(
            events=[
                (
                    topic,
                    {
                        "type": "balance",
                        "exchange": EXCHANGE_ID,
                        "account": account,
                        "asset": item.get("currency") or symbol,
                        "balance": None,
                        "available": item.get("available_balance"),
                        "frozen": item.get("frozen_balance"),
                        "ts_exchange": None,
                        "ts_received": ts_received_ms,
                        "snapshot": False,
                    },
                )
                for item in items
            ]
        )

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
        ``side`` is the taker side from ``m`` (true = buyer is maker, so the taker sold). Without ``m`` (missing or
        null, as in the doc's own example) the side cannot be derived from a documented fact: the doc's ``way``
        table (1-8) names both orders of a match but not which one was the taker, and the one wire sample (way 2,
        m true) contradicts ccxt's ``way < 5 -> buy`` reading. Such trades are published with ``side: None`` rather
        than a guess that would be wrong about half the time, and counted in ``trades_without_side``.
        ``created_at`` (RFC 3339, ns) -> ``ts_exchange`` in ms.
        """
        events: list[tuple[str, dict[str, Any]]] = []
        for trade in reversed(data):
            sym = symbol or trade["symbol"]
            m = trade.get("m")
            side: str | None
            if m is None:
                self.trades_without_side += 1
                side = None
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


def _on_reply(msg: dict[str, Any], private_topics: dict[str, str]) -> Parsed:
    """A ``success`` reply: one ack per topic (§1.4), a frame-level error, or a login reply (§1.3).

    ``error`` texts are kept verbatim. Login (``access``) replies are ``Ack(ok, action="login", error=text)``.
    Acks of the private channels map to the account's topics through ``private_topics`` (native channel -> topic;
    any ``futures/asset:<CCY>`` is the balance topic). Replies for channels that are not ours (and any ``request``
    reply) are ``unknown`` when successful; failed ones become a frame-level ``error`` ``"<group>: <text>"`` so
    they are logged (e.g. ``futures/order need authenication`` on a socket without login or without an account).
    """
    ok = msg["success"] is True
    error = None if ok else _error_text(msg.get("error"))
    action = msg.get("action")
    group = msg.get("group")
    if action in ("subscribe", "unsubscribe") and type(group) is str:
        topic = group_to_topic(group) or private_topics.get(_split_group(group)[0])
        if topic is not None:
            return Parsed(acks=[Ack(ok=ok, action=action, topic=topic, error=error)])
    if action == "access":  # login replies (§1.3); on failure the server drops the connection
        return Parsed(acks=[Ack(ok=ok, action="login", error=error)])
    if not ok:
        return Parsed(error=error if group is None else f"{group}: {error}")
    return Parsed(unknown=True)


# -- private events (§1.7) and REST snapshots ----------------------------------------------------------------------


def _decimal(value: Any, name: str) -> Decimal:
    """``value`` (a decimal string or an int, as BitMart sends sizes) as a Decimal; ValueError otherwise."""
    if type(value) is not str and type(value) is not int:
        raise ValueError(f"bitmart {name} must be a decimal string, got {value!r}")
    try:
        number = Decimal(value)
    except InvalidOperation:
        number = None
    if number is None or not number.is_finite():
        raise ValueError(f"bitmart {name} must be a decimal string, got {value!r}")
    return number


def order_status(state: int, action: int | None, size: Any, deal_size: Any) -> str:
    """The OrderEvent ``status`` of a BitMart order (§1.7 ``state``/``action``; sizes compared as Decimals).

    1. ``action`` 3 cancel, 4 liquidate-cancel or 5 ADL-cancel -> ``canceled`` (whatever ``state`` says: the push
       reports the cancel);
    2. ``state`` 4 finished -> ``filled`` when ``deal_size >= size`` (and ``size > 0``), else ``canceled`` (a finished
       order with a remainder was cancelled: IOC/market remainder, partial fill then cancel);
    3. any other ``state`` (1 approval, 2 check: open) -> ``partially_filled`` when ``deal_size > 0``, else ``new``.

    REST open orders carry no ``action`` (None). ``deal_size`` None counts as 0. Raises ValueError for a size that
    is not a decimal string.
    """
    if action in _CANCEL_ACTIONS:
        return "canceled"
    filled = Decimal(0) if deal_size is None else _decimal(deal_size, "deal_size")
    if state == _STATE_FINISHED:
        total = _decimal(size, "size")
        return "filled" if total > 0 and filled >= total else "canceled"
    return "partially_filled" if filled > 0 else "new"


def order_event(
    order: dict[str, Any], account: str, ts_received_ms: int, action: int | None = None, snapshot: bool = False
) -> dict[str, Any]:
    """One BitMart order (a ``futures/order`` push's ``data[].order`` or a REST open-orders item) as an OrderEvent.

    ``order_id``/``client_order_id`` as strings (``""`` client id -> None), ``side`` 1/2 -> buy, 3/4 -> sell,
    ``type`` -> ``order_type`` as sent (limit, market, plan_order, ...), ``status`` from ``order_status``,
    ``status_raw`` ``"<state>/<action>"`` (``"<state>"`` without an action, REST), ``price``/``size`` as sent,
    ``deal_size`` -> ``filled_size``, ``deal_avg_price`` -> ``avg_fill_price`` (``"0"`` before any fill, as sent),
    ``update_time`` -> ``ts_exchange``. ``reduce_only``: in one_way_mode sides 2 and 3 are the reduce-only ones; in
    hedge_mode False (closing is expressed by the side there, like Binance's ``R`` in hedge mode); None when the
    order carries no ``position_mode`` (the doc example). Raises KeyError/ValueError for a malformed order.
    """
    state = order["state"]
    side = order["side"]
    mode = order.get("position_mode")
    if mode == "one_way_mode":
        reduce_only: bool | None = side in _REDUCING_SIDES
    elif mode == "hedge_mode":
        reduce_only = False
    else:
        reduce_only = None
    client_id = order.get("client_order_id")
    return {
        "type": "order",
        "exchange": EXCHANGE_ID,
        "account": account,
        "symbol": order["symbol"],
        "order_id": str(order["order_id"]),
        "client_order_id": str(client_id) if client_id not in (None, "") else None,
        "side": _ORDER_SIDES[side],
        "order_type": order["type"],
        "status": order_status(state, action, order.get("size"), order.get("deal_size")),
        "status_raw": f"{state}/{action}" if action is not None else str(state),
        "price": order.get("price"),
        "size": order.get("size"),
        "filled_size": order.get("deal_size"),
        "avg_fill_price": order.get("deal_avg_price"),
        "reduce_only": reduce_only,
        "ts_exchange": order.get("update_time"),
        "ts_received": ts_received_ms,
        "snapshot": snapshot,
    }


def _margin_mode(open_type: Any) -> str | None:
    if open_type is None:
        return None
    if type(open_type) is str:
        open_type = open_type.lower()  # REST "Cross" / "Isolated"
    return _MARGIN_MODES[open_type]


def _rest_data(body: bytes | str, what: str) -> list[Any]:
    """``data`` of a BitMart REST reply ``{"code":1000,"message":"Ok","data":[...]}``; ValueError for an error
    reply (``code`` other than 1000, text kept) or another shape."""
    msg = _loads(body)
    if type(msg) is not dict:
        raise ValueError(f"bitmart {what} reply is not an object")
    code = msg.get("code")
    if code != 1000:
        raise ValueError(f"bitmart {what} failed: {code}: {msg.get('message')}")
    data = msg.get("data")
    if type(data) is not list:
        raise ValueError(f"bitmart {what} reply has no data list")
    return data


def parse_open_orders(body: bytes | str, account: str, ts_received_ms: int) -> list[tuple[str, dict[str, Any]]]:
    """A ``GET /contract/private/get-open-orders`` reply as ``(bitmart:order:<account>, OrderEvent(snapshot=True))``
    pairs. Items have the push's order fields (futures v2 doc; ``state`` 2, no ``action``). Raises ValueError for an
    error reply or a malformed item."""
    topic = f"bitmart:order:{validate_account(account)}"
    try:
        return [
            (topic, order_event(item, account, ts_received_ms, None, True)) for item in _rest_data(body, "open orders")
        ]
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"malformed bitmart open order: {exc!r}") from exc


def parse_positions(body: bytes | str, account: str, ts_received_ms: int) -> list[tuple[str, dict[str, Any]]]:
    """A ``GET /contract/private/position`` reply as ``(bitmart:position:<account>, PositionEvent(snapshot=True))``.

    REST fields (futures v2 doc "Get Current Position"): ``current_amount`` -> ``size``, ``position_type`` 1/2 ->
    long/short, ``position_mode``, ``entry_price`` (else ``open_avg_price``), ``mark_price``, ``leverage``,
    ``margin_type`` Cross/Isolated -> cross/isolated, ``unrealized_value`` -> ``unrealized_pnl``, ``timestamp`` ->
    ``ts_exchange``. The doc's example carries no liquidation price; ``liquidation_price`` is read from
    ``liquidation_price`` or ``liquidate_price`` when present (UNVERIFIED field name). Raises ValueError for an error
    reply or a malformed item.
    """
    topic = f"bitmart:position:{validate_account(account)}"
    events = []
    try:
        for p in _rest_data(body, "positions"):
            entry = p.get("entry_price")
            liq = p.get("liquidation_price")
            events.append(
                (
                    topic,
                    {
                        "type": "position",
                        "exchange": EXCHANGE_ID,
                        "account": account,
                        "symbol": p["symbol"],
                        "side": _POSITION_SIDES[p["position_type"]],
                        "mode": _POSITION_MODES.get(p.get("position_mode") or ""),
                        "size": p["current_amount"],
                        "entry_price": entry if entry is not None else p.get("open_avg_price"),
                        "mark_price": p.get("mark_price"),
                        "liquidation_price": liq if liq is not None else p.get("liquidate_price"),
                        "leverage": p.get("leverage"),
                        "margin_mode": _margin_mode(p.get("margin_type")),
                        "unrealized_pnl": p.get("unrealized_value"),
                        "ts_exchange": p.get("timestamp"),
                        "ts_received": ts_received_ms,
                        "snapshot": True,
                    },
                )
            )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"malformed bitmart position: {exc!r}") from exc
    return events


def _error_text(error: Any) -> str:
    if type(error) is str:
        return error
    if error is None:
        return "request failed (no error text)"
    return _dumps(error).decode()


def _check_account(topic: Topic) -> None:
    """AdapterError unless a private topic's symbol slot holds a valid account name (``control.topics.ACCOUNT_RE``)."""
    try:
        validate_account(topic.symbol)
    except ValueError as exc:
        raise AdapterError(str(exc)) from None


class BitmartAdapter:
    """BitMart futures v2 market data (klines, trades, ticker, best bid/ask, order book) and private account data
    (orders, positions, balances) as data plus pure functions.

    Limits: 100 topics per socket worked on the wire (§1.5); a 2,186-byte subscribe frame closed the
    socket with 1009 while 2,020 bytes was accepted, so frames stay ≤ 2,000 bytes (§1.5); no
    documented message-rate limit (the connection spaces frames by ``SUBSCRIBE_DELAY_MS``). The
    client must send ``{"action":"ping"}`` (§1.5). Order books come as a snapshot on the socket followed by
    versioned deltas (§1.6 depthIncrease), so there is no REST snapshot.

    Private topics (``bitmart:order:<account>`` ...) need their own socket per account: the ``/user`` URL (§1.1),
    ``login_frame`` first, then the subscribe frames; ``route`` keeps them apart from public topics.
    """

    id = EXCHANGE_ID
    channels = frozenset({"kline", "trade", "ticker", "bookticker", "depth"})
    private_channels = frozenset(PRIVATE_TOPICS)
    timeframes = TIMEFRAMES
    max_topics_per_connection = 100
    max_subscribe_frame_bytes = 2000
    min_send_interval_ms = 0
    app_ping = True
    kline_closed_flag = False  # no closed flag in kline pushes (§1.6): bars are closed on time by the connection
    ws_headers = WS_HEADERS
    book_rule = "bitmart"
    max_depth_levels = DEPTH_LEVELS

    def route(self, topic: Topic) -> str:
        """``"public"`` for market data: one public socket carries every contract (§1.1); ``"private:<account>"``
        for an account's order/position/balance topics (one logged-in ``/user`` socket per account, §1.3)."""
        if topic.channel in self.private_channels:
            return f"private:{topic.symbol}"
        return "public"

    def ws_url(self, base_url: str, route: str) -> str:
        """``base_url`` unchanged: ``wss://openapi-ws-v2.bitmart.com/api?protocol=1.1`` for ``public``; for a
        ``private:<account>`` route the caller passes the private URL ``…/user?protocol=1.1`` (§1.1, settings
        ``BITMART_PRIVATE_WS_URI``)."""
        return base_url

    def validate(self, topic: Topic) -> None:
        """Raise AdapterError unless ``topic`` is a bitmart kline (known timeframe), trade, ticker, bookticker,
        depth, or private order/position/balance topic (valid account name)."""
        if topic.exchange != EXCHANGE_ID:
            raise AdapterError(f"topic {topic} is not a bitmart topic")
        if topic.channel in self.private_channels:
            _check_account(topic)
            return
        native_topic(topic)

    def subscribe_frames(
        self,
        topics: list[Topic],
        batch_size: int,
        first_request_id: int,
        *,
        now_ms: int = 0,
        creds: Credentials | None = None,
    ) -> list[OutFrame]:
        """``{"action":"subscribe","args":[...]}`` frames (§1.4), each ≤ ``batch_size`` topics and ≤ 2,000 bytes.

        Private topics become ``futures/order``, ``futures/position``, ``futures/asset:USDT`` (§1.7); send them on the
        account's logged-in socket (the login carries the credentials, so ``creds`` is unused here). BitMart acks
        per topic, so ``request_id`` is None and ``first_request_id`` is unused; so is ``now_ms`` (BitMart frames
        carry no time). Raises AdapterError for a topic BitMart cannot serve, ValueError if ``batch_size < 1``.
        """
        return self._frames("subscribe", topics, batch_size)

    def unsubscribe_frames(
        self,
        topics: list[Topic],
        batch_size: int,
        first_request_id: int,
        *,
        now_ms: int = 0,
        creds: Credentials | None = None,
    ) -> list[OutFrame]:
        """``{"action":"unsubscribe","args":[...]}`` frames, same rules as ``subscribe_frames``."""
        return self._frames("unsubscribe", topics, batch_size)

    def ping_frame(self, *, now_ms: int = 0) -> str | None:
        """``{"action":"ping"}``; plain ``ping`` is rejected as non-JSON on the futures host (§1.5).
        ``now_ms`` is unused."""
        return '{"action":"ping"}'

    def new_parser(self, account: str | None = None) -> BitmartParser:
        """A fresh parser (with empty kline state) for one connection; ``account`` names the private topics it emits
        (give it for an account's private socket)."""
        return BitmartParser(account)

    # -- private data (§1.3, §1.7) -----------------------------------------------------------------------------------

    def login_frame(self, creds: Credentials, now_ms: int) -> str | None:
        """The ``access`` login frame to send first on a private socket; see the module function ``login_frame``."""
        return login_frame(creds, now_ms)

    def rest_headers(self, creds: Credentials, now_ms: int, payload: str) -> dict[str, str]:
        """Signed REST headers; see the module function ``rest_headers``."""
        return rest_headers(creds, now_ms, payload)

    def open_orders_request(self, creds: Credentials, now_ms: int) -> RestRequest:
        """The open-orders snapshot request after a (re)connect; see the module function ``open_orders_request``."""
        return open_orders_request(creds, now_ms)

    def positions_request(self, creds: Credentials, now_ms: int) -> RestRequest:
        """The positions snapshot request after a (re)connect; see the module function ``positions_request``."""
        return positions_request(creds, now_ms)

    def parse_open_orders(self, body: bytes, account: str, ts_received_ms: int) -> list[tuple[str, dict[str, Any]]]:
        """Open orders as snapshot OrderEvents; see the module function ``parse_open_orders``."""
        return parse_open_orders(body, account, ts_received_ms)

    def parse_positions(self, body: bytes, account: str, ts_received_ms: int) -> list[tuple[str, dict[str, Any]]]:
        """Positions as snapshot PositionEvents; see the module function ``parse_positions``."""
        return parse_positions(body, account, ts_received_ms)

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
