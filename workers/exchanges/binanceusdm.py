"""Binance USD-M futures market-stream adapter: klines and trades (pure, no I/O).

Protocol facts are from ``shared/reference/binance_usdm.md``; each is tagged with its section.

Wire shapes handled (§1, §4, §5)::

    envelope  {"stream":"btcusdt@trade","data":{...}}          (stream mode; ws mode sends the bare payload)
    ack       {"result":null,"id":1}
    error     {"code":2,"msg":"Invalid request: ...","id":1}  or  {"error":{"code":2,"msg":"..."},"id":2}
    kline     {"e":"kline","E":1626992741424,"s":"CTKUSDT","k":{"t","T","s","i","o","c","h","l","v","x",...}}
    trade     {"e":"trade","E":1723161256322,"T":1723161256322,"s":"BTCUSDT","t":5266583935,"p":"61800.30",
               "q":"0.006","X":"MARKET","m":false}
    aggTrade  {"e":"aggTrade","E":1626992741575,"a":16599292,"s":"CTKUSDT","p":"1.01100","q":"10","f":23961322,
               "l":23961322,"T":1626992741421,"m":false}
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from control.topics import TIMEFRAME_MS, Topic
from workers.exchanges.base import Ack, AdapterError, OutFrame, Parsed

_loads = orjson.loads
_dumps = orjson.dumps

EXCHANGE_ID = "binanceusdm"
#: Canonical timeframe -> Binance interval; Binance has every canonical one under the same name (§5).
TIMEFRAMES: dict[str, str] = {tf: tf for tf in TIMEFRAME_MS}
#: Feedplane channel -> socket route (§1-2): klines only flow on ``/market`` since 2026-04-23
#: (an unrouted or wrong-route socket acks the SUBSCRIBE and then sends nothing, §0, §4);
#: ``@trade`` is undocumented and observed on ``/public`` (§2, UNVERIFIED officially).
ROUTES: dict[str, str] = {"kline": "market", "trade": "public"}


def stream_name(topic: Topic) -> str:
    """The Binance stream for ``topic``: ``btcusdt@kline_1m`` or ``btcusdt@trade`` (§1: lowercase the symbol only).

    Raises AdapterError for a channel or timeframe this adapter does not serve.
    """
    symbol = topic.symbol.lower()
    if topic.channel == "kline":
        interval = TIMEFRAMES.get(topic.timeframe or "")
        if interval is None:
            raise AdapterError(f"binanceusdm: unsupported kline timeframe {topic.timeframe!r}")
        return f"{symbol}@kline_{interval}"
    if topic.channel == "trade":
        return f"{symbol}@trade"
    raise AdapterError(f"binanceusdm does not support channel {topic.channel!r}")


class BinanceUsdmParser:
    """Parses frames of one Binance USD-M market socket into ``Parsed`` results.

    Stateless apart from a cache of topic strings. Data frames are recognised by the payload's ``e``
    (in the ``{"stream","data"}`` envelope or bare); the symbol comes from the payload ``s``, so the
    parser does not care which route the frame came from. ``kline``, ``trade`` and ``aggTrade`` become
    events; other event types (``bookTicker``, ``depthUpdate`` ...) are ``unknown`` for now.
    """

    __slots__ = ("_handlers", "_kline_topics", "_trade_topics")

    def __init__(self) -> None:
        self._trade_topics: dict[str, str] = {}
        self._kline_topics: dict[str, dict[str, str]] = {}
        # Dispatch on the event type, built once (style.md habit 3).
        self._handlers: dict[str, Callable[[dict[str, Any], int], Parsed]] = {
            "trade": self._on_trade,
            "aggTrade": self._on_agg_trade,
            "kline": self._on_kline,
        }

    def parse(self, raw: str | bytes, ts_received_ms: int) -> Parsed:
        """Parse one text frame received at ``ts_received_ms`` (epoch ms).

        Acks carry ``request_id`` (the frame's ``id``) and always ``action="subscribe"``: Binance's
        ``{"result":null,"id":N}`` does not say what it answers, so the connection maps the id back
        to the request (SUBSCRIBE or UNSUBSCRIBE) it sent (§4). Replies with a non-null ``result``
        (LIST_SUBSCRIPTIONS, GET_PROPERTY) are acks too. An error with ``"id":null`` or no id is a
        frame-level ``error``. Valid JSON we do not handle (other streams, the REST depth snapshot)
        is ``unknown``. Raises ValueError on invalid JSON or a kline/trade payload missing fields.
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
                except (KeyError, TypeError, AttributeError) as exc:
                    raise ValueError(f"malformed binanceusdm {event_type} payload: {exc!r}") from exc
        if "id" in msg or "error" in msg or "code" in msg:
            return _on_reply(msg)
        return Parsed(unknown=True)

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


class BinanceUsdmAdapter:
    """Binance USD-M futures market streams (klines, trades) as data plus pure functions.

    Limits: 1024 streams per connection since 2025-07-02 (§0, §3); 10 client messages per second per
    connection, so ≥ 100 ms between frames (§3); 4096 bytes per SUBSCRIBE is our own conservative cap
    (no documented frame limit). The server pings every 3 min and aiohttp's autoping answers, so no
    application ping (§3).
    """

    id = EXCHANGE_ID
    channels = frozenset({"kline", "trade"})
    timeframes = TIMEFRAMES
    max_topics_per_connection = 1024
    max_subscribe_frame_bytes = 4096
    # 10 incoming messages per second per connection (binance_usdm.md §3); 10 % margin for timer jitter.
    min_send_interval_ms = 110
    app_ping = False

    def route(self, topic: Topic) -> str:
        """``"market"`` for klines, ``"public"`` for trades (§2). Raises AdapterError for other channels."""
        route = ROUTES.get(topic.channel)
        if route is None:
            raise AdapterError(f"binanceusdm does not support channel {topic.channel!r}")
        return route

    def ws_url(self, base_url: str, route: str) -> str:
        """``<base>/<route>/stream``: the routed, combined-stream URL (§1), e.g.
        ``wss://fstream.binance.com/market/stream``; frames arrive in the ``{"stream","data"}`` envelope."""
        return f"{base_url.rstrip('/')}/{route}/stream"

    def validate(self, topic: Topic) -> None:
        """Raise AdapterError unless ``topic`` is a binanceusdm kline (known timeframe) or trade topic."""
        if topic.exchange != EXCHANGE_ID:
            raise AdapterError(f"topic {topic} is not a binanceusdm topic")
        stream_name(topic)

    def subscribe_frames(self, topics: list[Topic], batch_size: int, first_request_id: int) -> list[OutFrame]:
        """``{"method":"SUBSCRIBE","params":[streams],"id":N}`` frames (§4), ids counting up from
        ``first_request_id`` (must be an unsigned int, §4), each ≤ ``batch_size`` streams and ≤ 4096 bytes.

        Topics of different routes must go to different sockets: callers group by ``route()``.
        Raises AdapterError for a topic this adapter cannot serve, ValueError for a bad
        ``batch_size`` or a negative ``first_request_id``.
        """
        return self._frames("SUBSCRIBE", topics, batch_size, first_request_id)

    def unsubscribe_frames(self, topics: list[Topic], batch_size: int, first_request_id: int) -> list[OutFrame]:
        """``UNSUBSCRIBE`` frames, same rules as ``subscribe_frames``."""
        return self._frames("UNSUBSCRIBE", topics, batch_size, first_request_id)

    def ping_frame(self) -> str | None:
        """None: the server pings and the client's autoping answers (§3)."""
        return None

    def new_parser(self) -> BinanceUsdmParser:
        """A fresh parser for one connection."""
        return BinanceUsdmParser()

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
