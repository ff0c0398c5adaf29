"""Gate.io USDT futures v4 (``shared/reference/exchanges.md`` §2): the adapter declares what the modules do.

``wire`` (channels, intervals, limits, replies, value formats), ``frames`` (subscribe/unsubscribe/ping, signed
private subscribes), ``public`` (frames -> events), ``private`` (signing, private pushes), ``book`` (order book
updates, the ``U == prev u + 1`` rule, REST snapshot), ``rest`` (signed snapshots, error shape).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from control.exchanges.gateio import GATEIO
from control.topics import Topic
from workers.exchanges.base import Credentials, OutFrame
from workers.exchanges.gateio import book, frames, rest, wire
from workers.exchanges.gateio.book import GateSync
from workers.exchanges.gateio.public import GateioParser

if TYPE_CHECKING:
    from control.settings import Settings

__all__ = ["GateSync", "GateioAdapter", "GateioParser"]


class GateioAdapter:
    """Gate.io USDT futures v4 market data and private account data (orders, positions, balances).

    Limits are ours (none documented, §2.4): 200 topics per socket, 8192-byte frames, 50 ms between frames. The
    server sends protocol pings (aiohttp's autoping answers) and cuts a socket after ~1 min without messages, so we
    also send the application ping ``futures.ping`` (§2.4). ``ws_headers`` asks for decimal-string sizes (§2.4).

    Private topics use the same URL with no login (§2.1): each subscribe carries its own ``auth`` (``creds``). They
    still get a socket of their own per account (route ``private:<account>``), so one account's failure (bad key,
    code 4) stays on its socket.
    """

    declaration = GATEIO
    id = GATEIO.id
    channels = frozenset(GATEIO.channels)
    private_channels = frozenset(GATEIO.private_channels)
    timeframes = wire.TIMEFRAMES
    max_topics_per_connection = wire.MAX_TOPICS_PER_CONNECTION
    max_subscribe_frame_bytes = wire.MAX_SUBSCRIBE_FRAME_BYTES
    min_send_interval_ms = wire.MIN_SEND_INTERVAL_MS
    app_ping = True
    kline_closed_flag = False  # no closed flag in candlestick pushes (§2.5): bars are closed on time by the connection
    ws_headers = wire.WS_HEADERS
    # -- private (§2.3, §2.6, §2.7): no login and no listenKey; every private subscribe is signed
    listen_key = None
    open_orders_request = staticmethod(rest.open_orders_request)
    positions_request = staticmethod(rest.positions_request)
    parse_open_orders = staticmethod(rest.parse_open_orders)
    parse_positions = staticmethod(rest.parse_positions)
    rest_error = staticmethod(rest.rest_error)
    # -- order books (§2.5): the book is kept over the subscribed level (100): only updates within it are notified
    book_sync = GateSync
    max_depth_levels = GATEIO.depth_levels_cap
    snapshot_request = staticmethod(book.snapshot_request)
    parse_snapshot = staticmethod(book.parse_snapshot)
    resync_frame = staticmethod(book.resync_frame)
    # -- public (§2.4, §2.5)
    route = staticmethod(wire.route)
    validate = staticmethod(wire.validate)

    def configured(self, settings: Settings) -> GateioAdapter:
        """``self``: no setting changes what Gate sends."""
        return self

    def ws_url(self, base_url: str, route: str) -> str:
        """``base_url`` unchanged (``wss://fx-ws.gateio.ws/v4/ws/usdt``, §2.1), for private routes too."""
        return base_url

    def subscribe_frames(
        self, topics: list[Topic], batch_size: int, first_request_id: int, *, now_ms: int = 0,
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
        (balances ``[uid]``; ``uid`` from ``private.account_uid(creds)``). Its text carries the API key and a
        signature: do not log it. Raises AdapterError for a topic Gate cannot serve, for private topics
        without ``creds`` of that exchange and account or without a uid, ValueError for a bad ``batch_size``
        or id.
        """
        return frames.frames("subscribe", topics, batch_size, first_request_id, now_ms, creds)

    def unsubscribe_frames(
        self, topics: list[Topic], batch_size: int, first_request_id: int, *, now_ms: int = 0,
        creds: Credentials | None = None,
    ) -> list[OutFrame]:
        """``"event":"unsubscribe"`` frames with the subscribe payloads, same rules as ``subscribe_frames``
        (private ones signed for ``event=unsubscribe``)."""
        return frames.frames("unsubscribe", topics, batch_size, first_request_id, now_ms, creds)

    def ping_frame(self, *, now_ms: int = 0) -> str | None:
        """``{"time":<s>,"channel":"futures.ping"}`` (§2.4)."""
        return frames.ping_frame(now_ms)

    def new_parser(self, account: str | None = None) -> GateioParser:
        """A fresh parser (empty kline state) for one connection; ``account`` names the private topics it emits."""
        return GateioParser(account)

    def login_frame(self, creds: Credentials, now_ms: int) -> str | None:
        """None: Gate has no socket login for subscriptions; every private subscribe carries ``auth`` (§2.3a)."""
        return None
