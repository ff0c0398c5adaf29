"""Sessions of ``workers.connection.ExchangeConnection``: backoff between sockets, and one socket's life (connect,
log in, subscribe, read, keep alive); a handshake refusal (HTTP 429/418/403) waits ``Retry-After``.

Per session three tasks cooperate; only the reader (``workers.conn_reader``) touches ``ws.receive()``:

- reader: frames -> events, acks -> states (``workers.conn_reader``);
- syncer: paced subscribe/unsubscribe frames (``workers.conn_sync``);
- ticker (here): application ping (BitMart, Gate), dead-peer and silent-feed watchdogs. It ends a session by
  expiring the reader's ``asyncio.timeout`` (heartbeat PONGs defeat receive timeouts: stack-notes §0.12). The peer
  is judged only by what it sends: time the reader holds back for a congested publisher is not silence.

Private sockets log in first (BitMart: sent and acknowledged before any subscribe); a refusal fails every topic
with the exchange's text and waits the maximum backoff, so bad credentials never cause a reconnect storm.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import WSMsgType

from control.store import ACTIVE, FAILED, PENDING
from workers.conn_reader import CLOSED_TYPES, inflate, read
from workers.conn_reasons import (
    BANNED_MIN_DELAY_S,
    CONNECT_FAILED,
    DEAD_PEER,
    ERROR,
    HANDSHAKE_ERROR,
    LOGIN_FAILED,
    REFUSED,
    REFUSED_STATUSES,
    SEND_FAILED,
    SILENT_FEED,
    End,
)
from workers.conn_sync import WebSocket
from workers.exchanges.base import AdapterError, FrameParser, parser_counters
from workers.private import PrivateAuthError
from workers.rest import RestError, retry_after_seconds

if TYPE_CHECKING:
    from workers.connection import ExchangeConnection

log = logging.getLogger("workers.connection")

MAX_MSG_SIZE = 16 * 1024 * 1024


async def sessions(conn: ExchangeConnection) -> None:
    """Sessions one after another, with backoff between them, until the connection stops."""
    loop = asyncio.get_running_loop()
    while not conn._stopping:
        started = loop.time()
        try:
            end = await session(conn)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must not end the connection for good
            log.exception("%s: session failed", conn.conn_id)
            end = End(ERROR, f"internal error: {exc!r}")
        if on_disconnect(conn, end.kind):
            break  # stopping
        if end.healthy and loop.time() - started >= 2 * conn.settings.reconnect_delay_s:
            conn._backoff.reset()
        delay = conn._backoff.next_delay()
        if conn._auth_failed:  # refused credentials do not fix themselves quickly: wait the longest
            ceiling = conn.settings.reconnect_max_delay_s
            delay = max(delay, ceiling / 2 + conn._rng.uniform(0.0, ceiling / 2))
        if end.retry_after_s is not None:  # refused handshake: the exchange said how long (binance_usdm.md §3)
            delay = max(delay, end.retry_after_s)
        conn.reconnects += 1
        conn.reasons[end.kind] += 1
        conn.last_error = end.text
        conn.next_retry_at = int((conn.clock() + delay) * 1000)
        conn._state = "backoff"
        log.warning("%s: reconnecting to %s in %.2f s (#%d, %s): %s", conn.conn_id, conn.url, delay,
                    conn.reconnects, end.kind, end.text)  # fmt: skip
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(conn._stop_event.wait(), delay)
        conn.next_retry_at = None


def connect_failed(conn: ExchangeConnection, exc: BaseException) -> End:
    """Classify a failed ``ws_connect``: a refusal (429/418/403, with its wait), another handshake answer, or
    no connection at all."""
    text = f"connect failed: {exc!r}"
    if conn.private is not None:
        text = conn.private.scrub(text) or text
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        if exc.status in REFUSED_STATUSES:
            header = exc.headers.get("Retry-After") if exc.headers is not None else None
            default = BANNED_MIN_DELAY_S if exc.status == 418 else 0.0
            wait = retry_after_seconds(header, default=default)
            return End(REFUSED, f"handshake refused: HTTP {exc.status}" + (
                f", Retry-After {header}" if header else ""), retry_after_s=wait or None)
        return End(HANDSHAKE_ERROR, f"handshake failed: HTTP {exc.status} {exc.message}")
    return End(CONNECT_FAILED, text)


def on_disconnect(conn: ExchangeConnection, kind: str) -> bool:
    """Forget the socket's subscriptions; every desired topic waits for the next socket, and each public topic
    that was flowing gets a pending gap (``kind`` is its reason; ``Continuity.on_disconnect``).

    No states are written on stop: the topics were removed or moved to another connection. Returns whether the
    connection is stopping (no reconnect then).
    """
    conn.connected_since = None
    conn._socket_opened = None
    conn._ready.clear()
    conn._klines.reset()  # the forming bars may miss updates now; the gap event covers them
    was_live = {name for name, state in conn.subs.live.items() if state == ACTIVE}
    conn.subs.reset()
    conn.continuity.on_disconnect(kind, was_live)
    if conn._stopping or conn._auth_failed:  # refused credentials: the topics stay failed
        return conn._stopping
    conn.books.reset("reconnect")  # the next socket starts every book over from a fresh snapshot
    now_ms = int(conn.clock() * 1000)
    for name in conn._desired:
        conn.continuity.set_state(name, {"state": PENDING, "error": None, "since": now_ms, "conn": conn.conn_id})
    return False


async def shutdown(conn: ExchangeConnection, *, unsubscribe: bool, timeout_s: float, forget: bool) -> None:
    """``ExchangeConnection.stop``'s work: unsubscribe (paced), close with 1000 and wait for the run loop, cancelling
    it after ``timeout_s``; then close the books and the private session."""
    main, ws = conn._main, conn._ws
    try:
        async with asyncio.timeout(timeout_s):
            if ws is not None and not ws.closed:
                if unsubscribe:
                    for frame in conn.subs.frames("unsubscribe", conn.subs.live_topics()):
                        await conn.subs.send(ws, frame.text)
                await ws.close(code=aiohttp.WSCloseCode.OK)  # the reader sees CLOSING and ends
            elif main is not None:
                main.cancel()  # connecting or in backoff: nothing to close gracefully
            if main is not None:
                await asyncio.wait({main})
    except TimeoutError:
        log.warning("%s: stop did not finish within %.1f s; cancelling", conn.conn_id, timeout_s)
    except Exception as exc:  # noqa: BLE001 - a failing stop must still cancel the task and close the books
        log.warning("%s: error while stopping: %r", conn.conn_id, exc)
    if main is not None and not main.done():
        main.cancel()
        await asyncio.wait({main})
    await conn.books.close()
    if conn.private is not None:
        try:
            async with asyncio.timeout(timeout_s):
                await conn.private.close(forget=forget)
        except TimeoutError:
            log.warning("%s: closing the private session did not finish within %.1f s", conn.conn_id, timeout_s)


async def open_socket(conn: ExchangeConnection) -> WebSocket | End:
    """Set up the private session's URL (if any) and open the socket; the socket, or how the attempt ended."""
    s = conn.settings
    url = conn.url
    if conn.private is not None:
        try:
            url = await conn.private.connect_url(conn.url)
        except PrivateAuthError as exc:
            return End(LOGIN_FAILED, refused(conn, str(exc)))
        except RestError as exc:
            return End(CONNECT_FAILED, f"private session setup failed: {exc}")
    conn.connect_attempts += 1
    try:
        async with asyncio.timeout(s.ping_interval_s + s.pong_timeout_s):
            return await conn.session.ws_connect(
                url, autoping=True, heartbeat=None if conn.adapter.app_ping else s.ping_interval_s,
                headers=conn.adapter.ws_headers or None,  # Gate: decimal sizes (§2.4)
                max_msg_size=MAX_MSG_SIZE, compress=0,
                decode_text=False,  # orjson parses bytes; saves a UTF-8 decode per frame
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=s.pong_timeout_s),
            )
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        return connect_failed(conn, exc)


async def session(conn: ExchangeConnection) -> End:
    """One socket's life; returns how it ended."""
    conn._state = "connecting"
    conn._auth_failed = False
    ws = await open_socket(conn)
    if isinstance(ws, End):
        return ws
    conn._ws = ws
    loop = asyncio.get_running_loop()
    conn.liveness.opened(loop.time())
    conn._socket_opened = loop.time()
    conn._got_data, conn._cut_reason, conn._cut_kind = False, None, ERROR
    conn.connected_since = int(conn.clock() * 1000)
    if conn._stopping:
        await ws.close()
        return End("stopped", "stopped")
    log.info("%s: connected to %s (%d topics%s)", conn.conn_id, conn.url, len(conn._desired),
             ", standby" if conn.continuity.standby else "")  # fmt: skip
    parser = conn.adapter.new_parser() if conn.private is None else conn.private.new_parser()
    conn._parser_counts.update(parser_counters(conn._parser))  # the last socket's parser is done
    conn._parser = parser
    parser = conn._klines.wrap(parser)
    helpers: list[asyncio.Task[None]] = []
    try:
        if conn.private is not None:
            why = await login(conn, ws, parser)
            if why is not None:
                return End(LOGIN_FAILED, why)
            conn.private.started(conn._cut_session)
        conn._state = "subscribing" if conn._desired else "open"
        if conn.private is not None:
            try:  # subscribe before reading: a topic served without a frame is active (gap) before its first event
                await conn.subs.sync(ws)
            except (aiohttp.ClientError, ConnectionError) as exc:
                return End(SEND_FAILED, f"send failed: {exc!r}")
        conn._changed.set()
        conn._check_ready()
        helpers = [loop.create_task(conn.subs.run(ws)), loop.create_task(ticker(conn, ws))]
        kind, reason = await read(conn, ws, parser)
    finally:
        for task in helpers:
            task.cancel()
        if helpers:
            await asyncio.wait(helpers)
        if conn.private is not None:
            conn.private.ended()
        conn._ws = None
        conn._ready.clear()
        if not ws.closed:
            await ws.close()
    return End(kind, reason, conn._got_data or conn.subs.counts[PENDING] == 0)


async def login(conn: ExchangeConnection, ws: WebSocket, parser: FrameParser) -> str | None:
    """Send the private session's login frame (if any) and wait for its ack; None when logged in (or no login
    is needed), else why the session ends. A refusal fails every topic (``refused``). Runs before the reader
    and the syncer start, so it may read the socket itself."""
    private = conn.private
    assert private is not None
    try:
        frame = private.login_frame(int(conn.clock() * 1000))
    except AdapterError as exc:  # e.g. a BitMart account without its API memo: no retry can fix that
        return refused(conn, f"cannot log in: {exc}")
    if frame is None:
        return None
    conn._state = "login"
    try:
        await conn.subs.send(ws, frame)
        async with asyncio.timeout(conn.settings.pong_timeout_s):
            while True:
                msg = await ws.receive()
                if msg.type in CLOSED_TYPES or msg.type is WSMsgType.ERROR:
                    return f"closed during login: code {ws.close_code}"
                if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    continue
                conn.messages_received += 1
                conn.liveness.frame(asyncio.get_running_loop().time())
                conn.last_message_at = ts_ms = int(conn.clock() * 1000)
                data = msg.data if msg.type is WSMsgType.TEXT else inflate(msg.data)
                try:
                    parsed = parser.parse(data, ts_ms)
                except Exception:  # noqa: BLE001 - counted like the reader does
                    conn.malformed_frames += 1
                    continue
                for ack in parsed.acks:
                    if ack.action == "login":
                        if ack.ok:
                            log.info("%s: logged in", conn.conn_id)
                            return None
                        return refused(conn, str(private.login_refused(ack.error)))
    except TimeoutError:
        return f"no login answer within {conn.settings.pong_timeout_s:.1f} s"
    except (aiohttp.ClientError, ConnectionError) as exc:
        return f"login failed: {exc!r}"


def refused(conn: ExchangeConnection, error: str) -> str:
    """The exchange refused the account's credentials: fail every desired topic with its text; the next
    attempt waits the maximum backoff and the states stay ``failed`` until a login succeeds."""
    conn._auth_failed = True
    now_ms = int(conn.clock() * 1000)
    for name in conn._desired:
        conn.continuity.set_state(name, {"state": FAILED, "error": error, "since": now_ms, "conn": conn.conn_id})
    log.warning("%s: %s", conn.conn_id, error)
    return error


async def ticker(conn: ExchangeConnection, ws: WebSocket) -> None:
    """App pings and the two watchdogs; wakes at the earliest deadline (at most every tick)."""
    loop, live = asyncio.get_running_loop(), conn.liveness
    app_ping = conn.adapter.app_ping
    interval, stall_s = conn.settings.ping_interval_s, conn.settings.stall_timeout_s
    dead_s, tick_s, counts = conn._dead_s, conn._tick_s, conn.subs.counts
    next_ping = loop.time() + interval
    try:
        while True:
            now = loop.time()
            if app_ping and now >= next_ping:
                # Built each time: Gate's ping carries the time (exchanges.md §2.4).
                ping = conn.adapter.ping_frame(now_ms=int(conn.clock() * 1000))
                if ping is not None:
                    await conn.subs.send(ws, ping)
                next_ping = next_ping + interval if next_ping + interval > now else now + interval
            # Judged from the peer only: time our reader spends holding for the publisher is not silence.
            silence = live.silence(now)
            if silence >= dead_s:
                conn._cut_session(f"dead peer: no frame for {silence:.1f} s", DEAD_PEER)
                return
            wake = min(live.dead_at(dead_s), now + tick_s)
            if app_ping:
                wake = min(wake, next_ping)
            if counts[ACTIVE] and conn.private is None:  # an account may be quiet for hours
                quiet = live.quiet(now)
                if quiet >= stall_s:
                    conn._cut_session(f"silent feed: no data for {quiet:.1f} s", SILENT_FEED)
                    return
                wake = min(wake, live.quiet_at(stall_s))
            await asyncio.sleep(max(wake - loop.time(), 0.001))
    except (aiohttp.ClientError, ConnectionError) as exc:
        conn._cut_session(f"ping failed: {exc!r}", SEND_FAILED)
    except Exception as exc:
        log.exception("%s: ticker failed", conn.conn_id)
        conn._cut_session(f"ticker failed: {exc!r}", ERROR)
