"""One exchange WebSocket for a set of topics, kept alive until stopped (aiohttp client).

Per session (one socket) three tasks cooperate; only the reader touches ``ws.receive()``:

- reader: frames -> ``FrameParser.parse`` -> ``Publisher.publish`` for desired topics; acks -> states;
  order-book updates -> ``BookKeeper.on_update`` (``workers.books``; its books start over on every reconnect).
- syncer: diffs desired topics against the live ones and sends paced subscribe/unsubscribe frames.
- ticker: application ping (BitMart), dead-peer and silent-feed watchdogs. It ends a session by
  expiring the reader's ``asyncio.timeout`` (heartbeat PONGs defeat receive timeouts: stack-notes §0.12).

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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
import zlib
from collections.abc import Callable, Iterable
from typing import Any

import aiohttp
from aiohttp import WSMsgType

from control.settings import Settings
from control.store import ACTIVE, FAILED, PENDING
from control.topics import DEPTH_LEVELS_DEFAULT, DEPTH_LEVELS_MAX, Topic
from workers.backoff import Backoff
from workers.books import BookKeeper
from workers.exchanges.base import Ack, AdapterError, ExchangeAdapter, FrameParser, OutFrame
from workers.private import PrivateAuthError, PrivateSession
from workers.publisher import Publisher
from workers.rest import RestError

log = logging.getLogger(__name__)

MAX_MSG_SIZE = 16 * 1024 * 1024
_LOG_EVERY_S = 10.0  # at most one malformed/error log line per connection per this many seconds
_CLOSED_TYPES = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED)


class ExchangeConnection:
    """One socket to ``url`` carrying the topics given by ``set_topics``; see the module docstring.

    :param conn_id: connection id (planner's), put in every log line and state record.
    :param adapter: the exchange adapter (``workers.exchanges.get_adapter``).
    :param url: the WebSocket URL (``adapter.ws_url(base, route)``).
    :param session: aiohttp session owned by the caller. :param publisher: event and state sink.
    :param rng: jitter source for reconnect backoff. :param clock: epoch seconds, used only for ms timestamps.
    :param rest_base_url: REST base URL for order-book snapshots; default ``settings.exchange_rest_uri(adapter.id)``.
    :param private: the account session of a private socket (``workers.private``), None for public data.

    Topic states go to ``publisher.set_state`` as ``{"state","error","since"(ms),"conn"}``: ``pending`` when a
    subscribe is sent (and for every desired topic after a disconnect), ``active``/``failed`` on the ack,
    ``error`` being the exchange's own text. Timers use the loop's monotonic clock, never ``clock``.
    """

    def __init__(
        self, *, conn_id: str, adapter: ExchangeAdapter, url: str, settings: Settings,
        session: aiohttp.ClientSession, publisher: Publisher, worker_id: str = "",
        rng: random.Random | None = None, clock: Callable[[], float] = time.time, rest_base_url: str | None = None,
        private: PrivateSession | None = None,
    ) -> None:
        self.conn_id, self.adapter, self.url, self.settings = conn_id, adapter, url, settings
        self.private = private
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
        self._stopping = False
        self._state = "connecting"  # run() is expected to follow construction
        self._last_frame = self._last_data = self._active_since = self._next_log = 0.0
        self._got_data, self._suppressed = False, 0
        self.connected_since: int | None = None  # epoch ms, like every *_at below
        self.next_retry_at: int | None = None
        self.last_message_at: int | None = None
        self.last_error: str | None = None
        self.reconnects = self.messages_received = self.events = 0
        self.malformed_frames = self.unknown_frames = 0
        #: Sockets ended because the exchange asked (``Parsed.reconnect``); connection attempts made (``ws_connect``).
        self.reconnect_requests = self.connect_attempts = 0
        self._auth_failed = False  # the last session ended with the credentials refused
        self._options: dict[str, dict[str, Any]] = {}
        self.books = BookKeeper(
            conn_id=conn_id, adapter=adapter, publisher=publisher, session=session,
            rest_base_url=settings.exchange_rest_uri(adapter.id) if rest_base_url is None else rest_base_url,
            interval_ms=settings.depth_interval_ms, send_frame=self._send_on_socket, levels_for=self._levels_for,
            clock=clock, rng=rng,
        )
        if private is not None:
            private.bind(conn_id, self._desired.__contains__)

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
            self._changed.set()

    def set_options(self, options: dict[str, dict[str, Any]]) -> None:
        """Per-topic options, ``topic -> {"levels": N}`` for depth topics (``fp:topic:options``); replaces all."""
        self._options = dict(options)

    def _levels_for(self, topic: str) -> int:
        options = self._options.get(topic)
        levels = options.get("levels") if options else None
        if type(levels) is int and 1 <= levels <= DEPTH_LEVELS_MAX:
            return levels
        return DEPTH_LEVELS_DEFAULT

    def status(self) -> dict[str, Any]:
        """Connection record for ``fp:conn:status``; times in epoch ms. ``state`` is one of
        connecting|login|subscribing|open|backoff|stopping|stopped. Private sockets add ``private`` (account,
        key fingerprint, counters: ``workers.private.PrivateSession.status``), never a secret."""
        return {
            "exchange": self.adapter.id, "url": self.url, "state": self._state, "worker": self.worker_id,
            "connected_since": self.connected_since, "reconnects": self.reconnects,
            "last_message_at": self.last_message_at, "messages_received": self.messages_received,
            "events": self.events, "malformed_frames": self.malformed_frames, "unknown_frames": self.unknown_frames,
            "topics": len(self._desired), "last_error": self.last_error, "next_retry_at": self.next_retry_at,
            "books": self.books.status(), "reconnect_requests": self.reconnect_requests,
            **({"private": self.private.status()} if self.private is not None else {}),
        }

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
        except Exception as exc:
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
        finally:  # also when cancelled: no snapshot fetch may outlive the connection
            await self.books.close()
            if self.private is not None:
                self.private.ended()

    async def _sessions(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            started = loop.time()
            try:
                reason, healthy = await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug must not end the connection for good
                log.exception("%s: session failed", self.conn_id)
                reason, healthy = f"internal error: {exc!r}", False
            self._on_disconnect()
            if self._stopping:
                break
            if healthy and loop.time() - started >= 2 * self.settings.reconnect_delay_s:
                self._backoff.reset()
            delay = self._backoff.next_delay()
            if self._auth_failed:  # refused credentials do not fix themselves quickly: wait the longest
                ceiling = self.settings.reconnect_max_delay_s
                delay = max(delay, ceiling / 2 + self._rng.uniform(0.0, ceiling / 2))
            self.reconnects += 1
            self.last_error = reason
            self.next_retry_at = int((self.clock() + delay) * 1000)
            self._state = "backoff"
            log.warning("%s: reconnecting to %s in %.2f s (#%d): %s", self.conn_id, self.url, delay,
                        self.reconnects, reason)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_event.wait(), delay)
            self.next_retry_at = None

    async def _session(self) -> tuple[str, bool]:
        """One socket's life; returns (why it ended, whether it was healthy)."""
        self._state = "connecting"
        self._auth_failed = False
        s = self.settings
        url = self.url
        if self.private is not None:
            try:
                url = await self.private.connect_url(self.url)
            except PrivateAuthError as exc:
                return self._refused(str(exc)), False
            except RestError as exc:
                return f"private session setup failed: {exc}", False
        self.connect_attempts += 1
        try:
            async with asyncio.timeout(s.ping_interval_s + s.pong_timeout_s):
                ws = await self.session.ws_connect(
                    url, autoping=True, heartbeat=None if self.adapter.app_ping else s.ping_interval_s,
                    headers=getattr(self.adapter, "ws_headers", None) or None,  # Gate: decimal sizes (§2.4)
                    max_msg_size=MAX_MSG_SIZE, compress=0,
                    decode_text=False,  # orjson parses bytes; saves a UTF-8 decode per frame
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=s.pong_timeout_s),
                )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            reason = f"connect failed: {exc!r}"
            return (self.private.scrub(reason) or reason) if self.private is not None else reason, False
        self._ws = ws
        loop = asyncio.get_running_loop()
        self._last_frame = self._last_data = loop.time()
        self._active_since, self._got_data, self._cut_reason = 0.0, False, None
        self.connected_since = int(self.clock() * 1000)
        if self._stopping:
            await ws.close()
            return "stopped", False
        log.info("%s: connected to %s (%d topics)", self.conn_id, self.url, len(self._desired))
        parser = self.adapter.new_parser() if self.private is None else self.private.new_parser()
        helpers: list[asyncio.Task[None]] = []
        try:
            if self.private is not None:
                refused = await self._login(ws, parser)
                if refused is not None:
                    return refused, False
                self.private.started(self._cut_session)
            self._state = "subscribing" if self._desired else "open"
            if self.private is not None:
                try:  # subscribe before reading: a topic served without a frame is active (gap) before its first event
                    await self._sync(ws)
                except (aiohttp.ClientError, ConnectionError) as exc:
                    return f"send failed: {exc!r}", False
            self._changed.set()
            helpers = [loop.create_task(self._syncer(ws)), loop.create_task(self._ticker(ws))]
            reason = await self._read(ws, parser)
        finally:
            for task in helpers:
                task.cancel()
            if helpers:
                await asyncio.wait(helpers)
            if self.private is not None:
                self.private.ended()
            self._ws = None
            if not ws.closed:
                await ws.close()
        return reason, self._got_data or self._counts[PENDING] == 0

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
                    self._last_frame = asyncio.get_running_loop().time()
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
            self.publisher.set_state(name, {"state": FAILED, "error": error, "since": now_ms, "conn": self.conn_id})
        log.warning("%s: %s", self.conn_id, error)
        return error

    def _on_disconnect(self) -> None:
        """Forget the socket's subscriptions; every desired topic waits for the next socket.

        No states are written on stop: the topics were removed or moved to another connection.
        """
        self.connected_since = None
        for table in (self._live, self._live_topics, self._requests):
            table.clear()
        self._counts = {PENDING: 0, ACTIVE: 0, FAILED: 0}
        if self._stopping or self._auth_failed:  # refused credentials: the topics stay failed
            return
        self.books.reset("reconnect")  # the next socket starts every book over from a fresh snapshot
        now_ms = int(self.clock() * 1000)
        for name in self._desired:
            self.publisher.set_state(name, {"state": PENDING, "error": None, "since": now_ms, "conn": self.conn_id})

    def _cut_session(self, reason: str) -> None:
        """End the current session from another task (the reader sees its timeout expire)."""
        if self._cut_reason is None:
            self._cut_reason = reason
        cut = self._cut
        if cut is not None and not cut.expired():
            cut.reschedule(asyncio.get_running_loop().time())

    # -- reader (hot path) ------------------------------------------------------------------------

    async def _read(self, ws: aiohttp.ClientWebSocketResponse, parser: FrameParser) -> str:
        publisher = self.publisher
        receive, parse, publish, on_book = ws.receive, parser.parse, publisher.publish, self.books.on_update
        desired, clock, now = self._desired, self.clock, asyncio.get_running_loop().time
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
                            return "stopped"
                        return f"closed by peer: code {ws.close_code} {msg.extra or ''}".rstrip()
                    elif kind is WSMsgType.ERROR:
                        return f"socket error: {ws.exception() or msg.data!r}"
                    else:
                        continue
                    self._last_frame = now()
                    self.messages_received += 1
                    self.last_message_at = ts_ms = int(clock() * 1000)
                    try:
                        parsed = parse(data, ts_ms)
                    except Exception as exc:  # malformed frames are counted, never fatal
                        self.malformed_frames += 1
                        self._log_limited("malformed frame (%r): %.200r", exc, data)
                        continue
                    events, book = parsed.events, parsed.book
                    if events or book:
                        self._last_data = self._last_frame
                        self._got_data = True
                        for topic, event in events:
                            if topic in desired:
                                publish(topic, event)
                                self.events += 1
                                if self._counts[PENDING] and self._live.get(topic) == PENDING:
                                    self._mark(topic, ACTIVE)  # data proves the subscription (Gate acks w/o id)
                        for update in book:  # the keeper ignores topics it does not keep
                            on_book(update)
                        if publisher.congested:  # Redis is behind: stop reading until it catches up
                            await publisher.room()
                            self._last_frame = self._last_data = now()
                    if parsed.acks:
                        self._on_acks(parsed.acks)
                    if parsed.reconnect is not None:
                        self.reconnect_requests += 1
                        if self.private is not None:
                            self.private.on_reconnect(parsed.reconnect)
                        return f"exchange asked to reconnect: {parsed.reconnect}"
                    if parsed.error is not None:
                        self.last_error = parsed.error
                        self._log_limited("exchange error: %s", parsed.error)
                    elif parsed.unknown:
                        self.unknown_frames += 1
        except TimeoutError:
            return self._cut_reason or "watchdog"
        finally:
            self._cut = None

    def _log_limited(self, fmt: str, *args: object) -> None:
        now = time.monotonic()
        if now < self._next_log:
            self._suppressed += 1
            return
        self._next_log = now + _LOG_EVERY_S
        suppressed, self._suppressed = self._suppressed, 0
        log.warning("%s: " + fmt + " (%d similar suppressed)", self.conn_id, *args, suppressed)

    def _on_acks(self, acks: list[Ack]) -> None:
        for ack in acks:
            if ack.request_id is not None:  # Binance: the id says what was asked (binance_usdm.md §4)
                action, names = self._requests.pop(ack.request_id, ("", ()))
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
            self._active_since = asyncio.get_running_loop().time()  # the silent-feed clock starts now
        if name in self._desired:
            if self.private is not None:
                error = self.private.scrub(error)
            record = {"state": state, "error": error, "since": int(self.clock() * 1000), "conn": self.conn_id}
            self.publisher.set_state(name, record)
            if state == ACTIVE and self.private is not None:
                self.private.want_snapshot(name)

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
            self._cut_session(f"send failed: {exc!r}")
        except Exception as exc:  # an adapter or logic error: a fresh socket is the safe retry
            log.exception("%s: subscription sync failed", self.conn_id)
            self._cut_session(f"subscription sync failed: {exc!r}")

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
        loop = asyncio.get_running_loop()
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
                silence = now - self._last_frame
                if silence >= self._dead_s:
                    self._cut_session(f"dead peer: no frame for {silence:.1f} s")
                    return
                wake = min(self._last_frame + self._dead_s, now + self._tick_s)
                if app_ping:
                    wake = min(wake, next_ping)
                if self._counts[ACTIVE] and self.private is None:  # an account may be quiet for hours
                    quiet_since = max(self._last_data, self._active_since)
                    if now - quiet_since >= stall_s:
                        self._cut_session(f"silent feed: no data for {now - quiet_since:.1f} s")
                        return
                    wake = min(wake, quiet_since + stall_s)
                await asyncio.sleep(max(wake - loop.time(), 0.001))
        except (aiohttp.ClientError, ConnectionError) as exc:
            self._cut_session(f"ping failed: {exc!r}")
        except Exception as exc:
            log.exception("%s: ticker failed", self.conn_id)
            self._cut_session(f"ticker failed: {exc!r}")


def _inflate(data: bytes) -> bytes:
    """Raw-deflate BINARY frames (wbits -15, as BitMart's SDK, exchanges.md §1.5); else the bytes as they are."""
    try:
        return zlib.decompress(data, -15)
    except zlib.error:
        return data
