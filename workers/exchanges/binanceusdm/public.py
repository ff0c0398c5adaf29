"""Binance USD-M frames -> events (§5, §7): market streams (klines, trades, ticker, best bid/ask) and, with an account,
the user-data stream; depth frames go to ``book``, user-data events to ``private``/``user``, replies to
``wire.on_reply`` (pure, no clock).

Wire shapes handled (§5)::

    kline     {"e":"kline","E":1626992741424,"s":"CTKUSDT","k":{"t","T","s","i","o","c","h","l","v","x",...}}
    trade     {"e":"trade","E":1723161256322,"T":1723161256322,"s":"BTCUSDT","t":5266583935,"p":"61800.30",
               "q":"0.006","X":"MARKET","m":false}
    aggTrade  {"e":"aggTrade","E":1626992741575,"a":16599292,"s":"CTKUSDT","p":"1.01100","q":"10","f":23961322,
               "l":23961322,"T":1626992741421,"m":false}                 (since 2025-11 also "nq", ignored)
    24hrTicker {"e":"24hrTicker","E":1672515782136,"s":"BTCUSDT","p":"-131.4","P":"-0.786","w":"16628.97","c":"16584.6",
               "Q":"0.002","o":"16716.0","h":"16764.89","l":"16456.51","v":"122474.816","q":"2036102085.69",...}
    bookTicker {"e":"bookTicker","u":400900217,"E":1568014460893,"T":1568014460891,"s":"BNBUSDT","b":"25.35",
               "B":"31.21","a":"25.36","A":"40.66"}
    ALGO_UPDATE {"e":"ALGO_UPDATE","T":1750515742297,"E":1750515742303,"o":{"caid":"Q5xaq5EGKgXXa0fD7fs0Ip",
               "aid":2148719,"at":"CONDITIONAL","o":"TAKE_PROFIT","s":"BNBUSDT","S":"SELL","ps":"BOTH","f":"GTC",
               "q":"0.01","X":"CANCELED","ai":"","ap":"0.00000","aq":"0.00000","act":"0","tp":"750","p":"750",
               "wt":"CONTRACT_PRICE","R":false,"tt":0,...}}   (conditional orders since 2025-12-02)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from control.topics import validate_account
from workers.exchanges.base import Parsed
from workers.exchanges.binanceusdm import book
from workers.exchanges.binanceusdm.private import WS_ORDER_FIELDS, on_listen_key_expired, order_event
from workers.exchanges.binanceusdm.user import account_update_events, algo_order_event
from workers.exchanges.binanceusdm.wire import EXCHANGE_ID, PRIVATE_CHANNELS, on_reply

_loads = orjson.loads


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
    with its trigger on the same topic (``user.algo_order_event``), and ``ACCOUNT_UPDATE`` PositionEvents
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
            "listenKeyExpired": on_listen_key_expired,
        }

    # -- user data (§7) ------------------------------------------------------------------------------------------

    def _on_order_update(self, d: dict[str, Any], ts_received_ms: int) -> Parsed:
        """``ORDER_TRADE_UPDATE`` -> one OrderEvent: ``o.i`` order id, ``o.c`` client id, ``o.S`` side and ``o.o``
        type lower-cased, ``o.X`` status (``order_status``; ``status_raw`` = ``o.X``), ``o.p`` price, ``o.q`` size,
        ``o.z`` filled, ``o.ap`` average fill price, ``o.R`` reduce-only, ``E`` -> ``ts_exchange``."""
        topic = self._private_topics.get("order")
        if topic is None:
            return Parsed(unknown=True)
        event = order_event(d["o"], WS_ORDER_FIELDS, self.account or "", d.get("E"), ts_received_ms, False)
        return Parsed(events=[(topic, event)])

    def _on_account_update(self, d: dict[str, Any], ts_received_ms: int) -> Parsed:
        """``ACCOUNT_UPDATE`` -> PositionEvents then BalanceEvents (``user.account_update_events``). Items
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
        ``trigger_price_type``, ``actual_order_id`` and ``algo`` (``user.algo_order_event``)."""
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
            return on_reply(msg)
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
        """``depthUpdate`` -> one ``BookUpdate`` for the keeper (``book.depth_update``)."""
        s = d["s"]
        topic = self._depth_topics.get(s)
        if topic is None:
            topic = self._depth_topics[s] = f"binanceusdm:depth:{s}"
        return Parsed(book=[book.depth_update(topic, d, ts_received_ms)])

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
