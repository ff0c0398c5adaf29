"""Gate.io USDT-settled futures v4 WebSocket adapter (pure, no I/O, no clock; time comes in as ``now_ms``).

Klines, trades, tickers, best bid/ask and the ``order_book_update`` book; one account's orders, positions and
balances (private channels with a per-request ``auth``), plus signed REST snapshots. Protocol facts are from
``shared/reference/exchanges.md`` §2; each is tagged with its section.

Wire shapes handled (§2.2, §2.4, §2.5)::

    ack     {"time":1684930165,"time_ms":0,"channel":"futures.trades","event":"subscribe","result":{"status":"success"}}
            (newer servers also echo "id","conn_id","trace_id","payload","requestId")
    error   {...,"event":"subscribe","error":{"code":2,"message":"unknown contract BTC_USDT_20220318"},
             "result":{"status":"fail"}}
    pong    {"time":1684930165,"time_ms":1684930165001,"channel":"futures.pong","event":"","result":null}
    kline   {"time":1684930165,"time_ms":1684930165934,"channel":"futures.candlesticks","event":"update",
             "result":[{"t":1684930140,"v":0,"c":"0.1701","h":"0.1701","l":"0.1701","o":"0.1701","n":"1m_FRONT_USDT"}]}
    trade   {"channel":"futures.trades","event":"update","result":[{"size":-108,"id":27753479,"create_time":1545136464,
             "create_time_ms":1545136464123,"price":"96.4","contract":"ETH_USDT"}]}
    ticker  {"channel":"futures.tickers","event":"update","time_ms":1541659086123,"result":[{"contract":"ETH_USDT",
             "last":"118.4","change_percentage":"0.77","funding_rate":"-0.000114","mark_price":"118.35", ...}]}
    bbo     {"channel":"futures.book_ticker","event":"update",
             "result":{"t":1684930165621,"u":6159967,"s":"PHB_USDT","b":"0.7379","B":814,"a":"0.739","A":677}}
    book    {"channel":"futures.order_book_update","event":"update","result":{"t":1684930165247,"s":"RDNT_USDT",
             "U":203083178,"u":203083178,"b":[],"a":[{"p":"0.3047","s":8393}]}}

Private channels (§2.3, §2.6)::

    subscribe {"id":1,"time":1700000000,"channel":"futures.orders","event":"subscribe",
               "auth":{"method":"api_key","KEY":"<key>","SIGN":"<hex HMAC-SHA512(secret, channel=…&event=…&time=…)>"},
               "payload":["<uid>","!all"]}                    (futures.balances: "payload":["<uid>"])
    orders    {"channel":"futures.orders","event":"update","time_ms":1541505434123,"result":[{"contract":"BTC_USD",
               "id":4872460,"size":"1.5","left":"0.5","price":40000.4,"fill_price":40000.4,"status":"finished",
               "finish_as":"filled","tif":"gtc","text":"-","is_reduce_only":false,"finish_time_ms":1628736848321,...}]}
    positions {"channel":"futures.positions","event":"update","result":[{"contract":"BTC_USD","size":"3.5",
               "entry_price":40000.36666661111,"leverage":0,"cross_leverage_limit":0,"liq_price":0.1,"mode":"single",
               "time_ms":1628736848321,...}]}
    balances  {"channel":"futures.balances","event":"update","result":[{"balance":9.998739899488,
               "change":-0.000002074115,"currency":"btc","type":"fee","time_ms":1547199246123,...}]}

REST (§2.7, host ``https://api.gateio.ws``, paths with ``/api/v4``): headers ``KEY``, ``Timestamp`` (s) and ``SIGN`` =
hex HMAC-SHA512(secret, ``METHOD\nPATH\nQUERY\nhex(SHA512(body))\nTIMESTAMP``); errors ``{"label","message"}``.

Sizes are "int or decimal string" (decimal with the ``X-Gate-Size-Decimal: 1`` handshake header, §2.4);
they are passed on as strings and never go through floats. Private pushes carry prices as JSON numbers
(§2.6): those go through ``repr`` (the shortest text that round-trips, i.e. the wire text for ordinary values).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Context, Decimal, Inexact, InvalidOperation
from typing import Any

import orjson

from control.topics import TIMEFRAME_MS, Topic, TopicError, normalize_symbol, validate_account
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
from workers.exchanges.signing import check_credentials, hmac_sha512_hex, sha512_hex

_loads = orjson.loads
_dumps = orjson.dumps

EXCHANGE_ID = "gateio"
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
_INTERVALS: dict[str, str] = {native: tf for tf, native in TIMEFRAMES.items()}

_CANDLESTICKS = "futures.candlesticks"
_TRADES = "futures.trades"
_TICKERS = "futures.tickers"
_BOOK_TICKER = "futures.book_ticker"
_ORDER_BOOK_UPDATE = "futures.order_book_update"
#: Feedplane channel -> Gate channel. Candlesticks and order_book_update take ONE contract per
#: request; the other three take a list of contracts (§2.4 "Args per request").
NATIVE_CHANNELS: dict[str, str] = {
    "kline": _CANDLESTICKS,
    "trade": _TRADES,
    "ticker": _TICKERS,
    "bookticker": _BOOK_TICKER,
    "depth": _ORDER_BOOK_UPDATE,
}
_LIST_CHANNELS = frozenset({_TRADES, _TICKERS, _BOOK_TICKER})
_FEED_CHANNELS: dict[str, str] = {native: channel for channel, native in NATIVE_CHANNELS.items()}
#: ``order_book_update`` subscription: 100 ms pushes of the top 100 levels (§2.5; the REST snapshot
#: ``limit`` must equal the level, see ``snapshot_request``).
BOOK_FREQUENCY = "100ms"
BOOK_LEVEL = "100"
SNAPSHOT_PATH = "/api/v4/futures/usdt/order_book"
#: Handshake headers: ``X-Gate-Size-Decimal: 1`` makes sizes decimal strings (needed for contracts with
#: ``enable_decimal``; set by ccxt and gocryptotrader, not in the scraped docs, §2.4).
WS_HEADERS: dict[str, str] = {"X-Gate-Size-Decimal": "1"}
_INT32_MAX = 2**31 - 1  # ccxt: Gate support said ``id`` must fit in int32 (§2.2, UNVERIFIED)
#: ``Parsed.reconnect`` of a frame with ``"event": "upgrade"``: the official SDK (gatews ``Connection._read``) closes
#: the socket and reconnects on it, whatever the channel (§2.4; not in the futures doc).
UPGRADE_REASON = "server asked to reconnect (event upgrade)"
#: The contract named by an error text, e.g. ``unknown contract BTC_USDT_20220318`` (§2.4).
_ERROR_CONTRACT = re.compile(r"\bcontract ([A-Za-z0-9_]+)")
_KLINE_FIELDS = frozenset({"t", "o", "h", "l", "c", "v", "n"})

# -- private channels (§2.3, §2.6, §2.7) ----------------------------------------------------------------------------
_ORDERS = "futures.orders"
_POSITIONS = "futures.positions"
_BALANCES = "futures.balances"
#: Feedplane private channel -> Gate channel (§2.6). Payloads: ``[uid, "!all"]`` for orders and positions (all
#: contracts; for positions the uid is a deprecated placeholder), ``[uid]`` for balances.
PRIVATE_CHANNELS: dict[str, str] = {"order": _ORDERS, "position": _POSITIONS, "balance": _BALANCES}
_PRIVATE_FEED: dict[str, str] = {native: channel for channel, native in PRIVATE_CHANNELS.items()}
#: REST snapshots after a (re)connect (§2.7), on ``https://api.gateio.ws`` (the path carries ``/api/v4``).
OPEN_ORDERS_PATH = "/api/v4/futures/usdt/orders"
POSITIONS_PATH = "/api/v4/futures/usdt/positions"
#: Extra REST header: decimal-string sizes, as on the socket (§2.4; ccxt sends it on every futures call). Not signed.
REST_HEADERS: dict[str, str] = {"X-Gate-Size-Decimal": "1"}
#: Position ``mode`` (§2.6): ``single`` is one-way (signed ``size``), ``dual_long``/``dual_short`` the two legs of
#: hedge ("dual") mode. -> (PositionEvent ``side``, ``mode``).
_POSITION_MODES: dict[str, tuple[str, str]] = {
    "single": ("both", "one_way"),
    "dual_long": ("long", "hedge"),
    "dual_short": ("short", "hedge"),
}
#: Exact decimal arithmetic for ``filled = |size| - |left|``: any rounding raises instead of going unnoticed.
_EXACT = Context(prec=100, traps=[Inexact, InvalidOperation])


def native_payload(topic: Topic) -> tuple[str, list[str]]:
    """``(gate channel, payload)`` for ``topic``; for list channels the payload is its one contract.

    ``gateio:kline:BTC_USDT:1w`` -> ``("futures.candlesticks", ["7d", "BTC_USDT"])``;
    ``gateio:depth:BTC_USDT`` -> ``("futures.order_book_update", ["BTC_USDT", "100ms", "100"])``.
    Raises AdapterError for a channel or timeframe Gate does not serve here.
    """
    native = NATIVE_CHANNELS.get(topic.channel)
    if native is None:
        raise AdapterError(f"gateio does not support channel {topic.channel!r}")
    if native == _CANDLESTICKS:
        interval = TIMEFRAMES.get(topic.timeframe or "")
        if interval is None:
            raise AdapterError(f"gateio has no {topic.timeframe!r} candlesticks; use one of {' '.join(TIMEFRAMES)}")
        return native, [interval, topic.symbol]
    if native == _ORDER_BOOK_UPDATE:
        return native, [topic.symbol, BOOK_FREQUENCY, BOOK_LEVEL]
    return native, [topic.symbol]


# -- signing (§2.3, §2.7) ---------------------------------------------------------------------------------------


def ws_signature(secret: str, channel: str, event: str, time_s: int) -> str:
    """SIGN of a private subscribe/unsubscribe (§2.3a): hex HMAC-SHA512 keyed with ``secret`` of
    ``channel=<channel>&event=<event>&time=<time_s>``, ``time_s`` being the frame's ``time`` (seconds).
    Vector: secret ``gatesecret_fedcba9876543210``, ``futures.orders``, ``subscribe``, 1700000000 -> ``7ea8581e…0330``."""
    return hmac_sha512_hex(secret, f"channel={channel}&event={event}&time={time_s}")


def ws_auth(creds: Credentials, channel: str, event: str, time_s: int) -> dict[str, str]:
    """The ``auth`` object of a private request: ``{"method":"api_key","KEY":key,"SIGN":ws_signature(...)}`` (§2.3a)."""
    return {"method": "api_key", "KEY": creds.api_key, "SIGN": ws_signature(creds.api_secret, channel, event, time_s)}


def login_signature(secret: str, channel: str, req_param: str, timestamp_s: int) -> str:
    """WebSocket-API signature (§2.3b, for placing orders over the socket later): hex HMAC-SHA512 of
    ``"api\n<channel>\n<req_param>\n<timestamp_s>"``. For ``futures.login`` the official SDK and ccxt sign
    ``req_param="{}"``; the doc says ``""`` — which one the server accepts is UNVERIFIED (follow the SDK)."""
    return hmac_sha512_hex(secret, f"api\n{channel}\n{req_param}\n{timestamp_s}")


def rest_signature(secret: str, method: str, path: str, query: str, body: str | bytes, timestamp_s: int | str) -> str:
    """REST SIGN (§2.7): hex HMAC-SHA512 of ``METHOD\nPATH\nQUERY\nhex(SHA512(body))\nTIMESTAMP``; ``path``
    includes ``/api/v4``, ``query`` is the raw query string in the order sent (``""`` if none), ``body`` ``""`` for
    none."""
    return hmac_sha512_hex(secret, f"{method.upper()}\n{path}\n{query}\n{sha512_hex(body)}\n{timestamp_s}")


def rest_headers(
    creds: Credentials, method: str, path: str, query: str, body: str | bytes, now_ms: int
) -> dict[str, str]:
    """``{"KEY", "Timestamp", "SIGN"}`` (Timestamp = ``now_ms // 1000``, within 60 s of server time) plus
    ``X-Gate-Size-Decimal: 1`` (unsigned) for a REST call (§2.7). Raises AdapterError for credentials of another
    exchange or without key/secret."""
    creds = check_credentials(creds, EXCHANGE_ID)
    timestamp = str(now_ms // 1000)
    return {
        "KEY": creds.api_key,
        "Timestamp": timestamp,
        "SIGN": rest_signature(creds.api_secret, method, path, query, body, timestamp),
        **REST_HEADERS,
    }


def account_uid(creds: Credentials) -> str:
    """Gate's user id for the private payloads (§2.6): the account's ``uid`` (``control.accounts.Account.uid``, set from
    ``GATEIO_UID`` or the accounts file), else its ``memo`` (where a Credentials object without ``uid`` carries it).
    Raises AdapterError when both are empty."""
    uid = getattr(creds, "uid", "") or creds.memo
    if not uid:
        raise AdapterError(f"gateio:{creds.account} has no uid (Gate user id); private channels need it")
    return str(uid)


def private_payload(topic: Topic, uid: str) -> tuple[str, list[str]]:
    """``(gate channel, payload)`` of a private topic: ``("futures.orders", [uid, "!all"])``, ``("futures.positions",
    [uid, "!all"])`` or ``("futures.balances", [uid])`` (§2.6). Raises AdapterError for a public topic."""
    native = PRIVATE_CHANNELS.get(topic.channel)
    if native is None:
        raise AdapterError(f"{topic} is not a private gateio topic")
    return native, [uid] if native == _BALANCES else [uid, "!all"]


class GateioParser:
    """Parses frames of one Gate futures connection into ``Parsed`` results.

    State: the last kline per topic, to infer bar closes — Gate futures candles carry **no closed
    flag** (§2.5, UNVERIFIED that none exists); a bar is final when a push with a later ``t`` arrives, or at its
    deadline (``workers.kline_close.KlineCloser``, run by the connection, which drops this parser's repeat).

    ``account`` names the private topics this parser emits (``gateio:order:<account>`` ...): give it for the
    account's private socket. Without it, ``futures.orders``/``positions``/``balances`` pushes are ``unknown`` and
    their acks carry no topic.

    Counters (for metrics): ``stale_klines`` — kline items older than the topic's last bar (dropped);
    ``incomplete_klines`` — kline items missing a field (dropped; e.g. the ``{"n": ...}``-only items
    of JKorf's ``Concurrent.txt``); ``internal_trades`` — trades flagged ``is_internal`` (insurance
    fund / ADL takeovers, §2.5), which are still emitted as trades.
    """

    __slots__ = (
        "_handlers",
        "_kline_names",
        "_last_bar",
        "_private_topics",
        "_topics",
        "account",
        "incomplete_klines",
        "internal_trades",
        "stale_klines",
    )

    def __init__(self, account: str | None = None) -> None:
        self.account = None if account is None else validate_account(account)
        # Gate private channel -> this account's topic; empty without an account
        self._private_topics: dict[str, str] = (
            {} if account is None else {native: f"gateio:{ch}:{account}" for native, ch in _PRIVATE_FEED.items()}
        )
        self._last_bar: dict[str, dict[str, Any]] = {}
        # candle "n" ("1m_BTC_USDT") -> (topic, contract, timeframe, timeframe ms), or None if not ours
        self._kline_names: dict[str, tuple[str, str, str, int] | None] = {}
        # (feed channel, contract) -> topic string
        self._topics: dict[tuple[str, str], str] = {}
        self.stale_klines = 0
        self.incomplete_klines = 0
        self.internal_trades = 0
        # Dispatch on the Gate channel of "update"/"all" pushes, built once (style.md habit 3).
        self._handlers: dict[str, Callable[[dict[str, Any], int], Parsed]] = {
            _CANDLESTICKS: self._on_kline,
            _TRADES: self._on_trades,
            _TICKERS: self._on_tickers,
            _BOOK_TICKER: self._on_book_ticker,
            _ORDER_BOOK_UPDATE: self._on_book,
            _ORDERS: self._on_orders,
            _POSITIONS: self._on_positions,
            _BALANCES: self._on_balances,
        }

    def parse(self, raw: str | bytes, ts_received_ms: int) -> Parsed:
        """Parse one text frame received at ``ts_received_ms`` (epoch ms).

        Returns events (kline/trade/ticker/bookticker dicts of ``control.events``), ``book`` (one
        ``BookUpdate`` per ``order_book_update`` push), acks (see ``_on_reply``), ``pong``, ``error``
        (frame-level errors), ``reconnect`` (``event: "upgrade"``: the server wants a new socket, §2.4) or
        ``unknown`` (valid JSON we do not handle: other private
        channels, private channels without an account, ``futures.obu``, contract stats ...). With an account,
        ``futures.orders``/``positions``/``balances`` pushes become order/position/balance events. Raises
        ValueError on invalid JSON or a known push with a malformed body.
        """
        msg = _loads(raw)
        if type(msg) is not dict:
            return Parsed(unknown=True)
        channel = msg.get("channel")
        event = msg.get("event")
        if event == "update" or event == "all":
            handler = self._handlers.get(channel) if type(channel) is str else None
            if handler is not None:
                try:
                    return handler(msg, ts_received_ms)
                except (KeyError, TypeError, AttributeError, IndexError) as exc:
                    raise ValueError(f"malformed gateio {channel} push: {exc!r}") from exc
        elif event == "subscribe" or event == "unsubscribe":
            return _on_reply(msg, event, self._private_topics)
        elif channel == "futures.pong":
            return Parsed(pong=True)
        elif event == "upgrade":  # gatews closes the socket and reconnects on it (§2.4, UNVERIFIED beyond the SDK)
            return Parsed(reconnect=UPGRADE_REASON)
        error = msg.get("error")
        if error is not None:
            return Parsed(error=_error_text(error))
        return Parsed(unknown=True)

    def counters(self) -> dict[str, int]:
        """``stale_klines``, ``incomplete_klines``, ``internal_trades``: cumulative for this parser (one socket); the
        connection shows them in its status record under ``parser``."""
        return {
            "stale_klines": self.stale_klines,
            "incomplete_klines": self.incomplete_klines,
            "internal_trades": self.internal_trades,
        }

    def _topic(self, channel: str, contract: str) -> str:
        topic = self._topics.get((channel, contract))
        if topic is None:
            topic = self._topics[(channel, contract)] = f"gateio:{channel}:{contract}"
        return topic

    def _kline_name(self, name: str) -> tuple[str, str, str, int] | None:
        """``"1m_BTC_USDT"`` -> ``("gateio:kline:BTC_USDT:1m", "BTC_USDT", "1m", 60000)``; split on the
        first ``_`` (the contract has its own, §2.5). None for intervals we never subscribe (10s, 8h)."""
        if name in self._kline_names:
            return self._kline_names[name]
        interval, _, contract = name.partition("_")
        tf = _INTERVALS.get(interval)
        known = (f"gateio:kline:{contract}:{tf}", contract, tf, TIMEFRAME_MS[tf]) if tf and contract else None
        self._kline_names[name] = known
        return known

    def _on_kline(self, msg: dict[str, Any], ts_received_ms: int) -> Parsed:
        """``futures.candlesticks`` (§2.5): ``result`` is an array of bars; ``t`` is the bar start in s.

        Emits ``open_time = t * 1000``, ``close_time = open_time + timeframe - 1`` (``7d`` -> ``1w``),
        ``ts_exchange`` = the frame's ``time_ms``. When an item opens a later bar, the topic's previous bar
        is emitted again first with ``closed=True`` (its own ``ts_exchange`` kept). Older items are dropped.
        """
        items = msg["result"]
        bars = [item for item in items if _KLINE_FIELDS <= item.keys()]
        if len(bars) != len(items):
            self.incomplete_klines += len(items) - len(bars)
            if not bars:
                return Parsed(unknown=True)
        if len(bars) > 1:
            bars.sort(key=_bar_start)
        ts_exchange = _frame_ms(msg)
        events: list[tuple[str, dict[str, Any]]] = []
        last_bars = self._last_bar
        ours = False
        for item in bars:
            known = self._kline_name(item["n"])
            if known is None:
                continue
            ours = True
            topic, contract, tf, tf_ms = known
            open_time = _bar_start(item) * 1000
            last = last_bars.get(topic)
            if last is not None and open_time != last["open_time"]:
                if open_time < last["open_time"]:
                    self.stale_klines += 1
                    continue
                events.append((topic, {**last, "closed": True, "ts_received": ts_received_ms}))
            bar = {
                "type": "kline",
                "exchange": EXCHANGE_ID,
                "symbol": contract,
                "timeframe": tf,
                "open_time": open_time,
                "close_time": open_time + tf_ms - 1,
                "open": item["o"],
                "high": item["h"],
                "low": item["l"],
                "close": item["c"],
                "volume": _size(item["v"]),
                "closed": False,
                "ts_exchange": ts_exchange,
                "ts_received": ts_received_ms,
            }
            events.append((topic, bar))
            # a private copy: the emitted dict belongs to the consumer from here on
            last_bars[topic] = bar.copy()
        return Parsed(events=events) if ours or not bars else Parsed(unknown=True)

    def _on_trades(self, msg: dict[str, Any], ts_received_ms: int) -> Parsed:
        """``futures.trades`` (§2.5): ``size`` > 0 means the taker bought, < 0 sold; emitted in wire order.

        ``size`` becomes its absolute value as a string (int or decimal string, never a float);
        ``ts_exchange`` = ``create_time_ms`` (or ``create_time`` * 1000 when absent).
        """
        events: list[tuple[str, dict[str, Any]]] = []
        for trade in msg["result"]:
            contract = trade["contract"]
            size = trade["size"]
            if type(size) is str:
                sell = size.startswith("-")
                if sell or size.startswith("+"):
                    size = size[1:]
            elif type(size) is int:
                sell = size < 0
                size = str(-size if sell else size)
            else:
                raise ValueError(f"trade size must be an integer or a decimal string, got {size!r}")
            if trade.get("is_internal"):
                self.internal_trades += 1
            created = trade.get("create_time_ms")
            ts_exchange = _ms(created) if created is not None else _seconds_to_ms(trade.get("create_time"))
            events.append(
                (
                    self._topic("trade", contract),
                    {
                        "type": "trade",
                        "exchange": EXCHANGE_ID,
                        "symbol": contract,
                        "trade_id": str(trade["id"]),
                        "price": trade["price"],
                        "size": size,
                        "side": "sell" if sell else "buy",
                        "ts_exchange": ts_exchange,
                        "ts_received": ts_received_ms,
                    },
                )
            )
        return Parsed(events=events)

    def _on_tickers(self, msg: dict[str, Any], ts_received_ms: int) -> Parsed:
        """``futures.tickers`` (§2.5): one event per contract; ``volume_24h`` is ``volume_24h_base`` when
        sent, else ``volume_24h`` (contracts); ``change_percentage`` is already in percent."""
        ts_exchange = _frame_ms(msg)
        events: list[tuple[str, dict[str, Any]]] = []
        for t in msg["result"]:
            contract = t["contract"]
            volume = t.get("volume_24h_base")
            if volume is None or volume == "":
                volume = t.get("volume_24h")
            events.append(
                (
                    self._topic("ticker", contract),
                    {
                        "type": "ticker",
                        "exchange": EXCHANGE_ID,
                        "symbol": contract,
                        "last": _text(t.get("last")),
                        "mark_price": _text(t.get("mark_price")),
                        "index_price": _text(t.get("index_price")),
                        "high_24h": _text(t.get("high_24h")),
                        "low_24h": _text(t.get("low_24h")),
                        "volume_24h": _text(volume),
                        "change_pct_24h": _text(t.get("change_percentage")),
                        "funding_rate": _text(t.get("funding_rate")),
                        "ts_exchange": ts_exchange,
                        "ts_received": ts_received_ms,
                    },
                )
            )
        return Parsed(events=events)

    def _on_book_ticker(self, msg: dict[str, Any], ts_received_ms: int) -> Parsed:
        """``futures.book_ticker`` (§2.5): ``b``/``a`` prices (``""`` when that side is empty -> price and
        size None), ``B``/``A`` sizes (int or string), ``u`` update id, ``t`` ms."""
        r = msg["result"]
        contract = r["s"]
        bid = r["b"] or None
        ask = r["a"] or None
        return Parsed(
            events=[
                (
                    self._topic("bookticker", contract),
                    {
                        "type": "bookticker",
                        "exchange": EXCHANGE_ID,
                        "symbol": contract,
                        "bid_price": bid,
                        "bid_size": _size(r["B"]) if bid is not None else None,
                        "ask_price": ask,
                        "ask_size": _size(r["A"]) if ask is not None else None,
                        "update_id": str(r["u"]),
                        "ts_exchange": _ms(r.get("t")),
                        "ts_received": ts_received_ms,
                    },
                )
            ]
        )

    def _on_book(self, msg: dict[str, Any], ts_received_ms: int) -> Parsed:
        """``futures.order_book_update`` (§2.5): a delta ``U``..``u`` for the book keeper (not an event).

        Chain rule (book_rule "gate"): ``U == previous u + 1``; ``full: true`` (2025+) marks a full book.
        """
        r = msg["result"]
        contract = r["s"]
        return Parsed(
            book=[
                BookUpdate(
                    topic=self._topic("depth", contract),
                    symbol=contract,
                    bids=[(level["p"], _size(level["s"])) for level in r["b"]],
                    asks=[(level["p"], _size(level["s"])) for level in r["a"]],
                    first_id=_int(r["U"]),
                    last_id=_int(r["u"]),
                    snapshot=r.get("full") is True,
                    ts_exchange=_ms(r.get("t")),
                    ts_received=ts_received_ms,
                )
            ]
        )

    # -- private pushes (§2.6) ---------------------------------------------------------------------------------------

    def _on_orders(self, msg: dict[str, Any], ts_received_ms: int) -> Parsed:
        """``futures.orders``: one OrderEvent per ``result`` item (see ``order_event``)."""
        topic = self._private_topics.get(_ORDERS)
        if topic is None:
            return Parsed(unknown=True)
        account = self.account or ""
        frame_ms = _frame_ms(msg)
        return Parsed(
            events=[(topic, order_event(o, account, ts_received_ms, frame_ms=frame_ms)) for o in msg["result"]]
        )

    def _on_positions(self, msg: dict[str, Any], ts_received_ms: int) -> Parsed:
        """``futures.positions``: one PositionEvent per ``result`` item (see ``position_event``)."""
        topic = self._private_topics.get(_POSITIONS)
        if topic is None:
            return Parsed(unknown=True)
        account = self.account or ""
        frame_ms = _frame_ms(msg)
        return Parsed(
            events=[(topic, position_event(p, account, ts_received_ms, frame_ms=frame_ms)) for p in msg["result"]]
        )

    def _on_balances(self, msg: dict[str, Any], ts_received_ms: int) -> Parsed:
        """``futures.balances``: a ledger entry per ``result`` item (``balance`` after the ``change``, ``type`` e.g.
        fee, §2.6) -> one BalanceEvent each: ``asset`` = ``currency`` upper-cased (the doc example sends ``btc``),
        ``balance`` = ``balance`` (JSON number -> its text), ``available``/``frozen`` None (not in the push; a REST
        ``GET /futures/usdt/accounts`` has them), ``ts_exchange`` = ``time_ms`` (else ``time`` s, else the frame's)."""
        topic = self._private_topics.get(_BALANCES)
        if topic is None:
            return Parsed(unknown=True)
        account = self.account or ""
        frame_ms = _frame_ms(msg)
        events = []
        for b in msg["result"]:
            ts = _ms(b.get("time_ms"))
            if ts is None:
                ts = _seconds_to_ms(b.get("time"))
            events.append(
                (
                    topic,
                    {
                        "type": "balance",
                        "exchange": EXCHANGE_ID,
                        "account": account,
                        "asset": b["currency"].upper(),
                        "balance": _text(b.get("balance")),
                        "available": None,
                        "frozen": None,
                        "ts_exchange": ts if ts is not None else frame_ms,
                        "ts_received": ts_received_ms,
                        "snapshot": False,
                    },
                )
            )
        return Parsed(events=events)


def _on_reply(msg: dict[str, Any], action: str, private_topics: dict[str, str]) -> Parsed:
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
    if channel == _CANDLESTICKS:
        if len(payload) != 2:
            return None
        tf = _INTERVALS.get(payload[0])
        contract = payload[1]
        return f"gateio:kline:{contract}:{tf}" if tf and _is_contract(contract) else None
    if channel in _LIST_CHANNELS and len(payload) != 1:
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


# -- private events and REST snapshots (§2.6, §2.7) ------------------------------------------------------------


def _signed_size(value: Any) -> tuple[bool, str]:
    """A size (int or decimal string, never a float) as ``(negative, absolute text)``: ``"-1.5"`` -> ``(True, "1.5")``."""
    text = _size(value)
    if text[:1] in ("-", "+"):
        return text[0] == "-", text[1:]
    return False, text


def _decimal(text: str, name: str) -> Decimal:
    try:
        number = Decimal(text)
    except InvalidOperation:
        number = None
    if number is None or not number.is_finite():
        raise ValueError(f"gateio {name} must be a decimal number, got {text!r}")
    return number


def _is_zero(value: Any) -> bool:
    """True for ``0``, ``"0"``, ``0.0``, ``"0.000"`` (a price or leverage); False for None and anything else."""
    if value is None or type(value) is bool:
        return False
    text = _text(value)
    return text is not None and _decimal(text, "number") == 0


def order_status(status: str, finish_as: str, filled: Decimal, left: Decimal) -> str:
    """OrderEvent ``status`` of a Gate futures order (§2.6 ``status`` open|finished, ``finish_as``).

    ``open``: ``partially_filled`` when some size is filled, else ``new``. ``finished``: ``filled`` when
    ``finish_as`` is ``filled`` or nothing is left (``auto_deleveraged`` with nothing left included); otherwise
    ``expired`` for ``ioc`` (the unfilled remainder of an IOC order lapses, like Binance's EXPIRED) and
    ``canceled`` for ``cancelled``, ``liquidated``, ``reduce_only``, ``position_closed``, ``stp``,
    ``auto_deleveraged`` with a remainder, and any other value.
    """
    if status != "finished":
        return "partially_filled" if filled > 0 else "new"
    if finish_as == "filled" or left == 0:
        return "filled"
    return "expired" if finish_as == "ioc" else "canceled"


def order_event(
    o: dict[str, Any],
    account: str,
    ts_received_ms: int,
    *,
    snapshot: bool = False,
    rest: bool = False,
    frame_ms: int | None = None,
) -> dict[str, Any]:
    """One Gate futures order (a ``futures.orders`` item, or a REST order with ``rest=True``) as an OrderEvent.

    - ``side``: the sign of ``size`` (+ bid -> buy, − ask -> sell); a ``size`` of 0 (``close`` orders) takes the sign
      of ``left``, else buy. ``size``: ``|size|``; ``filled_size``: ``|size| − |left|`` (exact Decimal, text without
      exponent); both as decimal strings, never floats.
    - ``status`` from ``order_status``; ``status_raw`` ``"<status>/<finish_as>"`` (``"open"`` when ``finish_as`` is
      empty or absent).
    - ``order_type``: Gate has none; ``price`` 0 with ``tif`` ``ioc`` is its market order (§2.7), so ``market``,
      else ``limit``.
    - ``client_order_id``: ``text`` when it is a user id (``t-`` prefix, §2.7); other texts (``web``, ``api``,
      ``app``, ``-``) name the order's origin -> None.
    - ``price``/``avg_fill_price`` (``fill_price``): text of the JSON number or string; ``reduce_only`` =
      ``is_reduce_only``.
    - ``ts_exchange``: socket: ``update_time`` (ms), else ``finish_time_ms`` (0 while open), else
      ``create_time_ms``, else the frame's ``time_ms``; REST (``rest``): ``finish_time``, else ``create_time``, in
      seconds (floats, converted exactly; the REST model has no update time).
    Raises KeyError/ValueError for a malformed order.
    """
    size_negative, size = _signed_size(o["size"])
    left_negative, left = _signed_size(o.get("left", 0))
    size_dec = _decimal(size, "size")
    left_dec = _decimal(left, "left")
    try:
        filled = _EXACT.subtract(size_dec, left_dec) if size_dec else Decimal(0)
    except ArithmeticError:  # more than 100 significant digits: not a size
        raise ValueError(f"gateio order size {size!r} / left {left!r} cannot be subtracted exactly") from None
    sell = size_negative if size_dec else left_negative
    status = o["status"]
    finish_as = o.get("finish_as") or ""
    text = o.get("text")
    price = _text(o.get("price"))
    order_type = "market" if price is not None and _is_zero(price) and o.get("tif") == "ioc" else "limit"
    if rest:
        ts = None
        for name in ("finish_time", "create_time"):
            value = o.get(name)
            if value:
                ts = _seconds_to_ms(value)
                break
    else:
        ts = _ms(o.get("update_time")) or _ms(o.get("finish_time_ms")) or _ms(o.get("create_time_ms")) or frame_ms
    return {
        "type": "order",
        "exchange": EXCHANGE_ID,
        "account": account,
        "symbol": o["contract"],
        "order_id": str(o["id"]),
        "client_order_id": text if type(text) is str and text.startswith("t-") else None,
        "side": "sell" if sell else "buy",
        "order_type": order_type,
        "status": order_status(status, finish_as, filled, left_dec),
        "status_raw": f"{status}/{finish_as}" if finish_as else status,
        "price": price,
        "size": size,
        "filled_size": format(filled, "f"),
        "avg_fill_price": _text(o.get("fill_price")),
        "reduce_only": o.get("is_reduce_only") if type(o.get("is_reduce_only")) is bool else None,
        "ts_exchange": ts,
        "ts_received": ts_received_ms,
        "snapshot": snapshot,
    }


def position_event(
    p: dict[str, Any],
    account: str,
    ts_received_ms: int,
    *,
    snapshot: bool = False,
    rest: bool = False,
    frame_ms: int | None = None,
) -> dict[str, Any]:
    """One Gate futures position (a ``futures.positions`` item, or a REST position with ``rest=True``) as a
    PositionEvent.

    ``mode`` single -> side ``both`` / mode ``one_way`` (``size`` signed: + long, − short), dual_long / dual_short ->
    ``long`` / ``short`` and ``hedge``; a missing mode -> ``both`` / None. ``size`` as sent (int or decimal string).
    ``leverage`` 0 means cross margin (§2.6): ``margin_mode`` ``cross`` and ``leverage`` = ``cross_leverage_limit``
    (None when that is 0 or absent too); otherwise ``isolated`` with that leverage. ``entry_price``, ``liq_price`` ->
    ``liquidation_price``, ``mark_price`` and ``unrealised_pnl`` (REST only; the push has neither) as text.
    ``ts_exchange``: socket ``time_ms`` (else ``time`` s, else the frame's), REST ``update_time`` (s).
    Raises KeyError/ValueError for a malformed position.
    """
    known = _POSITION_MODES.get(p.get("mode") or "")
    side, mode = known if known is not None else ("both", None)
    leverage = p.get("leverage")
    if leverage is None:
        margin_mode = None
        lev_text = None
    elif _is_zero(leverage):
        margin_mode = "cross"
        cross = p.get("cross_leverage_limit")
        lev_text = None if cross is None or _is_zero(cross) else _text(cross)
    else:
        margin_mode = "isolated"
        lev_text = _text(leverage)
    if rest:
        ts = _seconds_to_ms(p.get("update_time")) or None
    else:
        ts = _ms(p.get("time_ms")) or _seconds_to_ms(p.get("time")) or frame_ms
    return {
        "type": "position",
        "exchange": EXCHANGE_ID,
        "account": account,
        "symbol": p["contract"],
        "side": side,
        "mode": mode,
        "size": _size(p["size"]),
        "entry_price": _text(p.get("entry_price")),
        "mark_price": _text(p.get("mark_price")),
        "liquidation_price": _text(p.get("liq_price")),
        "leverage": lev_text,
        "margin_mode": margin_mode,
        "unrealized_pnl": _text(p.get("unrealised_pnl")),
        "ts_exchange": ts,
        "ts_received": ts_received_ms,
        "snapshot": snapshot,
    }


def _rest_list(body: bytes | str, what: str) -> list[Any]:
    """A Gate REST reply that must be a list; ValueError with ``"<label>: <message>"`` for an error object (§2.7)."""
    msg = _loads(body)
    if type(msg) is list:
        return msg
    if type(msg) is dict and ("label" in msg or "message" in msg):
        raise ValueError(f"gateio {what} failed: {msg.get('label')}: {msg.get('message')}")
    raise ValueError(f"gateio {what} reply is not a list")


def parse_open_orders(body: bytes | str, account: str, ts_received_ms: int) -> list[tuple[str, dict[str, Any]]]:
    """A ``GET /api/v4/futures/usdt/orders?status=open`` reply as ``(gateio:order:<account>,
    OrderEvent(snapshot=True))`` pairs (``order_event`` with ``rest=True``). Raises ValueError for an error reply
    (``{"label":"INVALID_KEY","message":…}``) or a malformed order."""
    topic = f"gateio:order:{validate_account(account)}"
    try:
        return [
            (topic, order_event(o, account, ts_received_ms, snapshot=True, rest=True))
            for o in _rest_list(body, "open orders")
        ]
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"malformed gateio open order: {exc!r}") from exc


def parse_positions(body: bytes | str, account: str, ts_received_ms: int) -> list[tuple[str, dict[str, Any]]]:
    """A ``GET /api/v4/futures/usdt/positions`` reply as ``(gateio:position:<account>, PositionEvent(snapshot=True))``
    pairs (``position_event`` with ``rest=True``). Raises ValueError for an error reply or a malformed position."""
    topic = f"gateio:position:{validate_account(account)}"
    try:
        return [
            (topic, position_event(p, account, ts_received_ms, snapshot=True, rest=True))
            for p in _rest_list(body, "positions")
        ]
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"malformed gateio position: {exc!r}") from exc


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
        return value
    if value is None:
        return None
    if t is float or t is str:
        return _decimal_int(value, 1)
    raise ValueError(f"expected a millisecond time, got {value!r}")


def _seconds_to_ms(value: Any) -> int | None:
    """Epoch ms from seconds given as an int, a float (REST ``current``) or a decimal string; exact."""
    t = type(value)
    if t is int:
        return value * 1000
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


class GateioAdapter:
    """Gate.io USDT futures v4 market data and private account data (orders, positions, balances) as data plus pure
    functions.

    Limits: the per-connection subscription count is undocumented (a maintainer said "no limit",
    §2.4), so 200 topics per socket is our own cap; no documented frame-size or message-rate limit,
    so 8192 bytes and 50 ms between frames are ours too. The server sends protocol pings (aiohttp's
    autoping answers) and cuts a socket after ~1 min without messages, so we also send the
    application ping ``futures.ping`` (§2.4). ``ws_headers`` asks for decimal-string sizes (§2.4).

    Private topics use the same URL with no login (§2.1): each subscribe carries its own ``auth`` (``creds``). They
    still get a socket of their own per account (route ``private:<account>``), so one account's failure (bad key,
    code 4) stays on its socket.
    """

    id = EXCHANGE_ID
    channels = frozenset(NATIVE_CHANNELS)
    private_channels = frozenset(PRIVATE_CHANNELS)
    timeframes = TIMEFRAMES
    max_topics_per_connection = 200
    max_subscribe_frame_bytes = 8192
    min_send_interval_ms = 50
    app_ping = True
    kline_closed_flag = False  # no closed flag in candlestick pushes (§2.5): bars are closed on time by the connection
    ws_headers = WS_HEADERS
    book_rule = "gate"
    #: The book is kept over the subscribed ``order_book_update`` level: only updates within it are notified (§2.5).
    max_depth_levels = int(BOOK_LEVEL)

    def route(self, topic: Topic) -> str:
        """``"usdt"`` for market data: one socket type carries every USDT contract and channel (§2.1);
        ``"private:<account>"`` for an account's order/position/balance topics."""
        if topic.channel in PRIVATE_CHANNELS:
            return f"private:{topic.symbol}"
        return "usdt"

    def ws_url(self, base_url: str, route: str) -> str:
        """``base_url`` unchanged (``wss://fx-ws.gateio.ws/v4/ws/usdt``, §2.1), for private routes too."""
        return base_url

    def validate(self, topic: Topic) -> None:
        """Raise AdapterError unless ``topic`` is a gateio topic of a served channel (and timeframe), or a private
        order/position/balance topic with a valid account name."""
        if topic.exchange != EXCHANGE_ID:
            raise AdapterError(f"topic {topic} is not a gateio topic")
        if topic.channel in PRIVATE_CHANNELS:
            try:
                validate_account(topic.symbol)
            except ValueError as exc:
                raise AdapterError(str(exc)) from None
            return
        native_payload(topic)

    def subscribe_frames(
        self,
        topics: list[Topic],
        batch_size: int,
        first_request_id: int,
        *,
        now_ms: int = 0,
        creds: Credentials | None = None,
    ) -> list[OutFrame]:
        """``{"time","id","channel","event":"subscribe","payload"}`` frames (§2.2, §2.4).

        ``futures.candlesticks`` and ``futures.order_book_update`` get one frame per contract;
        trades, tickers and book_ticker batch up to ``batch_size`` contracts (and 8192 bytes) per
        frame. Frames are grouped by Gate channel in order of first appearance; topic order is kept
        within a channel. Ids count up from ``first_request_id`` (one per frame, must fit in int32);
        ``time`` is ``now_ms // 1000``.

        A private topic gets a frame of its own, in ccxt's key order, signed for ``time`` (§2.3):
        ``{"id","time","channel","event","auth":{"method":"api_key","KEY","SIGN"},"payload":[uid,"!all"]}``
        (balances ``[uid]``; ``uid`` from ``account_uid(creds)``). Its text carries the API key and a
        signature: do not log it. Raises AdapterError for a topic Gate cannot serve, for private topics
        without ``creds`` of that exchange and account or without a uid, ValueError for a bad ``batch_size``
        or id.
        """
        return self._frames("subscribe", topics, batch_size, first_request_id, now_ms, creds)

    def unsubscribe_frames(
        self,
        topics: list[Topic],
        batch_size: int,
        first_request_id: int,
        *,
        now_ms: int = 0,
        creds: Credentials | None = None,
    ) -> list[OutFrame]:
        """``"event":"unsubscribe"`` frames with the subscribe payloads, same rules as ``subscribe_frames``
        (private ones signed for ``event=unsubscribe``)."""
        return self._frames("unsubscribe", topics, batch_size, first_request_id, now_ms, creds)

    def ping_frame(self, *, now_ms: int = 0) -> str | None:
        """``{"time":<s>,"channel":"futures.ping"}``; the server answers ``futures.pong`` (§2.4)."""
        return _dumps({"time": now_ms // 1000, "channel": "futures.ping"}).decode()

    def new_parser(self, account: str | None = None) -> GateioParser:
        """A fresh parser (with empty kline state) for one connection; ``account`` names the private topics it
        emits (give it for that account's private socket)."""
        return GateioParser(account)

    # -- private data (§2.3, §2.6, §2.7) -----------------------------------------------------------------------------

    def login_frame(self, creds: Credentials, now_ms: int) -> str | None:
        """None: Gate has no socket login for subscriptions; every private subscribe carries ``auth`` (§2.3a)."""
        return None

    def rest_headers(
        self, creds: Credentials, method: str, path: str, query: str, body: str | bytes, now_ms: int
    ) -> dict[str, str]:
        """See the module function ``rest_headers``."""
        return rest_headers(creds, method, path, query, body, now_ms)

    def open_orders_request(self, creds: Credentials, now_ms: int) -> RestRequest:
        """``GET /api/v4/futures/usdt/orders?status=open`` signed over ``status=open`` (§2.7; all contracts)."""
        headers = rest_headers(creds, "GET", OPEN_ORDERS_PATH, "status=open", "", now_ms)
        return RestRequest("GET", OPEN_ORDERS_PATH, {"status": "open"}, headers)

    def positions_request(self, creds: Credentials, now_ms: int) -> RestRequest:
        """``GET /api/v4/futures/usdt/positions`` signed over the empty query (§2.7)."""
        return RestRequest("GET", POSITIONS_PATH, {}, rest_headers(creds, "GET", POSITIONS_PATH, "", "", now_ms))

    def parse_open_orders(self, body: bytes, account: str, ts_received_ms: int) -> list[tuple[str, dict[str, Any]]]:
        """See the module function ``parse_open_orders``."""
        return parse_open_orders(body, account, ts_received_ms)

    def parse_positions(self, body: bytes, account: str, ts_received_ms: int) -> list[tuple[str, dict[str, Any]]]:
        """See the module function ``parse_positions``."""
        return parse_positions(body, account, ts_received_ms)

    # -- order books ---------------------------------------------------------------------------------------------

    def snapshot_request(self, symbol: str, levels: int) -> SnapshotRequest | None:
        """``GET /api/v4/futures/usdt/order_book?contract=…&limit=100&with_id=true`` (§2.5 recipe).

        ``limit`` must equal the subscribed level (always 100, ``BOOK_LEVEL``), whatever ``levels``
        the topic publishes; the book keeper trims.
        """
        return SnapshotRequest(SNAPSHOT_PATH, {"contract": symbol, "limit": BOOK_LEVEL, "with_id": "true"})

    def parse_snapshot(self, symbol: str, body: bytes, ts_received_ms: int) -> BookUpdate:
        """The REST book ``{"current":s.ms,"update":s.ms,"asks":[{"p","s"}],"bids":[...],"id":N}`` as a
        ``BookUpdate(snapshot=True, first_id=None, last_id=id)`` (§2.5). ``ts_exchange`` is ``current``
        (float seconds) in ms, converted exactly. Raises ValueError for a malformed or error body."""
        msg = _loads(body)
        if type(msg) is not dict:
            raise ValueError(f"gateio order book snapshot for {symbol} is not an object")
        if "id" not in msg:
            detail = f"{msg.get('label')}: {msg.get('message')}" if "label" in msg else "no id (with_id=true?)"
            raise ValueError(f"gateio order book snapshot for {symbol}: {detail}")
        try:
            return BookUpdate(
                topic=f"gateio:depth:{symbol}",
                symbol=symbol,
                bids=[(level["p"], _size(level["s"])) for level in msg["bids"]],
                asks=[(level["p"], _size(level["s"])) for level in msg["asks"]],
                first_id=None,
                last_id=_int(msg["id"]),
                snapshot=True,
                ts_exchange=_seconds_to_ms(msg.get("current")),
                ts_received=ts_received_ms,
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed gateio order book snapshot for {symbol}: {exc!r}") from exc

    def resync_frame(self, topic: Topic) -> str | None:
        """None: Gate resyncs by a new REST snapshot (§2.5), not by a socket request."""
        return None

    def _frames(
        self,
        event: str,
        topics: list[Topic],
        batch_size: int,
        first_request_id: int,
        now_ms: int,
        creds: Credentials | None,
    ) -> list[OutFrame]:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if first_request_id < 0:
            raise ValueError(f"request ids must be >= 0, got {first_request_id}")
        # Gate channel -> [(payload, topic name, private)], in order of first appearance
        by_channel: dict[str, list[tuple[list[str], str, bool]]] = {}
        uid: str | None = None
        for topic in topics:
            self.validate(topic)
            if topic.channel in PRIVATE_CHANNELS:
                creds = check_credentials(creds, EXCHANGE_ID, topic.symbol)
                uid = uid or account_uid(creds)
                native, payload = private_payload(topic, uid)
                by_channel.setdefault(native, []).append((payload, str(topic), True))
                continue
            native, payload = native_payload(topic)
            by_channel.setdefault(native, []).append((payload, str(topic), False))
        time_s = now_ms // 1000
        limit = self.max_subscribe_frame_bytes
        # An upper bound on the frame overhead: no id of this call has more digits than the last possible one.
        last_id = first_request_id + max(len(topics) - 1, 0)
        if last_id > _INT32_MAX:
            raise ValueError(f"request ids must fit in int32, got up to {last_id}")
        frames: list[tuple[str, list[str], tuple[str, ...], bool]] = []
        for native, entries in by_channel.items():
            if native not in _LIST_CHANNELS:
                frames.extend((native, payload, (name,), private) for payload, name, private in entries)
                continue
            empty = len(_dumps({"time": time_s, "id": last_id, "channel": native, "event": event, "payload": []}))
            contracts: list[str] = []
            names: list[str] = []
            size = empty
            for payload, name, _ in entries:
                contract_bytes = len(_dumps(payload[0]))  # quoted, UTF-8
                if contracts and (len(contracts) >= batch_size or size + 1 + contract_bytes > limit):
                    frames.append((native, contracts, tuple(names), False))
                    contracts, names, size = [], [], empty
                size += contract_bytes + (1 if contracts else 0)  # +1 for the comma
                contracts.append(payload[0])
                names.append(name)
            if contracts:
                frames.append((native, contracts, tuple(names), False))
        out: list[OutFrame] = []
        for i, (native, payload, names_, private) in enumerate(frames):
            request_id = first_request_id + i
            if private:
                assert creds is not None  # checked above for every private topic
                request = {
                    "id": request_id,
                    "time": time_s,
                    "channel": native,
                    "event": event,
                    "auth": ws_auth(creds, native, event, time_s),
                    "payload": payload,
                }
            else:
                request = {"time": time_s, "id": request_id, "channel": native, "event": event, "payload": payload}
            text = _dumps(request).decode()
            if len(text.encode()) > limit:
                raise AdapterError(f"topic {names_[0]} alone exceeds the {limit}-byte subscribe frame limit")
            out.append(OutFrame(text, names_, request_id))
        return out
