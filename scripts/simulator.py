"""Local exchange simulator: BitMart futures v2, Binance USD-M and Gate.io USDT futures on loopback.

One aiohttp app on one port speaks the three WebSocket protocols and the two REST order-book
snapshot endpoints, replays recorded frames (``scripts.sim_tapes``: what is recorded and what is
derived) for the streams each client subscribed, with fault injection. Used in-process by the
workers' connection tests, by the end-to-end test and the offline demo (``python -m scripts.simulator``)
and by the ingest benchmark.

Endpoints:

- BitMart public: ``/api?protocol=1.1`` (exchanges.md §1.1).
- Binance USD-M: ``/public/{ws,stream}``, ``/market/{ws,stream}``, legacy ``/ws``, ``/stream``; streams
  may also be given in the URL: ``/<route>/ws/<s1>/<s2>`` or ``/<route>/stream?streams=<s1>/<s2>``
  (binance_usdm.md §1).
- Gate.io USDT futures: ``/v4/ws/usdt`` (exchanges.md §2.1; protocol in ``scripts.sim_gate``).
- REST snapshots: Binance ``GET /fapi/v1/depth?symbol=S&limit=N`` (binance_usdm.md §6), Gate
  ``GET /api/v4/futures/usdt/order_book?contract=C&limit=N&with_id=true`` (exchanges.md §2.5).
- Private side (``scripts.sim_private``): BitMart ``/user?protocol=1.1`` (login + orders, positions,
  assets), Binance ``POST/PUT/DELETE /fapi/v1/listenKey`` and ``/private/ws[/<listenKey>]``, Gate
  ``futures.orders|positions|balances`` with per-request auth, signed REST snapshots of open orders and
  positions for all three; accounts via ``add_account`` or ``POST /_sim/accounts``.
- Control (JSON): ``GET /_sim/status``, ``POST /_sim/drop[?exchange=bitmart|binanceusdm|gateio]``,
  ``POST /_sim/dead?on=1|0``, ``POST /_sim/silent?on=1|0``, ``POST /_sim/reject?native=<n>[&error=<text>]``,
  ``DELETE /_sim/reject[?native=<n>]``, ``POST /_sim/fail_rest?n=<count>``.

Order-book sync against the simulator: each depth replay starts at its recording's first frame and
the REST snapshot is the one recorded in the same session, bridged by a frame near the start
(Binance: ``U <= lastUpdateId <= u``; Gate: ``U <= id + 1 <= u``). A client must buffer the stream
from its subscribe, fetch the snapshot, then drop/apply per the exchange's recipe — at ``speed=0`` the
whole tape may already be buffered when the snapshot arrives. The snapshot is static: a resync in
mid-stream must restart the stream too (unsubscribe + subscribe, or reconnect), because a fresh
snapshot alone no longer bridges the frames that follow (with ``loop`` the bridge comes round again
each cycle). Gate ``DIA_USDT`` cannot sync at all: its two recorded pushes end at the snapshot's
``id`` (exchanges.md §2.5: 9 of 10 contracts bridge). BitMart depthIncrease needs no REST: the first
push is a snapshot, and ``{"action":"request","args":[topic]}`` returns a fresh one (§1.6).

Replay: each (connection, subscribed stream) gets its own task that plays the stream's tape from
its first frame — at the recorded pace divided by ``speed``, as fast as the socket drains when
``speed == 0``, or at a fixed ``rate`` frames/s — and restarts it when ``loop`` is set.
Facts marked UNVERIFIED below are choices where the reference docs say nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import re
import signal
import sys
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple, Self

import orjson
from aiohttp import WSCloseCode, WSMsgType, web

from scripts import sim_gate, sim_private, sim_tapes
from scripts.sim_tapes import BINANCE, BITMART, GATE

__all__ = [
    "BINANCE",
    "BITMART",
    "GATE",
    "ExchangeSimulator",
    "ReceivedFrame",
    "RestRequest",
    "SimConnection",
    "binance_stream_class",
    "main",
]

log = logging.getLogger(__name__)

#: §1.5: a 2,186-byte subscribe frame was closed with 1009 and a 2,020-byte one accepted; the
#: exact cut is UNVERIFIED, 2,048 is assumed and applied to every client text frame.
BITMART_MAX_FRAME_BYTES = 2048
_BITMART_TOPIC = re.compile(
    r"futures/(?:klineBin(?:1m|5m|15m|30m|1H|2H|4H|1D|1W)|trade|ticker|bookticker):([A-Z0-9]+)"
    r"|futures/depthIncrease(?:5|20|50):([A-Z0-9]+)(?:@(?:100|200)ms)?"
)
_BITMART_ALL_TICKERS = "futures/ticker"  # the all-contracts ticker channel (§1.6)
_BITMART_DEPTH_INCREASE = "futures/depthIncrease"
BINANCE_MAX_STREAMS = 1024  # binance_usdm.md §3
BINANCE_MAX_MSGS_PER_S = 10  # §3: more than 10 client messages per second disconnects
_BINANCE_SYMBOL = re.compile(r"[a-z0-9]+(?:_(?:perpetual|current_quarter|next_quarter))?")
_KLINE_IV = r"(?:1m|3m|5m|15m|30m|1h|2h|4h|6h|8h|12h|1d|3d|1w|1M)"
# §2 route table; @trade is undocumented and treated as /public, @depth@0ms appears in the 2024 capture.
_BINANCE_PUBLIC_KIND = re.compile(r"bookTicker|trade|depth(?:5|10|20)?(?:@(?:0|100|500)ms)?|rpiDepth@500ms")
_BINANCE_MARKET_KIND = re.compile(
    rf"aggTrade|kline_{_KLINE_IV}|continuousKline_{_KLINE_IV}|markPrice(?:@1s)?|miniTicker|ticker"
    r"|forceOrder|compositeIndex|assetIndex"
)
_BINANCE_ALL_MARKET = {
    "!bookTicker": "public",
    "!markPrice@arr": "market",
    "!markPrice@arr@1s": "market",
    "!miniTicker@arr": "market",
    "!ticker@arr": "market",
    "!forceOrder@arr": "market",
    "!contractInfo": "market",
    "!assetIndex@arr": "market",
    "tradingSession": "market",
}
#: Binance REST depth ``limit`` bounds (the documented values are 5..1000; others are accepted and cut).
BINANCE_REST_MAX_LIMIT = 1000
GATE_REST_DEFAULT_LIMIT = 10  # Gate's documented default for order_book
GATE_REST_MAX_LIMIT = 1000  # UNVERIFIED upper bound; recorded snapshots hold at most 100 levels
_CLOSE_TIMEOUT_S = 2.0  # how long a server-initiated close waits for the client's close reply
_MIN_SLEEP_S = 0.001  # gaps shorter than this are sent back to back
_YIELD_EVERY = 64  # frames sent in a burst before yielding to the loop


def binance_stream_class(stream: str) -> str | None:
    """``"public"`` or ``"market"`` for a well-formed Binance stream name (binance_usdm.md §2), else None.

    Symbols must be lower case (§1; whether upper case is accepted live is UNVERIFIED).
    """
    if stream in _BINANCE_ALL_MARKET:
        return _BINANCE_ALL_MARKET[stream]
    symbol, sep, kind = stream.partition("@")
    if not sep or not _BINANCE_SYMBOL.fullmatch(symbol):
        return None
    if _BINANCE_PUBLIC_KIND.fullmatch(kind):
        return "public"
    if _BINANCE_MARKET_KIND.fullmatch(kind):
        return "market"
    return None


def _reraise_if_cancelling() -> None:
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def _guarded(write: Awaitable[None]) -> None:
    """Await a websocket write (text, ping, pong), surviving aiohttp's shared drain future being cancelled.

    aiohttp (3.14 ``BaseProtocol._drain_helper``) makes every writer on a connection await one shared
    future; cancelling one waiting task cancels that future, so the other writers would see a
    CancelledError nobody asked for. Unsubscribe avoids that (``_remove_sub``); this is the safety net
    for teardown, where the frame is already in the transport and the socket is going away anyway.
    """
    try:
        await write
    except asyncio.CancelledError:
        _reraise_if_cancelling()


class ReceivedFrame(NamedTuple):
    """One client->server text frame: ``monotonic_s`` is ``time.monotonic()`` at receipt."""

    conn_id: int
    exchange: str
    monotonic_s: float
    text: str


class RestRequest(NamedTuple):
    """One REST call: ``path_qs`` as requested (a Binance ``signature`` shown as ``***``), ``status`` as answered."""

    exchange: str
    monotonic_s: float
    path_qs: str
    status: int
    method: str = "GET"


@dataclass(eq=False)
class SimConnection:
    """A live client socket, for observation (the simulator owns and mutates it).

    ``route``: ``api`` (BitMart), ``public`` | ``market`` | ``legacy`` (Binance unrouted ``/ws``,
    ``/stream``) or ``usdt`` (Gate). ``mode``: ``ws`` | ``stream`` (Binance), ``api`` or ``v4`` (Gate).
    ``subscribed``: native topics (BitMart ``futures/trade:BTCUSDT``), streams (``btcusdt@trade``) or
    Gate natives (``futures.trades:BTC_USDT``, see ``scripts.sim_gate``). ``received``:
    ``(monotonic_s, text)`` per client text frame. ``sent_count``: text frames sent (data, acks,
    errors, pongs). ``opened_at``: ``time.monotonic()``.
    """

    conn_id: int
    exchange: str
    route: str
    mode: str
    path: str
    opened_at: float
    subscribed: set[str] = field(default_factory=set)
    received: list[tuple[float, str]] = field(default_factory=list)
    sent_count: int = 0
    close_code: int | None = None
    ws: web.WebSocketResponse = field(repr=False, kw_only=True)
    combined: bool = False  # Binance: wrap data in {"stream","data"} (stream mode or SET_PROPERTY)
    _order: dict[str, None] = field(default_factory=dict, repr=False)  # subscription order for LIST
    _tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict, repr=False)
    _in_write: set[asyncio.Task[Any] | None] = field(default_factory=set, repr=False)  # replay tasks mid-send
    _msg_times: deque[float] = field(default_factory=deque, repr=False)
    _pong_deadline: float | None = field(default=None, repr=False)
    _closer: asyncio.Task[Any] | None = field(default=None, repr=False)
    _transport: asyncio.Transport | None = field(default=None, repr=False)
    _url_streams: list[str] = field(default_factory=list, repr=False)  # Binance streams named in the URL
    _positions: dict[str, int] = field(default_factory=dict, repr=False)  # native -> index of the last frame written
    _private: Any = field(default=None, repr=False)  # sim_private.PrivateConn on private sockets


class ExchangeSimulator:
    """BitMart + Binance USD-M + Gate.io futures simulator on ``host:port`` (``port=0`` picks a free one).

    :param speed: recorded pace multiplier (2.0 = twice as fast); 0 sends as fast as the socket drains.
    :param rate: fixed frames/s per stream; overrides ``speed``.
    :param loop: restart a tape when it ends (the next cycle starts one mean gap after the last
        frame, at least 1 s of tape time later); frames repeat verbatim.
    :param binance_ping_interval_s: server protocol ping period (§3: 3 min).
    :param binance_pong_timeout_s: close a Binance socket when no pong arrives this long after a ping (§3: 10 min).
    :param gate_ping_interval_s: Gate server protocol ping period (§2.4: Gate pings; period UNVERIFIED).
    :param gate_pong_timeout_s: close a Gate socket when no pong arrives this long after a ping (UNVERIFIED).
    :param samples_dir: recordings folder; default ``scripts.tapes.samples_dir()``.
    :param record_sent: append every data frame to ``sent_data``; turn off for long benchmark runs.
    :param listen_key_ttl_s: Binance listenKey validity (binance_usdm.md §7: 60 min); each POST/PUT restarts it.
        Measured on the monotonic clock (``set_clock`` does not move it); on lapse the key's sockets get
        ``listenKeyExpired``.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        speed: float = 1.0,
        rate: float | None = None,
        loop: bool = False,
        binance_ping_interval_s: float = 180.0,
        binance_pong_timeout_s: float = 600.0,
        gate_ping_interval_s: float = 30.0,
        gate_pong_timeout_s: float = 60.0,
        samples_dir: Path | None = None,
        record_sent: bool = True,
        listen_key_ttl_s: float = 3600.0,
    ) -> None:
        if speed < 0 or (rate is not None and rate <= 0):
            raise ValueError("speed must be >= 0 and rate > 0")
        self._host, self._port = host, port
        self._speed, self._rate, self._loop = speed, rate, loop
        self._ping_interval_s, self._pong_timeout_s = binance_ping_interval_s, binance_pong_timeout_s
        self._gate_ping_interval_s, self._gate_pong_timeout_s = gate_ping_interval_s, gate_pong_timeout_s
        self._rest_failures = 0
        self._samples_dir, self._record_sent = samples_dir, record_sent
        self._runner: web.AppRunner | None = None
        self._conns: dict[int, SimConnection] = {}
        self._next_id = 1
        self._tasks: set[asyncio.Task[Any]] = set()
        self._dead = self._silent = False
        self._data_open = asyncio.Event()  # set while data may flow (neither dead nor silent)
        self._data_open.set()
        self._changed: asyncio.Event | None = None  # created by a waiter, set and dropped on the next change
        self._rejects: dict[str, str | None] = {}
        #: All client->server text frames, every connection, in arrival order.
        self.received: list[ReceivedFrame] = []
        #: Every REST call (snapshots, listenKey, signed private snapshots), in arrival order; no secrets.
        self.rest_requests: list[RestRequest] = []
        #: Native topic/stream -> data frames exactly as sent on the wire, in order (all connections).
        self.sent_data: dict[str, list[str]] = {}
        #: Counters (missing = 0): connections_opened/closed/dropped, frames_received, subscribe_frames,
        #: unsubscribe_frames, subscribe_errors, request_errors, replies_sent, replies_withheld_dead,
        #: data_frames_sent, pings_answered (app and protocol pings), protocol_pings_received,
        #: server_pings_sent, pongs_received, route_mismatch_silenced, oversize_closes, rate_limit_closes,
        #: pong_timeout_closes, binary_frames_ignored, tape_errors, bitmart_requests (``action:request``),
        #: requests_withheld_silent, rest_requests, rest_binance_depth, rest_gate_order_book,
        #: rest_throttled (429), rest_errors (400). Private side: logins_ok, logins_failed, gate_auth_failures,
        #: bogus_listen_key_sockets, listen_keys_expired, private_pushes, private_pushes_withheld, rest_listen_key,
        #: rest_{bitmart_open_orders,bitmart_positions,binance_open_orders,binance_position_risk,gate_orders,
        #: gate_positions}, rest_auth_failures.
        self.stats: Counter[str] = Counter()
        #: Benchmark hook ``(native, raw_frame, time.time_ns())`` called right before each data frame is sent.
        self.on_send: Callable[[str, str, int], None] | None = None
        self._private = sim_private.PrivateSide(self, listen_key_ttl_s=listen_key_ttl_s)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Bind and serve. Tapes load lazily on first subscribe (or call ``preload()``)."""
        if self._runner is not None:
            raise RuntimeError("simulator already started")
        runner = web.AppRunner(self._build_app(), access_log=None, shutdown_timeout=_CLOSE_TIMEOUT_S)
        await runner.setup()
        try:
            await web.TCPSite(runner, self._host, self._port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = runner.addresses[0][1]
        log.info("simulator listening on %s", self.base_url)

    async def stop(self) -> None:
        """Close every socket (1001), stop serving and await every task this simulator started."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._private.close()
        conns = list(self._conns.values())
        await asyncio.gather(*(t for c in conns for t in self._cancel_tasks(c)), return_exceptions=True)
        await asyncio.gather(*(self._close(c, WSCloseCode.GOING_AWAY, b"simulator stopping") for c in conns))
        await runner.cleanup()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._notify()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def preload(self) -> None:
        """Load every tape now (about 2 s, once per process) so the first subscribe is not delayed."""
        await asyncio.to_thread(sim_tapes.preload, self._samples_dir)

    # ------------------------------------------------------------------ URLs and observation

    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        return f"ws://{self._host}:{self._port}"

    @property
    def http_url(self) -> str:
        return f"http://{self._host}:{self._port}"

    @property
    def bitmart_public_url(self) -> str:
        return f"{self.base_url}/api?protocol=1.1"

    @property
    def bitmart_private_url(self) -> str:
        """BitMart private socket (login, orders, positions, assets; exchanges.md §1.3)."""
        return f"{self.base_url}/user?protocol=1.1"

    @property
    def bitmart_rest_url(self) -> str:
        """BitMart futures REST base: the client appends ``/contract/private/get-open-orders`` and so on."""
        return self.http_url

    @property
    def binance_base_url(self) -> str:
        """The client appends ``/market/stream``, ``/public/ws`` and so on."""
        return self.base_url

    @property
    def binance_rest_url(self) -> str:
        """Binance USD-M REST base: the client appends ``/fapi/v1/depth?...``."""
        return self.http_url

    @property
    def gate_ws_url(self) -> str:
        """Gate.io USDT futures WebSocket (``wss://fx-ws.gateio.ws/v4/ws/usdt`` in production)."""
        return f"{self.base_url}/v4/ws/usdt"

    @property
    def gate_rest_url(self) -> str:
        """Gate.io REST base: the client appends ``/api/v4/futures/usdt/order_book?...``."""
        return self.http_url

    @property
    def connections(self) -> list[SimConnection]:
        """Live connections, oldest first."""
        return list(self._conns.values())

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Return once ``predicate()`` is true; re-checked on every frame in or out and every open/close.

        Raises TimeoutError after ``timeout`` seconds.
        """
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    if self._changed is None:
                        self._changed = asyncio.Event()
                    await self._changed.wait()
        except TimeoutError:
            raise TimeoutError(f"simulator condition not met within {timeout} s") from None

    def _notify(self) -> None:
        # Waiters hold the event; setting it wakes them, and the next waiter makes a fresh one. With no
        # waiter this is one attribute test, which matters at ~100k frames/s.
        changed, self._changed = self._changed, None
        if changed is not None:
            changed.set()

    def status(self) -> dict[str, Any]:
        """JSON-ready snapshot: URLs, settings, faults, connections, subscriptions, tapes, counters."""
        subs: Counter[str] = Counter()
        for conn in self._conns.values():
            subs.update(conn.subscribed)
        tapes: dict[str, Any] = {}
        for (exchange, native), (_, source) in sim_tapes.CATALOG.items():
            try:
                tape = sim_tapes.cached_tape(exchange, native, self._samples_dir)
                frames: int | None = len(tape) if tape else 0
            except LookupError:
                frames = None  # source not loaded yet
            tapes[native] = {
                "exchange": exchange,
                "source": source,
                "derived": source.startswith("derived"),
                "frames": frames,
            }
        rest = {
            f"{exchange}:{symbol}": {"exchange": exchange, "symbol": symbol, "source": source}
            for (exchange, symbol), (_, source) in sim_tapes.REST_CATALOG.items()
        }
        return {
            "simulator": "feedplane exchange simulator (BitMart futures v2, Binance USD-M, Gate.io USDT futures)",
            "urls": {
                "BITMART_PUBLIC_WS_URI": self.bitmart_public_url,
                "BITMART_PRIVATE_WS_URI": self.bitmart_private_url,
                "BITMART_REST_URI": self.bitmart_rest_url,
                "BINANCE_USDM_WS_URI": self.binance_base_url,
                "BINANCE_USDM_REST_URI": self.binance_rest_url,
                "GATEIO_WS_URI": self.gate_ws_url,
                "GATEIO_REST_URI": self.gate_rest_url,
                "control": f"{self.http_url}/_sim/status",
            },
            "settings": {
                "speed": self._speed,
                "rate": self._rate,
                "loop": self._loop,
                "binance_ping_interval_s": self._ping_interval_s,
                "binance_pong_timeout_s": self._pong_timeout_s,
                "gate_ping_interval_s": self._gate_ping_interval_s,
                "gate_pong_timeout_s": self._gate_pong_timeout_s,
            },
            "faults": {
                "dead": self._dead,
                "silent": self._silent,
                "rejected": dict(self._rejects),
                "rest_failures_pending": self._rest_failures,
            },
            "connections": [
                {
                    "id": c.conn_id,
                    "exchange": c.exchange,
                    "route": c.route,
                    "mode": c.mode,
                    "path": c.path,
                    "subscribed": sorted(c.subscribed),
                    "sent_count": c.sent_count,
                    "received_count": len(c.received),
                    "age_s": round(time.monotonic() - c.opened_at, 3),
                }
                for c in self._conns.values()
            ],
            "subscriptions": dict(subs),
            "tapes": tapes,
            "tape_aliases": {
                "binanceusdm <s>@depth[@0ms|@100ms|@500ms]": "the symbol's one recorded diff-depth tape",
            },
            "rest_snapshots": rest,
            "private": self._private.status(),
            "counters": dict(self.stats),
        }

    # ------------------------------------------------------------------ private side (scripts.sim_private)

    def add_account(self, exchange: str, api_key: str, api_secret: str, memo: str = "") -> None:
        """Make an account known (``memo``: the BitMart API memo or the Gate uid). Secrets stay in memory only."""
        self._private.add_account(exchange, api_key, api_secret, memo)

    def remove_account(self, exchange: str, api_key: str) -> bool:
        """Forget an account (its Binance listen key too); False if it was unknown."""
        return self._private.remove_account(exchange, api_key)

    async def push_private(
        self, exchange: str, api_key: str, channel: str, frame_json: str | dict[str, Any] | list[Any]
    ) -> int:
        """Send one frame to that account's live private sockets; returns how many got it (``PrivateSide.push``)."""
        return await self._private.push(exchange, api_key, channel, frame_json)

    async def expire_listen_key(self, api_key: str) -> int:
        """Send ``listenKeyExpired`` to the Binance account's user sockets, which then stay silent."""
        return await self._private.expire_listen_key(api_key)

    def set_clock(self, epoch_ms: int | None) -> None:
        """Set the clock the private APIs check timestamps against (it runs on from ``epoch_ms``); None: real time."""
        self._private.set_clock(epoch_ms)

    def now_ms(self) -> int:
        """The simulator clock in epoch milliseconds (see ``set_clock``)."""
        return self._private.now_ms()

    # ------------------------------------------------------------------ faults

    async def drop_connections(self, exchange: str | None = None) -> int:
        """Abort matching sockets without a close handshake (the client sees 1006); returns the count."""
        dropped = 0
        for conn in list(self._conns.values()):
            if exchange is None or conn.exchange == exchange:
                self._cancel_tasks(conn)
                if conn._transport is not None:
                    conn._transport.abort()
                dropped += 1
        self.stats["connections_dropped"] += dropped
        log.info("dropped %d connection(s) (exchange=%s)", dropped, exchange or "any")
        return dropped

    def set_dead(self, enabled: bool) -> None:
        """Dead peer: sockets stay open but nothing is sent — no data, acks, errors, pongs or pings.

        Closes the simulator would initiate (rate limit, oversize, pong timeout) are skipped too.
        A client's close frame is still answered so that its ``close()`` returns promptly.
        """
        self._dead = enabled
        self._update_gate()

    def set_silent(self, enabled: bool) -> None:
        """Silent feed: data pushes pause (replay resumes where it stopped); acks and pongs still go out."""
        self._silent = enabled
        self._update_gate()

    def reject(self, native: str, error: str | None = None) -> None:
        """Make future subscribes of ``native`` fail with the exchange's error shape (``error`` = its text).

        BitMart (native = topic ``futures/trade:BTCUSDT``): ``{"action":"subscribe","group":<topic>,
        "success":false,"error":...}`` (default text ``Invalid channel: not found <topic>``, §1.4).
        Binance (native = stream ``btcusdt@trade``): ``{"error":{"code":2,"msg":...},"id":N}`` (default
        ``Invalid request: invalid stream``, §4). Gate (native = ``f"{channel}:{contract}"``, e.g.
        ``futures.trades:BTC_USDT``, ``futures.order_book_update:RDNT_USDT``; candles
        ``futures.candlesticks:1m_BTC_USDT``): the whole request gets ``{"error":{"code":2,"message":...},
        "result":{"status":"fail"}}`` (default ``unknown contract <C>``, exchanges.md §2.4).
        """
        self._rejects[native] = error

    def unreject(self, native: str | None = None) -> None:
        """Undo ``reject`` for ``native``, or for everything when None."""
        if native is None:
            self._rejects.clear()
        else:
            self._rejects.pop(native, None)

    def fail_rest(self, n: int) -> None:
        """Answer the next ``n`` REST snapshot calls with HTTP 429 (0 cancels).

        Binance: ``Retry-After: 1`` and ``{"code":-1003,"msg":"Too many requests; ..."}``; Gate:
        ``{"label":"TOO_MANY_REQUESTS","message":"Request Rate Limit Exceeded"}`` (exchanges.md §2.8).
        """
        if n < 0:
            raise ValueError("n must be >= 0")
        self._rest_failures = n

    def _update_gate(self) -> None:
        if self._dead or self._silent:
            self._data_open.clear()
        else:
            self._data_open.set()
        self._notify()

    # ------------------------------------------------------------------ app

    def _build_app(self) -> web.Application:
        app = web.Application()
        r = app.router
        r.add_get("/api", self._bitmart_ws)
        r.add_get("/v4/ws/usdt", self._gate_ws)
        r.add_get("/fapi/v1/depth", self._h_binance_depth)
        r.add_get("/api/v4/futures/usdt/order_book", self._h_gate_order_book)
        for prefix, route in (("/public", "public"), ("/market", "market"), ("", "legacy")):
            for mode in ("ws", "stream"):
                handler = partial(self._binance_ws, route=route, mode=mode)
                r.add_get(f"{prefix}/{mode}", handler)
                if mode == "ws":
                    r.add_get(f"{prefix}/ws/{{streams:.+}}", handler)
        r.add_get("/_sim/status", self._h_status)
        r.add_post("/_sim/drop", self._h_drop)
        r.add_post("/_sim/dead", partial(self._h_flag, setter=self.set_dead, name="dead"))
        r.add_post("/_sim/silent", partial(self._h_flag, setter=self.set_silent, name="silent"))
        r.add_post("/_sim/reject", self._h_reject)
        r.add_delete("/_sim/reject", self._h_unreject)
        r.add_post("/_sim/fail_rest", self._h_fail_rest)
        self._private.add_routes(r)
        return app

    async def _serve(
        self, request: web.Request, conn: SimConnection, on_text: Callable[[SimConnection, str], Awaitable[bool]]
    ) -> web.WebSocketResponse:
        """Run one socket: record frames, answer protocol pings ourselves (so dead mode can withhold
        pongs), dispatch text to ``on_text`` (returns False once it closed the socket), clean up."""
        ws = conn.ws
        await ws.prepare(request)
        conn._transport = request.transport
        self._conns[conn.conn_id] = conn
        self.stats["connections_opened"] += 1
        self._notify()
        log.info("conn %d open: %s %s", conn.conn_id, conn.exchange, conn.path)
        try:
            if conn.exchange == BINANCE:
                self._spawn(conn, "_keepalive", self._keepalive(conn, self._ping_interval_s, self._pong_timeout_s))
            elif conn.exchange == GATE:
                keepalive = self._keepalive(conn, self._gate_ping_interval_s, self._gate_pong_timeout_s)
                self._spawn(conn, "_keepalive", keepalive)
            await self._on_open(conn)
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    now = time.monotonic()
                    conn.received.append((now, msg.data))
                    self.received.append(ReceivedFrame(conn.conn_id, conn.exchange, now, msg.data))
                    self.stats["frames_received"] += 1
                    self._notify()
                    if not await on_text(conn, msg.data):
                        break
                elif msg.type is WSMsgType.PING:
                    self.stats["protocol_pings_received"] += 1
                    if not self._dead:
                        with contextlib.suppress(ConnectionError):
                            await _guarded(ws.pong(msg.data))
                            self.stats["pings_answered"] += 1
                    self._notify()
                elif msg.type is WSMsgType.PONG:
                    conn._pong_deadline = None
                    self.stats["pongs_received"] += 1
                    self._notify()
                elif msg.type is WSMsgType.BINARY:
                    self.stats["binary_frames_ignored"] += 1
                elif msg.type is WSMsgType.ERROR:
                    log.info("conn %d error: %r", conn.conn_id, ws.exception())
                    break
        finally:
            closer = conn._closer
            cancelled = self._cancel_tasks(conn, keep=closer)
            if closer is not None and closer is not asyncio.current_task():
                cancelled.append(closer)  # not cancelled: let its close handshake finish
            await asyncio.gather(*cancelled, return_exceptions=True)
            self._conns.pop(conn.conn_id, None)
            conn.close_code = ws.close_code
            self.stats["connections_closed"] += 1
            self._notify()
            log.info("conn %d closed: code=%s", conn.conn_id, ws.close_code)
        return ws

    def _new_conn(self, request: web.Request, exchange: str, route: str, mode: str) -> SimConnection:
        conn_id, self._next_id = self._next_id, self._next_id + 1
        # autoping=False: protocol pings are answered in _serve, so dead mode can withhold the pong.
        ws = web.WebSocketResponse(autoping=False, max_msg_size=1 << 20, timeout=_CLOSE_TIMEOUT_S)
        return SimConnection(conn_id, exchange, route, mode, request.path_qs, time.monotonic(), ws=ws)

    async def _on_open(self, conn: SimConnection) -> None:
        """Subscribe the streams named in a Binance URL (no ack is sent for these); start a user-data replay."""
        if conn._private is not None:
            self._private.on_open(conn)
        for stream in conn._url_streams:
            if binance_stream_class(stream) is None or stream in self._rejects:
                log.info("conn %d: ignoring URL stream %r (invalid or rejected)", conn.conn_id, stream)
                continue
            if stream not in conn.subscribed:
                self._add_sub(conn, stream)
                self._start_replay(conn, stream)

    # ------------------------------------------------------------------ sending

    async def _reply(self, conn: SimConnection, obj: Any) -> bool:
        """Send a control frame (ack, error, app pong); withheld while dead."""
        if self._dead:
            self.stats["replies_withheld_dead"] += 1
            return False
        try:
            await _guarded(conn.ws.send_str(orjson.dumps(obj).decode()))
        except ConnectionError:
            return False
        conn.sent_count += 1
        self.stats["replies_sent"] += 1
        self._notify()
        return True

    async def _send_data(self, conn: SimConnection, native: str, frame: str) -> bool:
        if conn.ws.closed:
            return False
        if self.on_send is not None:
            self.on_send(native, frame, time.time_ns())
        task = asyncio.current_task()
        conn._in_write.add(task)
        self._notify()  # observers can see a send blocked on a full socket (tests of backpressure)
        try:
            await _guarded(conn.ws.send_str(frame))
        except ConnectionError:
            return False
        finally:
            conn._in_write.discard(task)
        if self._record_sent:
            self.sent_data.setdefault(native, []).append(frame)
        conn.sent_count += 1
        self.stats["data_frames_sent"] += 1
        self._notify()
        return True

    async def _close(self, conn: SimConnection, code: int, message: bytes) -> None:
        """Close handshake bounded by ``_CLOSE_TIMEOUT_S``; on timeout aiohttp aborts the transport."""
        try:
            await asyncio.wait_for(conn.ws.close(code=code, message=message), _CLOSE_TIMEOUT_S)
        except asyncio.CancelledError:
            _reraise_if_cancelling()  # else a sibling's cancel hit the shared drain future; transport is closed
        except Exception as exc:  # noqa: BLE001 - a failed close leaves an aborted transport, which is fine
            log.debug("conn %d: close failed: %r", conn.conn_id, exc)

    # ------------------------------------------------------------------ replay

    def _spawn(self, conn: SimConnection, key: str, coro: Any) -> None:
        task = asyncio.create_task(coro, name=f"sim-{conn.conn_id}-{key}")
        conn._tasks[key] = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _cancel_tasks(self, conn: SimConnection, keep: asyncio.Task[Any] | None = None) -> list[asyncio.Task[Any]]:
        cancelled = []
        for key, task in list(conn._tasks.items()):
            if task is not keep:
                task.cancel()
                del conn._tasks[key]
                cancelled.append(task)
        return cancelled

    def _add_sub(self, conn: SimConnection, native: str) -> None:
        conn.subscribed.add(native)
        conn._order[native] = None
        self._notify()

    async def _remove_sub(self, conn: SimConnection, native: str) -> None:
        conn.subscribed.discard(native)
        conn._order.pop(native, None)
        conn._positions.pop(native, None)
        task = conn._tasks.pop(native, None)
        if task is not None:
            # A task blocked in a send is waiting on aiohttp's drain future, which every writer of this
            # socket shares: cancelling it would cancel that future for the other streams too. Its frame
            # is already written, so let the send finish; the replay loop then sees it was removed.
            if task not in conn._in_write:
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)  # no frame of it may follow the ack
        self._notify()

    def _start_replay(self, conn: SimConnection, native: str) -> None:
        if native in conn._tasks or sim_tapes.source_of(conn.exchange, native) is None:
            return  # already playing, or a valid stream we have no frames for (stays quiet, like production)
        if conn.exchange == BINANCE and not self._binance_deliverable(conn, native):
            # Since 2026-04-23 a wrong-route stream is acked and then never delivered (binance_usdm.md §0, §4).
            self.stats["route_mismatch_silenced"] += 1
            log.info("conn %d: %s acked but not delivered on route %s", conn.conn_id, native, conn.route)
            return
        self._spawn(conn, native, self._replay(conn, native))

    async def _tape(self, conn: SimConnection, native: str) -> sim_tapes.Tape | None:
        """The tape for ``native`` (loaded in a thread on first use); None if absent or unreadable."""
        try:
            return sim_tapes.cached_tape(conn.exchange, native, self._samples_dir)
        except LookupError:
            try:
                return await asyncio.to_thread(sim_tapes.get_tape, conn.exchange, native, self._samples_dir)
            except OSError as exc:  # recordings missing: the stream stays quiet, the cause is logged
                self.stats["tape_errors"] += 1
                log.error("conn %d: cannot load the tape for %s: %s", conn.conn_id, native, exc)
                self._notify()
                return None

    async def _replay(self, conn: SimConnection, native: str) -> None:
        """Play one tape to one socket; targets are computed from a start time, so sleeps never drift."""
        tape = await self._tape(conn, native)
        if not tape:
            return
        loop = asyncio.get_running_loop()
        times, frames, n = tape.times_s, tape.frames, len(tape)
        span = times[-1] - times[0]
        cycle_s = max(span + (span / (n - 1) if n > 1 else 0.0), 1.0)
        base, offset, start, i, sent = times[0], 0.0, loop.time(), 0, 0
        wrap = conn.exchange == BINANCE
        while True:
            if i == n:
                if not self._loop:
                    return
                i, offset = 0, offset + cycle_s
            if not self._data_open.is_set():
                paused_at = loop.time()
                await self._data_open.wait()
                start += loop.time() - paused_at  # resume the schedule where it stopped, no burst
                continue
            if self._rate is not None:
                target: float | None = start + sent / self._rate
            elif self._speed > 0:
                target = start + (offset + times[i] - base) / self._speed
            else:
                target = None
            if target is not None and target - loop.time() > _MIN_SLEEP_S:
                await asyncio.sleep(target - loop.time())
                continue  # re-check the dead/silent gate after sleeping
            frame = self._binance_frame(conn, native, frames[i]) if wrap else frames[i]
            conn._positions[native] = i  # set before the write: a BitMart request snapshot follows this frame
            if not await self._send_data(conn, native, frame) or conn._tasks.get(native) is not asyncio.current_task():
                return  # socket gone, or unsubscribed while this frame was being written
            i += 1
            sent += 1
            if sent % _YIELD_EVERY == 0:
                await asyncio.sleep(0)  # bursts must not starve this socket's reader or other streams

    # ------------------------------------------------------------------ BitMart (exchanges.md §1)

    async def _bitmart_ws(self, request: web.Request) -> web.WebSocketResponse:
        return await self._serve(request, self._new_conn(request, BITMART, "api", "api"), self._bitmart_text)

    def _bitmart_topic_error(self, topic: object, *, subscribing: bool) -> str | None:
        """None if ``topic`` is a served channel; else the §1.4 wire error text.

        Served: ``futures/klineBin<tf>``, ``trade``, ``ticker``, ``bookticker`` ``:<SYM>``, the
        all-contracts ``futures/ticker``, and ``futures/depthIncrease{5,20,50}:<SYM>[@100ms|@200ms]``,
        for SYM in ``sim_tapes.BITMART_SYMBOLS``.
        """
        if not isinstance(topic, str):
            return f"Invalid channel: not found {topic}"
        if subscribing and topic in self._rejects:
            return self._rejects[topic] or f"Invalid channel: not found {topic}"
        if topic == _BITMART_ALL_TICKERS:
            return None
        m = _BITMART_TOPIC.fullmatch(topic)
        if m is None or (m.group(1) or m.group(2)) not in sim_tapes.BITMART_SYMBOLS:
            return f"Invalid channel: not found {topic}"
        return None

    async def _bitmart_request(self, conn: SimConnection, topic: object) -> None:
        """``{"action":"request","args":[<depthIncrease topic>]}`` -> a fresh ``type:"snapshot"`` push (§1.6).

        The snapshot is the top-N book after the last frame this connection's replay of ``topic`` wrote
        (or the tape's first frame when it is not playing), with that frame's ``version``: the replay's
        next update is ``version + 1``. It is a data push (``sent_data``; withheld while dead or
        silent). Any other topic gets ``success:false`` (what BitMart answers there is UNVERIFIED).
        """
        self.stats["bitmart_requests"] += 1
        error = self._bitmart_topic_error(topic, subscribing=False)
        if error is None and not str(topic).startswith(_BITMART_DEPTH_INCREASE):
            error = f"Invalid channel: request not supported for {topic}"
        tape = None if error is not None else await self._tape(conn, str(topic))
        if tape is None:
            self.stats["request_errors"] += 1
            msg = error or f"Invalid channel: not found {topic}"
            await self._reply(conn, {"action": "request", "group": topic, "success": False, "error": msg})
            return
        native = str(topic)
        if not self._data_open.is_set():
            self.stats["replies_withheld_dead" if self._dead else "requests_withheld_silent"] += 1
            return
        frame = sim_tapes.bitmart_depth_snapshot(tape, conn._positions.get(native, 0))
        await self._send_data(conn, native, frame)

    async def _bitmart_text(self, conn: SimConnection, text: str) -> bool:
        """One BitMart client frame (exchanges.md §1.2, §1.4, §1.5); ``>`` client, ``<`` simulator.

        - ``> {"action":"subscribe","args":["futures/trade:BTCUSDT"]}``
          ``< {"action":"subscribe","group":"futures/trade:BTCUSDT","success":true,"request":{...as sent}}``
          (one ack per topic; unknown topic: ``"success":false,"error":"Invalid channel: not found <topic>"``)
        - ``> {"action":"ping"}`` ``< {"group":"System","data":"pong+<uuid4>"}``
        - ``> {"action":"request","args":["futures/depthIncrease50:BTCUSDT@100ms"]}`` ``<`` a snapshot push
          (``_bitmart_request``)
        - ``> hello`` ``< {"success":false,"error":"Invalid message: message must be JSON: hello"}``
        - any frame over ``BITMART_MAX_FRAME_BYTES``: close 1009.
        """
        size = len(text.encode())
        if size > BITMART_MAX_FRAME_BYTES and not self._dead:
            self.stats["oversize_closes"] += 1
            log.info("conn %d: %d-byte frame, closing with 1009", conn.conn_id, size)
            await self._close(conn, WSCloseCode.MESSAGE_TOO_BIG, b"message too big")
            return False
        try:
            req = orjson.loads(text)
        except orjson.JSONDecodeError:
            await self._reply(conn, {"success": False, "error": f"Invalid message: message must be JSON: {text}"})
            return True
        action = req.get("action") if isinstance(req, dict) else None
        args = req.get("args") if isinstance(req, dict) else None
        if action == "ping":
            if await self._reply(conn, {"group": "System", "data": f"pong+{uuid.uuid4()}"}):
                self.stats["pings_answered"] += 1
            return True
        if conn.route == "user":  # the private socket: login and private topics only
            return await self._private.bitmart_user_frame(conn, action, args, text)
        if action == "request" and isinstance(args, list):
            for topic in args:
                await self._bitmart_request(conn, topic)
            return True
        if action not in ("subscribe", "unsubscribe") or not isinstance(args, list):
            # Shape for JSON that is not a valid request: UNVERIFIED (reuses the non-JSON error shape).
            await self._reply(conn, {"success": False, "error": f"Invalid message: {text}"})
            return True
        self.stats[f"{action}_frames"] += 1
        echo = {"action": action, "args": args}
        started: list[str] = []
        for topic in args:  # one ack per topic (§1.4)
            error = self._bitmart_topic_error(topic, subscribing=action == "subscribe")
            if error is not None:
                self.stats[f"{action}_errors"] += 1
                await self._reply(conn, {"action": action, "group": topic, "success": False, "error": error})
                continue
            if action == "subscribe":
                if topic not in conn.subscribed:  # a duplicate is acked again but not replayed twice
                    self._add_sub(conn, topic)
                    started.append(topic)
            else:
                await self._remove_sub(conn, topic)
            await self._reply(conn, {"action": action, "group": topic, "success": True, "request": echo})
        for topic in started:  # after the acks, so an ack always precedes its stream's data
            self._start_replay(conn, topic)
        return True

    # ------------------------------------------------------------------ Binance (binance_usdm.md §1-5)

    async def _binance_ws(self, request: web.Request, *, route: str, mode: str) -> web.WebSocketResponse:
        conn = self._new_conn(request, BINANCE, route, mode)
        conn.combined = mode == "stream"
        url_streams = request.match_info.get("streams", "").split("/")
        if mode == "stream":
            url_streams = request.query.get("streams", "").split("/")
        conn._url_streams = [s for s in url_streams if s]
        return await self._serve(request, conn, self._binance_text)

    def _binance_deliverable(self, conn: SimConnection, stream: str) -> bool:
        """/market carries market-class streams; /public and legacy /ws, /stream only public-class (§0, §2);
        /private none (user data only)."""
        if conn.route == "private":
            return False
        wanted = "market" if conn.route == "market" else "public"
        return binance_stream_class(stream) == wanted

    @staticmethod
    def _binance_frame(conn: SimConnection, stream: str, payload: str) -> str:
        # Stream names passed validation (no quotes), so plain concatenation is valid JSON and keeps
        # the recorded payload byte-identical.
        return '{"stream":"' + stream + '","data":' + payload + "}" if conn.combined else payload

    async def _binance_text(self, conn: SimConnection, text: str) -> bool:
        """One Binance client frame (binance_usdm.md §3, §4); ``>`` client, ``<`` simulator.

        - ``> {"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":1}`` ``< {"result":null,"id":1}``
        - ``> {"method":"LIST_SUBSCRIPTIONS","id":2}`` ``< {"result":["btcusdt@trade"],"id":2}``
        - ``> {"method":"SUBSCRIBE","params":["btcusdt@nope"],"id":3}``
          ``< {"error":{"code":2,"msg":"Invalid request: invalid stream"},"id":3}``
        - bad id: code 2 ``request ID must be an unsigned integer`` with the id as sent; bad JSON: code 3, id null.
        - the 11th frame within one second: close 1008.
        """
        now = time.monotonic()
        times = conn._msg_times
        times.append(now)
        while now - times[0] >= 1.0:
            times.popleft()
        if len(times) > BINANCE_MAX_MSGS_PER_S and not self._dead:
            self.stats["rate_limit_closes"] += 1
            log.info("conn %d: %d frames within 1 s, closing with 1008", conn.conn_id, len(times))
            await self._close(conn, WSCloseCode.POLICY_VIOLATION, b"Too many requests")
            return False
        reply, started = await self._binance_request(conn, text)
        if "error" in reply:
            self.stats["request_errors"] += 1
        await self._reply(conn, reply)
        for stream in started:
            self._start_replay(conn, stream)
        return True

    async def _binance_request(self, conn: SimConnection, text: str) -> tuple[dict[str, Any], list[str]]:
        """Apply one request; returns (reply, streams whose replay starts after the reply)."""

        def error(code: int, msg: str, rid: Any) -> tuple[dict[str, Any], list[str]]:
            return {"error": {"code": code, "msg": msg}, "id": rid}, []

        try:
            req = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            return error(3, f"Invalid JSON: {exc}", None)
        if not isinstance(req, dict):
            return error(3, "Invalid JSON: expected an object", None)  # exact text UNVERIFIED
        rid = req.get("id")
        if not isinstance(rid, int) or isinstance(rid, bool) or not 0 <= rid < 1 << 64:
            return error(2, "Invalid request: request ID must be an unsigned integer", rid)
        method, params = req.get("method"), req.get("params", [])
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            self.stats[f"{method.lower()}_frames"] += 1
            if not isinstance(params, list) or any(
                not isinstance(s, str) or binance_stream_class(s) is None for s in params
            ):
                return error(2, "Invalid request: invalid stream", rid)
            if method == "UNSUBSCRIBE":
                for stream in params:
                    await self._remove_sub(conn, stream)
                return {"result": None, "id": rid}, []
            for stream in params:
                if stream in self._rejects:
                    return error(2, self._rejects[stream] or "Invalid request: invalid stream", rid)
            new = [s for s in dict.fromkeys(params) if s not in conn.subscribed]
            if len(conn.subscribed) + len(new) > BINANCE_MAX_STREAMS:
                # Behaviour above 1024 is undocumented (§3); a code-2 error is our choice.
                return error(2, f"Invalid request: too many streams (max {BINANCE_MAX_STREAMS})", rid)
            for stream in new:
                self._add_sub(conn, stream)
            return {"result": None, "id": rid}, new
        if method == "LIST_SUBSCRIPTIONS":
            return {"result": list(conn._order), "id": rid}, []
        if method in ("SET_PROPERTY", "GET_PROPERTY"):  # only "combined" exists (§4)
            if not isinstance(params, list) or not params or params[0] != "combined":
                return error(0, "Unknown property", rid)
            if method == "GET_PROPERTY":
                return {"result": conn.combined, "id": rid}, []
            if len(params) != 2 or not isinstance(params[1], bool):
                return error(1, "Invalid value type: expected Boolean", rid)
            conn.combined = params[1]
            return {"result": None, "id": rid}, []
        return error(2, f"Invalid request: unknown method {method!r}", rid)  # text UNVERIFIED

    async def _keepalive(self, conn: SimConnection, interval_s: float, timeout_s: float) -> None:
        """Protocol ping every ``interval_s``; close when no pong within ``timeout_s`` (Binance §3, Gate §2.4).

        Any pong counts (unsolicited pongs are allowed, §3). The close code for a pong timeout is
        UNVERIFIED; 1008 with reason ``pong timeout`` is used.
        """
        loop = asyncio.get_running_loop()
        next_ping = loop.time() + interval_s
        while True:
            now = loop.time()
            if self._dead:
                conn._pong_deadline = None  # a dead server neither pings nor enforces
            elif conn._pong_deadline is not None and now >= conn._pong_deadline:
                self.stats["pong_timeout_closes"] += 1
                log.info("conn %d: no pong within %.3f s, closing", conn.conn_id, timeout_s)
                conn._closer = asyncio.current_task()
                await self._close(conn, WSCloseCode.POLICY_VIOLATION, b"pong timeout")
                return
            if now >= next_ping:
                if not self._dead:
                    with contextlib.suppress(ConnectionError):
                        await _guarded(conn.ws.ping(b""))
                        self.stats["server_pings_sent"] += 1
                        if conn._pong_deadline is None:
                            conn._pong_deadline = now + timeout_s
                        self._notify()
                next_ping = now + interval_s
            wake = next_ping if conn._pong_deadline is None else min(next_ping, conn._pong_deadline)
            await asyncio.sleep(max(0.0, wake - loop.time()))

    # ------------------------------------------------------------------ Gate.io (exchanges.md §2)

    async def _gate_ws(self, request: web.Request) -> web.WebSocketResponse:
        return await self._serve(request, self._new_conn(request, GATE, "usdt", "v4"), self._gate_text)

    async def _gate_text(self, conn: SimConnection, text: str) -> bool:
        """One Gate client frame (``scripts.sim_gate``); ``>`` client, ``<`` simulator.

        - ``> {"time":1723161256,"id":7,"channel":"futures.trades","event":"subscribe","payload":["BTC_USDT"]}``
          ``< {"time":…,"time_ms":…,"id":7,"channel":"futures.trades","event":"subscribe","error":null,
          "result":{"status":"success"}}`` — one ack per request, then the data of each contract.
        - unknown contract: ``< {…,"error":{"code":2,"message":"unknown contract NOPE_USDT"},"result":{"status":"fail"}}``
          and nothing of that request is subscribed.
        - ``> {"time":…,"channel":"futures.ping"}`` ``< {"time","time_ms","channel":"futures.pong","event":"","result":null}``

        A duplicate subscribe is acked again and not replayed twice (UNVERIFIED for Gate). Private channels
        (``futures.orders`` …) are handled by ``scripts.sim_private``.
        """
        if await self._private.gate_frame(conn, text):
            return True
        req = sim_gate.parse_request(text, self._rejects)
        now_ns = time.time_ns()
        if req.kind == "ping":
            if await self._reply(conn, sim_gate.pong_frame(req, now_ns)):
                self.stats["pings_answered"] += 1
            return True
        if req.kind in ("subscribe", "unsubscribe"):
            self.stats[f"{req.kind}_frames"] += 1
        if req.error is not None:
            self.stats["subscribe_errors" if req.kind == "subscribe" else "request_errors"] += 1
            await self._reply(conn, sim_gate.error_frame(req, now_ns))
            return True
        started: list[str] = []
        for native in req.natives:
            if req.kind == "subscribe":
                if native not in conn.subscribed:
                    self._add_sub(conn, native)
                    started.append(native)
            else:
                await self._remove_sub(conn, native)
        await self._reply(conn, sim_gate.ack_frame(req, now_ns))
        for native in started:  # after the ack, so it precedes the stream's data
            self._start_replay(conn, native)
        return True

    # ------------------------------------------------------------------ REST snapshots

    def _rest_done(
        self, request: web.Request, exchange: str, response: web.Response, *, path_qs: str | None = None
    ) -> web.Response:
        path_qs = request.path_qs if path_qs is None else path_qs
        self.rest_requests.append(RestRequest(exchange, time.monotonic(), path_qs, response.status, request.method))
        if response.status == 429:
            self.stats["rest_throttled"] += 1
        elif response.status >= 400:
            self.stats["rest_errors"] += 1
        self._notify()
        return response

    def _take_rest_failure(self) -> bool:
        if self._rest_failures <= 0:
            return False
        self._rest_failures -= 1
        return True

    async def _rest_snapshot(self, exchange: str, symbol: str) -> sim_tapes.RestSnapshot | None:
        try:
            return sim_tapes.cached_rest_snapshot(exchange, symbol, self._samples_dir)
        except LookupError:
            return await asyncio.to_thread(sim_tapes.rest_snapshot, exchange, symbol, self._samples_dir)

    @staticmethod
    def _json_status(data: Any, status: int, headers: dict[str, str] | None = None) -> web.Response:
        return web.Response(body=orjson.dumps(data), status=status, content_type="application/json", headers=headers)

    async def _h_binance_depth(self, request: web.Request) -> web.Response:
        """``GET /fapi/v1/depth?symbol=BTCUSDT&limit=1000`` -> the recorded snapshot (binance_usdm.md §6).

        Verbatim ``{"lastUpdateId","E","T","bids","asks"}``, each side cut to ``limit`` (default 500).
        Unknown symbol: 400 ``{"code":-1121,"msg":"Invalid symbol."}``. The symbol is matched upper-cased
        (whether Binance accepts lower case is UNVERIFIED). Limit outside 1..1000 or not an integer:
        400 ``{"code":-1130,...}`` (text UNVERIFIED).
        """
        self.stats["rest_requests"] += 1
        self.stats["rest_binance_depth"] += 1
        if self._take_rest_failure():
            msg = "Too many requests; current limit is 2400 requests per minute. (simulated by fail_rest)"
            resp = self._json_status({"code": -1003, "msg": msg}, 429, {"Retry-After": "1"})
            return self._rest_done(request, BINANCE, resp)
        symbol = request.query.get("symbol", "")
        if not symbol:
            msg = "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."
            return self._rest_done(request, BINANCE, self._json_status({"code": -1102, "msg": msg}, 400))
        limit = _int_param(request.query.get("limit"), 500, BINANCE_REST_MAX_LIMIT)
        if limit is None:
            msg = "Data sent for parameter 'limit' is not valid."
            return self._rest_done(request, BINANCE, self._json_status({"code": -1130, "msg": msg}, 400))
        snap = await self._rest_snapshot(BINANCE, symbol.upper())
        if snap is None:
            resp = self._json_status({"code": -1121, "msg": "Invalid symbol."}, 400)
            return self._rest_done(request, BINANCE, resp)
        resp = web.Response(text=snap.body(limit), content_type="application/json")
        return self._rest_done(request, BINANCE, resp)

    async def _h_gate_order_book(self, request: web.Request) -> web.Response:
        """``GET /api/v4/futures/usdt/order_book?contract=RDNT_USDT&limit=100&with_id=true`` (exchanges.md §2.5).

        The recorded snapshot ``{"current","update","asks":[{"p","s"}],"bids","id"}`` verbatim, each side
        cut to ``limit`` (default 10), ``id`` only with ``with_id=true``. Unknown contract (or one the
        simulator has no recorded book for, e.g. BTC_USDT): 400 ``{"label":"CONTRACT_NOT_FOUND",...}``.
        """
        self.stats["rest_requests"] += 1
        self.stats["rest_gate_order_book"] += 1
        if self._take_rest_failure():
            body = {"label": "TOO_MANY_REQUESTS", "message": "Request Rate Limit Exceeded"}
            return self._rest_done(request, GATE, self._json_status(body, 429))
        contract = request.query.get("contract", "")
        if not contract:
            body = {"label": "MISSING_REQUIRED_PARAM", "message": "Missing required parameter: contract"}
            return self._rest_done(request, GATE, self._json_status(body, 400))
        limit = _int_param(request.query.get("limit"), GATE_REST_DEFAULT_LIMIT, GATE_REST_MAX_LIMIT)
        if limit is None:
            body = {"label": "INVALID_PARAM_VALUE", "message": "Invalid parameter value: limit"}
            return self._rest_done(request, GATE, self._json_status(body, 400))
        snap = await self._rest_snapshot(GATE, contract)
        if snap is None:
            if contract in sim_tapes.GATE_CONTRACTS:
                message = f"Contract {contract} has no recorded order book in the simulator"
            else:
                message = f"Contract {contract} not found"
            body = {"label": "CONTRACT_NOT_FOUND", "message": message}
            return self._rest_done(request, GATE, self._json_status(body, 400))
        with_id = request.query.get("with_id", "false").lower() == "true"
        resp = web.Response(text=snap.body(limit, with_id=with_id), content_type="application/json")
        return self._rest_done(request, GATE, resp)

    # ------------------------------------------------------------------ HTTP control

    @staticmethod
    def _json(data: Any) -> web.Response:
        return web.Response(body=orjson.dumps(data), content_type="application/json")

    async def _h_status(self, request: web.Request) -> web.Response:
        return self._json(self.status())

    async def _h_drop(self, request: web.Request) -> web.Response:
        return self._json({"dropped": await self.drop_connections(request.query.get("exchange") or None)})

    async def _h_flag(self, request: web.Request, *, setter: Callable[[bool], None], name: str) -> web.Response:
        on = request.query.get("on", "1").lower() not in ("0", "false", "off", "no")
        setter(on)
        return self._json({name: on})

    async def _h_reject(self, request: web.Request) -> web.Response:
        native = request.query.get("native")
        if not native:
            raise web.HTTPBadRequest(text="native is required")
        self.reject(native, request.query.get("error") or None)
        return self._json({"rejected": dict(self._rejects)})

    async def _h_unreject(self, request: web.Request) -> web.Response:
        self.unreject(request.query.get("native") or None)
        return self._json({"rejected": dict(self._rejects)})

    async def _h_fail_rest(self, request: web.Request) -> web.Response:
        n = _int_param(request.query.get("n"), 1, 1_000_000, minimum=0)
        if n is None:
            raise web.HTTPBadRequest(text="n must be an integer >= 0")
        self.fail_rest(n)
        return self._json({"rest_failures_pending": n})


def _int_param(raw: str | None, default: int, maximum: int, *, minimum: int = 1) -> int | None:
    """A query integer in ``minimum..maximum``; ``default`` when absent; None when invalid."""
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if minimum <= value <= maximum else None


# ---------------------------------------------------------------------- CLI


async def _run_cli(args: argparse.Namespace) -> None:
    sim = ExchangeSimulator(
        host=args.host,
        port=args.port,
        speed=args.speed,
        rate=args.rate,
        loop=args.loop,
        samples_dir=args.samples_dir,
        record_sent=False,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await sim.preload()  # ~1 s, so the first client is not kept waiting
    async with sim:
        print(f"BITMART_PUBLIC_WS_URI={sim.bitmart_public_url}", flush=True)
        print(f"BITMART_PRIVATE_WS_URI={sim.bitmart_private_url}", flush=True)
        print(f"BITMART_REST_URI={sim.bitmart_rest_url}", flush=True)
        print(f"BINANCE_USDM_WS_URI={sim.binance_base_url}", flush=True)
        print(f"BINANCE_USDM_REST_URI={sim.binance_rest_url}", flush=True)
        print(f"GATEIO_WS_URI={sim.gate_ws_url}", flush=True)
        print(f"GATEIO_REST_URI={sim.gate_rest_url}", flush=True)
        print(f"# control: {sim.http_url}/_sim/status  (Ctrl-C to stop)", flush=True)
        await stop.wait()
    print("# simulator stopped", flush=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m scripts.simulator``: serve until SIGINT/SIGTERM, then exit 0."""
    p = argparse.ArgumentParser(prog="python -m scripts.simulator", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9100, help="0 picks a free port")
    p.add_argument("--speed", type=float, default=1.0, help="recorded pace multiplier; 0 = as fast as possible")
    p.add_argument("--rate", type=float, default=None, help="fixed frames/s per stream (overrides --speed)")
    p.add_argument("--loop", action="store_true", help="restart each tape when it ends")
    p.add_argument("--samples-dir", type=Path, default=None, help="recordings folder (default: FEEDPLANE_SAMPLES)")
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(_run_cli(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
