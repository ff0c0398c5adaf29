"""BitMart USDT-M futures v2 (``shared/reference/exchanges.md`` §1): the adapter declares what the modules do.

``wire`` (channel spellings, limits, frames), ``public`` (frames -> events), ``private`` (login, signing, private
pushes), ``book`` (depthIncrease and the ``version + 1`` rule), ``rest`` (signed snapshots, error shape).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from control.exchanges.bitmart import BITMART
from control.topics import Topic
from workers.exchanges.base import Credentials, OutFrame
from workers.exchanges.bitmart import book, private, rest, wire
from workers.exchanges.bitmart.book import BitmartSync
from workers.exchanges.bitmart.public import BitmartParser

if TYPE_CHECKING:
    from control.settings import Settings

__all__ = ["BitmartAdapter", "BitmartParser", "BitmartSync"]


class BitmartAdapter:
    """BitMart futures v2 market data (klines, trades, ticker, best bid/ask, order book) and private account data
    (orders, positions, balances).

    Limits: 100 topics per socket, subscribe frames ≤ 2,000 bytes (§1.5); no documented message-rate limit. The
    client must send ``{"action":"ping"}`` (§1.5). Order books come as a snapshot on the socket followed by versioned
    deltas (§1.6 depthIncrease), so there is no REST snapshot. Private topics (``bitmart:order:<account>`` ...) get a
    socket per account: the ``/user`` URL (§1.1, ``BITMART_PRIVATE_WS_URI``), ``login_frame`` first, then the
    subscribe frames; ``route`` keeps them apart from public topics.
    """

    declaration = BITMART
    id = BITMART.id
    channels = frozenset(BITMART.channels)
    private_channels = frozenset(BITMART.private_channels)
    timeframes = wire.TIMEFRAMES
    max_topics_per_connection = wire.MAX_TOPICS_PER_CONNECTION
    max_subscribe_frame_bytes = wire.MAX_SUBSCRIBE_FRAME_BYTES
    min_send_interval_ms = wire.MIN_SEND_INTERVAL_MS
    app_ping = True
    kline_closed_flag = False  # no closed flag in kline pushes (§1.6): bars are closed on time by the connection
    ws_headers = wire.WS_HEADERS
    # -- private (§1.3, §1.7): a login frame, no listenKey
    listen_key = None
    login_frame = staticmethod(private.login_frame)
    open_orders_request = staticmethod(rest.open_orders_request)
    positions_request = staticmethod(rest.positions_request)
    parse_open_orders = staticmethod(rest.parse_open_orders)
    parse_positions = staticmethod(rest.parse_positions)
    rest_error = staticmethod(rest.rest_error)
    # -- order books (§1.6)
    book_sync = BitmartSync
    max_depth_levels = BITMART.depth_levels_cap
    snapshot_request = staticmethod(book.snapshot_request)
    parse_snapshot = staticmethod(book.parse_snapshot)
    resync_frame = staticmethod(book.resync_frame)
    # -- public (§1.4-§1.6)
    route = staticmethod(wire.route)
    validate = staticmethod(wire.validate)

    def configured(self, settings: Settings) -> BitmartAdapter:
        """``self``: no setting changes what BitMart sends (its URLs are the connection's business)."""
        return self

    def ws_url(self, base_url: str, route: str) -> str:
        """``base_url`` unchanged: ``…/api?protocol=1.1`` for ``public``; for a ``private:<account>`` route the
        planner passes the private URL ``…/user?protocol=1.1`` (§1.1, ``BITMART_PRIVATE_WS_URI``)."""
        return base_url

    def subscribe_frames(
        self, topics: list[Topic], batch_size: int, first_request_id: int, *, now_ms: int = 0,
        creds: Credentials | None = None,
    ) -> list[OutFrame]:
        """``wire.frames("subscribe", …)``: BitMart acks per topic (no request id), frames carry no time, and the
        login carries the credentials, so ``first_request_id``, ``now_ms`` and ``creds`` are unused."""
        return wire.frames("subscribe", topics, batch_size)

    def unsubscribe_frames(
        self, topics: list[Topic], batch_size: int, first_request_id: int, *, now_ms: int = 0,
        creds: Credentials | None = None,
    ) -> list[OutFrame]:
        """``wire.frames("unsubscribe", …)``, same rules as ``subscribe_frames``."""
        return wire.frames("unsubscribe", topics, batch_size)

    def ping_frame(self, *, now_ms: int = 0) -> str | None:
        """``{"action":"ping"}`` (§1.5)."""
        return wire.PING_FRAME

    def new_parser(self, account: str | None = None) -> BitmartParser:
        """A fresh parser (empty kline state) for one connection; ``account`` names the private topics it emits."""
        return BitmartParser(account)
