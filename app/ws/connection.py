"""One ``/ws`` client: its bounded send queue, the sender, the receiver, heartbeat and idle timers, and the cut.

Tasks per connection: the receiver (the route's own task: it reads client frames one at a time and hands them
to ``app.ws.session.Session``), one sender, and one forwarder per subscribe message (``app.ws.feed``).

* Send queue: control messages (acks, errors, pings) and events in order. Events are limited to
  ``WS_SEND_QUEUE_MAX``; an event that would go past it means the client does not keep up (its socket stopped
  taking data, so the sender waits in Hypercorn's ``drain``): the queue is dropped, the client gets
  ``CONNECTION_LOST`` naming the reason and, per topic, the ``cursor`` of the last event handed to its socket,
  and the socket is closed with 1013 (try again later). It resumes with ``since``; others never wait for it.
* Batching: the sender takes every event queued at that moment (up to ``BATCH_MAX`` / ``BATCH_MAX_CHARS``) and, unless the client
  asked for ``?batch=0``, sends them as one frame holding a JSON array of event messages. A frame is therefore
  a JSON object (one message) or an array of event messages; under load this is what lets one process serve
  1,000 clients (a Python WebSocket frame costs tens of microseconds, per client).
* Heartbeat: every ``WS_HEARTBEAT_S`` the server sends ``{"type":"ping","timestamp"}``; any client frame
  (``{"type":"pong"}`` or anything else) answers it. A client that let two pings pass without a frame is
  closed at the third tick (``CONNECTION_LOST``, close code 1001).
* Shutdown: ``CONNECTION_LOST`` (reason ``shutdown``) and close code 1001 (``app.ws.access.Registry``).
* Idle: no subscription for ``WS_IDLE_TIMEOUT_S`` (from the connect or the last unsubscribe) closes the
  connection (``CONNECTION_LOST``, close code 1000).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from app.errors import now_ms
from app.ws import protocol as p
from control.settings import Settings

logger = logging.getLogger(__name__)

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_TRY_LATER = 1013
#: Most event messages in one batched frame, and the size after which no further one is added (characters):
#: a frame stays well under common clients' 1-4 MiB message limits unless one event alone is larger.
BATCH_MAX = 500
BATCH_MAX_CHARS = 256 * 1024
#: Seconds a cut connection gets to flush its error and close frame before its socket is dropped.
CLOSE_GRACE_S = 2.0
#: Largest client frame read (a subscribe of 200 topics fits easily).
MAX_CLIENT_FRAME = 64 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-connection limits (seconds as ``_s``); ``batch``: events may share a frame (``?batch=0`` turns it off)."""

    subscriptions_max: int
    heartbeat_s: float
    idle_timeout_s: float
    send_queue_max: int
    batch: bool = True

    @classmethod
    def from_settings(cls, settings: Settings, batch: bool = True) -> Limits:
        """From WS_SUBSCRIPTIONS_MAX, WS_HEARTBEAT_S, WS_IDLE_TIMEOUT_S, WS_SEND_QUEUE_MAX."""
        return cls(settings.ws_subscriptions_max, settings.ws_heartbeat_s, settings.ws_idle_timeout_s,
                   settings.ws_send_queue_max, batch)  # fmt: skip


class Framed:
    """``"[" + chunk + "]"`` per joined chunk text, built once for every client that sends that chunk alone
    (keyed by the text object's identity; the text is kept alive while cached). FIFO-bounded to ``size``."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._frames: dict[int, tuple[str, str]] = {}

    def framed(self, chunk: str) -> str:
        """The JSON array frame of ``chunk`` (event messages joined with ",")."""
        cached = self._frames.get(id(chunk))
        if cached is not None and cached[0] is chunk:
            return cached[1]
        if len(self._frames) >= self.size:
            del self._frames[next(iter(self._frames))]
        frame = "[" + chunk + "]"
        self._frames[id(chunk)] = (chunk, frame)
        return frame


FRAMES = Framed()


class Connection:
    """The transport side of one accepted client (module docstring). ``on_text`` handles each client frame."""

    def __init__(self, ws: WebSocket, limits: Limits, conn_id: str) -> None:
        self.ws = ws
        self.limits = limits
        self.id = conn_id
        self.on_text: Callable[[str], Awaitable[None]] | None = None
        #: Called with the reason when the server closes the connection (``Registry.note_close``).
        self.on_close: Callable[[str], None] | None = None
        self.closed = False
        #: (text, topic, cursor, events) of queued messages: topic None for control messages; ``events`` > 1 for a
        #: chunk of one topic's events already joined with "," (``app.ws.feed.Chunks``), ``cursor`` its last id.
        self._out: deque[tuple[str, str | None, str | None, int]] = deque()
        self._events_queued = 0
        self._has_out = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._finished = asyncio.Event()
        self._closing: tuple[int, str] | None = None
        self._missed = 0
        self._sent: dict[str, str] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self.stats = {"events": 0, "frames": 0}

    # -- queue ----------------------------------------------------------------------------------------------

    def send_control(self, text: str) -> None:
        """Queue a control message (never refused while open)."""
        if self._closing is None:
            self._out.append((text, None, None, 0))
            self._has_out.set()

    @property
    def closing(self) -> bool:
        """True once the connection is being closed (nothing more is queued)."""
        return self._closing is not None

    def send_events(self, items: list[tuple[str, str, str, int]], count: int) -> bool:
        """Queue event items ``(text, topic, cursor, events)`` holding ``count`` events in all; False when the
        connection is closing, or is cut now because it is too far behind (more than ``send_queue_max`` events
        would wait)."""
        if self._closing is not None:
            return False
        queued = self._events_queued + count
        if queued > self.limits.send_queue_max:
            self.cut(f"slow client: more than {self.limits.send_queue_max} events waiting to be sent; resume with since",
                     CLOSE_TRY_LATER, "slow client")  # fmt: skip
            return False
        self._out.extend(items)
        self._events_queued = queued
        if queued >= self.limits.send_queue_max // 2:
            self._room.clear()
        self._has_out.set()
        return True

    async def room(self) -> None:
        """Until the event queue is below half its limit (catch-up waits here instead of being cut)."""
        await self._room.wait()

    @property
    def queued(self) -> int:
        """Events waiting to be sent."""
        return self._events_queued

    # -- closing --------------------------------------------------------------------------------------------

    def cut(self, message: str, close_code: int, reason: str, code: str = p.CONNECTION_LOST) -> None:
        """Drop what is queued, send the error ``code`` with the last cursors sent, close with ``close_code``."""
        if self._closing is not None:
            return
        cursors = dict(self._sent)
        self._out.clear()
        self._events_queued = 0
        self._room.set()
        extra = {"reason": reason, "cursors": cursors} if code == p.CONNECTION_LOST else {}
        self._out.append((p.error(code, message, now_ms(), **extra), None, None, 0))
        self._closing = (close_code, reason[:120])
        self._has_out.set()
        # if the socket does not take the error and close frame in time, stop anyway (the server drops it)
        self._timers["grace"] = asyncio.get_running_loop().call_later(CLOSE_GRACE_S, self._finished.set)
        logger.info("ws %s: closing (%d): %s", self.id, close_code, message)
        if self.on_close is not None:
            self.on_close(reason)

    def shutdown(self) -> None:
        """The server stops: ``CONNECTION_LOST`` (reason ``shutdown``, with the cursors), close code 1001."""
        self.cut("server shutting down; reconnect and resume with since", CLOSE_GOING_AWAY, "shutdown")

    # -- timers ---------------------------------------------------------------------------------------------

    def set_idle(self, idle: bool) -> None:
        """Start (``idle``: no subscription left) or stop the idle timer."""
        handle = self._timers.pop("idle", None)
        if handle is not None:
            handle.cancel()
        if idle and self._closing is None:
            limit = self.limits.idle_timeout_s
            self._timers["idle"] = asyncio.get_running_loop().call_later(
                limit, self.cut, f"idle: no subscription for {limit:g} s", CLOSE_NORMAL, "idle"
            )

    def _heartbeat(self) -> None:
        if self._closing is not None:
            return
        if self._missed >= 2:
            self.cut("no answer to 2 pings", CLOSE_GOING_AWAY, "heartbeat missed")
            return
        self._missed += 1
        self.send_control(p.dumps({"type": "ping", "timestamp": now_ms()}))
        self._timers["heartbeat"] = asyncio.get_running_loop().call_later(self.limits.heartbeat_s, self._heartbeat)

    # -- tasks ----------------------------------------------------------------------------------------------

    def spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        """Run ``coro`` for the life of the connection (cancelled when it ends)."""
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def run(self) -> None:
        """Serve until the client leaves or the connection is closed; every task is cancelled on the way out."""
        loop = asyncio.get_running_loop()
        self._timers["heartbeat"] = loop.call_later(self.limits.heartbeat_s, self._heartbeat)
        self.set_idle(True)
        self.spawn(self._send_loop(), f"ws-send-{self.id}")
        self.spawn(self._receive_loop(), f"ws-recv-{self.id}")
        try:
            await self._finished.wait()
        finally:
            self.closed = True
            for handle in self._timers.values():
                handle.cancel()
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _receive_loop(self) -> None:
        try:
            while True:
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    return
                self._missed = 0
                text = message.get("text")
                if text is None and message.get("bytes") is not None:
                    text = message["bytes"].decode("utf-8", "replace")
                if text is None or self._closing is not None:
                    continue
                if len(text) > MAX_CLIENT_FRAME:
                    self.send_control(p.error(p.INVALID_SUBSCRIPTION, f"message over {MAX_CLIENT_FRAME} bytes",
                                              now_ms()))  # fmt: skip
                    continue
                if self.on_text is not None:
                    await self.on_text(text)
        except (WebSocketDisconnect, RuntimeError, OSError):
            return
        finally:
            self._finished.set()

    async def _send_loop(self) -> None:
        out, send = self._out, self.ws.send
        try:
            while True:
                if not out:
                    if self._closing is not None:
                        code, reason = self._closing
                        await send({"type": "websocket.close", "code": code, "reason": reason})
                        return
                    self._has_out.clear()
                    await self._has_out.wait()
                    continue
                text, topic, cursor, events = out.popleft()
                if topic is None:
                    await send({"type": "websocket.send", "text": text})
                    continue
                parts = [text]
                size = len(text)
                self._sent[topic] = cursor  # type: ignore[assignment]
                if self.limits.batch:
                    while out and out[0][1] is not None and events < BATCH_MAX and size < BATCH_MAX_CHARS:
                        text, topic, cursor, more = out.popleft()
                        parts.append(text)
                        size += len(text)
                        events += more
                        self._sent[topic] = cursor  # type: ignore[index,assignment]
                self._events_queued = max(0, self._events_queued - events)
                if self._events_queued < self.limits.send_queue_max // 2:
                    self._room.set()
                if events == 1:
                    frame = parts[0]
                elif len(parts) == 1:
                    frame = FRAMES.framed(parts[0])  # a chunk every client of the topic got: bracketed once
                else:
                    frame = "[" + ",".join(parts) + "]"
                await send({"type": "websocket.send", "text": frame})
                self.stats["events"] += events
                self.stats["frames"] += 1
        except (WebSocketDisconnect, RuntimeError, OSError):
            return
        finally:
            self._finished.set()
