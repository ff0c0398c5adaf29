"""Binance USD-M futures wire facts as data: routes, stream names, limits, REST paths, error codes and shapes, and
the SUBSCRIBE/UNSUBSCRIBE frames and their replies (pure; ``shared/reference/binance_usdm.md``).

Wire shapes (§1, §4)::

    envelope  {"stream":"btcusdt@aggTrade","data":{...}}       (stream mode; ws mode sends the bare payload)
    subscribe {"method":"SUBSCRIBE","params":["btcusdt@aggTrade"],"id":1}
    ack       {"result":null,"id":1}
    error     {"code":2,"msg":"Invalid request: ...","id":1}  or  {"error":{"code":2,"msg":"..."},"id":2}
"""

from __future__ import annotations

from typing import Any

import orjson

from control.exchanges.binanceusdm import BINANCEUSDM
from control.topics import TIMEFRAME_MS, Topic
from workers.exchanges.base import Ack, AdapterError, OutFrame, Parsed
from workers.exchanges.checks import check_owner_and_account

_dumps = orjson.dumps

EXCHANGE_ID = BINANCEUSDM.id
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
#: ``Settings.value(TRADE_STREAM)`` (``BINANCE_USDM_TRADE_STREAM``) -> (stream suffix, route) of the ``trade``
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
#: 1024 streams per connection since 2025-07-02 (§0, §3).
MAX_TOPICS_PER_CONNECTION = 1024
#: Our own conservative cap on one SUBSCRIBE frame (no documented frame limit).
MAX_SUBSCRIBE_FRAME_BYTES = 4096
#: 10 incoming messages per second per connection (§3); 10 % margin for timer jitter.
MIN_SEND_INTERVAL_MS = 110

# -- user data (§7-§9) ----------------------------------------------------------------------------------------------
PRIVATE_CHANNELS = frozenset({"order", "position", "balance"})
#: listenKey REST (§7): POST creates (or returns and extends the active key), PUT extends by 60 min, DELETE closes.
LISTEN_KEY_PATH = "/fapi/v1/listenKey"
LISTEN_KEY_METHODS = frozenset({"POST", "PUT", "DELETE"})
#: REST error code of a listenKey that no longer exists (§9): reconnect with a new key.
LISTEN_KEY_GONE = -1125
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
ORDER_STATUSES: dict[str, str] = {
    "NEW": "new",
    "PARTIALLY_FILLED": "partially_filled",
    "FILLED": "filled",
    "CANCELED": "canceled",
    "EXPIRED": "expired",
    "EXPIRED_IN_MATCH": "expired",
    "REJECTED": "rejected",
}
#: Position side ``ps`` -> (PositionEvent ``side``, ``mode``): BOTH is the one-way net position (§7).
POSITION_SIDES: dict[str, tuple[str, str]] = {
    "BOTH": ("both", "one_way"),
    "LONG": ("long", "hedge"),
    "SHORT": ("short", "hedge"),
}
#: Algo status ``o.X`` -> OrderEvent ``status`` ("Event: Algo Order Update", URL in ``algo_order_event``).
#: TRIGGERING (condition met, forwarded to the matching engine) and TRIGGERED (placed there) are ``triggered``: from
#: then on the order lives on as ``actual_order_id`` in ``ORDER_TRADE_UPDATE``. FINISHED is resolved from the
#: executed quantity (``algo_status``).
ALGO_STATUSES: dict[str, str] = {
    "NEW": "new",
    "CANCELED": "canceled",
    "TRIGGERING": "triggered",
    "TRIGGERED": "triggered",
    "REJECTED": "rejected",
    "EXPIRED": "expired",
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


def validate(topic: Topic, trade_stream: str = DEFAULT_TRADE_STREAM) -> None:
    """Raise AdapterError unless ``topic`` is a binanceusdm kline (known timeframe), trade, ticker, bookticker,
    depth, or private order/position/balance topic (valid account name)."""
    if not check_owner_and_account(topic, EXCHANGE_ID, PRIVATE_CHANNELS):
        stream_name(topic, trade_stream)


def frames(
    method: str, topics: list[Topic], batch_size: int, first_request_id: int, trade_stream: str = DEFAULT_TRADE_STREAM
) -> list[OutFrame]:
    """``{"method":"SUBSCRIBE"|"UNSUBSCRIBE","params":[streams],"id":N}`` frames (§4), ids counting up from
    ``first_request_id`` (must be an unsigned int, §4), each ≤ ``batch_size`` streams and ≤ 4096 bytes. Private
    topics get no frame (the listenKey URL delivers them). Raises AdapterError for a topic this adapter cannot
    serve, ValueError for a bad ``batch_size`` or a negative ``first_request_id``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if first_request_id < 0:
        raise ValueError(f"request ids must be unsigned, got {first_request_id}")
    limit = MAX_SUBSCRIBE_FRAME_BYTES
    batches: list[tuple[list[str], list[str]]] = []
    params: list[str] = []
    names: list[str] = []
    size = 0
    for topic in topics:
        validate(topic, trade_stream)
        if topic.channel in PRIVATE_CHANNELS:
            continue  # served by the listenKey URL
        stream = stream_name(topic, trade_stream)
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


# -- replies (§4) and errors (§9) -----------------------------------------------------------------------------------


def on_reply(msg: dict[str, Any]) -> Parsed:
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
