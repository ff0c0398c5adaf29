"""Skeleton of an exchange adapter: copy it to start a new venue (never registered, never imported at run time).

The contract is ``workers.exchanges.base``: ``PublicAdapter`` + ``PrivateAdapter`` + ``BookAdapter`` =
``ExchangeAdapter``. A venue is a package; this one file shows every part, each section headed by the module it
becomes. Adding exchange ``acme`` touches:

1. ``control/exchanges/acme.py``: its ``ExchangeDeclaration`` (id, aliases, channels, timeframes, depth cap, and
   every environment variable it reads as a ``Setting`` with default, parser, doc, secrecy and role: ``WS``,
   ``REST``, ``API_KEY``, ``API_SECRET`` required; ``PRIVATE_WS``, ``MEMO``, ``UID`` as needed), and one line in
   ``control/exchanges/__init__.py`` ``DECLARATIONS``. ``control.topics`` (the API's validation),
   ``control.settings`` (its variables, README's table) and ``control.accounts`` (its default account) derive
   everything from it.
2. ``workers/exchanges/acme/``: ``wire.py`` (spellings, limits, routes, frames, replies as data), ``public.py``
   (the ``FrameParser``: frames -> events), ``private.py`` (login or listenKey duty, signing, private pushes),
   ``book.py`` (``BookSync`` subclass, depth pushes, snapshots), ``rest.py`` (signed snapshots, ``rest_error``),
   ``__init__.py`` (the adapter class, declarations only), and one line in ``workers/exchanges/__init__.py``
   ``REGISTRY``.
3. Recorded frames for its tests (``shared/exchange-ws-samples/``), its test module, and its entries in
   ``tests/exchanges/test_contract.py`` ``SAMPLES`` (the contract test fails until they exist).
4. Its simulator module (``scripts/``) for the worker and end-to-end tests.
5. README's settings table: regenerate it with ``python -m control.settings``.

Rules: adapters are pure (no I/O, no clock, no logging: time arrives as ``now_ms`` / ``ts_received_ms``); every
exchange fact carries its reference section; prices and sizes stay decimal strings; a malformed frame raises
``ValueError`` (the connection counts it), never another exception.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from control.exchanges.declaration import ExchangeDeclaration
from control.setting_spec import API_KEY, API_SECRET, HTTP_URL, REST, TEXT, WS, WS_URL, Setting
from control.topics import Topic
from workers.exchanges.base import (
    Ack,
    AdapterError,
    BookUpdate,
    Credentials,
    OutFrame,
    Parsed,
    RestRequest,
    SnapshotRequest,
)
from workers.exchanges.errors import code_message, json_rest_error
from workers.orderbook import APPLIED, GAP, STALE, BookSync

if TYPE_CHECKING:
    from control.settings import Settings
    from workers.exchanges.base import ExchangeAdapter

# -- control/exchanges/acme.py ---------------------------------------------------------------------------------------

ACME = ExchangeDeclaration(
    id="acme",
    name="Acme perpetual futures",
    channels=("kline", "trade"),
    private_channels=("order",),
    timeframes=("1m", "1h"),
    depth_levels_cap=50,
    settings=(
        Setting("ACME_WS_URI", "wss://ws.acme.example/v1", WS_URL, "Acme socket", role=WS),
        Setting("ACME_REST_URI", "https://api.acme.example", HTTP_URL, "Acme REST (snapshots)", role=REST),
        Setting("ACME_API_KEY", "", TEXT, "default Acme account: API key", secret=True, role=API_KEY),
        Setting("ACME_API_SECRET", "", TEXT, "default Acme account: API secret (required with the key)",
                secret=True, role=API_SECRET),
    ),
)  # fmt: skip

# -- acme/wire.py: facts as data, each with its reference section ---------------------------------------------------

TIMEFRAMES: dict[str, str] = {"1m": "1min", "1h": "60min"}  # canonical -> native (doc §x.y)
MAX_TOPICS_PER_CONNECTION = 100  # doc §x.y, or "ours" with the reason
MAX_SUBSCRIBE_FRAME_BYTES = 4096
MIN_SEND_INTERVAL_MS = 100
WS_HEADERS: dict[str, str] = {}  # handshake headers, if the venue needs any


def native_topic(topic: Topic) -> str:
    """``acme:kline:BTCUSDT:1m`` -> ``kline.1min.BTCUSDT``; AdapterError for what Acme does not serve."""
    if topic.channel == "kline":
        native = TIMEFRAMES.get(topic.timeframe or "")
        if native is None:
            raise AdapterError(f"acme has no {topic.timeframe!r} klines")
        return f"kline.{native}.{topic.symbol}"
    if topic.channel in ACME.channels:
        return f"{topic.channel}.{topic.symbol}"
    raise AdapterError(f"acme does not serve {topic.channel!r}")


def frames(op: str, topics: list[Topic], batch_size: int, first_request_id: int) -> list[OutFrame]:
    """One ``{"op":…,"args":[…],"id":N}`` frame per ``batch_size`` topics (also keep ``MAX_SUBSCRIBE_FRAME_BYTES``)."""
    out: list[OutFrame] = []
    for i in range(0, len(topics), batch_size):
        batch = topics[i : i + batch_size]
        request_id = first_request_id + len(out)
        text = orjson.dumps({"op": op, "args": [native_topic(t) for t in batch], "id": request_id}).decode()
        out.append(OutFrame(text, tuple(str(t) for t in batch), request_id))
    return out


# -- acme/public.py: frames -> events ---------------------------------------------------------------------------------


class AcmeParser:
    """One connection's parser: a dispatch table built once (style.md habit 3); ``counters()`` for the status."""

    def __init__(self, account: str | None = None) -> None:
        self.account = account
        self.unknown_ops = 0

    def parse(self, raw: str | bytes, ts_received_ms: int) -> Parsed:
        """Events, acks (by ``request_id`` or ``topic``), ``pong``, ``error`` or ``unknown``; ValueError when
        malformed (wrap KeyError/TypeError of a known push into ValueError)."""
        msg = orjson.loads(raw)
        if type(msg) is not dict:
            return Parsed(unknown=True)
        if "id" in msg:
            return Parsed(acks=[Ack(ok=msg.get("ok") is True, request_id=msg["id"])])
        self.unknown_ops += 1
        return Parsed(unknown=True)

    def counters(self) -> dict[str, int]:
        return {"unknown_ops": self.unknown_ops}


# -- acme/book.py: the sequence rule and snapshots ------------------------------------------------------------------


class AcmeSync(BookSync):
    """``seq == previous seq + 1`` after a REST snapshot (doc §x.y); ``buffers`` False if the socket sends it."""

    rule = "acme"

    def _check(self, update: BookUpdate) -> str:
        last = self.last_id
        assert last is not None
        if update.last_id <= last:
            return STALE
        return APPLIED if update.first_id == last + 1 else GAP


def parse_snapshot(symbol: str, body: bytes, ts_received_ms: int) -> BookUpdate:
    """The REST book as ``BookUpdate(snapshot=True)``; ValueError when malformed."""
    raise ValueError("acme: write me")


# -- acme/private.py and acme/rest.py: login or listenKey duty, signing, snapshots, error shape ---------------------


def open_orders_request(creds: Credentials, now_ms: int) -> RestRequest:
    """Signed ``GET /orders/open`` (doc §x.y); never log the headers."""
    return RestRequest("GET", "/orders/open", {}, {"X-KEY": creds.api_key})


def parse_orders(body: bytes, account: str, ts_received_ms: int) -> list[tuple[str, dict[str, Any]]]:
    """``(topic, event with snapshot=True)`` pairs; ValueError for an error reply."""
    return []


# -- acme/__init__.py: the adapter declares, the modules do ---------------------------------------------------------


class AcmeAdapter:
    """Acme perpetual futures (doc reference). Limits and quirks in one paragraph, each with its section."""

    declaration = ACME
    id = ACME.id
    channels = frozenset(ACME.channels)
    private_channels = frozenset(ACME.private_channels)
    timeframes = TIMEFRAMES
    max_topics_per_connection = MAX_TOPICS_PER_CONNECTION
    max_subscribe_frame_bytes = MAX_SUBSCRIBE_FRAME_BYTES
    min_send_interval_ms = MIN_SEND_INTERVAL_MS
    app_ping = True
    kline_closed_flag = False
    ws_headers = WS_HEADERS
    listen_key = None  # or an object honouring base.ListenKeySession (Binance's BinanceListenKey)
    open_orders_request = staticmethod(open_orders_request)
    positions_request = staticmethod(open_orders_request)
    parse_open_orders = staticmethod(parse_orders)
    parse_positions = staticmethod(parse_orders)
    book_sync = AcmeSync
    max_depth_levels = ACME.depth_levels_cap
    parse_snapshot = staticmethod(parse_snapshot)

    def configured(self, settings: Settings) -> AcmeAdapter:
        return self

    def route(self, topic: Topic) -> str:
        return f"private:{topic.symbol}" if topic.channel in self.private_channels else "public"

    def ws_url(self, base_url: str, route: str) -> str:
        return base_url

    def validate(self, topic: Topic) -> None:
        if topic.exchange != self.id:
            raise AdapterError(f"{topic} is not an acme topic")
        if topic.channel not in self.private_channels:
            native_topic(topic)

    def subscribe_frames(
        self, topics: list[Topic], batch_size: int, first_request_id: int, *, now_ms: int = 0,
        creds: Credentials | None = None,
    ) -> list[OutFrame]:
        return frames("subscribe", topics, batch_size, first_request_id)

    def unsubscribe_frames(
        self, topics: list[Topic], batch_size: int, first_request_id: int, *, now_ms: int = 0,
        creds: Credentials | None = None,
    ) -> list[OutFrame]:
        return frames("unsubscribe", topics, batch_size, first_request_id)

    def ping_frame(self, *, now_ms: int = 0) -> str | None:
        return '{"op":"ping"}'

    def new_parser(self, account: str | None = None) -> AcmeParser:
        return AcmeParser(account)

    def login_frame(self, creds: Credentials, now_ms: int) -> str | None:
        return None

    def rest_error(self, body: bytes) -> tuple[int | None, str]:
        return json_rest_error(body, code_message)

    def snapshot_request(self, symbol: str, levels: int) -> SnapshotRequest | None:
        return SnapshotRequest("/depth", {"symbol": symbol, "limit": str(self.max_depth_levels)})

    def resync_frame(self, topic: Topic) -> str | None:
        return None


if TYPE_CHECKING:  # mypy proves the skeleton honours the whole contract
    _CHECK: ExchangeAdapter = AcmeAdapter()
