"""Gate.io public frames -> events (§2.5): candlesticks (with close inference), trades, tickers, best bid/ask; book
updates go to ``book``, private pushes to ``private``, replies to ``wire.on_reply``. Also the subscribe frames (pure).

Wire shapes handled (§2.4, §2.5)::

    kline   {"time":1684930165,"time_ms":1684930165934,"channel":"futures.candlesticks","event":"update",
             "result":[{"t":1684930140,"v":0,"c":"0.1701","h":"0.1701","l":"0.1701","o":"0.1701","n":"1m_FRONT_USDT"}]}
    trade   {"channel":"futures.trades","event":"update","result":[{"size":-108,"id":27753479,"create_time":1545136464,
             "create_time_ms":1545136464123,"price":"96.4","contract":"ETH_USDT"}]}
    ticker  {"channel":"futures.tickers","event":"update","time_ms":1541659086123,"result":[{"contract":"ETH_USDT",
             "last":"118.4","change_percentage":"0.77","funding_rate":"-0.000114","mark_price":"118.35", ...}]}
    bbo     {"channel":"futures.book_ticker","event":"update",
             "result":{"t":1684930165621,"u":6159967,"s":"PHB_USDT","b":"0.7379","B":814,"a":"0.739","A":677}}
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from control.topics import TIMEFRAME_MS, validate_account
from workers.exchanges.bars import NEXT, STALE, bar_step, closed_again, kline_event
from workers.exchanges.base import Parsed
from workers.exchanges.gateio import book, private
from workers.exchanges.gateio.wire import (
    BALANCES,
    BOOK_TICKER,
    CANDLESTICKS,
    EXCHANGE_ID,
    INTERVALS,
    KLINE_FIELDS,
    ORDER_BOOK_UPDATE,
    ORDERS,
    POSITIONS,
    PRIVATE_FEED,
    TICKERS,
    TRADES,
    UPGRADE_REASON,
    _bar_start,
    _error_text,
    _frame_ms,
    _ms,
    _seconds_to_ms,
    _size,
    _text,
    on_reply,
)

_loads = orjson.loads
_dumps = orjson.dumps


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
            {} if account is None else {native: f"gateio:{ch}:{account}" for native, ch in PRIVATE_FEED.items()}
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
            CANDLESTICKS: self._on_kline,
            TRADES: self._on_trades,
            TICKERS: self._on_tickers,
            BOOK_TICKER: self._on_book_ticker,
            ORDER_BOOK_UPDATE: self._on_book,
            ORDERS: self._on_orders,
            POSITIONS: self._on_positions,
            BALANCES: self._on_balances,
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
            return on_reply(msg, event, self._private_topics)
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
        tf = INTERVALS.get(interval)
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
        bars = [item for item in items if KLINE_FIELDS <= item.keys()]
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
            step = bar_step(last, open_time)
            if step is STALE:
                self.stale_klines += 1
                continue
            if step is NEXT and last is not None:
                events.append((topic, closed_again(last, ts_received_ms)))
            bar = kline_event(EXCHANGE_ID, contract, tf, tf_ms, open_time, item, _size(item["v"]), ts_exchange,
                              ts_received_ms)  # fmt: skip
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
        """``futures.order_book_update`` -> one ``BookUpdate`` (``book.book_update``) for the keeper."""
        return Parsed(book=[book.book_update(self._topic("depth", msg["result"]["s"]), msg, ts_received_ms)])

    # -- private pushes (§2.6): built in ``private``; without an account they are ``unknown`` ------------------------

    def _on_orders(self, msg: dict[str, Any], ts_received_ms: int) -> Parsed:
        topic = self._private_topics.get(ORDERS)
        if topic is None:
            return Parsed(unknown=True)
        return Parsed(events=private.order_push_events(topic, self.account or "", msg, ts_received_ms))

    def _on_positions(self, msg: dict[str, Any], ts_received_ms: int) -> Parsed:
        topic = self._private_topics.get(POSITIONS)
        if topic is None:
            return Parsed(unknown=True)
        return Parsed(events=private.position_push_events(topic, self.account or "", msg, ts_received_ms))

    def _on_balances(self, msg: dict[str, Any], ts_received_ms: int) -> Parsed:
        topic = self._private_topics.get(BALANCES)
        if topic is None:
            return Parsed(unknown=True)
        return Parsed(events=private.balance_push_events(topic, self.account or "", msg, ts_received_ms))
