"""One SSE client's stream (``ClientStream``): gaps, catch-up from its cursor, ``ready``, then the hub's live
entries, each sent once; Redis outages ridden out by retrying from the cursor (see ``app.routes.sse``, which
serves it, for the wire format and the resume rules).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import anyio
import orjson
from redis.asyncio import Redis
from redis.backoff import EqualJitterBackoff

from app.observe import ControlMetrics
from app.sse_cursor import CursorFormat
from app.sse_entries import READ_ERRORS, UNREACHABLE, Entry, Rewind
from app.sse_hub import Batch, SSEHub, StreamId, Subscription, catch_up, format_stream_id
from app.sse_stream import KEEPALIVE, StreamState
from app.sse_wire import sse_frame
from control.events import GapEvent

logger = logging.getLogger("app.routes.sse")

RETRY_MS = 2000
#: Backoff of an open stream's Redis calls (registration, catch-up) while Redis is away: seconds, capped.
_OUTAGE_BACKOFF = EqualJitterBackoff(cap=1.0, base=0.05)


class ClientStream(StreamState):
    """The event stream of one client (see module docstring). Ends quietly on Redis errors.

    ``cursor``: the start position of every topic; ``gaps``: the gap events to send before anything else.
    ``stopping`` (set by ``app.sse_stream`` at shutdown) ends the stream with ``bye``. Steps: ``_register``
    with the hub, ``gaps``, ``_catch_up``, ``ready``, then ``_live``; a Redis outage makes registration and
    catch-up wait (``_outage_wait``). Live entries are sent as the bytes the hub built once per topic.
    """

    def __init__(
        self,
        hub: SSEHub,
        redis: Redis,
        topics: list[str],
        cursor: dict[str, StreamId],
        gaps: list[GapEvent],
        joined: Subscription | None = None,
        metrics: ControlMetrics | None = None,
    ) -> None:
        super().__init__()
        self.metrics = metrics
        self.hub = hub
        self.redis = redis
        self.topics = topics
        self.gaps = gaps
        #: Already registered at ``cursor`` by ``SSEHub.join``: no registration and no catch-up needed.
        self.joined = joined
        self.sub: Subscription | None = None
        self._wakeup = anyio.Event()  # wakes ``_outage_wait`` and a registration still in progress
        self.single = len(topics) == 1
        self.fmt = CursorFormat(topics)
        self.index = self.fmt.slot  # per topic: its index in ``last``/``ids``, the cursor's (sorted) order
        self.last = [cursor[t] for t in self.fmt.order]
        self.ids = [format_stream_id(s) for s in self.last]
        self.first = True

    def frame(self, event: str, data: bytes, retry_ms: int | None = None) -> bytes:
        """One event stamped with the current cursor; the first one carries ``retry: RETRY_MS``."""
        retry = RETRY_MS if self.first else retry_ms
        self.first = False
        return sse_frame(event, data, self.fmt.format(self.ids), retry)

    def accept(self, entries: Any, out: list[bytes]) -> None:
        """Append to ``out`` the frames of ``entries`` past the cursor, moving the cursor (never sends twice).

        A client of one topic sends ``entry.frame`` as the hub built it; of several, its own ``id:`` line (the
        cursor names every topic) before the shared ``entry.wire``."""
        index, last, ids = self.index, self.last, self.ids
        before = len(out)
        for entry in entries:
            i = index[entry.topic]
            if entry.sid > last[i]:
                last[i], ids[i] = entry.sid, entry.id
                if self.first or not entry.wire:
                    out.append(self.frame(entry.event, entry.data))
                elif self.single:
                    out.append(entry.frame)
                else:
                    out.append(b"id: " + self.fmt.format(ids).encode() + b"\n" + entry.wire)
        if self.metrics is not None and len(out) > before:
            self.metrics.sse_events.inc(len(out) - before)  # once per batch, not per event

    def rewind(self, notice: Entry, out: list[bytes]) -> None:
        """Apply a ``Rewind`` notice: when the cursor of ``notice.topic`` is past ``notice.sid``, move it back there
        and append the notice's ``gap`` event (its ``id:`` is the moved cursor)."""
        i = self.index[notice.topic]
        if self.last[i] > notice.sid:
            self.last[i], self.ids[i] = notice.sid, notice.id
            out.append(self.frame("gap", notice.data))

    def wake(self) -> None:
        """Wake the stream's wait (``app.sse_stream`` flags: ping, shutdown, client gone)."""
        if self.sub is not None:
            self.sub.wake()
        self._wakeup.set()

    def release(self) -> None:
        """Leave the hub (idempotent; covers a ``join``ed subscription whose body never ran)."""
        for sub in (self.joined, self.sub):
            if sub is not None:
                self.hub.unsubscribe(sub)

    def farewell(self, reason: str) -> bytes:
        """The ``bye`` event of a stream cut for ``reason`` (``slow_consumer``), with the cursor to resume from."""
        return self.frame("bye", orjson.dumps({"type": "bye", "reason": reason}), RETRY_MS)

    async def _outage_wait(self, failures: int, what: str, exc: BaseException) -> bool:
        """Sleep before retrying ``what`` after a Redis error; True when the server is shutting down instead."""
        if self.metrics is not None:
            self.metrics.redis_error("sse")
        if failures == 1:
            logger.warning("sse stream for %d topics: %s waits for redis (%s: %s)", len(self.topics), what,
                           type(exc).__name__, exc)  # fmt: skip
        self._wakeup = anyio.Event()
        with anyio.move_on_after(_OUTAGE_BACKOFF.compute(failures - 1)):
            await self._wakeup.wait()
        return self.stopping or self.gone

    async def _register(self) -> Subscription | None:
        """Subscribe to the hub; the response has started, so wait for Redis rather than end the stream.
        None when the server shuts down first."""
        failures = 0
        while True:
            try:
                return await self.hub.subscribe(self.topics)
            except UNREACHABLE as exc:
                failures += 1
                if await self._outage_wait(failures, "registration", exc):
                    return None

    async def _catch_up(self) -> AsyncIterator[bytes]:
        """Entries after the cursor up to the stream's end; while Redis is away, retried from the cursor."""
        failures = 0
        while True:
            out: list[bytes] = []
            try:
                async for entry in catch_up(self.redis, dict(zip(self.fmt.order, self.last))):
                    self.accept((entry,), out)
                    if len(out) >= 500:
                        yield b"".join(out)
                        out.clear()
            except UNREACHABLE as exc:
                failures += 1
                if out:
                    yield b"".join(out)
                if await self._outage_wait(failures, "catch-up", exc):
                    return
                continue
            if out:
                yield b"".join(out)
            return

    async def _live(self, sub: Subscription) -> AsyncIterator[bytes]:
        """Entries as the hub delivers them, keep-alive comments when due, until shutdown (then ``bye``)."""
        while True:
            if self.gone:
                return
            if self.stopping:
                yield self.frame("bye", b'{"type":"bye","reason":"shutdown"}', RETRY_MS)
                return
            if self.ping_due:
                self.ping_due = False
                yield KEEPALIVE
                continue
            if sub.overflowed:  # queue was cleared: the stream still has everything after our cursor
                sub.overflowed = False
                async for chunk in self._catch_up():
                    yield chunk
                continue
            batches = sub.take_batches()
            if batches:
                out: list[bytes] = []
                for batch in batches:
                    if isinstance(batch, Rewind):  # the hub's notice of entries lost on a failed-over master
                        self.rewind(batch[0], out)
                        continue
                    # one topic, all new (a batch is in id order): the bytes shared by all of the topic's clients
                    if self.single and not self.first and isinstance(batch, Batch) and batch[0].sid > self.last[0]:
                        out.append(batch.frames)
                        self.last[0], self.ids[0] = batch[-1].sid, batch[-1].id
                    else:
                        self.accept(batch, out)
                if out:
                    yield b"".join(out)
                continue
            await sub.wait()

    async def body(self) -> AsyncGenerator[bytes, None]:
        """The stream's bytes: ``gaps``, catch-up, ready, live (``app.sse_stream.SSEResponse`` sends them)."""
        sub = self.sub = self.joined or await self._register()
        if sub is None:
            return
        if self.metrics is not None:
            self.metrics.sse_clients.inc()
        try:
            for gap in self.gaps:
                yield self.frame("gap", orjson.dumps(gap))
            if self.joined is None:
                async for chunk in self._catch_up():
                    yield chunk
            yield self.frame("ready", orjson.dumps({"type": "ready", "topics": self.topics}))
            async for chunk in self._live(sub):
                yield chunk
        except READ_ERRORS as exc:
            logger.warning("sse stream for %d topics ended: redis %s: %s", len(self.topics), type(exc).__name__, exc)
        finally:
            if self.metrics is not None:
                self.metrics.sse_clients.dec()
            self.hub.unsubscribe(sub)
