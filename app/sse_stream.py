"""A lean ASGI text/event-stream response, and one per-process task that serves all of them.

Why not sse-starlette's ``EventSourceResponse`` here: a profile of 1,000 clients on one busy topic (``py-spy``
against the running server, README "SSE fan-out") showed every response running four tasks, an anyio cancel
scope and a debug log call per chunk, and a per-client, per-event serialization; what the server needs per
client is one coroutine that sends bytes built once per topic (``app.sse_wire``). The SSE semantics stay:
``text/event-stream``, ``Cache-Control: no-store``, ``X-Accel-Buffering: no``, keep-alive comments, the
stream's ``bye`` at shutdown.

``StreamTicker`` (one per process, started by the lifespan) does what sse-starlette did per client:

* keep-alive: a stream that sent nothing for ``ping_s`` is marked ``ping_due`` and woken (checked every
  ``ping_s / 4``; streams that carry events need no comment, so 10,000 busy clients cost no ping writes);
* shutdown: it watches ``AppStatus.should_exit`` (set by ``app.serve``'s shutdown trigger, as before) and
  tells every stream to ``stop``: each sends its ``bye`` and ends within ``grace_s``, then is cancelled;
* slow clients: a stream whose ``send`` has not returned for ``send_timeout_s`` (the client stopped reading;
  the server's write buffer is full) is cut: its task is cancelled, a final ``bye`` with reason
  ``slow_consumer`` is written if the socket takes it within ``FAREWELL_S``, and the connection closes. The
  client resumes with its last ``id`` (``Last-Event-ID``: the stream holds what it missed). Other clients are
  never waited for: each stream sends from its own task, and the hub only appends to bounded queues.

A stream is any ``StreamState``: it produces ``body()`` (bytes chunks) and ``farewell(reason)`` (the ``bye``
frame), and reads the flags this module sets (``ping_due``, ``stopping``, ``gone``) after ``wake()``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from typing import Any

from sse_starlette.sse import AppStatus
from starlette.types import Message, Receive, Scope, Send

logger = logging.getLogger(__name__)

#: Why a stream was cut (the ``reason`` of its ``bye`` event).
SLOW_CONSUMER = "slow_consumer"
SHUTDOWN = "shutdown"
#: Seconds a cut stream's farewell may take before the connection is closed anyway.
FAREWELL_S = 0.05
HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"connection", b"keep-alive"),
    (b"x-accel-buffering", b"no"),  # nginx: never buffer the stream
]
KEEPALIVE = b": ping\n\n"


class StreamState:
    """Flags of one open stream; subclasses produce the bytes (``body``) and the final ``bye`` (``farewell``)."""

    def __init__(self) -> None:
        self.ping_due = False
        self.stopping = False
        self.gone = False  # the client disconnected

    def wake(self) -> None:
        """Make the stream's body look at its flags now (it waits on its subscription)."""
        raise NotImplementedError

    def body(self) -> AsyncGenerator[bytes, None]:
        """The stream's chunks, until ``stopping`` (then its ``bye``) or ``gone``."""
        raise NotImplementedError

    def farewell(self, reason: str) -> bytes:
        """The ``bye`` frame sent when the stream is cut for ``reason``."""
        raise NotImplementedError

    def release(self) -> None:
        """Called once when the response ends, however it ends (also when ``body`` never started)."""


class StreamTicker:
    """The per-process task behind every ``SSEResponse`` (module docstring). Times in seconds."""

    def __init__(self, *, ping_s: float, send_timeout_s: float, grace_s: float, tick_s: float = 0.1) -> None:
        self.ping_s, self.send_timeout_s, self.grace_s, self.tick_s = ping_s, send_timeout_s, grace_s, tick_s
        self.streams: set[SSEResponse] = set()
        self.counters = {"opened": 0, "cut_slow": 0, "cut_shutdown": 0}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the task (inside the running loop, e.g. from lifespan)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="sse-ticker")

    async def close(self) -> None:
        """Stop the task."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def stats(self) -> dict[str, int]:
        """``open`` streams, ``opened`` since start, ``cut_slow`` (slow clients cut), ``cut_shutdown``."""
        return {"open": len(self.streams), **self.counters}

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_ping = next_check = loop.time()
        stop_at: float | None = None
        while True:
            await asyncio.sleep(self.tick_s)
            now = loop.time()
            if AppStatus.should_exit:
                stop_at = now + self.grace_s if stop_at is None else stop_at
                for stream in list(self.streams):
                    if not stream.state.stopping:
                        stream.state.stopping = True
                        stream.state.wake()
                    elif now >= stop_at:
                        stream.cut(SHUTDOWN)
                continue
            stop_at = None
            if now >= next_ping:  # keep-alive for streams that sent nothing for ping_s (busy ones need none)
                next_ping = now + self.ping_s / 4
                for stream in self.streams:
                    if now - stream.sent_at >= self.ping_s and not stream.state.ping_due:
                        stream.state.ping_due = True
                        stream.state.wake()
            if now >= next_check:  # slow clients: a send blocked for longer than send_timeout_s
                next_check = now + min(1.0, self.send_timeout_s / 4)
                for stream in [
                    s for s in self.streams if s.sending_since and now - s.sending_since > self.send_timeout_s
                ]:
                    stream.cut(SLOW_CONSUMER)


class SSEResponse:
    """Pure ASGI response streaming ``state.body()`` (one coroutine per client plus a disconnect listener)."""

    def __init__(self, state: StreamState, ticker: StreamTicker) -> None:
        self.state = state
        self.ticker = ticker
        self.sending_since = 0.0  # loop time when the current send began; 0 when not sending
        self.sent_at = asyncio.get_running_loop().time()  # loop time of the last send (keep-alive when idle)
        self.cut_reason: str | None = None
        self._task: asyncio.Task[Any] | None = None

    def cut(self, reason: str) -> None:
        """End the stream from outside (slow client, shutdown grace over): cancels its task once."""
        if self.cut_reason is None and self._task is not None:
            self.cut_reason = reason
            self.ticker.counters["cut_slow" if reason == SLOW_CONSUMER else "cut_shutdown"] += 1
            logger.info("sse stream cut: %s", reason)
            self._task.cancel()

    async def _listen(self, receive: Receive) -> None:
        while True:
            message: Message = await receive()
            if message["type"] == "http.disconnect":
                self.state.gone = True
                self.state.wake()
                return

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        body = self.state.body()
        listener = asyncio.create_task(self._listen(receive))
        self.ticker.streams.add(self)
        self.ticker.counters["opened"] += 1
        try:
            await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
            async for chunk in body:
                self.sending_since = loop.time()
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                self.sent_at, self.sending_since = self.sending_since, 0.0
            if not self.state.gone:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self.cut_reason is None or task is None or task.cancelling() > 1:
                raise  # cancelled by the server, not cut by us
            task.uncancel()
            in_send = self.sending_since != 0.0  # the chunk was written: the body's cursor is what was sent
            await body.aclose()
            if self.cut_reason == SHUTDOWN or not in_send:
                return  # shutdown: the body had its chance to send ``bye``; else the client resumes from its last id
            try:
                async with asyncio.timeout(FAREWELL_S):
                    await send({"type": "http.response.body", "body": self.state.farewell(self.cut_reason),
                                "more_body": False})  # fmt: skip
            except (TimeoutError, OSError):
                pass  # the socket does not take it: returning closes the connection
        finally:
            self.ticker.streams.discard(self)
            listener.cancel()
            await body.aclose()
            self.state.release()
