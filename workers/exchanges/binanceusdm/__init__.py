"""Binance USD-M futures (``shared/reference/binance_usdm.md``): the adapter declares what the modules do.

``wire`` (routes, streams, limits, frames, replies, error codes), ``public`` (frames -> events), ``private`` (listenKey,
signing, order events), ``user`` (``ACCOUNT_UPDATE``, ``ALGO_UPDATE``), ``book`` (diff depth, the ``pu`` rule, REST
snapshot), ``rest`` (signed snapshots, error shape).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from control.exchanges.binanceusdm import BINANCEUSDM, TRADE_STREAM
from control.topics import Topic
from workers.exchanges.base import AdapterError, Credentials, OutFrame
from workers.exchanges.binanceusdm import book, rest, wire
from workers.exchanges.binanceusdm.book import BinanceSync
from workers.exchanges.binanceusdm.private import BinanceListenKey
from workers.exchanges.binanceusdm.public import BinanceUsdmParser

if TYPE_CHECKING:
    from control.settings import Settings

__all__ = ["BinanceSync", "BinanceUsdmAdapter", "BinanceUsdmParser"]


class BinanceUsdmAdapter:
    """Binance USD-M futures market streams (klines, trades, ticker, best bid/ask, order book) and one account's
    user-data stream (orders, positions, balances).

    Limits: 1024 streams per connection (§0, §3); 10 client messages per second per connection, so ≥ 110 ms between
    frames (§3); 4096 bytes per SUBSCRIBE is our own cap. The server pings every 3 min and aiohttp's autoping
    answers, so no application ping (§3). Order books: REST snapshot plus the ``pu``-chained diff stream (§6).

    Private topics: no login frame and no subscription. The account's ``private:<account>`` socket opens the
    ``listen_key`` URL (a key from ``POST /fapi/v1/listenKey``, kept alive with PUT ≤ 30 min apart, §7) and
    receives every event of the account; its three topics are served as soon as it is open.

    :param trade_stream: the native stream of the ``trade`` channel, a key of ``wire.TRADE_STREAMS``: ``"aggTrade"``
        (default; documented, on ``/market``; ``trade_id`` is the aggregate id) or ``"trade"`` (raw trades,
        undocumented, on ``/public``). Raises ValueError for anything else. ``configured(settings)`` builds it from
        ``BINANCE_USDM_TRADE_STREAM``.
    """

    declaration = BINANCEUSDM
    id = BINANCEUSDM.id
    channels = frozenset(BINANCEUSDM.channels)
    private_channels = frozenset(BINANCEUSDM.private_channels)
    timeframes = wire.TIMEFRAMES
    max_topics_per_connection = wire.MAX_TOPICS_PER_CONNECTION
    max_subscribe_frame_bytes = wire.MAX_SUBSCRIBE_FRAME_BYTES
    min_send_interval_ms = wire.MIN_SEND_INTERVAL_MS
    app_ping = False
    kline_closed_flag = True  # ``k.x`` marks the final kline (§5)
    ws_headers = wire.WS_HEADERS
    # -- private (§7-§9): a listenKey session, no login frame
    listen_key = BinanceListenKey()
    open_orders_request = staticmethod(rest.open_orders_request)
    positions_request = staticmethod(rest.positions_request)
    parse_open_orders = staticmethod(rest.parse_open_orders)
    parse_positions = staticmethod(rest.parse_positions)
    rest_error = staticmethod(rest.rest_error)
    # -- order books (§6): the diff stream is not windowed; the API-wide depth cap applies
    book_sync = BinanceSync
    max_depth_levels = BINANCEUSDM.depth_levels_cap
    snapshot_request = staticmethod(book.snapshot_request)
    parse_snapshot = staticmethod(book.parse_depth_snapshot)
    resync_frame = staticmethod(book.resync_frame)

    def __init__(self, trade_stream: str = wire.DEFAULT_TRADE_STREAM) -> None:
        if trade_stream not in wire.TRADE_STREAMS:
            raise ValueError(
                f"binanceusdm trade stream must be one of {', '.join(wire.TRADE_STREAMS)}, not {trade_stream!r}"
            )
        self.trade_stream = trade_stream
        self._trade_route = wire.TRADE_STREAMS[trade_stream][1]

    def __repr__(self) -> str:
        return f"BinanceUsdmAdapter(trade_stream={self.trade_stream!r})"

    def configured(self, settings: Settings) -> BinanceUsdmAdapter:
        """An adapter on the configured ``BINANCE_USDM_TRADE_STREAM`` (``self`` when it already is)."""
        trade_stream = settings.value(TRADE_STREAM)
        if trade_stream == self.trade_stream:
            return self
        return BinanceUsdmAdapter(trade_stream=trade_stream)

    def route(self, topic: Topic) -> str:
        """``"market"`` for klines and tickers, ``"public"`` for best bid/ask and depth (§2), the trade stream's route
        for trades (``"market"`` for ``aggTrade``, ``"public"`` for raw ``trade``: ``wire.TRADE_STREAMS``), and
        ``"private:<account>"`` for an account's order/position/balance topics (one listenKey socket per account).
        Raises AdapterError for other channels."""
        if topic.channel in wire.PRIVATE_CHANNELS:
            return f"private:{topic.symbol}"
        if topic.channel == "trade":
            return self._trade_route
        route = wire.ROUTES.get(topic.channel)
        if route is None:
            raise AdapterError(f"binanceusdm does not support channel {topic.channel!r}")
        return route

    def ws_url(self, base_url: str, route: str) -> str:
        """``<base>/<route>/stream``: the routed, combined-stream URL (§1), e.g.
        ``wss://fstream.binance.com/market/stream``; frames arrive in the ``{"stream","data"}`` envelope.

        Raises AdapterError for a ``private:`` route: its URL carries a listenKey (``listen_key.ws_url``), and a
        socket opened without a valid key completes the handshake and then stays silent (§7)."""
        if route.startswith("private:"):
            raise AdapterError("binanceusdm private sockets need a listenKey: use private_ws_url(base_url, listen_key)")
        return f"{base_url.rstrip('/')}/{route}/stream"

    def validate(self, topic: Topic) -> None:
        """``wire.validate`` on this adapter's trade stream."""
        wire.validate(topic, self.trade_stream)

    def subscribe_frames(
        self, topics: list[Topic], batch_size: int, first_request_id: int, *, now_ms: int = 0,
        creds: Credentials | None = None,
    ) -> list[OutFrame]:
        """``SUBSCRIBE`` frames (``wire.frames``). Topics of different routes must go to different sockets: callers
        group by ``route()``. Private topics get no frame; ``creds`` and ``now_ms`` are unused."""
        return wire.frames("SUBSCRIBE", topics, batch_size, first_request_id, self.trade_stream)

    def unsubscribe_frames(
        self, topics: list[Topic], batch_size: int, first_request_id: int, *, now_ms: int = 0,
        creds: Credentials | None = None,
    ) -> list[OutFrame]:
        """``UNSUBSCRIBE`` frames, same rules as ``subscribe_frames`` (none for private topics: close the socket)."""
        return wire.frames("UNSUBSCRIBE", topics, batch_size, first_request_id, self.trade_stream)

    def ping_frame(self, *, now_ms: int = 0) -> str | None:
        """None: the server pings and the client's autoping answers (§3)."""
        return None

    def new_parser(self, account: str | None = None) -> BinanceUsdmParser:
        """A fresh parser for one connection; ``account`` names the private topics it emits (give it for that
        account's listenKey socket)."""
        return BinanceUsdmParser(account)

    def login_frame(self, creds: Credentials, now_ms: int) -> str | None:
        """None: USD-M user data needs no login frame; the listenKey in the URL authenticates (§7)."""
        return None
