"""Binance USD-M futures adapter: market streams (klines, trades, ticker, best bid/ask, order book) and one account's
user-data stream (orders, positions, balances) with its listenKey and signed REST snapshots (pure: no I/O, no clock;
time comes in as ``now_ms``).

Protocol facts are from ``shared/reference/binance_usdm.md``; each is tagged with its section.

Wire shapes handled (§1, §4, §5, §6)::

    envelope  {"stream":"btcusdt@aggTrade","data":{...}}       (stream mode; ws mode sends the bare payload)
    ack       {"result":null,"id":1}
    error     {"code":2,"msg":"Invalid request: ...","id":1}  or  {"error":{"code":2,"msg":"..."},"id":2}
    kline     {"e":"kline","E":1626992741424,"s":"CTKUSDT","k":{"t","T","s","i","o","c","h","l","v","x",...}}
    trade     {"e":"trade","E":1723161256322,"T":1723161256322,"s":"BTCUSDT","t":5266583935,"p":"61800.30",
               "q":"0.006","X":"MARKET","m":false}
    aggTrade  {"e":"aggTrade","E":1626992741575,"a":16599292,"s":"CTKUSDT","p":"1.01100","q":"10","f":23961322,
               "l":23961322,"T":1626992741421,"m":false}                 (since 2025-11 also "nq", ignored)
    24hrTicker {"e":"24hrTicker","E":1672515782136,"s":"BTCUSDT","p":"-131.4","P":"-0.786","w":"16628.97","c":"16584.6",
               "Q":"0.002","o":"16716.0","h":"16764.89","l":"16456.51","v":"122474.816","q":"2036102085.69",...}
    bookTicker {"e":"bookTicker","u":400900217,"E":1568014460893,"T":1568014460891,"s":"BNBUSDT","b":"25.35",
               "B":"31.21","a":"25.36","A":"40.66"}
    depthUpdate {"e":"depthUpdate","E":123456789,"T":123456788,"s":"BTCUSDT","U":157,"u":160,"pu":149,
               "b":[["0.0024","10"]],"a":[["0.0026","100"]]}
    REST depth {"lastUpdateId":1027024,"E":1589436922972,"T":1589436922959,"bids":[["4.0","431"]],"asks":[...]}

User-data stream (§7; ``wss://fstream.binance.com/private/ws?listenKey=<key>``, bare payloads)::

    ORDER_TRADE_UPDATE {"e":"ORDER_TRADE_UPDATE","E":1568879465651,"T":1568879465651,"o":{"s":"BTCUSDT","c":"TEST",
               "S":"BUY","o":"LIMIT","q":"0.001","p":"7100.50","ap":"7100.50","X":"PARTIALLY_FILLED","i":8886774,
               "z":"0.001","R":false,"ps":"LONG",...}}
    ACCOUNT_UPDATE {"e":"ACCOUNT_UPDATE","E":1564745798939,"T":1564745798939,"a":{"m":"ORDER",
               "B":[{"a":"USDT","wb":"122624.12345678","cw":"100.12345678","bc":"50.12345678"}],
               "P":[{"s":"BTCUSDT","pa":"20","ep":"6563.6","bep":"6563.559","cr":"0","up":"2850.21200","mt":"isolated",
               "iw":"13200.70726908","ps":"LONG"}]}}
    ALGO_UPDATE {"e":"ALGO_UPDATE","T":1750515742297,"E":1750515742303,"o":{"caid":"Q5xaq5EGKgXXa0fD7fs0Ip",
               "aid":2148719,"at":"CONDITIONAL","o":"TAKE_PROFIT","s":"BNBUSDT","S":"SELL","ps":"BOTH","f":"GTC",
               "q":"0.01","X":"CANCELED","ai":"","ap":"0.00000","aq":"0.00000","act":"0","tp":"750","p":"750",
               "wt":"CONTRACT_PRICE","R":false,"tt":0,...}}   (conditional orders since 2025-12-02)
    listenKeyExpired {"e":"listenKeyExpired","E":1576653824250,"listenKey":"..."}   (E: int, formerly a string)

REST (§7, §8, ``https://fapi.binance.com``): listenKey ``POST/PUT/DELETE /fapi/v1/listenKey`` with ``X-MBX-APIKEY`` only;
signed calls add ``recvWindow``, ``timestamp`` and ``signature`` = hex HMAC-SHA256(secret, query string).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

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
from workers.exchanges.binanceusdm_user import EXCHANGE_ID, account_update_events, algo_order_event
from workers.exchanges.binanceusdm_user import POSITION_SIDES as _POSITION_SIDES
from workers.exchanges.binanceusdm_user import decimal_value as _decimal
from workers.exchanges.signing import check_credentials, hmac_sha256_hex

_loads = orjson.loads
_dumps = orjson.dumps

#: Extra HTTP headers for the WebSocket handshake: none (§1).
WS_HEADERS: dict[str, str] = {}
#: Canonical timeframe -> Binance interval; Binance has every canonical one under the same name (§5).
TIMEFRAMES: dict[str, str] = {tf: tf for tf in TIMEFRAME_MS}
#: Feedplane channel -> socket route (§1-2): klines and ``@ticker`` only flow on ``/market`` since 2026-04-23
#: (an unrouted or wrong-route socket acks the SUBSCRIBE and then sends nothing, §0, §4); ``@bookTicker`` and
#: ``@depth`` are ``/public`` streams (§2). The ``trade`` channel's route depends on its stream: ``TRADE_STREAMS``.
ROUTES: dict[str, str] = {
    "kline": "market",
    "ticker": "market",
    "bookticker": "public",
    "depth": "public",
}
#: Feedplane channel -> stream suffix, for the channels without a timeframe (§5). Depth is the diff stream at
#: 100 ms, the fastest documented speed (§5; the recordings' ``@0ms`` is undocumented).
_STREAM_SUFFIXES: dict[str, str] = {
    "ticker": "@ticker",
    "bookticker": "@bookTicker",
    "depth": "@depth@100ms",
}
#: ``Settings.binance_usdm_trade_stream`` (``BINANCE_USDM_TRADE_STREAM``) -> (stream suffix, route) of the ``trade``
#: channel. ``aggTrade`` (the default) is the documented ``<s>@aggTrade`` on ``/market`` (§2, §5; "Aggregate Trade
#: Streams", https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams/
#: Aggregate-Trade-Streams): one event per aggregate of fills with the same price and taker side, ``trade_id`` =
#: the aggregate id ``a`` (``f``..``l`` are the raw trade ids it covers). ``trade`` is the raw ``<s>@trade``, which
#: the official stream list does not document (§2): observed on ``/public`` (UNVERIFIED officially); if Binance
#: stopped serving it, the SUBSCRIBE would still be acked and the topic would go silent (§4).
TRADE_STREAMS: dict[str, tuple[str, str]] = {
    "aggTrade": ("@aggTrade", "market"),
    "trade": ("@trade", "public"),
}
DEFAULT_TRADE_STREAM = "aggTrade"
#: REST order-book snapshot (§6 step 2); the documented procedure asks for 1000 levels (weight 20).
SNAPSHOT_PATH = "/fapi/v1/depth"
SNAPSHOT_LIMIT = 1000

# -- user data (§7-§9) ----------------------------------------------------------------------------------------------
PRIVATE_CHANNELS = frozenset({"order", "position", "balance"})
#: listenKey REST (§7): POST creates (or returns and extends the active key), PUT extends by 60 min, DELETE closes.
LISTEN_KEY_PATH = "/fapi/v1/listenKey"
_LISTEN_KEY_METHODS = frozenset({"POST", "PUT", "DELETE"})
#: Signed REST snapshots after a (re)connect (§8). ``openOrders`` without a symbol weighs 40. Positions: v2 is the
#: version that still carries ``leverage`` and ``marginType`` and lists every symbol (flat ones too, so a position
#: closed during a gap shows as size 0); v3 lists only symbols with a position or open orders and lacks both fields.
#: Neither is in the reference; v2 staying available is UNVERIFIED (``parse_positions`` reads both shapes).
OPEN_ORDERS_PATH = "/fapi/v1/openOrders"
POSITIONS_PATH = "/fapi/v2/positionRisk"
#: ``recvWindow`` for signed calls: the documented default (§8).
RECV_WINDOW_MS = 5000
#: ``o.X`` / REST ``status`` -> OrderEvent ``status`` (§7). Other values (the ``NEW_INSURANCE`` / ``NEW_ADL``
#: liquidation statuses of the nautilus fixtures) are derived from the filled vs the order size: see ``order_status``.
_ORDER_STATUSES: dict[str, str] = {
    "NEW": "new",
    "PARTIALLY_FILLED": "partially_filled",
    "FILLED": "filled",
    "CANCELED": "canceled",
    "EXPIRED": "expired",
    "EXPIRED_IN_MATCH": "expired",
    "REJECTED": "rejected",
}


def stream_name(topic: Topic, trade_stream: str = DEFAULT_TRADE_STREAM) -> str:
    """The Binance stream for ``topic`` (§1: lowercase the symbol only, keep the suffix's case): ``btcusdt@kline_1m``,
    ``btcusdt@aggTrade`` (or ``btcusdt@trade`` with ``trade_stream="trade"``, see ``TRADE_STREAMS``),
    ``btcusdt@ticker``, ``btcusdt@bookTicker`` or ``btcusdt@depth@100ms``.

    Raises AdapterError for a channel or timeframe this adapter does not serve, KeyError for an unknown
    ``trade_stream``.
    """
    symbol = topic.symbol.lower()
    if topic.channel == "kline":
        interval = TIMEFRAMES.get(topic.timeframe or "")
        if interval is None:
            raise AdapterError(f"binanceusdm: unsupported kline timeframe {topic.timeframe!r}")
        return f"{symbol}@kline_{interval}"
    if topic.channel == "trade":
        return symbol + TRADE_STREAMS[trade_stream][0]
    suffix = _STREAM_SUFFIXES.get(topic.channel)
    if suffix is None:
        raise AdapterError(f"binanceusdm does not support channel {topic.channel!r}")
    return symbol + suffix


class BinanceUsdmParser:
    """Parses frames of one Binance USD-M socket (market or user data) into ``Parsed`` results.

    Stateless apart from caches of topic strings. Data frames are recognised by the payload's ``e``
    (in the ``{"stream","data"}`` envelope or bare), not by the stream name, so ``@depth@0ms`` and
    ``@depth@100ms`` frames parse alike; the symbol comes from the payload ``s``, so the parser does not
    care which route the frame came from. ``kline``, ``trade``, ``aggTrade``, ``24hrTicker`` and
    ``bookTicker`` become events; ``depthUpdate`` becomes a ``BookUpdate`` in ``Parsed.book``; other event
    types (``markPriceUpdate`` ...) are ``unknown``.

    User data (§7): with an ``account``, ``ORDER_TRADE_UPDATE`` becomes an OrderEvent on ``binanceusdm:order:<account>``,
    ``ALGO_UPDATE`` (conditional orders held by the Algo Service until they trigger, since 2025-12-02) an OrderEvent
    with its trigger on the same topic (``binanceusdm_user.algo_order_event``), and ``ACCOUNT_UPDATE`` PositionEvents
    and BalanceEvents on the account's position and balance topics; without one they are ``unknown``.
    ``listenKeyExpired`` is ``Parsed(reconnect="listenKeyExpired")`` either way (the socket stays open but silent
    after it: get a new key, reconnect, re-sync from REST). ``TRADE_LITE`` (a low-latency duplicate of the fills
    ``ORDER_TRADE_UPDATE`` also reports) is ``unknown``, as are ``MARGIN_CALL``, ``ACCOUNT_CONFIG_UPDATE`` and the
    other events.

    Counters (for metrics; never reset): ``account_positions_skipped`` and ``account_balances_skipped`` count
    ``ACCOUNT_UPDATE`` items that did not parse (an unknown position side, a missing field). The frame's other items
    are still published, and the result carries ``Parsed.error`` naming what was skipped, so the connection logs it
    (rate-limited) and shows it as its ``last_error``.
    """

    __slots__ = (
        "_bookticker_topics",
        "_depth_topics",
        "_handlers",
        "_kline_topics",
        "_private_topics",
        "_ticker_topics",
        "_trade_topics",
        "account",
        "account_balances_skipped",
        "account_positions_skipped",
    )

    def __init__(self, account: str | None = None) -> None:
        self.account = None if account is None else validate_account(account)
        # Feedplane private channel -> this account's topic; empty without an account
        self._private_topics: dict[str, str] = (
            {} if account is None else {ch: f"{EXCHANGE_ID}:{ch}:{account}" for ch in PRIVATE_CHANNELS}
        )
        self._trade_topics: dict[str, str] = {}
        self._ticker_topics: dict[str, str] = {}
        self._bookticker_topics: dict[str, str] = {}
        self._depth_topics: dict[str, str] = {}
        self._kline_topics: dict[str, dict[str, str]] = {}
        self.account_positions_skipped = self.account_balances_skipped = 0
        # Dispatch on the event type, built once (style.md habit 3).
        self._handlers: dict[str, Callable[[dict[str, Any], int], Parsed]] = {
            "trade": self._on_trade,
            "aggTrade": self._on_agg_trade,
            "kline": self._on_kline,
            "24hrTicker": self._on_ticker,
            "bookTicker": self._on_book_ticker,
            "depthUpdate": self._on_depth_update,
            "ORDER_TRADE_UPDATE": self._on_order_update,
            "ACCOUNT_UPDATE": self._on_account_update,
            "ALGO_UPDATE": self._on_algo_update,
            "listenKeyExpired": _on_listen_key_expired,
        }

    # -- user data (§7) ------------------------------------------------------------------------------------------

    def _on_order_update(self, d: dict[str, Any], ts_received_ms: int) -> Parsed:
        """``ORDER_TRADE_UPDATE`` -> one OrderEvent: ``o.i`` order id, ``o.c`` client id, ``o.S`` side and ``o.o``
        type lower-cased, ``o.X`` status (``order_status``; ``status_raw`` = ``o.X``), ``o.p`` price, ``o.q`` size,
        ``o.z`` filled, ``o.ap`` average fill price, ``o.R`` reduce-only, ``E`` -> ``ts_exchange``."""
        topic = self._private_topics.get("order")
        if topic is None:
            return Parsed(unknown=True)
        event = _order_event(d["o"], _WS_ORDER_FIELDS, self.account or "", d.get("E"), ts_received_ms, False)
        return Parsed(events=[(topic, event)])

    def _on_account_update(self, d: dict[str, Any], ts_received_ms: int) -> Parsed:
        """``ACCOUNT_UPDATE`` -> PositionEvents then BalanceEvents (``binanceusdm_user.account_update_events``). Items
        that do not parse are skipped and counted (``account_positions_skipped``, ``account_balances_skipped``); the
        others are published, with ``Parsed.error`` saying what was skipped."""
        position_topic = self._private_topics.get("position")
        if position_topic is None:
            return Parsed(unknown=True)
        update = account_update_events(
            d, position_topic, self._private_topics["balance"], self.account or "", ts_received_ms
        )
        self.account_positions_skipped += update.skipped_positions
        self.account_balances_skipped += update.skipped_balances
        return Parsed(events=update.events, error=update.report())

    def _on_algo_update(self, d: dict[str, Any], ts_received_ms: int) -> Parsed:
        """``ALGO_UPDATE`` (a conditional order in the Algo Service, §7) -> one OrderEvent with ``trigger_price``,
        ``trigger_price_type``, ``actual_order_id`` and ``algo`` (``binanceusdm_user.algo_order_event``)."""
        topic = self._private_topics.get("order")
        if topic is None:
            return Parsed(unknown=True)
        return Parsed(events=[(topic, algo_order_event(d["o"], self.account or "", d.get("E"), ts_received_ms))])

    def parse(self, raw: str | bytes, ts_received_ms: int) -> Parsed:
        """Parse one text frame received at ``ts_received_ms`` (epoch ms).

        Acks carry ``request_id`` (the frame's ``id``) and always ``action="subscribe"``: Binance's
        ``{"result":null,"id":N}`` does not say what it answers, so the connection maps the id back
        to the request (SUBSCRIBE or UNSUBSCRIBE) it sent (§4). Replies with a non-null ``result``
        (LIST_SUBSCRIPTIONS, GET_PROPERTY) are acks too. An error with ``"id":null`` or no id is a
        frame-level ``error``. Valid JSON we do not handle (other streams, the REST depth snapshot, which
        is no WS frame: see ``BinanceUsdmAdapter.parse_snapshot``) is ``unknown``. Raises ValueError on
        invalid JSON or a known payload missing fields.
        """
        msg = _loads(raw)
        if type(msg) is not dict:
            return Parsed(unknown=True)
        data = msg.get("data", msg)  # stream mode envelope, else the bare ws-mode payload
        if type(data) is dict:
            event_type = data.get("e")
            handler = self._handlers.get(event_type) if type(event_type) is str else None
            if handler is not None:
                try:
                    return handler(data, ts_received_ms)
                except (KeyError, TypeError, AttributeError, IndexError) as exc:
                    raise ValueError(f"malformed binanceusdm {event_type} payload: {exc!r}") from exc
        if "id" in msg or "error" in msg or "code" in msg:
            return _on_reply(msg)
        return Parsed(unknown=True)

    def _on_ticker(self, d: dict[str, Any], ts_received_ms: int) -> Parsed:
        """``24hrTicker`` (§5, ``<s>@ticker`` on ``/market``): ``c`` last, ``h``/``l`` 24 h high/low, ``v`` base
        volume, ``P`` change in percent, ``E`` event time. No mark/index price or funding (``markPrice`` stream)."""
        s = d["s"]
        topic = self._ticker_topics.get(s)
        if topic is None:
            topic = self._ticker_topics[s] = f"binanceusdm:ticker:{s}"
        event = {
            "type": "ticker",
            "exchange": EXCHANGE_ID,
            "symbol": s,
            "last": d["c"],
            "mark_price": None,
            "index_price": None,
            "high_24h": d["h"],
            "low_24h": d["l"],
            "volume_24h": d["v"],
            "change_pct_24h": d["P"],
            "funding_rate": None,
            "ts_exchange": d["E"],
            "ts_received": ts_received_ms,
        }
        return Parsed(events=[(topic, event)])

    def _on_book_ticker(self, d: dict[str, Any], ts_received_ms: int) -> Parsed:
        """``bookTicker`` (§5, ``<s>@bookTicker`` on ``/public``): ``b``/``B`` best bid price/qty, ``a``/``A`` best
        ask, ``u`` update id (shares the depth ``u`` id space), ``E`` event time."""
        s = d["s"]
        topic = self._bookticker_topics.get(s)
        if topic is None:
            topic = self._bookticker_topics[s] = f"binanceusdm:bookticker:{s}"
        event = {
            "type": "bookticker",
            "exchange": EXCHANGE_ID,
            "symbol": s,
            "bid_price": d["b"],
            "bid_size": d["B"],
            "ask_price": d["a"],
            "ask_size": d["A"],
            "update_id": str(d["u"]),
            "ts_exchange": d["E"],
            "ts_received": ts_received_ms,
        }
        return Parsed(events=[(topic, event)])

    def _on_depth_update(self, d: dict[str, Any], ts_received_ms: int) -> Parsed:
        """``depthUpdate`` (§5 diff depth, ``<s>@depth@100ms`` on ``/public``) -> ``BookUpdate`` for the keeper.

        ``U``/``u`` first/last update id, ``pu`` the previous frame's ``u`` (the chain the keeper checks, §6
        step 5; ``U == prev u + 1`` does **not** hold on futures), ``b``/``a`` ``[[price, qty]]`` absolute,
        ``"0"`` deletes. Raises ValueError if an id is not an integer.
        """
        s = d["s"]
        topic = self._depth_topics.get(s)
        if topic is None:
            topic = self._depth_topics[s] = f"binanceusdm:depth:{s}"
        first_id, last_id, prev_last_id = d["U"], d["u"], d["pu"]
        if type(first_id) is not int or type(last_id) is not int or type(prev_last_id) is not int:
            raise ValueError(
                f"binanceusdm depthUpdate ids must be integers: U={first_id!r} u={last_id!r} pu={prev_last_id!r}"
            )
        update = BookUpdate(
            topic,
            s,
            [(p, q) for p, q in d["b"]],
            [(p, q) for p, q in d["a"]],
            first_id,
            last_id,
            prev_last_id,
            False,
            d["E"],
            ts_received_ms,
        )
        return Parsed(book=[update])

    def _trade_topic(self, symbol: str) -> str:
        topic = self._trade_topics.get(symbol)
        if topic is None:
            topic = self._trade_topics[symbol] = f"binanceusdm:trade:{symbol}"
        return topic

    def _on_trade(self, d: dict[str, Any], ts_received_ms: int) -> Parsed:
        """``trade`` (§5, undocumented stream; ``BINANCE_USDM_TRADE_STREAM=trade``): ``t`` id, ``p``/``q`` strings,
        ``T`` trade time ms, ``m`` buyer is maker (so the taker sold)."""
        return self._trade(d, d["t"], ts_received_ms)

    def _on_agg_trade(self, d: dict[str, Any], ts_received_ms: int) -> Parsed:
        """``aggTrade`` (§5, the default trade stream) as a trade event on the same ``binanceusdm:trade:<s>`` topic:
        ``trade_id`` is the aggregate id ``a`` (one event per aggregate of fills with one price and taker side;
        ``q`` their summed size; the raw trade ids ``f``..``l`` and ``nq`` are not published). Aggregate ids are
        their own id space, so trade ids change meaning when the stream setting changes."""
        return self._trade(d, d["a"], ts_received_ms)

    def _trade(self, d: dict[str, Any], trade_id: int, ts_received_ms: int) -> Parsed:
        s = d["s"]
        event = {
            "type": "trade",
            "exchange": EXCHANGE_ID,
            "symbol": s,
            "trade_id": str(trade_id),
            "price": d["p"],
            "size": d["q"],
            "side": "sell" if d["m"] else "buy",
            "ts_exchange": d["T"],
            "ts_received": ts_received_ms,
        }
        return Parsed(events=[(self._trade_topic(s), event)])

    def _on_kline(self, d: dict[str, Any], ts_received_ms: int) -> Parsed:
        """``kline`` (§5): ``k.t``/``k.T`` open/close ms, ``k.x`` closed, ``E`` event time ms.

        ``k.i`` is used as the timeframe as given, even if it is not a canonical Feedplane one.
        """
        s = d["s"]
        k = d["k"]
        interval = k["i"]
        by_interval = self._kline_topics.get(s)
        if by_interval is None:
            by_interval = self._kline_topics[s] = {}
        topic = by_interval.get(interval)
        if topic is None:
            topic = by_interval[interval] = f"binanceusdm:kline:{s}:{interval}"
        return Parsed(
            events=[
                (
                    topic,
                    {
                        "type": "kline",
                        "exchange": EXCHANGE_ID,
                        "symbol": s,
                        "timeframe": interval,
                        "open_time": k["t"],
                        "close_time": k["T"],
                        "open": k["o"],
                        "high": k["h"],
                        "low": k["l"],
                        "close": k["c"],
                        "volume": k["v"],
                        "closed": k["x"],
                        "ts_exchange": d["E"],
                        "ts_received": ts_received_ms,
                    },
                )
            ]
        )


def _on_listen_key_expired(d: dict[str, Any], ts_received_ms: int) -> Parsed:
    """``listenKeyExpired`` ``{e,E,listenKey}`` (``E`` an int since 2026-05, a string before, §0, §7): the socket stays
    open but silent, so the connection must get a new key and reconnect."""
    return Parsed(reconnect="listenKeyExpired")


def order_status(status: str, size: Any, filled: Any) -> str:
    """OrderEvent ``status`` for Binance's order status (§7 ``o.X``, REST ``status``).

    NEW -> new, PARTIALLY_FILLED -> partially_filled, FILLED -> filled, CANCELED -> canceled, EXPIRED and
    EXPIRED_IN_MATCH -> expired, REJECTED -> rejected. Any other status (``NEW_INSURANCE``, ``NEW_ADL``: liquidation
    fills in the nautilus fixtures) is derived from the sizes (Decimal): filled >= size -> filled, filled > 0 ->
    partially_filled, else new. Raises ValueError when that needs a size that is not a decimal string.
    """
    known = _ORDER_STATUSES.get(status)
    if known is not None:
        return known
    done = _decimal(filled, "filled quantity")
    total = _decimal(size, "quantity")
    if total > 0 and done >= total:
        return "filled"
    return "partially_filled" if done > 0 else "new"


#: Field names of an order: ``ORDER_TRADE_UPDATE.o`` (§7) and a REST order (``/fapi/v1/openOrders``), in the order
#: symbol, order id, client id, side, type, status, price, size, filled, average fill price, reduce-only.
_WS_ORDER_FIELDS = ("s", "i", "c", "S", "o", "X", "p", "q", "z", "ap", "R")
_REST_ORDER_FIELDS = (
    "symbol", "orderId", "clientOrderId", "side", "type", "status", "price", "origQty", "executedQty", "avgPrice",
    "reduceOnly",
)  # fmt: skip


def _order_event(
    o: dict[str, Any], fields: tuple[str, ...], account: str, ts_exchange: Any, ts_received_ms: int, snapshot: bool
) -> dict[str, Any]:
    symbol, order_id, client_id, side, order_type, status, price, size, filled, avg_price, reduce_only = fields
    client = o.get(client_id)
    status_raw = o[status]
    reduce = o.get(reduce_only)
    return {
        "type": "order",
        "exchange": EXCHANGE_ID,
        "account": account,
        "symbol": o[symbol],
        "order_id": str(o[order_id]),
        "client_order_id": str(client) if client not in (None, "") else None,
        "side": o[side].lower(),
        "order_type": o[order_type].lower(),
        "status": order_status(status_raw, o.get(size), o.get(filled)),
        "status_raw": status_raw,
        "price": o.get(price),
        "size": o.get(size),
        "filled_size": o.get(filled),
        "avg_fill_price": o.get(avg_price),
        "reduce_only": reduce if type(reduce) is bool else None,
        "ts_exchange": ts_exchange if type(ts_exchange) is int else None,
        "ts_received": ts_received_ms,
        "snapshot": snapshot,
    }


def _on_reply(msg: dict[str, Any]) -> Parsed:
    """A reply to a live request (§4): ``{"result":..,"id":N}``, or an error in either of its two shapes."""
    request_id = msg.get("id")
    if type(request_id) is not int:
        request_id = None
    error_obj = msg.get("error")
    if type(error_obj) is dict:
        error: str | None = _error_text(error_obj.get("code"), error_obj.get("msg"))
    elif "code" in msg:
        error = _error_text(msg.get("code"), msg.get("msg"))
    elif error_obj is not None:
        error = error_obj if type(error_obj) is str else _dumps(error_obj).decode()
    elif "result" in msg and request_id is not None:
        return Parsed(acks=[Ack(ok=True, request_id=request_id)])
    else:
        return Parsed(unknown=True)
    if request_id is None:
        return Parsed(error=error)
    return Parsed(acks=[Ack(ok=False, request_id=request_id, error=error)])


def _error_text(code: Any, msg: Any) -> str:
    """``"<code>: <msg>"``, or whichever of the two is present."""
    if code is None:
        return str(msg) if msg is not None else "request failed (no error text)"
    return f"{code}: {msg}" if msg is not None else str(code)


def parse_depth_snapshot(symbol: str, body: bytes | str, ts_received_ms: int) -> BookUpdate:
    """A ``GET /fapi/v1/depth`` reply (§6 step 2: ``{lastUpdateId,E,T,bids,asks}``) as ``BookUpdate(snapshot=True)``.

    ``last_id`` is ``lastUpdateId`` (the keeper drops frames with ``u < lastUpdateId`` and starts at the one with
    ``U <= lastUpdateId <= u``, §6 steps 3-4); ``first_id`` is None; ``ts_exchange`` is ``E`` when present.
    Raises ValueError for invalid JSON, a REST error body (``{"code":-1121,"msg":"Invalid symbol."}``) or a
    malformed snapshot.
    """
    msg = _loads(body)
    if type(msg) is not dict:
        raise ValueError(f"binanceusdm depth snapshot for {symbol} is not an object")
    if "lastUpdateId" not in msg and "code" in msg:
        raise ValueError(
            f"binanceusdm depth snapshot for {symbol} failed: {_error_text(msg.get('code'), msg.get('msg'))}"
        )
    try:
        last_id = msg["lastUpdateId"]
        if type(last_id) is not int:
            raise ValueError(f"binanceusdm depth snapshot lastUpdateId must be an integer, got {last_id!r}")
        ts_exchange = msg.get("E")
        return BookUpdate(
            f"binanceusdm:depth:{symbol}",
            symbol,
            [(p, q) for p, q in msg["bids"]],
            [(p, q) for p, q in msg["asks"]],
            None,
            last_id,
            None,
            True,
            ts_exchange if type(ts_exchange) is int else None,
            ts_received_ms,
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"malformed binanceusdm depth snapshot for {symbol}: {exc!r}") from exc


# -- signing, listenKey and REST snapshots (§7, §8) ---------------------------------------------------------------


def sign_query(params: dict[str, str], secret: str) -> str:
    """``params`` form-encoded in their order with ``&signature=<hex HMAC-SHA256(secret, that query)>`` appended (§8).

    The signature covers exactly the encoded text before it, so send the query as returned (or the same params in
    the same order, with the same encoding). Doc vector: secret ``2b5eb11e…b4d9``, params
    ``symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=1&price=9000&timeInForce=GTC&recvWindow=5000&timestamp=1591702613943``
    -> ``signature=3c661234…4af9``.
    """
    query = urlencode(params)
    signature = hmac_sha256_hex(secret, query)
    return f"{query}&signature={signature}" if query else f"signature={signature}"


def ws_api_signature(params: dict[str, str], secret: str) -> str:
    """The WebSocket-API (``ws-fapi``) request signature (§8): every param except ``signature``, **sorted by name**,
    joined as ``k=v`` with ``&``, hex HMAC-SHA256 keyed with ``secret``. For the later order phase."""
    payload = "&".join(f"{k}={params[k]}" for k in sorted(params) if k != "signature")
    return hmac_sha256_hex(secret, payload)


def listen_key_request(creds: Credentials, method: str) -> RestRequest:
    """``POST`` (create, or return and extend the active key), ``PUT`` (keep alive, +60 min) or ``DELETE`` (close)
    ``/fapi/v1/listenKey``: header ``X-MBX-APIKEY`` only, no parameters, no signature (§7). One key per account: a
    DELETE ends every socket of that account. Raises ValueError for another method, AdapterError for credentials of
    another exchange or without a key."""
    method = method.upper()
    if method not in _LISTEN_KEY_METHODS:
        raise ValueError(f"listenKey requests are POST, PUT or DELETE, not {method!r}")
    creds = check_credentials(creds, EXCHANGE_ID)
    return RestRequest(method, LISTEN_KEY_PATH, {}, {"X-MBX-APIKEY": creds.api_key})


def parse_listen_key(body: bytes | str) -> str:
    """The key in a listenKey reply ``{"listenKey":"…"}`` (§7). Raises ValueError with the exchange's text for an
    error reply (``{"code":-1125,"msg":"This listenKey does not exist."}``, §9) and for a reply without a key (a
    DELETE answers ``{}``: nothing to parse)."""
    msg = _loads(body)
    if type(msg) is not dict:
        raise ValueError("binanceusdm listenKey reply is not an object")
    key = msg.get("listenKey")
    if type(key) is str and key:
        return key
    if "code" in msg or "msg" in msg:
        raise ValueError(f"binanceusdm listenKey request failed: {_error_text(msg.get('code'), msg.get('msg'))}")
    raise ValueError("binanceusdm listenKey reply has no listenKey")


def private_ws_url(base_url: str, listen_key: str) -> str:
    """``<base>/private/ws?listenKey=<key>``: the user-data socket (§1, ccxt and go-binance's form); every event type
    arrives bare (ws mode). A bogus key still completes the handshake: only a received event proves it (§7)."""
    return f"{base_url.rstrip('/')}/private/ws?listenKey={quote(listen_key, safe='')}"


def signed_request(creds: Credentials, method: str, path: str, params: dict[str, str], now_ms: int) -> RestRequest:
    """A USER_DATA/TRADE REST call (§8): ``params`` + ``recvWindow=5000`` + ``timestamp=now_ms`` + ``signature``, in
    that order, key in ``X-MBX-APIKEY``. The server rejects it (-1021) when ``now_ms`` is off by more than the
    window. Raises AdapterError for credentials of another exchange or without key/secret."""
    creds = check_credentials(creds, EXCHANGE_ID)
    signed = {**params, "recvWindow": str(RECV_WINDOW_MS), "timestamp": str(now_ms)}
    signed["signature"] = hmac_sha256_hex(creds.api_secret, urlencode(signed))  # what sign_query appends
    return RestRequest(method, path, signed, {"X-MBX-APIKEY": creds.api_key})


def open_orders_request(creds: Credentials, now_ms: int) -> RestRequest:
    """``GET /fapi/v1/openOrders?recvWindow=5000&timestamp=<now_ms>&signature=…`` (all symbols: weight 40)."""
    return signed_request(creds, "GET", OPEN_ORDERS_PATH, {}, now_ms)


def positions_request(creds: Credentials, now_ms: int) -> RestRequest:
    """``GET /fapi/v2/positionRisk?recvWindow=5000&timestamp=<now_ms>&signature=…`` (see ``POSITIONS_PATH``)."""
    return signed_request(creds, "GET", POSITIONS_PATH, {}, now_ms)


def _rest_list(body: bytes | str, what: str) -> list[Any]:
    msg = _loads(body)
    if type(msg) is list:
        return msg
    if type(msg) is dict and ("code" in msg or "msg" in msg):
        raise ValueError(f"binanceusdm {what} failed: {_error_text(msg.get('code'), msg.get('msg'))}")
    raise ValueError(f"binanceusdm {what} reply is not a list")


def parse_open_orders(body: bytes | str, account: str, ts_received_ms: int) -> list[tuple[str, dict[str, Any]]]:
    """A ``GET /fapi/v1/openOrders`` reply as ``(binanceusdm:order:<account>, OrderEvent(snapshot=True))`` pairs.

    ``orderId``, ``clientOrderId``, ``side``, ``type``, ``status``, ``price``, ``origQty`` -> size, ``executedQty``
    -> filled, ``avgPrice``, ``reduceOnly``, ``updateTime`` -> ``ts_exchange``. Raises ValueError for an error reply
    (``{"code":-2015,"msg":…}``) or a malformed item.
    """
    topic = f"{EXCHANGE_ID}:order:{validate_account(account)}"
    try:
        return [
            (topic, _order_event(o, _REST_ORDER_FIELDS, account, o.get("updateTime"), ts_received_ms, True))
            for o in _rest_list(body, "open orders")
        ]
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"malformed binanceusdm open order: {exc!r}") from exc


def parse_positions(body: bytes | str, account: str, ts_received_ms: int) -> list[tuple[str, dict[str, Any]]]:
    """A ``GET /fapi/v2/positionRisk`` (or v3) reply as ``(binanceusdm:position:<account>, PositionEvent(snapshot=True))``.

    ``positionAmt`` (signed) -> ``size``, ``positionSide`` as in ``ACCOUNT_UPDATE``, ``entryPrice``, ``markPrice``,
    ``liquidationPrice``, ``leverage`` and ``marginType`` (v2 only; None from v3), ``unRealizedProfit``,
    ``updateTime`` (0 for a never-used symbol -> None). Raises ValueError for an error reply or a malformed item.
    """
    topic = f"{EXCHANGE_ID}:position:{validate_account(account)}"
    events = []
    try:
        for p in _rest_list(body, "positions"):
            side, mode = _POSITION_SIDES[p["positionSide"]]
            updated = p.get("updateTime")
            events.append(
                (
                    topic,
                    {
                        "type": "position",
                        "exchange": EXCHANGE_ID,
                        "account": account,
                        "symbol": p["symbol"],
                        "side": side,
                        "mode": mode,
                        "size": p["positionAmt"],
                        "entry_price": p.get("entryPrice"),
                        "mark_price": p.get("markPrice"),
                        "liquidation_price": p.get("liquidationPrice"),
                        "leverage": p.get("leverage"),
                        "margin_mode": p.get("marginType"),
                        "unrealized_pnl": p.get("unRealizedProfit"),
                        "ts_exchange": updated if type(updated) is int and updated > 0 else None,
                        "ts_received": ts_received_ms,
                        "snapshot": True,
                    },
                )
            )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"malformed binanceusdm position: {exc!r}") from exc
    return events


class BinanceUsdmAdapter:
    """Binance USD-M futures market streams (klines, trades, ticker, best bid/ask, order book) and one account's
    user-data stream (orders, positions, balances) as data plus pure functions.

    Limits: 1024 streams per connection since 2025-07-02 (§0, §3); 10 client messages per second per
    connection, so ≥ 100 ms between frames (§3); 4096 bytes per SUBSCRIBE is our own conservative cap
    (no documented frame limit). The server pings every 3 min and aiohttp's autoping answers, so no
    application ping (§3). Order books: REST snapshot plus the ``pu``-chained diff stream (§6).

    Private topics: no login frame and no subscription. The account's ``private:<account>`` socket opens
    ``private_ws_url(base, listen_key)`` with a key from ``listen_key_request(creds, "POST")`` (kept alive with PUT,
    ≤ 30 min apart, §7) and receives every event of the account; its three topics are served as soon as it is open.

    :param trade_stream: the native stream of the ``trade`` channel, a key of ``TRADE_STREAMS``: ``"aggTrade"``
        (default; documented, on ``/market``; ``trade_id`` is the aggregate id) or ``"trade"`` (raw trades,
        undocumented, on ``/public``). Raises ValueError for anything else. Workers build it from
        ``Settings.binance_usdm_trade_stream`` (``workers.exchanges.configured_adapters``).
    """

    id = EXCHANGE_ID
    channels = frozenset({"kline", "trade", "ticker", "bookticker", "depth"})
    private_channels = PRIVATE_CHANNELS
    timeframes = TIMEFRAMES
    max_topics_per_connection = 1024
    max_subscribe_frame_bytes = 4096
    # 10 incoming messages per second per connection (binance_usdm.md §3); 10 % margin for timer jitter.
    min_send_interval_ms = 110
    app_ping = False
    kline_closed_flag = True  # ``k.x`` marks the final kline (binance_usdm.md §5)
    ws_headers = WS_HEADERS
    book_rule = "binance"

    def __init__(self, trade_stream: str = DEFAULT_TRADE_STREAM) -> None:
        if trade_stream not in TRADE_STREAMS:
            raise ValueError(f"binanceusdm trade stream must be one of {', '.join(TRADE_STREAMS)}, not {trade_stream!r}")
        self.trade_stream = trade_stream
        self._trade_route = TRADE_STREAMS[trade_stream][1]

    def __repr__(self) -> str:
        return f"BinanceUsdmAdapter(trade_stream={self.trade_stream!r})"

    def route(self, topic: Topic) -> str:
        """``"market"`` for klines and tickers, ``"public"`` for best bid/ask and depth (§2), the trade stream's route
        for trades (``"market"`` for ``aggTrade``, ``"public"`` for raw ``trade``: ``TRADE_STREAMS``), and
        ``"private:<account>"`` for an account's order/position/balance topics (one listenKey socket per account).
        Raises AdapterError for other channels."""
        if topic.channel in PRIVATE_CHANNELS:
            return f"private:{topic.symbol}"
        if topic.channel == "trade":
            return self._trade_route
        route = ROUTES.get(topic.channel)
        if route is None:
            raise AdapterError(f"binanceusdm does not support channel {topic.channel!r}")
        return route

    def ws_url(self, base_url: str, route: str) -> str:
        """``<base>/<route>/stream``: the routed, combined-stream URL (§1), e.g.
        ``wss://fstream.binance.com/market/stream``; frames arrive in the ``{"stream","data"}`` envelope.

        Raises AdapterError for a ``private:`` route: its URL carries a listenKey (``private_ws_url``), and a socket
        opened without a valid key completes the handshake and then stays silent (§7)."""
        if route.startswith("private:"):
            raise AdapterError("binanceusdm private sockets need a listenKey: use private_ws_url(base_url, listen_key)")
        return f"{base_url.rstrip('/')}/{route}/stream"

    def validate(self, topic: Topic) -> None:
        """Raise AdapterError unless ``topic`` is a binanceusdm kline (known timeframe), trade, ticker, bookticker,
        depth, or private order/position/balance topic (valid account name)."""
        if topic.exchange != EXCHANGE_ID:
            raise AdapterError(f"topic {topic} is not a binanceusdm topic")
        if topic.channel in PRIVATE_CHANNELS:
            try:
                validate_account(topic.symbol)
            except ValueError as exc:
                raise AdapterError(str(exc)) from None
            return
        stream_name(topic, self.trade_stream)

    def subscribe_frames(
        self,
        topics: list[Topic],
        batch_size: int,
        first_request_id: int,
        *,
        now_ms: int = 0,
        creds: Credentials | None = None,
    ) -> list[OutFrame]:
        """``{"method":"SUBSCRIBE","params":[streams],"id":N}`` frames (§4), ids counting up from
        ``first_request_id`` (must be an unsigned int, §4), each ≤ ``batch_size`` streams and ≤ 4096 bytes.

        Topics of different routes must go to different sockets: callers group by ``route()``. Private topics get
        no frame (the listenKey URL delivers them, see the class docstring); ``creds`` and ``now_ms`` are unused.
        Raises AdapterError for a topic this adapter cannot serve, ValueError for a bad ``batch_size`` or a
        negative ``first_request_id``.
        """
        return self._frames("SUBSCRIBE", topics, batch_size, first_request_id)

    def unsubscribe_frames(
        self,
        topics: list[Topic],
        batch_size: int,
        first_request_id: int,
        *,
        now_ms: int = 0,
        creds: Credentials | None = None,
    ) -> list[OutFrame]:
        """``UNSUBSCRIBE`` frames, same rules as ``subscribe_frames`` (none for private topics: close the socket)."""
        return self._frames("UNSUBSCRIBE", topics, batch_size, first_request_id)

    def ping_frame(self, *, now_ms: int = 0) -> str | None:
        """None: the server pings and the client's autoping answers (§3)."""
        return None

    def new_parser(self, account: str | None = None) -> BinanceUsdmParser:
        """A fresh parser for one connection; ``account`` names the private topics it emits (give it for that
        account's listenKey socket)."""
        return BinanceUsdmParser(account)

    # -- user data (§7, §8) ------------------------------------------------------------------------------------------

    def login_frame(self, creds: Credentials, now_ms: int) -> str | None:
        """None: USD-M user data needs no login frame; the listenKey in the URL authenticates (§7)."""
        return None

    def listen_key_request(self, creds: Credentials, method: str) -> RestRequest:
        """See the module function ``listen_key_request``."""
        return listen_key_request(creds, method)

    def parse_listen_key(self, body: bytes) -> str:
        """See the module function ``parse_listen_key``."""
        return parse_listen_key(body)

    def private_ws_url(self, base_url: str, listen_key: str) -> str:
        """See the module function ``private_ws_url``."""
        return private_ws_url(base_url, listen_key)

    def open_orders_request(self, creds: Credentials, now_ms: int) -> RestRequest:
        """The open-orders snapshot after a (re)connect; see the module function ``open_orders_request``."""
        return open_orders_request(creds, now_ms)

    def positions_request(self, creds: Credentials, now_ms: int) -> RestRequest:
        """The positions snapshot after a (re)connect; see the module function ``positions_request``."""
        return positions_request(creds, now_ms)

    def parse_open_orders(self, body: bytes, account: str, ts_received_ms: int) -> list[tuple[str, dict[str, Any]]]:
        """See the module function ``parse_open_orders``."""
        return parse_open_orders(body, account, ts_received_ms)

    def parse_positions(self, body: bytes, account: str, ts_received_ms: int) -> list[tuple[str, dict[str, Any]]]:
        """See the module function ``parse_positions``."""
        return parse_positions(body, account, ts_received_ms)

    # -- order books -------------------------------------------------------------------------------

    def snapshot_request(self, symbol: str, levels: int) -> SnapshotRequest | None:
        """``GET /fapi/v1/depth?symbol=<S>&limit=1000`` (§6 step 2). The documented procedure uses 1000 levels
        whatever ``levels`` is published: the top N are cut from the local book."""
        return SnapshotRequest(SNAPSHOT_PATH, {"symbol": symbol, "limit": str(SNAPSHOT_LIMIT)})

    def parse_snapshot(self, symbol: str, body: bytes, ts_received_ms: int) -> BookUpdate:
        """The REST snapshot as ``BookUpdate(snapshot=True)``; see ``parse_depth_snapshot``."""
        return parse_depth_snapshot(symbol, body, ts_received_ms)

    def resync_frame(self, topic: Topic) -> str | None:
        """None: Binance has no socket-side snapshot request; the keeper refetches the REST snapshot (§6 step 5)."""
        return None

    def _frames(self, method: str, topics: list[Topic], batch_size: int, first_request_id: int) -> list[OutFrame]:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if first_request_id < 0:
            raise ValueError(f"request ids must be unsigned, got {first_request_id}")
        limit = self.max_subscribe_frame_bytes
        batches: list[tuple[list[str], list[str]]] = []
        params: list[str] = []
        names: list[str] = []
        size = 0
        for topic in topics:
            self.validate(topic)
            if topic.channel in PRIVATE_CHANNELS:
                continue  # served by the listenKey URL
            stream = stream_name(topic, self.trade_stream)
            stream_bytes = len(_dumps(stream))
            if params and (len(params) >= batch_size or size + 1 + stream_bytes > limit):
                batches.append((params, names))
                params, names = [], []
            if not params:
                # Frame overhead depends on the id's digits; computed per frame.
                size = len(_dumps({"method": method, "params": [], "id": first_request_id + len(batches)}))
            size += stream_bytes + (1 if params else 0)
            if size > limit:
                raise AdapterError(f"topic {topic} alone exceeds the {limit}-byte subscribe frame limit")
            params.append(stream)
            names.append(str(topic))
        if params:
            batches.append((params, names))
        frames = []
        for i, (p, n) in enumerate(batches):
            request_id = first_request_id + i
            text = _dumps({"method": method, "params": p, "id": request_id}).decode()
            frames.append(OutFrame(text, tuple(n), request_id))
        return frames
