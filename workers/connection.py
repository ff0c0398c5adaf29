"""One exchange WebSocket for a set of topics, kept alive until stopped (aiohttp client).

``ExchangeConnection`` holds the public API, the run loop with its backoff, and the status record; its parts:

- ``workers.conn_session``: one socket's life (connect, private login, the ticker's pings and watchdogs);
- ``workers.conn_reader``: the reader (hot path): frames -> ``FrameParser.parse`` -> ``Publisher.publish`` for
  desired topics; order-book updates -> ``BookKeeper.on_update`` (``workers.books``; books start over on every
  reconnect); a congested publisher makes it hold, then shed (``workers.liveness``, gap reason ``backpressure``);
- ``workers.conn_sync``: subscription sync (paced subscribe/unsubscribe frames), acks and topic states;
- ``workers.continuity``: standby buffer, freeze/promote, suspension, pending gaps and their timers;
- ``workers.conn_reasons``: why a socket ended (``REASONS``), re-exported here.

Sessions repeat with ``Backoff`` until ``stop()``; every new socket resubscribes everything desired. Handshake
refusals (HTTP 429/418/403) wait ``Retry-After`` (418 without one: at least ``BANNED_MIN_DELAY_S``).

Private sockets (one account's orders, positions, balances) carry a ``workers.private.PrivateSession``: the URL
(Binance: a listenKey), the login frame (BitMart), the credentials for signed subscribes (Gate), a gap + REST
snapshot per topic once active; no silent-feed watchdog (an account can be quiet for hours).
Exchange facts: exchanges.md §1.4-1.5, binance_usdm.md §3-4 (in the modules that use them).

Every event and state goes out with this connection's id, so a publisher with a ``worker_id`` writes them only
while this worker holds the lease. Faults are counted by kind in ``reasons``; each interruption of a public,
non-depth topic is announced with a ``gap`` event. Make-before-break (``workers.runtime``): ``standby=True``,
``wait_ready()``, ``promote(markers)``; ``freeze()``, ``suspend()``, ``resume()`` (``workers.continuity``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import aiohttp

from control.logging_config import conn_id_var
from control.settings import Settings
from control.store import PENDING
from control.topics import DEPTH_LEVELS_DEFAULT, DEPTH_LEVELS_MAX, Topic
from workers.backoff import Backoff
from workers.books import BookKeeper
from workers.conn_reader import inflate as _inflate
from workers.conn_reasons import (
    BANNED_MIN_DELAY_S,
    CLOSED_BY_PEER,
    CONNECT_FAILED,
    DEAD_PEER,
    ERROR,
    EXCHANGE_REQUEST,
    HANDSHAKE_ERROR,
    LIFETIME,
    LOGIN_FAILED,
    REASONS,
    REFUSED,
    REFUSED_STATUSES,  # fmt: skip
    SEND_FAILED,
    SILENT_FEED,
    TAKEOVER,
    End,
)
from workers.conn_session import connect_failed as _connect_failed
from workers.conn_session import sessions as _sessions
from workers.conn_session import shutdown as _shutdown
from workers.conn_sync import Subscriptions, WebSocket
from workers.continuity import GAP_GRACE_S, STANDBY_BUFFER, Continuity, Gaps, Markers
from workers.exchanges.base import ExchangeAdapter, FrameParser, parser_counters
from workers.kline_close import KlineCloser
from workers.lag import ReadLag
from workers.liveness import BACKPRESSURE, Liveness, hold_budget_s
from workers.logutil import RateLimitedLog
from workers.private import PrivateSession
from workers.publisher import Publisher
from workers.suspend import Suspension

__all__ = [
    "BACKPRESSURE", "BANNED_MIN_DELAY_S", "CLOSED_BY_PEER", "CONNECT_FAILED", "DEAD_PEER", "ERROR",
    "EXCHANGE_REQUEST", "GAP_GRACE_S", "HANDSHAKE_ERROR", "LIFETIME", "LOGIN_FAILED", "REASONS", "REFUSED",
    "REFUSED_STATUSES", "SEND_FAILED", "SILENT_FEED", "STANDBY_BUFFER", "TAKEOVER", "ExchangeConnection", "_inflate",
]  # fmt: skip

log = logging.getLogger(__name__)

_LOG_EVERY_S = 10.0  # at most one malformed/error log line per connection per this many seconds


class ExchangeConnection:
    """One socket to ``url`` carrying the topics given by ``set_topics``; see the module docstring.

    :param conn_id: connection id (planner's), in every log line and state record. :param adapter: its adapter.
    :param url: the WebSocket URL (``adapter.ws_url(base, route)``). :param session: aiohttp session (the caller's).
    :param publisher: event and state sink. :param rng: jitter source for reconnect backoff.
    :param clock: epoch seconds, used only for ms timestamps.
    :param rest_base_url: REST base URL for order-book snapshots; default ``settings.exchange_rest_uri(adapter.id)``.
    :param private: the account session of a private socket (``workers.private``), None for public data.
    :param standby: start buffering instead of publishing, until ``promote`` (make-before-break).

    Topic states go to ``publisher.set_state`` as ``{"state","error","since"(ms),"conn"}``: ``pending`` when a
    subscribe is sent (and for every desired topic after a disconnect), ``active``/``failed`` on the ack,
    ``error`` being the exchange's own text. Timers use the loop's monotonic clock, never ``clock``.
    """

    def __init__(
        self, *, conn_id: str, adapter: ExchangeAdapter, url: str, settings: Settings,
        session: aiohttp.ClientSession, publisher: Publisher, worker_id: str = "",
        rng: random.Random | None = None, clock: Callable[[], float] = time.time, rest_base_url: str | None = None,
        private: PrivateSession | None = None, standby: bool = False,
    ) -> None:
        self.conn_id, self.adapter, self.url, self.settings = conn_id, adapter, url, settings
        self.private = private
        self._rng = rng or random.Random()
        self.session, self.publisher, self.worker_id, self.clock = session, publisher, worker_id, clock
        self._desired: dict[str, Topic] = {}
        #: Standby buffer, freeze/promote, suspension, pending gaps (``workers.continuity``); also the output the
        #: books, the kline closer and the private session publish through (fenced, buffered, frozen like ours).
        self.continuity = self.output = Continuity(self, standby=standby)
        #: The topics on the current socket, subscribe/unsubscribe frames and acks (``workers.conn_sync``).
        self.subs = Subscriptions(self)
        #: Suspensions of this connection and what they cost (``workers.suspend.Suspension``).
        self.suspension = Suspension()
        self._ready = asyncio.Event()
        self._socket_opened: float | None = None  # loop time the current socket opened
        #: Sessions ended, by kind (``REASONS``); gap events announced by this connection, by reason.
        self.reasons: Counter[str] = Counter()
        self.gaps: Counter[str] = Counter()
        s = settings
        self._backoff = Backoff(s.reconnect_delay_s, s.reconnect_max_delay_s, rng=self._rng)
        if adapter.app_ping:
            self._dead_s = s.ping_interval_s + s.pong_timeout_s
        elif private is not None:  # a quiet account sends nothing for hours: aiohttp's heartbeat alone watches it
            self._dead_s = math.inf
        else:  # backstop behind aiohttp's heartbeat; PONGs are invisible here, so never below the stall rule
            self._dead_s = max(2 * s.ping_interval_s + s.pong_timeout_s, s.stall_timeout_s)
        self._tick_s = min(s.ping_interval_s, s.stall_timeout_s, self._dead_s) / 2
        self._changed, self._stop_event, self._stopped = asyncio.Event(), asyncio.Event(), asyncio.Event()
        self._ws: WebSocket | None = None
        self._main: asyncio.Task[None] | None = None
        self._cut: asyncio.Timeout | None = None
        self._cut_reason: str | None = None
        self._cut_kind = ERROR
        self._stopping = False
        self._state = "connecting"  # run() is expected to follow construction
        self._limited_log = RateLimitedLog(log, _LOG_EVERY_S)
        #: Peer liveness and publisher backpressure (``workers.liveness``); the watchdogs read it.
        self.liveness = Liveness(hold_budget_s(s.ping_interval_s, s.pong_timeout_s))
        self.read_lag = ReadLag()  # the reader adds each frame's bytes; status() samples (``workers.lag``)
        self._got_data = False
        self.connected_since: int | None = None  # epoch ms, like every *_at below
        self.next_retry_at: int | None = None
        self.last_message_at: int | None = None
        self.last_error: str | None = None
        self.reconnects = self.messages_received = self.events = 0
        self.malformed_frames = self.unknown_frames = 0
        #: Sockets ended because the exchange asked (``Parsed.reconnect``); connection attempts made (``ws_connect``).
        self.reconnect_requests = self.connect_attempts = 0
        # Parser counters (``FrameParser``) of the sockets before the current one; status() adds the current parser's.
        self._parser: FrameParser | None = None
        self._parser_counts: Counter[str] = Counter()
        self._auth_failed = False  # the last session ended with the credentials refused
        self._options: dict[str, dict[str, Any]] = {}
        self.books = BookKeeper(
            conn_id=conn_id, adapter=adapter, publisher=self.output, session=session,  # type: ignore[arg-type]
            rest_base_url=settings.exchange_rest_uri(adapter.id) if rest_base_url is None else rest_base_url,
            interval_ms=settings.depth_interval_ms, send_frame=self.subs.send_on_socket, levels_for=self._levels_for,
            clock=clock, rng=rng,
        )
        # No closed flag on this exchange: bars go out closed by close_time + KLINE_CLOSE_GRACE_MS (workers.kline_close)
        self._klines = KlineCloser(active=private is None and not adapter.kline_closed_flag,
                                   grace_ms=settings.kline_close_grace_ms, emit=self.output.publish,
                                   wanted=self._desired.__contains__, clock=clock)  # fmt: skip
        if private is not None:
            private.bind(conn_id, self._desired.__contains__)
            private.publisher = self.output  # type: ignore[assignment]  # its gaps and snapshots are fenced too

    # -- public API -------------------------------------------------------------------------------

    def set_topics(self, topics: Iterable[Topic]) -> None:
        """Make ``topics`` the desired set; the live socket is re-synced (paced) in the background.

        Events of topics no longer desired are dropped from now on; their unsubscribe follows.
        """
        new = {str(t): t for t in topics}
        if new.keys() != self._desired.keys():
            for name, topic in self._desired.items():
                if topic.channel == "depth" and name not in new:
                    self.books.stop(name)
            for name, topic in new.items():
                if topic.channel == "depth":
                    self.books.start(name)  # idempotent
            self._desired.clear()  # in place: the reader holds a reference
            self._desired.update(new)
            self._klines.retain(new)
            self.continuity.retain(new)
            self._changed.set()
            self._check_ready()

    def set_options(self, options: dict[str, dict[str, Any]]) -> None:
        """Per-topic options, ``topic -> {"levels": N}`` for depth topics (``fp:topic:options``); replaces all."""
        self._options = dict(options)

    def _levels_for(self, topic: str) -> int:
        options = self._options.get(topic)
        levels = options.get("levels") if options else None
        if type(levels) is int and 1 <= levels <= DEPTH_LEVELS_MAX:
            # an option stored before the exchange's cap (control.topics.DEPTH_LEVELS_CAP) must not publish levels
            # outside the window the book is kept in
            return min(levels, self.adapter.max_depth_levels)
        return DEPTH_LEVELS_DEFAULT

    def status(self) -> dict[str, Any]:
        """Connection record for ``fp:conn:status``; times in epoch ms. ``state`` is one of connecting|login|
        subscribing|open|backoff|stopping|stopped, or ``suspended`` (``suspend``; ``suspension`` counts them);
        ``subscriptions``: this socket's topics by state; ``lag_ms``/``lag``: how far behind the exchange it is
        (``workers.lag``). Private sockets add ``private`` (account, key fingerprint, counters:
        ``workers.private.PrivateSession.status``), never a secret."""
        return {
            "exchange": self.adapter.id, "url": self.url, "worker": self.worker_id,
            "state": "suspended" if self.continuity.suspended else self._state,
            "connected_since": self.connected_since, "reconnects": self.reconnects,
            "last_message_at": self.last_message_at, "messages_received": self.messages_received,
            "events": self.events, "malformed_frames": self.malformed_frames, "unknown_frames": self.unknown_frames,
            "topics": len(self._desired), "last_error": self.last_error, "next_retry_at": self.next_retry_at,
            "books": self.books.status(), "reconnect_requests": self.reconnect_requests,
            "reasons": dict(self.reasons), "gaps": dict(self.gaps), "standby": self.continuity.standby,
            "parser": self._parser_status(), "subscriptions": dict(self.subs.counts),
            "backpressure": self.liveness.status(),
            "suspension": self.suspension.status(time.monotonic()),
            **self.read_lag.record(self._ws, self.publisher.stats, time.monotonic()),
            **({"private": self.private.status()} if self.private is not None else {}),
        }

    def _parser_status(self) -> dict[str, int]:
        """Parser counters (e.g. BitMart ``trades_without_side``) summed over this connection's sockets."""
        counts = Counter(self._parser_counts)
        counts.update(parser_counters(self._parser))
        return dict(counts)

    # -- make-before-break and gaps (``workers.continuity``) --------------------------------------

    @property
    def standby(self) -> bool:
        """True until ``promote``: events are buffered, states withheld."""
        return self.continuity.standby

    @property
    def buffer_overflow(self) -> int:
        """Events dropped from the standby buffer (the oldest first, beyond ``STANDBY_BUFFER``); 0 when intact."""
        return self.continuity.buffer_overflow

    @property
    def socket_age_s(self) -> float:
        """Seconds the current socket has been open (0 while there is none)."""
        opened = self._socket_opened
        return 0.0 if opened is None else asyncio.get_running_loop().time() - opened

    def announce_gaps(self, reason: str, since: dict[str, int | None]) -> None:
        """Announce a gap on each of these topics (``topic -> ms of its last stored event``) once it flows here,
        as after a reconnect: a worker taking over a connection another process (or a pause) left off. Order books
        too (a fresh book announces nothing itself); private topics get their own gap from the session."""
        self.continuity.announce_gaps(reason, since)

    async def wait_ready(self, timeout_s: float) -> bool:
        """True once every desired topic is acknowledged (active or failed) on an open socket and every book is
        in sync; False after ``timeout_s`` or when the connection stops first."""
        self._check_ready()
        try:
            async with asyncio.timeout(timeout_s):
                while not self._ready.is_set():
                    if self._stopping:
                        return False
                    await self._ready.wait()
                    self._check_ready()  # still true now (the socket may have dropped since it was set)
        except TimeoutError:
            return False
        return not self._stopping

    def promote(self, markers: Markers, gaps: Gaps | None = None, *,
                successor_of: ExchangeConnection | None = None) -> None:  # fmt: skip
        """Leave standby: publish from now on, each topic continuing right after ``markers[topic]`` (the last event
        in its stream; None: from the first buffered one). ``gaps``: topics whose interruption is still to be
        announced (``freeze``). ``successor_of``: the connection this one replaces in a lifetime roll (its
        counters carry over, the roll is counted). Buffered gap events are dropped: the old socket covered that
        time. Withheld states are written."""
        if not self.continuity.standby:
            return
        self.continuity.standby = False
        if successor_of is not None:
            self.continuity.inherit(successor_of)
        self.continuity.promote(markers, gaps)

    def freeze(self) -> tuple[Markers, Gaps]:
        """Stop every output now (events, states, book and private events) and return ``(markers, gaps)`` for a
        successor's ``promote``: each topic's last event published here and the gaps not announced yet."""
        return self.continuity.freeze()

    def suspend(self) -> None:
        """Our lease could not be renewed in time (Redis unreachable; ``workers.suspend``): publish nothing from now
        on (events, states, books, private events), but keep the socket: it reads on (pings, pongs, acks, books kept in
        sequence), and every event is dropped and counted per topic until ``resume``. Idempotent."""
        self.continuity.suspend()

    def resume(self) -> None:
        """The lease is ours again: publish from the next event on. Each topic this connection announces gets its gap
        (``redis_unavailable``, exact ``dropped``) before its next event, or ``GAP_GRACE_S`` from now if none comes;
        each order book and private topic that lost events gets one now (a private one then a REST snapshot)."""
        self.continuity.resume()

    def suspension_marks(self) -> dict[str, int | None]:
        """``topic -> ms``: the ``ts_received`` of the newest event of each desired topic that this connection handed
        to the publisher or continues from (a pending gap's ``since``, a catch-up marker); None when there is none.
        A stored last event newer than that was written by another worker (``workers.suspend``)."""
        return self.continuity.suspension_marks()

    def _check_ready(self) -> None:
        ok = (
            self._ws is not None and not self._stopping and self.subs.counts[PENDING] == 0
            and all(name in self.subs.live for name in self._desired)
            and all(sync.synced for name in self._desired if (sync := self.books.book(name)) is not None)
        )  # fmt: skip
        if ok:
            self._ready.set()
        else:
            self._ready.clear()

    # -- run loop ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, subscribe and read, reconnecting with backoff, until ``stop()``.

        Never raises except CancelledError (when the caller's task is cancelled).
        """
        if self._stopping or self._main is not None:
            return
        token = conn_id_var.set(self.conn_id)  # the loop's tasks (and their log lines) carry the connection id
        self._main = main = asyncio.get_running_loop().create_task(self._loop(), name=f"conn-{self.conn_id}")
        conn_id_var.reset(token)
        try:
            await asyncio.shield(main)
        except asyncio.CancelledError:
            if not main.done():  # our caller was cancelled, not stop()
                main.cancel()
                await asyncio.wait({main})
                raise
            if (task := asyncio.current_task()) is not None and task.cancelling():
                raise

    async def stop(self, *, unsubscribe: bool = True, timeout_s: float = 5.0, forget: bool = False) -> None:
        """Unsubscribe live topics (paced, when ``unsubscribe``), close with 1000 and end ``run()``.

        Idempotent (a second call waits for the first); bounded by ``timeout_s``, after which the
        session is cancelled. Never raises except CancelledError. ``forget``: the account's last private topic
        is gone, so its listenKey is closed too (``PrivateSession.close``).
        """
        if self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), timeout_s)
            return
        self._stopping = True
        self._state = "stopping"
        self._stop_event.set()
        self._changed.set()
        self._ready.set()  # wakes wait_ready(), which then sees the stop
        self.continuity.cancel_timers()
        await _shutdown(self, unsubscribe=unsubscribe, timeout_s=timeout_s, forget=forget)
        self.connected_since = None
        self._state = "stopped"
        self._stopped.set()

    async def _loop(self) -> None:
        try:
            await _sessions(self)
        finally:  # also when cancelled: no snapshot fetch (or kline close timer) may outlive the connection
            self._klines.reset()
            await self.books.close()
            if self.private is not None:
                self.private.ended()

    def _connect_failed(self, exc: BaseException) -> End:
        """Classify a failed ``ws_connect`` (``workers.conn_session.connect_failed``)."""
        return _connect_failed(self, exc)

    def _cut_session(self, reason: str, kind: str = EXCHANGE_REQUEST) -> None:
        """End the current session from another task (the reader sees its timeout expire). ``kind``: one of
        ``REASONS`` (the private session's keepalive asks for a new socket: ``exchange_request``)."""
        if self._cut_reason is None:
            self._cut_reason, self._cut_kind = reason, kind
        cut = self._cut
        if cut is not None and not cut.expired():
            cut.reschedule(asyncio.get_running_loop().time())

    def _log_limited(self, fmt: str, *args: object) -> None:
        self._limited_log.warning("%s: " + fmt, self.conn_id, *args)
