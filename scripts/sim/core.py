"""The simulator's engine: shared state, observation, and the one way each kind of frame is sent.

``SimCore`` holds what every exchange module works on: live connections, counters, the frames sent and
received, the fault switches and the per-exchange ``venues``. The methods with a leading underscore are the
package's internal API, used by the venue modules (``scripts.sim.bitmart`` ...); tests use the public
surface of ``scripts.sim.server.ExchangeSimulator``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import WSCloseCode, WSMsgType, web

from scripts.sim.conn import CLOSE_TIMEOUT_S, ReceivedFrame, RestRequest, SimConnection, guarded, reraise_if_cancelling
from scripts.sim.matching import MatchingEngine
from scripts.sim.private import PrivateSide

if TYPE_CHECKING:
    from scripts.sim.venue import Venue

__all__ = ["SimCore"]

log = logging.getLogger(__name__)


class SimCore:
    """State and sending for one simulator; see ``ExchangeSimulator`` for the parameters."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        speed: float,
        rate: float | None,
        loop: bool,
        samples_dir: Path | None,
        record_sent: bool,
    ) -> None:
        self._host, self._port = host, port
        self._speed, self._rate, self._loop = speed, rate, loop
        self._rest_failures = 0
        self._samples_dir, self._record_sent = samples_dir, record_sent
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
        #: gate_positions}, rest_auth_failures. Order API: rest_gate_<handler>, rest_binance_<handler> (place, get,
        #: cancel, place_trigger, leverage ...), order_pushes, order_pushes_dropped (account gone).
        self.stats: Counter[str] = Counter()
        #: Benchmark hook ``(native, raw_frame, time.time_ns())`` called right before each data frame is sent.
        self.on_send: Callable[[str, str, int], None] | None = None
        #: Exchange id -> its simulated venue (``scripts.sim.registry.VENUES``), filled by the subclass.
        self.venues: dict[str, Venue] = {}
        self._private = PrivateSide(self)
        #: Orders, positions and prices of every venue's order API (``scripts.sim.matching``).
        self.engine = MatchingEngine(self._private.now_ms)
        self.engine.on_change = self._orders_changed
        self._flush_lock = asyncio.Lock()
        self._flush_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ observation

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

    # ------------------------------------------------------------------ sockets

    def _new_conn(self, request: web.Request, exchange: str, route: str, mode: str) -> SimConnection:
        conn_id, self._next_id = self._next_id, self._next_id + 1
        # autoping=False: protocol pings are answered in _serve, so dead mode can withhold the pong.
        ws = web.WebSocketResponse(autoping=False, max_msg_size=1 << 20, timeout=CLOSE_TIMEOUT_S)
        return SimConnection(conn_id, exchange, route, mode, request.path_qs, time.monotonic(), ws=ws)

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
        venue = self.venues[conn.exchange]
        try:
            if venue.keepalive_s is not None:
                self._spawn(conn, "_keepalive", self._keepalive(conn, *venue.keepalive_s))
            venue.on_open(conn)
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
                            await guarded(ws.pong(msg.data))
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
                        await guarded(conn.ws.ping(b""))
                        self.stats["server_pings_sent"] += 1
                        if conn._pong_deadline is None:
                            conn._pong_deadline = now + timeout_s
                        self._notify()
                next_ping = now + interval_s
            wake = next_ping if conn._pong_deadline is None else min(next_ping, conn._pong_deadline)
            await asyncio.sleep(max(0.0, wake - loop.time()))

    # ------------------------------------------------------------------ sending

    async def _reply(self, conn: SimConnection, obj: Any) -> bool:
        """Send a control frame (ack, error, app pong); withheld while dead."""
        if self._dead:
            self.stats["replies_withheld_dead"] += 1
            return False
        try:
            await guarded(conn.ws.send_str(orjson.dumps(obj).decode()))
        except ConnectionError:
            return False
        conn.sent_count += 1
        self.stats["replies_sent"] += 1
        self._notify()
        return True

    async def _send_data(self, conn: SimConnection, native: str, frame: str) -> bool:
        """Send one data frame of ``native`` (recorded in ``sent_data``); False once the socket is gone."""
        if conn.ws.closed:
            return False
        if self.on_send is not None:
            self.on_send(native, frame, time.time_ns())
        task = asyncio.current_task()
        conn._in_write.add(task)
        self._notify()  # observers can see a send blocked on a full socket (tests of backpressure)
        try:
            await guarded(conn.ws.send_str(frame))
        except ConnectionError:
            return False
        finally:
            conn._in_write.discard(task)
        if self._record_sent:
            self.sent_data.setdefault(native, []).append(frame)
        conn.sent_count += 1
        self.stats["data_frames_sent"] += 1
        if native in self.engine.watched:  # a trade of a symbol the order API trades: its price moved
            self.engine.on_tape_frame(native, frame)
        self._notify()
        return True

    async def _close(self, conn: SimConnection, code: int, message: bytes) -> None:
        """Close handshake bounded by ``CLOSE_TIMEOUT_S``; on timeout aiohttp aborts the transport."""
        try:
            await asyncio.wait_for(conn.ws.close(code=code, message=message), CLOSE_TIMEOUT_S)
        except asyncio.CancelledError:
            reraise_if_cancelling()  # else a sibling's cancel hit the shared drain future; transport is closed
        except Exception as exc:  # noqa: BLE001 - a failed close leaves an aborted transport, which is fine
            log.debug("conn %d: close failed: %r", conn.conn_id, exc)

    # ------------------------------------------------------------------ tasks and subscriptions

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

    # ------------------------------------------------------------------ order pushes

    def _orders_changed(self) -> None:
        """The engine recorded changes outside a REST call (tape price, ``set_price``): push them soon."""
        if self._flush_task is None or self._flush_task.done():
            try:
                self._flush_task = asyncio.get_running_loop().create_task(self.flush_orders(), name="sim-order-push")
            except RuntimeError:  # no loop (a synchronous unit test): the next flush sends them
                return
            self._tasks.add(self._flush_task)
            self._flush_task.add_done_callback(self._tasks.discard)

    async def flush_orders(self) -> None:
        """Push the engine's pending changes, in order, on each account's private sockets (venue ``orders``
        builds the frames; ``PrivateSide.push`` addresses them). A removed account's changes are dropped."""
        async with self._flush_lock:
            while self.engine.changes:
                changes, self.engine.changes = self.engine.changes, []
                for exchange, api_key, kind, obj, extra in changes:
                    orders = self.venues[exchange].orders
                    if orders is None:
                        continue
                    for channel, frame in orders.push_frames(api_key, kind, obj, extra):
                        try:
                            await self._private.push(exchange, api_key, channel, frame)
                        except KeyError:
                            self.stats["order_pushes_dropped"] += 1
                        else:
                            self.stats["order_pushes"] += 1

    # ------------------------------------------------------------------ REST bookkeeping

    def _rest_done(
        self, request: web.Request, exchange: str, response: web.Response, *, path_qs: str | None = None
    ) -> web.Response:
        """Record one answered REST call (``rest_requests``, throttle/error counters) and return ``response``."""
        path_qs = request.path_qs if path_qs is None else path_qs
        self.rest_requests.append(RestRequest(exchange, time.monotonic(), path_qs, response.status, request.method))
        if response.status == 429:
            self.stats["rest_throttled"] += 1
        elif response.status >= 400:
            self.stats["rest_errors"] += 1
        self._notify()
        return response

    def _take_rest_failure(self) -> bool:
        """True when this REST snapshot call must fail with 429 (``fail_rest``), consuming one failure."""
        if self._rest_failures <= 0:
            return False
        self._rest_failures -= 1
        return True
