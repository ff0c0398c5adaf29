"""The adapter seam: what the workers need from an exchange, as pure code (no I/O, no clock).

One typed contract per role, so no caller looks a method up by name:

- ``PublicAdapter``: URLs, routes, limits, subscribe/unsubscribe/ping frames and a per-connection ``FrameParser``.
  A connection (``workers.connection``) feeds every received text frame to ``FrameParser.parse`` together with
  the receive time, and acts on the ``Parsed`` result.
- ``PrivateAdapter``: one account's socket (login frame, or a ``ListenKeySession`` that keeps a REST key alive), its
  REST snapshots and the exchange's REST error shape (``workers.private.PrivateSession``).
- ``BookAdapter``: the order-book sequencing rule (a ``workers.orderbook.BookSync`` subclass), REST or on-socket
  snapshots (``workers.books.BookKeeper``).
- ``OrderAdapter`` (orders, TP/SL, leverage; ``workers.orders``): in ``workers.exchanges.order_contract`` (this module's
  size cap), offered per venue in ``workers.exchanges.ORDER_ADAPTERS`` (Gate.io, Binance USD-M).
- ``ExchangeAdapter``: the first three, what every registered venue is (``workers.exchanges.REGISTRY``).

Each venue is a package ``workers/exchanges/<id>/`` (``wire.py`` data, ``public.py``, ``private.py``, ``book.py``,
``rest.py``); ``workers/exchanges/_template.py`` is the skeleton to copy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, Self

from control.errors import FeedplaneError
from control.exchanges import ExchangeDeclaration
from control.topics import Topic

if TYPE_CHECKING:
    from control.settings import Settings
    from workers.orderbook import BookSync


class AdapterError(FeedplaneError):
    """Raised by an adapter for a request it cannot express (e.g. a timeframe the exchange lacks)."""


@dataclass(frozen=True, slots=True)
class Ack:
    """The exchange's answer to one subscribe/unsubscribe, for one topic.

    ``topic`` is the Feedplane topic string when the adapter can tell it (BitMart echoes the
    channel per topic); ``request_id`` is set instead when acks are per request (Binance ``id``).
    ``error`` carries the exchange's own text when ``ok`` is false.

    When the reply names neither (Gate servers that echo no ``id`` and no ``payload``, as in the 2023 capture),
    ``channel`` is the Feedplane channel it answers (``kline``, ``trade`` ...) and ``symbols`` the contracts its
    text names (``"unknown contract X"`` -> ``("X",)``): ``match_request`` ties it to a request by those.
    """

    ok: bool
    action: str = "subscribe"  # or "unsubscribe"
    topic: str | None = None
    request_id: int | None = None
    error: str | None = None
    channel: str | None = None
    symbols: tuple[str, ...] = ()


def match_request(ack: Ack, requests: Mapping[int, tuple[str, tuple[str, ...]]]) -> int | None:
    """The request an ack without ``request_id`` and ``topic`` answers, by its ``channel`` (and ``symbols``).

    ``requests``: request id -> ``(action, Feedplane topic strings)`` of the frames sent and not yet answered, in
    sending order (ids increase). Candidates are requests of the ack's ``action`` whose topics are all of its
    ``channel``. Among them the first (oldest) one holding a topic of a symbol the ack names wins; otherwise the
    oldest: Gate answers one socket's requests in the order sent (the 2023 capture: 22 subscribes, 22 acks in
    order, ``shared/exchange-ws-samples/cryptofeed/GATEIO_FUTURES.ws.1.0``). None when no candidate is left, or the
    ack carries an id or a topic (those are matched directly).
    """
    if ack.request_id is not None or ack.topic is not None or ack.channel is None:
        return None
    oldest: int | None = None
    for request_id, (action, topics) in requests.items():
        if action != ack.action or not topics:
            continue
        parts = [topic.split(":", 3) for topic in topics]
        if any(len(p) < 3 or p[1] != ack.channel for p in parts):
            continue
        if not ack.symbols:
            return request_id
        if any(p[2] in ack.symbols for p in parts):
            return request_id
        if oldest is None:
            oldest = request_id
    return oldest


@dataclass(slots=True)
class BookUpdate:
    """One order-book message in a form the book keeper (``workers.books``) can sequence-check.

    ``topic`` is ``{exchange}:depth:{SYMBOL}``. ``bids``/``asks``: ``[(price, size), ...]`` decimal
    strings as sent, sizes absolute, ``"0"`` deletes. Ids are the exchange's own integers:
    Binance ``U``/``u``/``pu``, Gate ``U``/``u`` (snapshot: ``id``), BitMart ``version`` (in
    ``first_id`` and ``last_id``). ``snapshot`` marks a full book that replaces the local one
    (Binance/Gate REST snapshot, Gate ``full:true``, BitMart ``type:"snapshot"``).
    """

    topic: str
    symbol: str
    bids: list[tuple[str, str]]
    asks: list[tuple[str, str]]
    first_id: int | None
    last_id: int
    prev_last_id: int | None = None
    snapshot: bool = False
    ts_exchange: int | None = None
    ts_received: int = 0


@dataclass(frozen=True, slots=True)
class RestRequest:
    """A signed REST call for private data: ``method`` ``{rest base}{path}?{params}`` with ``headers`` (and ``body``)."""

    method: str
    path: str
    # Both may hold an API key or a signature: never in reprs (and never logged).
    params: dict[str, str] = field(repr=False)
    headers: dict[str, str] = field(repr=False)
    body: bytes = field(default=b"", repr=False)  # JSON (Gate.io order calls); b"" for none


class Credentials(Protocol):
    """What adapters need of an account (``control.accounts.Account`` satisfies it: the members are read-only, so a
    frozen dataclass does). Never log these."""

    @property
    def exchange(self) -> str: ...
    @property
    def account(self) -> str: ...
    @property
    def api_key(self) -> str: ...
    @property
    def api_secret(self) -> str: ...
    @property
    def memo(self) -> str: ...


@dataclass(frozen=True, slots=True)
class SnapshotRequest:
    """A REST order-book snapshot to fetch: ``GET {rest base URL}{path}?{params}``."""

    path: str
    params: dict[str, str]


@dataclass(slots=True)
class Parsed:
    """What one received frame meant.

    ``events``: ``(topic string, event dict)`` pairs in receive order (see ``control.events``).
    ``acks``: subscription answers. ``pong``: the frame was a keep-alive reply.
    ``error``: a frame-level error from the exchange not tied to a topic (logged, counted).
    ``unknown``: the frame was valid JSON but not understood (counted, never fatal).
    ``book``: order-book messages for the book keeper (they become ``depth``/``depth_delta`` events
    only after sequence checks, so they are not in ``events``).
    ``reconnect``: the exchange asked us to reconnect (Gate ``event: "upgrade"``, Binance ``listenKeyExpired``);
    the text is the reason. The connection then ends the socket at once (reason ``exchange_request``), opens a
    new one, resubscribes every topic and announces the interruption with a ``gap`` event. Login answers arrive
    as ``Ack(action="login")`` in ``acks``.
    """

    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    book: list[BookUpdate] = field(default_factory=list)
    reconnect: str | None = None
    acks: list[Ack] = field(default_factory=list)
    pong: bool = False
    error: str | None = None
    unknown: bool = False


@dataclass(frozen=True, slots=True)
class OutFrame:
    """A text frame to send, with the request id it carries (Binance) and the topics it covers."""

    text: str
    topics: tuple[str, ...]
    request_id: int | None = None


class FrameParser(Protocol):
    """Per-connection parser; may keep small state (e.g. BitMart's last bar per topic).

    A parser may also offer ``counters() -> dict[str, int]``: cumulative counts of what it adjusted or dropped (BitMart
    ``trades_without_side``, ``stale_klines``). The connection adds them up over its sockets and shows them in its
    status record under ``parser`` (``parser_counters``).
    """

    def parse(self, raw: str | bytes, ts_received_ms: int) -> Parsed:
        """Parse one text frame. Raises ``ValueError`` (incl. orjson errors) on malformed input."""
        ...


def parser_counters(parser: object) -> dict[str, int]:
    """``parser.counters()`` when the parser offers it, else ``{}`` (see ``FrameParser``)."""
    counters = getattr(parser, "counters", None)
    return dict(counters()) if callable(counters) else {}


class PublicAdapter(Protocol):
    """Public market data of one exchange, as data and pure functions.

    Attributes:
        id: ccxt exchange id (``bitmart``, ``binanceusdm``); ``declaration.id``.
        declaration: the exchange's capability declaration (``control/exchanges/<id>.py``): the single source of
            the channels, timeframes, depth cap, credential fields and setting names the control server validates.
        channels: Feedplane channels supported (``kline``, ``trade``), ``declaration.channels``.
        timeframes: canonical timeframe -> native spelling (keys: ``declaration.timeframes``).
        max_topics_per_connection: planner cap per socket.
        max_subscribe_frame_bytes: cap on one subscribe frame on the wire.
        min_send_interval_ms: least gap between two frames we send (exchange message-rate limit).
        app_ping: True when the client must send an application ping (BitMart, Gate);
            False when the server pings and aiohttp's autoping answers (Binance).
        kline_closed_flag: True when kline pushes say themselves that a bar is final (Binance ``k.x``); False when
            they never do (BitMart, Gate: exchanges.md §1.6, §2.5), so the connection closes bars on time
            (``workers.kline_close``).
        ws_headers: extra HTTP headers for the WebSocket handshake (Gate: ``X-Gate-Size-Decimal: 1``).
    """

    id: str
    declaration: ExchangeDeclaration
    channels: frozenset[str]
    timeframes: dict[str, str]
    max_topics_per_connection: int
    max_subscribe_frame_bytes: int
    min_send_interval_ms: int
    app_ping: bool
    kline_closed_flag: bool
    ws_headers: dict[str, str]

    def configured(self, settings: Settings) -> Self:
        """This adapter as ``settings`` configure it (Binance: ``BINANCE_USDM_TRADE_STREAM``); ``self`` when the
        settings change nothing."""
        ...

    def route(self, topic: Topic) -> str:
        """Connection group of ``topic``: topics with different routes never share a socket. Private topics route
        to ``private:<account>``."""
        ...

    def ws_url(self, base_url: str, route: str) -> str:
        """The URL to open for a public ``route`` given the configured base URL (settings)."""
        ...

    def validate(self, topic: Topic) -> None:
        """Raise ``AdapterError`` if the exchange cannot serve ``topic`` (channel, timeframe or account name)."""
        ...

    def subscribe_frames(
        self,
        topics: list[Topic],
        batch_size: int,
        first_request_id: int,
        *,
        now_ms: int = 0,
        creds: Credentials | None = None,
    ) -> list[OutFrame]:
        """Subscribe frames for ``topics``: at most ``batch_size`` topics and
        ``max_subscribe_frame_bytes`` per frame; request ids count up from ``first_request_id``.
        ``now_ms`` is the current time for exchanges whose frames carry one (Gate ``time``, seconds);
        ``creds`` signs private subscriptions where the exchange authenticates per request (Gate)."""
        ...

    def unsubscribe_frames(
        self,
        topics: list[Topic],
        batch_size: int,
        first_request_id: int,
        *,
        now_ms: int = 0,
        creds: Credentials | None = None,
    ) -> list[OutFrame]:
        """Unsubscribe frames, same rules as ``subscribe_frames``."""
        ...

    def ping_frame(self, *, now_ms: int = 0) -> str | None:
        """The application keep-alive frame, or None when the exchange needs none (``app_ping`` False)."""
        ...

    def new_parser(self, account: str | None = None) -> FrameParser:
        """A fresh parser for one connection; ``account`` names the private topics it emits."""
        ...


class ListenKeySession(Protocol):
    """A private socket whose URL carries a key the client keeps alive over REST (Binance USD-M listenKey,
    binance_usdm.md §7). ``workers.private.PrivateSession`` creates the key before connecting (``request(creds,
    "POST")``), renews it every ``LISTEN_KEY_KEEPALIVE_S`` (``"PUT"``) and closes it when the account's last private
    topic goes (``"DELETE"``).

    Attributes:
        gone_code: the REST error code meaning the key no longer exists (Binance ``-1125``, §9): reconnect with a
            new one.
    """

    gone_code: int

    def request(self, creds: Credentials, method: str) -> RestRequest:
        """The ``POST``/``PUT``/``DELETE`` key request; ValueError for another method, AdapterError for bad creds."""
        ...

    def parse(self, body: bytes) -> str:
        """The key in a creation reply; ValueError (with the exchange's text) for an error reply."""
        ...

    def ws_url(self, base_url: str, key: str) -> str:
        """The socket URL carrying ``key``."""
        ...

    def planned_url(self, base_url: str) -> str:
        """The URL the planner records for the account's connection before any key exists (no secret in it)."""
        ...


class PrivateAdapter(Protocol):
    """One account's private data (orders, positions, balances) on an exchange.

    Attributes:
        private_channels: private channels served (``declaration.private_channels``).
        listen_key: the REST-kept session key duty (``ListenKeySession``), or None when the socket logs in with a frame
            (BitMart) or signs each subscribe (Gate).
    """

    id: str
    private_channels: frozenset[str]

    @property
    def listen_key(self) -> ListenKeySession | None:
        """The REST-kept key duty, or None (read-only: a class attribute satisfies it)."""
        ...

    def new_parser(self, account: str | None = None) -> FrameParser:
        """A fresh parser whose private pushes go to ``account``'s topics."""
        ...

    def login_frame(self, creds: Credentials, now_ms: int) -> str | None:
        """The frame to send first on a private socket (BitMart ``access``), or None. Carries secrets: never log it."""
        ...

    def open_orders_request(self, creds: Credentials, now_ms: int) -> RestRequest:
        """The signed open-orders snapshot request made after a (re)connect."""
        ...

    def positions_request(self, creds: Credentials, now_ms: int) -> RestRequest:
        """The signed positions snapshot request made after a (re)connect."""
        ...

    def parse_open_orders(self, body: bytes, account: str, ts_received_ms: int) -> list[tuple[str, dict[str, Any]]]:
        """``(order topic, OrderEvent(snapshot=True))`` pairs; ValueError for an error reply or a malformed one."""
        ...

    def parse_positions(self, body: bytes, account: str, ts_received_ms: int) -> list[tuple[str, dict[str, Any]]]:
        """``(position topic, PositionEvent(snapshot=True))`` pairs; ValueError as ``parse_open_orders``."""
        ...

    def rest_error(self, body: bytes) -> tuple[int | None, str]:
        """``(code, text)`` of a REST error body in the exchange's own shape (code None when it has none), the raw
        text (first 200 bytes) for a body of another shape. The text may echo secrets: scrub before logging."""
        ...


class BookAdapter(Protocol):
    """Order books (channel ``depth``) of one exchange.

    Attributes:
        max_depth_levels: levels per side the exchange keeps the subscribed book in (BitMart 50, Gate 100); levels
            outside never get updates. ``declaration.depth_levels_cap`` (Binance: not windowed, the API-wide 100).
        book_sync: the sequencing rule, a ``workers.orderbook.BookSync`` subclass declared in ``<venue>/book.py``
            (``book_sync.rule`` names it: ``binance``, ``gate``, ``bitmart``); the book keeper makes one per topic.
    """

    id: str
    max_depth_levels: int

    @property
    def book_sync(self) -> type[BookSync]:
        """The sequencing rule class (read-only: a class attribute satisfies it)."""
        ...

    def snapshot_request(self, symbol: str, levels: int) -> SnapshotRequest | None:
        """The REST snapshot to fetch for ``symbol``, or None when snapshots come on the socket (BitMart)."""
        ...

    def parse_snapshot(self, symbol: str, body: bytes, ts_received_ms: int) -> BookUpdate:
        """Parse a REST snapshot body into a ``BookUpdate(snapshot=True)``; raises ValueError if malformed."""
        ...

    def resync_frame(self, topic: Topic) -> str | None:
        """A frame asking the exchange for a fresh snapshot on the socket (BitMart ``request``), or None."""
        ...


class ExchangeAdapter(PublicAdapter, PrivateAdapter, BookAdapter, Protocol):
    """A venue serving every role: what ``workers.exchanges.REGISTRY`` holds and a connection is given."""
