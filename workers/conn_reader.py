"""The reader of one exchange socket (the hot path): frames -> ``FrameParser.parse`` -> the publisher.

The only task that touches ``ws.receive()`` while a session runs (``workers.connection``). Per frame: decode
(raw-deflate BINARY frames, exchanges.md §1.5), parse, publish the events of desired topics (straight out while
``Continuity.direct``, else through ``Continuity.emit``), feed order-book updates to ``BookKeeper.on_update``,
then apply acks, an exchange's reconnect request, errors. A congested publisher makes the reader hold, then shed
(``workers.liveness``); the time held is credited to the peer, and a socket that ends before any frame was read
after a hold ends as ``backpressure``. Everything per event stays in ``read``'s loop with local bindings: the
other steps run per session, per control frame or while shedding only.
"""

from __future__ import annotations

import asyncio
import zlib
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import WSMsgType

from control.store import ACTIVE, PENDING
from workers.conn_reasons import CLOSED_BY_PEER, DEAD_PEER, EXCHANGE_REQUEST
from workers.conn_sync import WebSocket
from workers.exchanges.base import BookUpdate, FrameParser, Parsed
from workers.liveness import BACKPRESSURE

if TYPE_CHECKING:
    from aiohttp._websocket.models import WSMessageNoDecodeText

    from workers.connection import ExchangeConnection

CLOSED_TYPES = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED)
_ENDING = (*CLOSED_TYPES, WSMsgType.ERROR)
_Events = list[tuple[str, dict[str, Any]]]
#: Data frames the reader handles before it lets the event loop run other tasks. ``ws.receive()`` returns buffered
#: frames without suspending, so under saturation the reader would otherwise keep the loop until its publisher is
#: congested, and the publisher's writer (the Redis reply, the next batch) would run only while the reader holds:
#: reading and writing took turns instead of overlapping (README "Benchmark").
YIELD_EVERY = 64


async def read(conn: ExchangeConnection, ws: WebSocket, parser: FrameParser) -> tuple[str, str]:
    """Read until the socket ends; returns ``(kind, text)`` of why (``REASONS``, or ``stopped``)."""
    try:
        async with asyncio.timeout(None) as cut:
            conn._cut = cut  # the ticker and the private session end the session by expiring it
            return await _frames(conn, ws, parser)
    except TimeoutError:
        return conn._cut_kind, conn._cut_reason or "watchdog"
    finally:
        conn._cut = None


async def _frames(conn: ExchangeConnection, ws: WebSocket, parser: FrameParser) -> tuple[str, str]:
    """The per-frame loop: everything it uses per event is bound to a local first."""
    publisher, live, cont, subs = conn.publisher, conn.liveness, conn.continuity, conn.subs
    receive, parse, publish = ws.receive, parser.parse, publisher.publish
    desired, last, conn_id = conn._desired, cont.last, conn.conn_id
    counts, states, mark = subs.counts, subs.live, subs.mark
    clock, now, lag = conn.clock, asyncio.get_running_loop().time, conn.read_lag
    text, binary = WSMsgType.TEXT, WSMsgType.BINARY
    burst = 0  # data frames since the loop last ran anything else
    while True:
        msg = await receive()
        kind = msg.type
        data = msg.data if kind is text else inflate(msg.data) if kind is binary else None
        if data is None:  # not a data frame: the end of the socket, or nothing for us (PONG)
            if kind in _ENDING:
                return _ended(conn, ws, msg)
            continue
        live.frame_at = t = now()
        live.after_hold = False
        lag.bytes_read += len(data)
        conn.messages_received += 1
        conn.last_message_at = ts_ms = int(clock() * 1000)
        try:
            parsed = parse(data, ts_ms)
        except Exception as exc:  # noqa: BLE001 - malformed frames are counted, never fatal
            conn.malformed_frames += 1
            conn._log_limited("malformed frame (%r): %.200r", exc, data)
            continue
        events, book = parsed.events, parsed.book
        if events or book:
            live.data_at = t
            conn._got_data = True
            if cont.direct and not (book or live.shedding):  # the fast path: straight to the publisher
                for topic, event in events:
                    if topic in desired:
                        publish(topic, event, conn_id)
                        last[topic] = event
                        conn.events += 1
                        if counts[PENDING] and states.get(topic) == PENDING:
                            mark(topic, ACTIVE)  # data proves the subscription (Gate acks w/o id)
            else:
                _deliver(conn, events, book)
            if publisher.congested:
                await _hold_or_shed(conn)
                burst = 0
            else:
                burst += 1
                if burst >= YIELD_EVERY:  # let the writer send the next batch while we parse on
                    burst = 0
                    await asyncio.sleep(0)
        if (parsed.acks or parsed.reconnect is not None or parsed.error is not None or parsed.unknown) and (
                ended := _control(conn, parsed)) is not None:  # fmt: skip
            return ended


def _deliver(conn: ExchangeConnection, events: _Events, book: list[BookUpdate]) -> None:
    """The slow path of a data frame: shedding, standby, catch-up, pending gaps (``Continuity.emit``), books."""
    cont, subs, desired = conn.continuity, conn.subs, conn._desired
    if conn.liveness.shedding:
        events = _shed_or_resume(conn, events)
    direct, publish = cont.direct, conn.publisher.publish
    for topic, event in events:
        if topic in desired:
            if direct:
                publish(topic, event, conn.conn_id)
                cont.last[topic] = event
                conn.events += 1
            elif cont.emit(topic, event, True):
                conn.events += 1
            if subs.counts[PENDING] and subs.live.get(topic) == PENDING:
                subs.mark(topic, ACTIVE)  # data proves the subscription (Gate acks w/o id)
    for update in book:  # the keeper ignores topics it does not keep
        conn.books.on_update(update)

def _ended(conn: ExchangeConnection, ws: WebSocket, msg: WSMessageNoDecodeText) -> tuple[str, str]:
    """Why a CLOSE/CLOSING/CLOSED/ERROR message ends the session."""
    after_hold = conn.liveness.after_hold
    if msg.type is not WSMsgType.ERROR:
        if conn._stopping:
            return "stopped", "stopped"
        why = BACKPRESSURE if after_hold else CLOSED_BY_PEER
        return why, f"closed by peer: code {ws.close_code} {msg.extra or ''}".rstrip()
    error = ws.exception() or msg.data
    # aiohttp's heartbeat: no PONG in time (stack-notes.md §9); anything else is the peer's doing
    dead = isinstance(error, aiohttp.ServerTimeoutError)
    why = BACKPRESSURE if after_hold else DEAD_PEER if dead else CLOSED_BY_PEER
    return why, f"socket error: {error!r}"


def _shed_or_resume(conn: ExchangeConnection, events: _Events) -> _Events:
    """While shedding: drop the frame's events if the publisher is still congested, else stop shedding."""
    if conn.publisher.congested:
        conn.continuity.shed(events)
        return []
    conn.continuity.stop_shedding()
    return events


async def _hold_or_shed(conn: ExchangeConnection) -> None:
    """Redis is behind: stop reading (TCP backpressure) for at most the hold budget, then shed."""
    live, cont = conn.liveness, conn.continuity
    if (not (live.shedding or cont.standby or cont.frozen or cont.suspended)
            and not await live.hold(conn.publisher, asyncio.get_running_loop().time())):
        live.start_shedding(conn.conn_id)


def _control(conn: ExchangeConnection, parsed: Parsed) -> tuple[str, str] | None:
    """Acks, an exchange's reconnect request (ends the session: returned), an error text, an unknown frame."""
    if parsed.acks:
        conn.subs.on_acks(parsed.acks)
    if parsed.reconnect is not None:
        conn.reconnect_requests += 1
        if conn.private is not None:
            conn.private.on_reconnect(parsed.reconnect)
        return EXCHANGE_REQUEST, f"exchange asked to reconnect: {parsed.reconnect}"
    if parsed.error is not None:
        conn.last_error = parsed.error
        conn._log_limited("exchange error: %s", parsed.error)
    elif parsed.unknown:
        conn.unknown_frames += 1
    return None


def inflate(data: bytes) -> bytes:
    """Raw-deflate BINARY frames (wbits -15, as BitMart's SDK, exchanges.md §1.5); else the bytes as they are."""
    try:
        return zlib.decompress(data, -15)
    except zlib.error:
        return data
