"""Binance USD-M futures market-stream adapter: klines, trades, ticker, best bid/ask, order book (pure, no I/O).

Protocol facts are from ``shared/reference/binance_usdm.md``; each is tagged with its section.

Wire shapes handled (§1, §4, §5, §6)::

    envelope  {"stream":"btcusdt@trade","data":{...}}          (stream mode; ws mode sends the bare payload)
    ack       {"result":null,"id":1}
    error     {"code":2,"msg":"Invalid request: ...","id":1}  or  {"error":{"code":2,"msg":"..."},"id":2}
    kline     {"e":"kline","E":1626992741424,"s":"CTKUSDT","k":{"t","T","s","i","o","c","h","l","v","x",...}}
    trade     {"e":"trade","E":1723161256322,"T":1723161256322,"s":"BTCUSDT","t":5266583935,"p":"61800.30",
               "q":"0.006","X":"MARKET","m":false}
    aggTrade  {"e":"aggTrade","E":1626992741575,"a":16599292,"s":"CTKUSDT","p":"1.01100","q":"10","f":23961322,
               "l":23961322,"T":1626992741421,"m":false}
    24hrTicker {"e":"24hrTicker","E":1672515782136,"s":"BTCUSDT","p":"-131.4","P":"-0.786","w":"16628.97","c":"16584.6",
               "Q":"0.002","o":"16716.0","h":"16764.89","l":"16456.51","v":"122474.816","q":"2036102085.69",...}
    bookTicker {"e":"bookTicker","u":400900217,"E":1568014460893,"T":1568014460891,"s":"BNBUSDT","b":"25.35",
               "B":"31.21","a":"25.36","A":"40.66"}
    depthUpdate {"e":"depthUpdate","E":123456789,"T":123456788,"s":"BTCUSDT","U":157,"u":160,"pu":149,
               "b":[["0.0024","10"]],"a":[["0.0026","100"]]}
    REST depth {"lastUpdateId":1027024,"E":1589436922972,"T":1589436922959,"bids":[["4.0","431"]],"asks":[...]}
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from control.topics import TIMEFRAME_MS, Topic
from workers.exchanges.base import Ack, AdapterError, BookUpdate, OutFrame, Parsed, SnapshotRequest

_loads = orjson.loads
_dumps = orjson.dumps

EXCHANGE_ID = "binanceusdm"
#: Extra HTTP headers for the WebSocket handshake: none (§1).
WS_HEADERS: dict[str, str] = {}
#: Canonical timeframe -> Binance interval; Binance has every canonical one under the same name (§5).
TIMEFRAMES: dict[str, str] = {tf: tf for tf in TIMEFRAME_MS}
#: Feedplane channel -> socket route (§1-2): klines and ``@ticker`` only flow on ``/market`` since 2026-04-23
#: (an unrouted or wrong-route socket acks the SUBSCRIBE and then sends nothing, §0, §4); ``@bookTicker`` and
#: ``@depth`` are ``/public`` streams (§2); ``@trade`` is undocumented and observed on ``/public`` (§2, UNVERIFIED
#: officially).
ROUTES: dict[str, str] = {
    "kline": "market",
    "trade": "public",
    "ticker": "market",
    "bookticker": "public",
    "depth": "public",
}
#: Feedplane channel -> stream suffix, for the channels without a timeframe (§5). Depth is the diff stream at
#: 100 ms, the fastest documented speed (§5; the recordings' ``@0ms`` is undocumented).
_STREAM_SUFFIXES: dict[str, str] = {
    "trade": "@trade",
    "ticker": "@ticker",
    "bookticker": "@bookTicker",
    "depth": "@depth@100ms",
}
#: REST order-book snapshot (§6 step 2); the documented procedure asks for 1000 levels (weight 20).
SNAPSHOT_PATH = "/fapi/v1/depth"
SNAPSHOT_LIMIT = 1000


def stream_name(topic: Topic) -> str:
    """The Binance stream for ``topic`` (§1: lowercase the symbol only, keep the suffix's case): ``btcusdt@kline_1m``,
    ``btcusdt@trade``, ``btcusdt@ticker``, ``btcusdt@bookTicker`` or ``btcusdt@depth@100ms``.

    Raises AdapterError for a channel or timeframe this adapter does not serve.
    """
    symbol = topic.symbol.lower()
    if topic.channel == "kline":
        interval = TIMEFRAMES.get(topic.timeframe or "")
        if interval is None:
            raise AdapterError(f"binanceusdm: unsupported kline timeframe {topic.timeframe!r}")
        return f"{symbol}@kline_{interval}"
    suffix = _STREAM_SUFFIXES.get(topic.channel)
    if suffix is None:
        raise AdapterError(f"binanceusdm does not support channel {topic.channel!r}")
    return symbol + suffix


class BinanceUsdmParser:
    """Parses frames of one Binance USD-M market socket into ``Parsed`` results.

    Stateless apart from caches of topic strings. Data frames are recognised by the payload's ``e``
    (in the ``{"stream","data"}`` envelope or bare), not by the stream name, so ``@depth@0ms`` and
    ``@depth@100ms`` frames parse alike; the symbol comes from the payload ``s``, so the parser does not
    care which route the frame came from. ``kline``, ``trade``, ``aggTrade``, ``24hrTicker`` and
    ``bookTicker`` become events; ``depthUpdate`` becomes a ``BookUpdate`` in ``Parsed.book``; other event
    types (``markPriceUpdate`` ...) are ``unknown``.
    """

    __slots__ = ("_bookticker_topics", "_depth_topics", "_handlers", "_kline_topics", "_ticker_topics", "_trade_topics")

    def __init__(self) -> None:
        self._trade_topics: dict[str, str] = {}
        self._ticker_topics: dict[str, str] = {}
        self._bookticker_topics: dict[str, str] = {}
        self._depth_topics: dict[str, str] = {}
        self._kline_topics: dict[str, dict[str, str]] = {}
        # Dispatch on the event type, built once (style.md habit 3).
        self._handlers: dict[str, Callable[[dict[str, Any], int], Parsed]] = {
            "trade": self._on_trade,
            "aggTrade": self._on_agg_trade,
            "kline": self._on_kline,
            "24hrTicker": self._on_ticker,
            "bookTicker": self._on_book_ticker,
            "depthUpdate": self._on_depth_update,
        }

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
        """``trade`` (§5, undocumented stream): ``t`` id, ``p``/``q`` strings, ``T`` trade time ms,
        ``m`` buyer is maker (so the taker sold)."""
        return self._trade(d, d["t"], ts_received_ms)

    def _on_agg_trade(self, d: dict[str, Any], ts_received_ms: int) -> Parsed:
        """``aggTrade`` (§5) as a trade event on the same ``binanceusdm:trade:<s>`` topic; ``trade_id``
        is the aggregate id ``a``. (The 2021 recording carries aggTrade only, §10.)"""
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


class BinanceUsdmAdapter:
    """Binance USD-M futures market streams (klines, trades, ticker, best bid/ask, order book) as data plus
    pure functions.

    Limits: 1024 streams per connection since 2025-07-02 (§0, §3); 10 client messages per second per
    connection, so ≥ 100 ms between frames (§3); 4096 bytes per SUBSCRIBE is our own conservative cap
    (no documented frame limit). The server pings every 3 min and aiohttp's autoping answers, so no
    application ping (§3). Order books: REST snapshot plus the ``pu``-chained diff stream (§6).
    """

    id = EXCHANGE_ID
    channels = frozenset({"kline", "trade", "ticker", "bookticker", "depth"})
    timeframes = TIMEFRAMES
    max_topics_per_connection = 1024
    max_subscribe_frame_bytes = 4096
    # 10 incoming messages per second per connection (binance_usdm.md §3); 10 % margin for timer jitter.
    min_send_interval_ms = 110
    app_ping = False
    ws_headers = WS_HEADERS
    book_rule = "binance"

    def route(self, topic: Topic) -> str:
        """``"market"`` for klines and tickers, ``"public"`` for trades, best bid/ask and depth (§2).
        Raises AdapterError for other channels."""
        route = ROUTES.get(topic.channel)
        if route is None:
            raise AdapterError(f"binanceusdm does not support channel {topic.channel!r}")
        return route

    def ws_url(self, base_url: str, route: str) -> str:
        """``<base>/<route>/stream``: the routed, combined-stream URL (§1), e.g.
        ``wss://fstream.binance.com/market/stream``; frames arrive in the ``{"stream","data"}`` envelope."""
        return f"{base_url.rstrip('/')}/{route}/stream"

    def validate(self, topic: Topic) -> None:
        """Raise AdapterError unless ``topic`` is a binanceusdm kline (known timeframe), trade, ticker, bookticker
        or depth topic."""
        if topic.exchange != EXCHANGE_ID:
            raise AdapterError(f"topic {topic} is not a binanceusdm topic")
        stream_name(topic)

    def subscribe_frames(
        self, topics: list[Topic], batch_size: int, first_request_id: int, *, now_ms: int = 0
    ) -> list[OutFrame]:
        """``{"method":"SUBSCRIBE","params":[streams],"id":N}`` frames (§4), ids counting up from
        ``first_request_id`` (must be an unsigned int, §4), each ≤ ``batch_size`` streams and ≤ 4096 bytes.

        Topics of different routes must go to different sockets: callers group by ``route()``. ``now_ms`` is
        unused (Binance frames carry no time). Raises AdapterError for a topic this adapter cannot serve,
        ValueError for a bad ``batch_size`` or a negative ``first_request_id``.
        """
        return self._frames("SUBSCRIBE", topics, batch_size, first_request_id)

    def unsubscribe_frames(
        self, topics: list[Topic], batch_size: int, first_request_id: int, *, now_ms: int = 0
    ) -> list[OutFrame]:
        """``UNSUBSCRIBE`` frames, same rules as ``subscribe_frames``."""
        return self._frames("UNSUBSCRIBE", topics, batch_size, first_request_id)

    def ping_frame(self, *, now_ms: int = 0) -> str | None:
        """None: the server pings and the client's autoping answers (§3)."""
        return None

    def new_parser(self) -> BinanceUsdmParser:
        """A fresh parser for one connection."""
        return BinanceUsdmParser()

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
            stream = stream_name(topic)
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
