"""BitMart public frames -> events (§1.4-§1.6): klines (with close inference), trades, ticker, best bid/ask, replies and
pongs; order-book pushes go to ``book.on_depth`` and private pushes to ``private`` (pure, no clock).

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
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from control.topics import TIMEFRAME_MS, validate_account
from workers.exchanges.bars import NEXT, STALE, bar_step, closed_again, kline_event
from workers.exchanges.base import Ack, Parsed
from workers.exchanges.bitmart import private
from workers.exchanges.bitmart.book import on_depth
from workers.exchanges.bitmart.wire import (
    ASSET_CHANNEL,
    BOOKTICKER_CHANNEL,
    DEPTH_CHANNEL,
    EXCHANGE_ID,
    KLINE_CHANNELS,
    ORDER_CHANNEL,
    POSITION_CHANNEL,
    PRIVATE_NATIVE,
    TICKER_CHANNEL,
    TRADE_CHANNEL,
    _split_group,
    group_to_topic,
    ratio_to_percent,
    rfc3339_to_ms,
)

_loads = orjson.loads
_dumps = orjson.dumps


class BitmartParser:
    """Parses frames of one BitMart connection into ``Parsed`` results.

    ``account`` names the private topics this parser emits (``bitmart:order:<account>`` ...): give it for the private
    socket of that account. Without it, private pushes and their acks are ``unknown`` (a public socket never gets
    them). Login replies are ``Ack(action="login")`` either way.

    State: the last kline seen per topic, used to infer bar closes — BitMart has **no closed
    flag**; a bar is final when a push with a larger ``ts`` arrives (§1.6), or at its deadline: the connection's
    ``workers.kline_close.KlineCloser`` closes it on time and drops this parser's repeat. Order-book pushes are
    not sequence-checked here: they go out as ``Parsed.book`` for the book keeper (``book.BitmartSync``).

    Counters (``counters()``; the connection shows them in its status record under ``parser``): ``stale_klines``
    counts kline items older than the last bar seen for their topic (dropped); ``trades_without_side`` counts trades
    without ``m``, published with ``side: None`` (see ``_on_trade``).
    """

    __slots__ = ("_handlers", "_last_bar", "_private_topics", "account", "stale_klines", "trades_without_side")

    def __init__(self, account: str | None = None) -> None:
        self.account = None if account is None else validate_account(account)
        # native private channel -> this account's topic; empty without an account
        self._private_topics: dict[str, str] = (
            {} if account is None else {native: f"bitmart:{ch}:{account}" for native, ch in PRIVATE_NATIVE.items()}
        )
        self._last_bar: dict[str, dict[str, Any]] = {}
        self.stale_klines = 0
        self.trades_without_side = 0
        on_kline = self._on_kline
        # Dispatch on the native channel (the group before ':'), built once (style.md habit 3).
        self._handlers: dict[str, Callable[[str, str, Any, int], Parsed]] = {
            **{channel: on_kline for channel in KLINE_CHANNELS},
            TRADE_CHANNEL: self._on_trade,
            TICKER_CHANNEL: _on_ticker,
            BOOKTICKER_CHANNEL: _on_bookticker,
            DEPTH_CHANNEL: on_depth,
            "System": _on_system,
            ORDER_CHANNEL: self._on_orders,
            POSITION_CHANNEL: self._on_positions,
            ASSET_CHANNEL: self._on_asset,
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

    # -- private pushes (§1.7): built in ``private``; without an account they are ``unknown`` ---------------------

    def _on_orders(self, channel: str, symbol: str, data: Any, ts_received_ms: int) -> Parsed:
        topic = self._private_topics.get(channel)
        if topic is None:
            return Parsed(unknown=True)
        return Parsed(events=private.order_push_events(topic, self.account or "", data, ts_received_ms))

    def _on_positions(self, channel: str, symbol: str, data: Any, ts_received_ms: int) -> Parsed:
        topic = self._private_topics.get(channel)
        if topic is None:
            return Parsed(unknown=True)
        return Parsed(events=private.position_push_events(topic, self.account or "", data, ts_received_ms))

    def _on_asset(self, channel: str, symbol: str, data: Any, ts_received_ms: int) -> Parsed:
        topic = self._private_topics.get(channel)
        if topic is None:
            return Parsed(unknown=True)
        return Parsed(events=private.asset_push_events(topic, self.account or "", symbol, data, ts_received_ms))

    def _on_kline(self, channel: str, symbol: str, data: Any, ts_received_ms: int) -> Parsed:
        """Kline push (§1.6): ``data.items[]`` on the wire, or the documented flat ``data`` object.

        ``ts`` is the bar **open time in seconds**; emits ``open_time = ts * 1000`` (ms). When an item
        opens a newer bar, the previous bar of that topic is emitted again first with ``closed=True``.
        Items older than the last bar are dropped (``stale_klines``).
        """
        tf = KLINE_CHANNELS[channel]
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
            step = bar_step(last, open_time)
            if step is STALE:
                self.stale_klines += 1
                continue
            if step is NEXT and last is not None:
                events.append((topic, closed_again(last, ts_received_ms)))
            last = kline_event(EXCHANGE_ID, symbol, tf, tf_ms, open_time, item, item["v"], None, ts_received_ms)
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


def _error_text(error: Any) -> str:
    if type(error) is str:
        return error
    if error is None:
        return "request failed (no error text)"
    return _dumps(error).decode()
