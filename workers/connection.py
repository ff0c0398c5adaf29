"""One exchange WebSocket for a set of topics, kept alive until stopped (aiohttp client).

Per session (one socket) three tasks cooperate; only the reader touches ``ws.receive()``:

- reader: frames -> ``FrameParser.parse`` -> ``Publisher.publish`` for desired topics; acks -> states;
  order-book updates -> ``BookKeeper.on_update`` (``workers.books``; its books start over on every reconnect).
- syncer: diffs desired topics against the live ones and sends paced subscribe/unsubscribe frames.
- ticker: application ping (BitMart), dead-peer and silent-feed watchdogs. It ends a session by
  expiring the reader's ``asyncio.timeout`` (heartbeat PONGs defeat receive timeouts: stack-notes §0.12).
  The peer is judged only by what it sends: while the reader holds back for a congested publisher, that time is
  not silence; past ``hold_budget_s`` the reader reads on and sheds events instead (``workers.liveness``,
  gap reason ``backpressure``).

Sessions repeat with ``Backoff`` until ``stop()``; every new socket resubscribes everything desired.

Private sockets (one account's orders, positions, balances) carry a ``workers.private.PrivateSession``: it gives the
URL (Binance: a listenKey), the login frame (BitMart: sent and acknowledged before any subscribe; a refusal fails
every topic with the exchange's text and waits the maximum backoff, so bad credentials never cause a reconnect
storm), the credentials for signed subscribes (Gate), and a gap + REST snapshot for each topic once it is active.
The silent-feed watchdog is off for them: an account can be quiet for hours. ``Parsed.reconnect`` (Binance
``listenKeyExpired``, Gate ``upgrade``) ends the socket at once; a data event for a topic still ``pending`` (Gate
servers that echo no ids in acks) makes it ``active``.
Exchange facts: exchanges.md §1.4-1.5 (BitMart acks per topic, app ping, raw-deflate BINARY frames),
binance_usdm.md §3-4 (10 messages/s, acks by request id, server pings answered by autoping).

Fencing: when the publisher has a ``worker_id``, every event and state goes out with this connection's id
(``Publisher.publish(topic, event, conn_id)``), so Redis only takes them while this worker holds the lease; the
order books and the private session publish through the connection's ``output`` for the same reason.

Faults are counted by kind in ``reasons`` (``REASONS``), and each interruption of a public, non-depth topic is
announced: once the next socket carries the topic again, a ``gap`` event ``{"reason": <kind>, "since": <ms of
the last event before the drop>, "until": <ms of the first event after>}`` goes out before that first event (or
``GAP_GRACE_S`` after the topic is active again when no event comes, ``until`` then being the activation time).
Books and private sessions announce their own gaps. Handshake refusals (HTTP 429/418/403) wait ``Retry-After``
(418 without one: at least ``BANNED_MIN_DELAY_S``), never less than the backoff.

Make-before-break (``workers.runtime``): a connection built with ``standby=True`` connects and subscribes like any
other but buffers its events and writes no state; ``wait_ready()`` returns once every topic is acknowledged (and
every book in sync). ``promote(markers)`` then makes it publish, continuing each topic right after its marker,
the last event already in the stream (``workers.stitch``). ``freeze()`` stops a connection's output at once and
returns its own markers (the lifetime roll hands them to its successor). ``suspend()`` freezes the output but keeps
the socket (our lease could not be renewed: Redis unreachable); ``resume()`` publishes again, each topic's loss
announced with reason ``redis_unavailable`` (``workers.suspend``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import random
import time
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

import aiohttp
from aiohttp import WSMsgType

from control.settings import Settings
from control.store import ACTIVE, FAILED, PENDING
from control.topics import DEPTH_LEVELS_DEFAULT, DEPTH_LEVELS_MAX, Topic
from workers.backoff import Backoff
from workers.books import BookKeeper
from workers.exchanges.base import (
    Ack,
    AdapterError,
    ExchangeAdapter,
    FrameParser,
    OutFrame,
    match_request,
    parser_counters,
)
from workers.kline_close import KlineCloser
from workers.liveness import BACKPRESSURE, Liveness, hold_budget_s
from workers.logutil import RateLimitedLog
from workers.private import PrivateAuthError, PrivateSession
from workers.publisher import Publisher
from workers.rest import RestError, retry_after_seconds
from workers.stitch import CatchUp
from workers.suspend import REDIS_UNAVAILABLE, Suspension

log = logging.getLogger(__name__)

MAX_MSG_SIZE = 16 * 1024 * 1024
_LOG_EVERY_S = 10.0  # at most one malformed/error log line per connection per this many seconds
_CLOSED_TYPES = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED)

#: Why a socket ended (``ExchangeConnection.reasons`` keys, and the ``reason`` of the gap events announcing it).
DEAD_PEER = "dead_peer"  # no frame (or no PONG) within the keepalive bounds
SILENT_FEED = "silent_feed"  # frames (pongs, acks) but no data while subscribed
CLOSED_BY_PEER = "closed_by_peer"  # a close frame, or the TCP connection reset/aborted
HANDSHAKE_ERROR = "handshake_error"  # the WebSocket upgrade answered with another HTTP status
REFUSED = "refused"  # the upgrade answered 429/418/403: rate limited or banned (Retry-After honoured)
LIFETIME = "lifetime"  # a planned roll ahead of the exchange's connection lifetime (no gap)
CONNECT_FAILED = "connect_failed"  # TCP/TLS connect failed or timed out (exchange unreachable)
EXCHANGE_REQUEST = "exchange_request"  # the exchange asked for a new socket (Gate upgrade, listenKeyExpired)
SEND_FAILED = "send_failed"  # a subscribe/ping frame could not be written
LOGIN_FAILED = "login_failed"  # a private socket's login was refused or not answered
ERROR = "error"  # anything else (a bug, logged with its traceback)
# BACKPRESSURE (workers.liveness): events shed while the publisher was congested, or a socket that ended right
# after the reader held back for it.
REASONS = (DEAD_PEER, SILENT_FEED, CLOSED_BY_PEER, HANDSHAKE_ERROR, REFUSED, LIFETIME, CONNECT_FAILED,
           EXCHANGE_REQUEST, SEND_FAILED, LOGIN_FAILED, ERROR, BACKPRESSURE)  # fmt: skip
#: Gap reason of topics a worker starts serving again after another process (or a pause) left off.
TAKEOVER = "takeover"
#: HTTP statuses of a refused handshake: rate limited (429), IP banned (418, binance_usdm.md §3), forbidden (403).
REFUSED_STATUSES = frozenset({429, 418, 403})
#: Least wait after a 418 (banned) without Retry-After.
BANNED_MIN_DELAY_S = 30.0
#: How long after a topic is active again its gap waits for a first event before going out with ``until`` = then.
GAP_GRACE_S = 1.0
#: Most events a standby socket buffers (the oldest go first, counted and logged at the switch; a standby socket
#: normally switches within milliseconds of its last acknowledgement, so this bound is a memory guard only).
STANDBY_BUFFER = 100_000


class _End(NamedTuple):
    """How one socket session ended."""

    kind: str  # one of REASONS, or "stopped"
    text: str
    healthy: bool = False
    retry_after_s: float | None = None


@dataclass(slots=True, eq=False)
class _PendingGap:
    """A gap of one topic waiting for the topic to flow again (see the module docstring)."""

    reason: str
    since: int | None
    active_ms: int | None = None
    timer: asyncio.TimerHandle | None = None
    dropped: int | None = None  # events shed (exact, ``backpressure`` only); None when unknown


class _Output:
    """The publisher as the books and the private session see it: their events go through the connection
    (fencing, standby buffering, freeze), the rest is the real publisher's."""

    def __init__(self, conn: ExchangeConnection) -> None:
        self._conn = conn

    def publish(self, topic: str, event: dict[str, Any]) -> None:
        self._conn._emit(topic, event, False)

    def set_state(self, topic: str, record: dict[str, Any]) -> None:
        self._conn._set_state(topic, record)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn.publisher, name)


class ExchangeConnection:
    """One socket to ``url`` carrying the topics given by ``set_topics``; see the module docstring.

    :param conn_id: connection id (planner's), put in every log line and state record.
    :param adapter: the exchange adapter (``workers.exchanges.get_adapter``).
    :param url: the WebSocket URL (``adapter.ws_url(base, route)``).
    :param session: aiohttp session owned by the caller. :param publisher: event and state sink.
    :param rng: jitter source for reconnect backoff. :param clock: epoch seconds, used only for ms timestamps.
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
        # Fencing (module docstring); a publisher without a worker id (tests' stand-ins) takes two arguments.
        self._fenced = bool(getattr(publisher, "worker_id", ""))
        self._publish: Callable[[str, dict[str, Any]], None] = (
            functools.partial(publisher.publish, conn_id=conn_id) if self._fenced else publisher.publish
        )
        self.output = _Output(self)
        self._standby, self._frozen = standby, False
        self._suspended = False  # output frozen, socket kept: see suspend() and workers.suspend
        #: Suspensions of this connection and what they cost (``workers.suspend.Suspension``).
        self.suspension = Suspension()
        self._buffer: deque[tuple[str, dict[str, Any], bool]] = deque(maxlen=STANDBY_BUFFER)
        self._buffer_overflow = 0
        self._held_states: dict[str, dict[str, Any]] = {}  # states withheld while in standby
        self._catchup: dict[str, CatchUp] = {}
        self._gaps: dict[str, _PendingGap] = {}
        self._last: dict[str, dict[str, Any]] = {}  # topic -> last event published
        self._active_ms: dict[str, int] = {}  # topic -> when it became active on the current socket (ms)
        self._direct = not standby  # nothing to filter, buffer or announce: the reader publishes straight out
        self._ready = asyncio.Event()
        self._socket_opened: float | None = None  # loop time the current socket opened
        #: Sessions ended, by kind (``REASONS``); gap events announced by this connection, by reason.
        self.reasons: Counter[str] = Counter()
        self.gaps: Counter[str] = Counter()
        self._rng = rng or random.Random()
        self.session, self.publisher, self.worker_id, self.clock = session, publisher, worker_id, clock
        s = settings
        self._backoff = Backoff(s.reconnect_delay_s, s.reconnect_max_delay_s, rng=self._rng)
        self._gap_s = max(s.subscribe_delay_ms, adapter.min_send_interval_ms) / 1000.0
        if adapter.app_ping:
            self._dead_s = s.ping_interval_s + s.pong_timeout_s
        elif private is not None:  # a quiet account sends nothing for hours: aiohttp's heartbeat alone watches it
            self._dead_s = math.inf
        else:  # backstop behind aiohttp's heartbeat; PONGs are invisible here, so never below the stall rule
            self._dead_s = max(2 * s.ping_interval_s + s.pong_timeout_s, s.stall_timeout_s)
        self._tick_s = min(s.ping_interval_s, s.stall_timeout_s, self._dead_s) / 2
        self._desired: dict[str, Topic] = {}
        self._live: dict[str, str] = {}  # topic -> pending|active|failed on the current socket
        self._live_topics: dict[str, Topic] = {}
        self._counts = {PENDING: 0, ACTIVE: 0, FAILED: 0}
        self._requests: dict[int, tuple[str, tuple[str, ...]]] = {}  # request id -> (action, topics)
        self._next_request_id = 1
        self._changed, self._stop_event, self._stopped = asyncio.Event(), asyncio.Event(), asyncio.Event()
        self._send_lock = asyncio.Lock()
        self._last_send = -1e9
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._main: asyncio.Task[None] | None = None
        self._cut: asyncio.Timeout | None = None
        self._cut_reason: str | None = None
        self._cut_kind = ERROR
        self._stopping = False
        self._state = "connecting"  # run() is expected to follow construction
        self._limited_log = RateLimitedLog(log, _LOG_EVERY_S)
        #: Peer liveness and publisher backpressure (``workers.liveness``); the watchdogs read it.
        self.liveness = Liveness(hold_budget_s(s.ping_interval_s, s.pong_timeout_s))
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
            interval_ms=settings.depth_interval_ms, send_frame=self._send_on_socket, levels_for=self._levels_for,
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
            for name in [n for n in self._gaps if n not in new]:
                self._drop_gap(name)
            for name in [n for n in self._catchup if n not in new]:
                del self._catchup[name]
            self._update_direct()
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
        """Connection record for ``fp:conn:status``; times in epoch ms. ``state`` is one of
        connecting|login|subscribing|open|backoff|stopping|stopped, or ``suspended`` (``suspend``; ``suspension``
        counts them). Private sockets add ``private`` (account, key fingerprint, counters:
        ``workers.private.PrivateSession.status``), never a secret."""
        return {
            "exchange": self.adapter.id, "url": self.url, "worker": self.worker_id,
            "state": "suspended" if self._suspended else self._state,
            "connected_since": self.connected_since, "reconnects": self.reconnects,
            "last_message_at": self.last_message_at, "messages_received": self.messages_received,
            "events": self.events, "malformed_frames": self.malformed_frames, "unknown_frames": self.unknown_frames,
            "topics": len(self._desired), "last_error": self.last_error, "next_retry_at": self.next_retry_at,
            "books": self.books.status(), "reconnect_requests": self.reconnect_requests,
            "reasons": dict(self.reasons), "gaps": dict(self.gaps), "standby": self._standby,
            "parser": self._parser_status(),
            "backpressure": self.liveness.status(),
            "suspension": self.suspension.status(time.monotonic()),
            **({"private": self.private.status()} if self.private is not None else {}),
        }

    def _parser_status(self) -> dict[str, int]:
        """Parser counters (e.g. BitMart ``trades_without_side``) summed over this connection's sockets."""
        counts = Counter(self._parser_counts)
        counts.update(parser_counters(self._parser))
        return dict(counts)

    # -- make-before-break and gaps (see the module docstring) ------------------------------------

    @property
    def standby(self) -> bool:
        """True until ``promote``: events are buffered, states withheld."""
        return self._standby

    @property
    def socket_age_s(self) -> float:
        """Seconds the current socket has been open (0 while there is none)."""
        opened = self._socket_opened
        return 0.0 if opened is None else asyncio.get_running_loop().time() - opened

    @property
    def buffer_overflow(self) -> int:
        """Events dropped from the full standby buffer before ``promote`` (a handover cannot then continue intact)."""
        return self._buffer_overflow

    def announce_gaps(self, reason: str, since: dict[str, int | None]) -> None:
        """Announce a gap on each of these topics (``topic -> ms of its last stored event``) once it flows here,
        as after a reconnect: a worker taking over a connection another process (or a pause) left off. Order books
        too (a fresh book announces nothing itself); private topics get their own gap from the session."""
        for name, since_ms in since.items():
            if self.private is None and name not in self._gaps:
                self._gaps[name] = _PendingGap(reason, since_ms)
        self._update_direct()

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

    def promote(
        self,
        markers: dict[str, dict[str, Any] | None],
        gaps: dict[str, tuple[str, int | None]] | None = None,
        *,
        successor_of: ExchangeConnection | None = None,
    ) -> None:
        """Leave standby: publish from now on, each topic continuing right after ``markers[topic]`` (the last event
        in its stream; None: from the first buffered one). ``gaps``: topics whose interruption is still to be
        announced (``freeze``). ``successor_of``: the connection this one replaces in a lifetime roll (its
        counters carry over, the roll is counted). Buffered gap events are dropped: the old socket covered that
        time. Withheld states are written."""
        if not self._standby:
            return
        self._standby = False
        if successor_of is not None:
            self._inherit(successor_of)
        for name, marker in markers.items():
            if marker is not None and name in self._desired:
                self._catchup[name] = CatchUp(marker)
        for name, (reason, since) in (gaps or {}).items():
            if self._announces(name) and name not in self._gaps:
                self._gaps[name] = _PendingGap(reason, since, self._active_ms.get(name))
        self._update_direct()
        buffered, self._buffer = self._buffer, deque(maxlen=STANDBY_BUFFER)
        if self._buffer_overflow:
            log.warning("%s: %d events dropped from the standby buffer before the switch", self.conn_id,
                        self._buffer_overflow)  # fmt: skip
        for name, event, counted in buffered:
            if name in self._desired and event.get("type") != "gap" and self._emit(name, event, counted) and counted:
                self.events += 1
        for name, record in self._held_states.items():
            if name in self._desired:
                self._set_state(name, record)
        self._held_states.clear()
        for name, gap in self._gaps.items():
            if gap.active_ms is not None and gap.timer is None:
                self._arm_gap(name, gap)
        log.info("%s: publishing (%d buffered events, %d topics catching up)", self.conn_id, len(buffered),
                 len(self._catchup))  # fmt: skip

    def freeze(self) -> tuple[dict[str, dict[str, Any] | None], dict[str, tuple[str, int | None]]]:
        """Stop every output now (events, states, book and private events) and return ``(markers, gaps)`` for a
        successor's ``promote``: each topic's last event published here and the gaps not announced yet."""
        self._frozen, self._direct = True, False
        if self._suspended:  # given up while suspended (the lease is another worker's): no longer waiting to resume
            self._suspended = False
            self.suspension.end(time.monotonic())
        markers: dict[str, dict[str, Any] | None] = {}
        for name in self._desired:
            catchup = self._catchup.get(name)
            markers[name] = self._last.get(name) or (catchup.marker if catchup is not None else None)
        gaps = {name: (gap.reason, gap.since) for name, gap in self._gaps.items()}
        for name in list(self._gaps):
            self._drop_gap(name)
        return markers, gaps

    def suspend(self) -> None:
        """Our lease could not be renewed in time (Redis unreachable; ``workers.suspend``): publish nothing from now
        on (events, states, books, private events), but keep the socket: it reads on (pings, pongs, acks, books kept in
        sequence), and every event is dropped and counted per topic until ``resume``. Idempotent."""
        if self._suspended or self._frozen:
            return
        self._suspended = True
        self.suspension.begin(time.monotonic())
        for gap in self._gaps.values():
            if gap.timer is not None:  # not announced while suspended: resume() arms it again
                gap.timer.cancel()
                gap.timer = gap.active_ms = None
            if gap.reason == BACKPRESSURE and gap.dropped is not None:  # the same outage: one exact count, one reason
                gap.reason = REDIS_UNAVAILABLE
        self._update_direct()
        log.warning("%s: suspended (output frozen, socket kept)", self.conn_id)

    def resume(self) -> None:
        """The lease is ours again: publish from the next event on. Each topic this connection announces gets its gap
        (``redis_unavailable``, exact ``dropped``) before its next event, or ``GAP_GRACE_S`` from now if none comes;
        each order book and private topic that lost events gets one now (a private one then a REST snapshot)."""
        if not self._suspended:
            return
        self._suspended = False
        now_ms = int(self.clock() * 1000)
        for name, (since, dropped, first, last) in self.suspension.end(time.monotonic()).items():
            if name not in self._desired:
                continue
            self._publish(name, {"type": "gap", "topic": name, "reason": REDIS_UNAVAILABLE, "since": since,
                                 "until": last if last is not None else now_ms, "dropped": dropped})  # fmt: skip
            self.gaps[REDIS_UNAVAILABLE] += 1
            self.events += 1
            log.info("%s: gap on %s announced (%s, %d dropped, %s..%s)", self.conn_id, name, REDIS_UNAVAILABLE,
                     dropped, first, last)  # fmt: skip
            if self.private is not None and self._live.get(name) == ACTIVE:
                self.private.want_snapshot(name)
        if not (self.liveness.shedding or self._standby or self._frozen):  # shedding: _stop_shedding arms them
            for name, gap in self._gaps.items():
                if gap.timer is None and self._live.get(name) == ACTIVE:
                    gap.active_ms = now_ms
                    self._arm_gap(name, gap)
        self._update_direct()
        log.warning("%s: resumed (%s)", self.conn_id, self.suspension.status(time.monotonic()))

    def suspension_marks(self) -> dict[str, int | None]:
        """``topic -> ms``: the ``ts_received`` of the newest event of each desired topic that this connection handed
        to the publisher or continues from (a pending gap's ``since``, a catch-up marker); None when there is none.
        A stored last event newer than that was written by another worker (``workers.suspend``)."""
        out: dict[str, int | None] = {}
        for name in self._desired:
            catchup, gap, last = self._catchup.get(name), self._gaps.get(name), self._last.get(name)
            candidates = [last.get("ts_received") if last else None, gap.since if gap is not None else None,
                          catchup.marker.get("ts_received") if catchup is not None else None]  # fmt: skip
            known = [int(c) for c in candidates if isinstance(c, int)]
            out[name] = max(known) if known else None
        return out

    def _inherit(self, old: ExchangeConnection) -> None:
        """Carry ``old``'s counters over (lifetime roll) and count the roll."""
        self.reconnects += old.reconnects + 1
        self.reasons.update(old.reasons)
        self.reasons[LIFETIME] += 1
        self.gaps.update(old.gaps)
        self.messages_received += old.messages_received
        self.events += old.events
        self.malformed_frames += old.malformed_frames
        self.unknown_frames += old.unknown_frames
        self.reconnect_requests += old.reconnect_requests
        self.connect_attempts += old.connect_attempts
        self._parser_counts.update(old._parser_status())
        self.liveness.inherit(old.liveness)
        self.suspension.inherit(old.suspension)

    def _announces(self, name: str) -> bool:
        """Whether this connection announces the gaps of ``name`` (books and private sessions do their own)."""
        return self.private is None and not _is_depth(name)

    def _update_direct(self) -> None:
        self._direct = not (self._standby or self._frozen or self._suspended or self._catchup or self._gaps)

    def _check_ready(self) -> None:
        ok = (
            self._ws is not None and not self._stopping and self._counts[PENDING] == 0
            and all(name in self._live for name in self._desired)
            and all(sync.synced for name in self._desired if (sync := self.books.book(name)) is not None)
        )  # fmt: skip
        if ok:
            self._ready.set()
        else:
            self._ready.clear()

    def _emit(self, name: str, event: dict[str, Any], counted: bool) -> bool:
        """Publish one event (slow path: standby, catch-up, pending gap, frozen); True when it went out.
        ``counted``: it came from the socket (books and private sessions publish their own)."""
        if self._frozen:
            return False
        if self._suspended:  # dropped and counted; resume() announces them
            if not self._announces(name):
                self.suspension.drop_unannounced(name, event, self._last.get(name))
            elif self._drop(name, event, REDIS_UNAVAILABLE):
                self.suspension.drop()
            return False
        if self._standby:
            if len(self._buffer) == STANDBY_BUFFER:
                self._buffer_overflow += 1
            self._buffer.append((name, event, counted))
            if event.get("type") == "depth":  # a book (re)synced: maybe ready now
                self._check_ready()
            return False
        catchup = self._catchup.get(name)
        if catchup is not None:
            publish, done = catchup.admit(event)
            if done:
                del self._catchup[name]
                self._update_direct()
            if not publish:
                return False
        if name in self._gaps and event.get("type") != "gap":
            self._announce(name, event.get("ts_received"))
        self._publish(name, event)
        self._last[name] = event
        return True

    def _set_state(self, name: str, record: dict[str, Any]) -> None:
        if self._frozen:
            return
        if self._standby:
            self._held_states[name] = record
        elif self._fenced:
            self.publisher.set_state(name, record, conn_id=self.conn_id)
        else:
            self.publisher.set_state(name, record)

    def _announce(self, name: str, until: int | None) -> None:
        gap = self._gaps.pop(name)
        if gap.timer is not None:
            gap.timer.cancel()
        self._update_direct()
        event = {"type": "gap", "topic": name, "reason": gap.reason, "since": gap.since, "until": until}
        if gap.dropped is not None:
            event["dropped"] = gap.dropped
        self._publish(name, event)
        self.gaps[gap.reason] += 1
        self.events += 1
        log.info("%s: gap on %s announced (%s, %s..%s)", self.conn_id, name, gap.reason, gap.since, until)

    def _drop_gap(self, name: str) -> None:
        gap = self._gaps.pop(name, None)
        if gap is not None and gap.timer is not None:
            gap.timer.cancel()
        self._update_direct()

    def _arm_gap(self, name: str, gap: _PendingGap) -> None:
        """``name`` is active again: announce its gap after ``GAP_GRACE_S`` unless an event does it first."""

        def fire() -> None:
            if self._gaps.get(name) is gap and not (self._frozen or self._standby or self._suspended):
                self._announce(name, gap.active_ms)

        gap.timer = asyncio.get_running_loop().call_later(GAP_GRACE_S, fire)

    async def run(self) -> None:
        """Connect, subscribe and read, reconnecting with backoff, until ``stop()``.

        Never raises except CancelledError (when the caller's task is cancelled).
        """
        if self._stopping or self._main is not None:
            return
        self._main = main = asyncio.get_running_loop().create_task(self._loop(), name=f"conn-{self.conn_id}")
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
        for gap in self._gaps.values():
            if gap.timer is not None:
                gap.timer.cancel()
        main, ws = self._main, self._ws
        try:
            async with asyncio.timeout(timeout_s):
                if ws is not None and not ws.closed:
                    if unsubscribe:
                        live = [self._live_topics[n] for n, st in self._live.items() if st != FAILED]
                        for frame in self._frames("unsubscribe", live):
                            await self._send(ws, frame.text)
                    await ws.close(code=aiohttp.WSCloseCode.OK)  # the reader sees CLOSING and ends
                elif main is not None:
                    main.cancel()  # connecting or in backoff: nothing to close gracefully
                if main is not None:
                    await asyncio.wait({main})
        except TimeoutError:
            log.warning("%s: stop did not finish within %.1f s; cancelling", self.conn_id, timeout_s)
        except Exception as exc:  # noqa: BLE001 - a failing stop must still cancel the task and close the books
            log.warning("%s: error while stopping: %r", self.conn_id, exc)
        if main is not None and not main.done():
            main.cancel()
            await asyncio.wait({main})
        await self.books.close()
        if self.private is not None:
            try:
                async with asyncio.timeout(timeout_s):
                    await self.private.close(forget=forget)
            except TimeoutError:
                log.warning("%s: closing the private session did not finish within %.1f s", self.conn_id, timeout_s)
        self.connected_since = None
        self._state = "stopped"
        self._stopped.set()

    # -- sessions ---------------------------------------------------------------------------------

    async def _loop(self) -> None:
        try:
            await self._sessions()
        finally:  # also when cancelled: no snapshot fetch (or kline close timer) may outlive the connection
            self._klines.reset()
            await self.books.close()
            if self.private is not None:
                self.private.ended()

    async def _sessions(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            started = loop.time()
            try:
                end = await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug must not end the connection for good
                log.exception("%s: session failed", self.conn_id)
                end = _End(ERROR, f"internal error: {exc!r}")
            self._on_disconnect(end.kind)
            if self._stopping:
                break
            if end.healthy and loop.time() - started >= 2 * self.settings.reconnect_delay_s:
                self._backoff.reset()
            delay = self._backoff.next_delay()
            if self._auth_failed:  # refused credentials do not fix themselves quickly: wait the longest
                ceiling = self.settings.reconnect_max_delay_s
                delay = max(delay, ceiling / 2 + self._rng.uniform(0.0, ceiling / 2))
            if end.retry_after_s is not None:  # refused handshake: the exchange said how long (binance_usdm.md §3)
                delay = max(delay, end.retry_after_s)
            self.reconnects += 1
            self.reasons[end.kind] += 1
            self.last_error = end.text
            self.next_retry_at = int((self.clock() + delay) * 1000)
            self._state = "backoff"
            log.warning("%s: reconnecting to %s in %.2f s (#%d, %s): %s", self.conn_id, self.url, delay,
                        self.reconnects, end.kind, end.text)  # fmt: skip
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_event.wait(), delay)
            self.next_retry_at = None

    def _connect_failed(self, exc: BaseException) -> _End:
        """Classify a failed ``ws_connect``: a refusal (429/418/403, with its wait), another handshake answer, or
        no connection at all."""
        text = f"connect failed: {exc!r}"
        if self.private is not None:
            text = self.private.scrub(text) or text
        if isinstance(exc, aiohttp.WSServerHandshakeError):
            if exc.status in REFUSED_STATUSES:
                header = exc.headers.get("Retry-After") if exc.headers is not None else None
                default = BANNED_MIN_DELAY_S if exc.status == 418 else 0.0
                wait = retry_after_seconds(header, default=default)
                return _End(REFUSED, f"handshake refused: HTTP {exc.status}" + (
                    f", Retry-After {header}" if header else ""), retry_after_s=wait or None)
            return _End(HANDSHAKE_ERROR, f"handshake failed: HTTP {exc.status} {exc.message}")
        return _End(CONNECT_FAILED, text)

    async def _session(self) -> _End:
        """One socket's life; returns how it ended."""
        self._state = "connecting"
        self._auth_failed = False
        s = self.settings
        url = self.url
        if self.private is not None:
            try:
                url = await self.private.connect_url(self.url)
            except PrivateAuthError as exc:
                return _End(LOGIN_FAILED, self._refused(str(exc)))
            except RestError as exc:
                return _End(CONNECT_FAILED, f"private session setup failed: {exc}")
        self.connect_attempts += 1
        try:
            async with asyncio.timeout(s.ping_interval_s + s.pong_timeout_s):
                ws = await self.session.ws_connect(
                    url, autoping=True, heartbeat=None if self.adapter.app_ping else s.ping_interval_s,
                    headers=self.adapter.ws_headers or None,  # Gate: decimal sizes (§2.4)
                    max_msg_size=MAX_MSG_SIZE, compress=0,
                    decode_text=False,  # orjson parses bytes; saves a UTF-8 decode per frame
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=s.pong_timeout_s),
                )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return self._connect_failed(exc)
        self._ws = ws
        loop = asyncio.get_running_loop()
        self.liveness.opened(loop.time())
        self._socket_opened = loop.time()
        self._got_data, self._cut_reason, self._cut_kind = False, None, ERROR
        self.connected_since = int(self.clock() * 1000)
        if self._stopping:
            await ws.close()
            return _End("stopped", "stopped")
        log.info("%s: connected to %s (%d topics%s)", self.conn_id, self.url, len(self._desired),
                 ", standby" if self._standby else "")  # fmt: skip
        parser = self.adapter.new_parser() if self.private is None else self.private.new_parser()
        self._parser_counts.update(parser_counters(self._parser))  # the last socket's parser is done
        self._parser = parser
        parser = self._klines.wrap(parser)
        helpers: list[asyncio.Task[None]] = []
        try:
            if self.private is not None:
                refused = await self._login(ws, parser)
                if refused is not None:
                    return _End(LOGIN_FAILED, refused)
                self.private.started(self._cut_session)
            self._state = "subscribing" if self._desired else "open"
            if self.private is not None:
                try:  # subscribe before reading: a topic served without a frame is active (gap) before its first event
                    await self._sync(ws)
                except (aiohttp.ClientError, ConnectionError) as exc:
                    return _End(SEND_FAILED, f"send failed: {exc!r}")
            self._changed.set()
            self._check_ready()
            helpers = [loop.create_task(self._syncer(ws)), loop.create_task(self._ticker(ws))]
            kind, reason = await self._read(ws, parser)
        finally:
            for task in helpers:
                task.cancel()
            if helpers:
                await asyncio.wait(helpers)
            if self.private is not None:
                self.private.ended()
            self._ws = None
            self._ready.clear()
            if not ws.closed:
                await ws.close()
        return _End(kind, reason, self._got_data or self._counts[PENDING] == 0)

    async def _login(self, ws: aiohttp.ClientWebSocketResponse, parser: FrameParser) -> str | None:
        """Send the private session's login frame (if any) and wait for its ack; None when logged in (or no login
        is needed), else why the session ends. A refusal fails every topic (``_refused``). Runs before the reader
        and the syncer start, so it may read the socket itself."""
        assert self.private is not None
        try:
            frame = self.private.login_frame(int(self.clock() * 1000))
        except AdapterError as exc:  # e.g. a BitMart account without its API memo: no retry can fix that
            return self._refused(f"cannot log in: {exc}")
        if frame is None:
            return None
        self._state = "login"
        try:
            await self._send(ws, frame)
            async with asyncio.timeout(self.settings.pong_timeout_s):
                while True:
                    msg = await ws.receive()
                    if msg.type in _CLOSED_TYPES or msg.type is WSMsgType.ERROR:
                        return f"closed during login: code {ws.close_code}"
                    if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                        continue
                    self.messages_received += 1
                    self.liveness.frame(asyncio.get_running_loop().time())
                    self.last_message_at = ts_ms = int(self.clock() * 1000)
                    data = msg.data if msg.type is WSMsgType.TEXT else _inflate(msg.data)
                    try:
                        parsed = parser.parse(data, ts_ms)
                    except Exception:  # noqa: BLE001 - counted like the reader does
                        self.malformed_frames += 1
                        continue
                    for ack in parsed.acks:
                        if ack.action == "login":
                            if ack.ok:
                                log.info("%s: logged in", self.conn_id)
                                return None
                            return self._refused(str(self.private.login_refused(ack.error)))
        except TimeoutError:
            return f"no login answer within {self.settings.pong_timeout_s:.1f} s"
        except (aiohttp.ClientError, ConnectionError) as exc:
            return f"login failed: {exc!r}"

    def _refused(self, error: str) -> str:
        """The exchange refused the account's credentials: fail every desired topic with its text; the next
        attempt waits the maximum backoff and the states stay ``failed`` until a login succeeds."""
        self._auth_failed = True
        now_ms = int(self.clock() * 1000)
        for name in self._desired:
            self._set_state(name, {"state": FAILED, "error": error, "since": now_ms, "conn": self.conn_id})
        log.warning("%s: %s", self.conn_id, error)
        return error

    def _on_disconnect(self, kind: str) -> None:
        """Forget the socket's subscriptions; every desired topic waits for the next socket, and each public topic
        that was flowing gets a pending gap (``kind`` is its reason).

        No states are written on stop: the topics were removed or moved to another connection.
        """
        self.connected_since = None
        self._socket_opened = None
        self._ready.clear()
        self._klines.reset()  # the forming bars may miss updates now; the gap event covers them
        was_live = {name for name, state in self._live.items() if state == ACTIVE}
        for table in (self._live, self._live_topics, self._requests):
            table.clear()
        self._counts = {PENDING: 0, ACTIVE: 0, FAILED: 0}
        active_ms, self._active_ms = self._active_ms, {}
        if self._stopping or self._auth_failed:  # refused credentials: the topics stay failed
            return
        if not (self._standby or self._frozen):  # a standby socket's drop loses nothing: the old one still serves
            for name in self._desired:
                if (gap := self._gaps.get(name)) is not None:
                    gap.dropped = None  # its loss now runs on into this reconnect: no longer an exact count
                    continue
                if not self._announces(name):
                    continue
                last = self._last.get(name)
                catchup = self._catchup.get(name)
                if last is None and catchup is not None:
                    last = catchup.marker
                if last is not None:
                    since = last.get("ts_received")
                elif name in was_live:
                    since = active_ms.get(name)
                else:
                    continue  # never served here: nothing was interrupted
                self._gaps[name] = _PendingGap(kind, since)
            self._update_direct()
        for gap in self._gaps.values():
            gap.active_ms = None
            if gap.timer is not None:
                gap.timer.cancel()
                gap.timer = None
        self.books.reset("reconnect")  # the next socket starts every book over from a fresh snapshot
        now_ms = int(self.clock() * 1000)
        for name in self._desired:
            self._set_state(name, {"state": PENDING, "error": None, "since": now_ms, "conn": self.conn_id})

    def _cut_session(self, reason: str, kind: str = EXCHANGE_REQUEST) -> None:
        """End the current session from another task (the reader sees its timeout expire). ``kind``: one of
        ``REASONS`` (the private session's keepalive asks for a new socket: ``exchange_request``)."""
        if self._cut_reason is None:
            self._cut_reason, self._cut_kind = reason, kind
        cut = self._cut
        if cut is not None and not cut.expired():
            cut.reschedule(asyncio.get_running_loop().time())

    # -- reader (hot path) ------------------------------------------------------------------------

    async def _read(self, ws: aiohttp.ClientWebSocketResponse, parser: FrameParser) -> tuple[str, str]:
        """Read until the socket ends; returns ``(kind, text)`` of why (``REASONS``, or ``stopped``).

        A congested publisher makes the reader hold, then shed (``workers.liveness``); the time held is credited
        to the peer, and a socket that ends before any frame was read after a hold ends as ``backpressure``."""
        publisher, live = self.publisher, self.liveness
        receive, parse, publish, on_book = ws.receive, parser.parse, self._publish, self.books.on_update
        desired, last, emit = self._desired, self._last, self._emit
        clock, now = self.clock, asyncio.get_running_loop().time
        text, binary = WSMsgType.TEXT, WSMsgType.BINARY
        try:
            async with asyncio.timeout(None) as cut:
                self._cut = cut
                while True:
                    msg = await receive()
                    kind = msg.type
                    if kind is text:
                        data = msg.data
                    elif kind is binary:
                        data = _inflate(msg.data)
                    elif kind in _CLOSED_TYPES:
                        if self._stopping:
                            return "stopped", "stopped"
                        why = BACKPRESSURE if live.after_hold else CLOSED_BY_PEER
                        return why, f"closed by peer: code {ws.close_code} {msg.extra or ''}".rstrip()
                    elif kind is WSMsgType.ERROR:
                        error = ws.exception() or msg.data
                        # aiohttp's heartbeat: no PONG in time (stack-notes.md §9); anything else is the peer's doing
                        dead = isinstance(error, aiohttp.ServerTimeoutError)
                        why = BACKPRESSURE if live.after_hold else DEAD_PEER if dead else CLOSED_BY_PEER
                        return why, f"socket error: {error!r}"
                    else:
                        continue
                    live.frame_at = t = now()
                    live.after_hold = False
                    self.messages_received += 1
                    self.last_message_at = ts_ms = int(clock() * 1000)
                    try:
                        parsed = parse(data, ts_ms)
                    except Exception as exc:  # noqa: BLE001 - malformed frames are counted, never fatal
                        self.malformed_frames += 1
                        self._log_limited("malformed frame (%r): %.200r", exc, data)
                        continue
                    events, book = parsed.events, parsed.book
                    if events or book:
                        live.data_at = t
                        self._got_data = True
                        if live.shedding:
                            if publisher.congested:
                                self._shed(events)
                                events = []
                            else:
                                self._stop_shedding()
                        direct = self._direct
                        for topic, event in events:
                            if topic in desired:
                                if direct:
                                    publish(topic, event)
                                    last[topic] = event
                                    self.events += 1
                                elif emit(topic, event, True):
                                    self.events += 1
                                if self._counts[PENDING] and self._live.get(topic) == PENDING:
                                    self._mark(topic, ACTIVE)  # data proves the subscription (Gate acks w/o id)
                        for update in book:  # the keeper ignores topics it does not keep
                            on_book(update)
                        # Redis is behind: stop reading (TCP backpressure) for at most the hold budget, then shed
                        if (publisher.congested
                                and not (live.shedding or self._standby or self._frozen or self._suspended)
                                and not await live.hold(publisher, now())):
                            live.start_shedding(self.conn_id)
                    if parsed.acks:
                        self._on_acks(parsed.acks)
                    if parsed.reconnect is not None:
                        self.reconnect_requests += 1
                        if self.private is not None:
                            self.private.on_reconnect(parsed.reconnect)
                        return EXCHANGE_REQUEST, f"exchange asked to reconnect: {parsed.reconnect}"
                    if parsed.error is not None:
                        self.last_error = parsed.error
                        self._log_limited("exchange error: %s", parsed.error)
                    elif parsed.unknown:
                        self.unknown_frames += 1
        except TimeoutError:
            return self._cut_kind, self._cut_reason or "watchdog"
        finally:
            self._cut = None

    def _log_limited(self, fmt: str, *args: object) -> None:
        self._limited_log.warning("%s: " + fmt, self.conn_id, *args)

    def _shed(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        """Drop ``events`` while shedding: counted, and one pending ``backpressure`` gap per topic, announced by its
        next event after shedding (``_stop_shedding``). Topics this connection does not announce itself (private
        sessions) still go to the publisher, whose bounded queue announces its own overflow."""
        if self._frozen:  # its output is stopped anyway; the successor announces what it lacks
            return
        desired, live = self._desired, self.liveness
        for name, event in events:
            if name not in desired:
                continue
            if self._counts[PENDING] and self._live.get(name) == PENDING:
                self._mark(name, ACTIVE)  # data proves the subscription (Gate acks w/o id)
            if self._suspended or not self._announces(name):  # suspended: _emit drops and counts it
                if self._emit(name, event, True):
                    self.events += 1
                continue
            if self._drop(name, event, BACKPRESSURE):
                live.shed += 1
        self._update_direct()

    def _drop(self, name: str, event: dict[str, Any], reason: str) -> bool:
        """Drop one event of ``name`` (a topic this connection announces), counted in its pending gap (a new one has
        ``reason``); False when it was no loss (a promoted socket's catch-up: stored already)."""
        catchup = self._catchup.get(name)
        if catchup is not None:  # just promoted: events up to the marker are stored already, not a loss
            publish, done = catchup.admit(event)
            if done:
                del self._catchup[name]
            if not publish:
                return False
        gap = self._gaps.get(name)
        if gap is None:
            last = self._last.get(name) or (catchup.marker if catchup is not None else None)
            gap = self._gaps[name] = _PendingGap(reason, last.get("ts_received") if last else None, dropped=0)
            self._direct = False
        elif gap.timer is not None:  # a reconnect gap: its ``until`` must now come after these drops
            gap.timer.cancel()
            gap.timer = gap.active_ms = None
        if gap.dropped is not None:
            gap.dropped += 1
        return True

    def _stop_shedding(self) -> None:
        """The publisher has room again: publish from this frame on; each shed topic's gap goes out with its next
        event, or ``GAP_GRACE_S`` from now (``until`` = now) if none comes."""
        self.liveness.stop_shedding(self.conn_id)
        now_ms = int(self.clock() * 1000)
        for name, gap in self._gaps.items():
            if gap.timer is None and self._live.get(name) == ACTIVE and not (self._standby or self._frozen
                                                                             or self._suspended):
                gap.active_ms = now_ms
                self._arm_gap(name, gap)

    def _on_acks(self, acks: list[Ack]) -> None:
        for ack in acks:
            if ack.request_id is not None:  # Binance: the id says what was asked (binance_usdm.md §4)
                action, names = self._requests.pop(ack.request_id, ("", ()))
            elif ack.channel is not None and ack.topic is None:  # Gate without id or payload: by channel, in order
                request_id = match_request(ack, self._requests)
                action, names = self._requests.pop(request_id) if request_id is not None else (ack.action, ())
            else:  # BitMart: one ack per topic, echoing it (exchanges.md §1.4)
                action, names = ack.action, ((ack.topic,) if ack.topic else ())
            if action == "subscribe":
                for name in names:
                    if self._live.get(name) == PENDING:
                        self._mark(name, ACTIVE if ack.ok else FAILED, ack.error)
            if not ack.ok:
                self._log_limited("%s %s failed: %s", action or "request", ",".join(names), ack.error)
        if self._counts[PENDING] == 0 and self._state == "subscribing":
            self._state = "open"

    def _mark(self, name: str, state: str, error: str | None = None) -> None:
        old = self._live.get(name)
        if old is not None:
            self._counts[old] -= 1
        self._live[name] = state
        self._counts[state] += 1
        if state == ACTIVE and self._counts[ACTIVE] == 1:
            self.liveness.active_at = asyncio.get_running_loop().time()  # the silent-feed clock starts now
        if name in self._desired:
            if self.private is not None:
                error = self.private.scrub(error)
            now_ms = int(self.clock() * 1000)
            record = {"state": state, "error": error, "since": now_ms, "conn": self.conn_id}
            self._set_state(name, record)
            if state == FAILED and name in self._gaps:  # not flowing again: its state says so, no gap to close
                self._drop_gap(name)
            if state == ACTIVE:
                self._active_ms[name] = now_ms
                if self.private is not None:
                    self.private.want_snapshot(name)
                gap = self._gaps.get(name)
                if gap is not None and gap.active_ms is None:
                    gap.active_ms = now_ms
                    if not (self._standby or self._frozen or self._suspended):
                        self._arm_gap(name, gap)
        if old == PENDING or state == PENDING:
            self._check_ready()

    # -- syncer and ticker ------------------------------------------------------------------------

    async def _syncer(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        try:
            while not self._stopping:
                self._changed.clear()
                await self._sync(ws)
                if self._counts[PENDING] == 0 and self._state == "subscribing":
                    self._state = "open"
                await self._changed.wait()
        except (aiohttp.ClientError, ConnectionError) as exc:
            self._cut_session(f"send failed: {exc!r}", SEND_FAILED)
        except Exception as exc:  # an adapter or logic error: a fresh socket is the safe retry
            log.exception("%s: subscription sync failed", self.conn_id)
            self._cut_session(f"subscription sync failed: {exc!r}", ERROR)

    async def _sync(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        desired, live = self._desired, self._live
        gone = [n for n in live if n not in desired]
        unsub = [self._live_topics[n] for n in gone if live[n] != FAILED]
        for name in gone:
            self._counts[live.pop(name)] -= 1
            self._live_topics.pop(name)
        for frame in self._frames("unsubscribe", unsub):
            await self._send(ws, frame.text)
        new: list[Topic] = []
        for name, topic in list(desired.items()):
            if name in live:
                continue
            try:
                self.adapter.validate(topic)
                new.append(topic)
            except AdapterError as exc:
                self._live_topics[name] = topic
                self._mark(name, FAILED, str(exc))
        if new and not self._stopping:
            self._state = "subscribing"
        try:
            frames = self._frames("subscribe", new)
        except AdapterError as exc:  # private: credentials that cannot sign (Gate without a uid); public: a bug
            if self.private is None:
                raise
            for topic in new:
                self._live_topics[str(topic)] = topic
                self._mark(str(topic), FAILED, str(exc))
            frames, new = [], []
        if self.private is not None:  # no frame for it (Binance user data): the socket itself serves the topic
            framed = {name for frame in frames for name in frame.topics}
            for topic in new:
                if (name := str(topic)) not in framed and name in desired:
                    self._live_topics[name] = topic
                    self._mark(name, ACTIVE)
        for frame in frames:
            if self._stopping:
                return
            for name in frame.topics:
                self._live_topics[name] = desired.get(name) or Topic.parse(name)
                self._mark(name, PENDING)
            await self._send(ws, frame.text)

    def _frames(self, action: str, topics: list[Topic]) -> list[OutFrame]:
        if not topics:
            return []
        build = self.adapter.subscribe_frames if action == "subscribe" else self.adapter.unsubscribe_frames
        now_ms = int(self.clock() * 1000)
        if self.private is None:
            frames = build(topics, self.settings.subscribe_batch, self._next_request_id, now_ms=now_ms)
        else:  # Gate signs every private subscribe (exchanges.md §2.3a); the others ignore creds
            frames = build(topics, self.settings.subscribe_batch, self._next_request_id, now_ms=now_ms,
                           creds=self.private.creds)  # type: ignore[call-arg]  # fmt: skip
        for frame in frames:
            if frame.request_id is not None:
                self._requests[frame.request_id] = (action, frame.topics)
                self._next_request_id = max(self._next_request_id, frame.request_id + 1)
        return frames

    async def _send(self, ws: aiohttp.ClientWebSocketResponse, text: str) -> None:
        """Send one frame at least ``max(SUBSCRIBE_DELAY_MS, adapter.min_send_interval_ms)`` after the last."""
        async with self._send_lock:
            loop = asyncio.get_running_loop()
            wait = self._last_send + self._gap_s - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)  # pacing, not synchronisation
            await ws.send_str(text)
            self._last_send = loop.time()

    async def _send_on_socket(self, text: str) -> None:
        """Send ``text`` on the current socket (paced); dropped when there is none (the book keeper's resyncs)."""
        ws = self._ws
        if ws is not None and not ws.closed:
            await self._send(ws, text)

    async def _ticker(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """App pings and the two watchdogs; wakes at the earliest deadline (at most every tick)."""
        loop, live = asyncio.get_running_loop(), self.liveness
        app_ping = self.adapter.app_ping
        interval, stall_s = self.settings.ping_interval_s, self.settings.stall_timeout_s
        next_ping = loop.time() + interval
        try:
            while True:
                now = loop.time()
                if app_ping and now >= next_ping:
                    # Built each time: Gate's ping carries the time (exchanges.md §2.4).
                    ping = self.adapter.ping_frame(now_ms=int(self.clock() * 1000))
                    if ping is not None:
                        await self._send(ws, ping)
                    next_ping = next_ping + interval if next_ping + interval > now else now + interval
                # Judged from the peer only: time our reader spends holding for the publisher is not silence.
                silence = live.silence(now)
                if silence >= self._dead_s:
                    self._cut_session(f"dead peer: no frame for {silence:.1f} s", DEAD_PEER)
                    return
                wake = min(live.dead_at(self._dead_s), now + self._tick_s)
                if app_ping:
                    wake = min(wake, next_ping)
                if self._counts[ACTIVE] and self.private is None:  # an account may be quiet for hours
                    quiet = live.quiet(now)
                    if quiet >= stall_s:
                        self._cut_session(f"silent feed: no data for {quiet:.1f} s", SILENT_FEED)
                        return
                    wake = min(wake, live.quiet_at(stall_s))
                await asyncio.sleep(max(wake - loop.time(), 0.001))
        except (aiohttp.ClientError, ConnectionError) as exc:
            self._cut_session(f"ping failed: {exc!r}", SEND_FAILED)
        except Exception as exc:
            log.exception("%s: ticker failed", self.conn_id)
            self._cut_session(f"ticker failed: {exc!r}", ERROR)


def _is_depth(topic: str) -> bool:
    """``exchange:depth:SYMBOL`` (cheap: no parsing)."""
    return topic.split(":", 2)[1:2] == ["depth"]


def _inflate(data: bytes) -> bytes:
    """Raw-deflate BINARY frames (wbits -15, as BitMart's SDK, exchanges.md §1.5); else the bytes as they are."""
    try:
        return zlib.decompress(data, -15)
    except zlib.error:
        return data
