"""SSE fan-out: ONE Redis reader per process, many subscriber queues.

Design:

* ``SSEHub`` runs one reader task doing ``XREAD BLOCK block_ms COUNT count`` over the streams of every
  topic that currently has subscribers, on a dedicated bytes connection (``max_connections=1``, so the
  connection, and its ``CLIENT ID``, is fixed). Each entry is turned into an ``Entry`` once and appended
  to the bounded queue of every subscriber of its topic: N clients on one topic cost one Redis read.
* Each entry is serialized once, when read (``Entry.wire``/``Entry.frame``, ``app.sse_wire``): every client of
  the topic sends those same bytes. A dispatch of one topic's batch is one queue ``extend`` per subscriber.
* Bursts: a blocked XREAD is answered when the first entry of a burst lands, with only the stream that woke
  it; one non-blocking XREAD right after (``_top_up``) takes the rest, so a burst reaches a client as one write.
* A client of topics the hub already reads starts at the hub's position (``join``): no Redis call at all,
  which keeps a connect storm of 1,000 clients cheap; the hub's queue delivers everything after it.
* Per topic the hub keeps a *position* (last id it read). A topic new to the hub starts at the stream's
  last id at registration time (``XREVRANGE + - COUNT 1``, ``0-0`` when empty), never ``$``, so nothing
  added between registration and the next XREAD is skipped.
* Topic set changes: a new topic bumps a generation number and the hub sends ``CLIENT UNBLOCK <reader id>``
  from a second connection, so the blocked XREAD returns at once and restarts with the new set; it is
  re-sent every 50 ms until the reader has restarted (UNBLOCK can overtake the XREAD). The ``block_ms``
  timeout (1 s) is the backstop. Removed topics are dropped lazily, on the next restart.
* Joining without loss or duplicates (done by the SSE route): ``subscribe()`` first (the hub's position for
  the topic is fixed from then on), then ``catch_up()`` from the client's cursor with exclusive XRANGE up
  to ``+``, then drain the queue skipping ids <= the last one sent (ids compared as ``(ms, seq)`` tuples).
* A subscriber whose queue would exceed ``queue_max`` entries has its queue cleared and ``overflowed`` set;
  it then catches up again from its own cursor (the stream holds everything). Queues are never unbounded.
* Redis outages: a failed XREAD (connection refused or lost, Redis loading its data after a restart) is
  retried with capped, jittered backoff (``RECONNECT_BASE_S`` doubling to ``RECONNECT_CAP_S``) on a fresh
  connection, from the same per-topic positions, so entries added meanwhile are read once Redis answers:
  nothing is lost and subscribers simply wait (their SSE streams keep sending keep-alive comments).
  ``stats()`` shows ``reader_up`` and counts ``read_errors`` and ``reconnects``.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections import deque
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.backoff import EqualJitterBackoff
from redis.exceptions import RedisError

from app.sse_entries import (
    ZERO_ID,
    Batch,
    Entry,
    StreamId,
    catch_up,
    event_type,
    format_stream_id,
    parse_stream_id,
    to_entries,
)
from control import keys

__all__ = [
    "RECONNECT_BASE_S", "RECONNECT_CAP_S", "ZERO_ID", "Batch", "Entry", "SSEHub", "StreamId", "Subscription", "catch_up",
    "event_type", "format_stream_id", "parse_stream_id", "to_entries",
]  # fmt: skip

logger = logging.getLogger(__name__)

#: Reader reconnect delays while Redis is unreachable: from RECONNECT_BASE_S doubling, capped, half jittered.
RECONNECT_BASE_S = 0.05
RECONNECT_CAP_S = 1.0


class Subscription:
    """One SSE client's view of the hub: a bounded queue of ``Entry`` for its ``topics``.

    The queue holds the hub's batches as they came (a ``Batch`` is shared by every subscriber of its topic and
    must not be changed); ``queue_max`` bounds the number of entries in it."""

    def __init__(self, topics: Sequence[str], queue_max: int) -> None:
        self.topics = tuple(topics)
        self.queue_max = queue_max
        self.overflowed = False
        self._queue: deque[list[Entry]] = deque()
        self._size = 0
        self._ready = asyncio.Event()

    def _overflow(self) -> bool:
        self._queue.clear()
        self._size = 0
        self.overflowed = True
        self._ready.set()
        return False

    def push(self, entry: Entry) -> bool:
        """Queue ``entry``; on overflow clear the queue, set ``overflowed`` and return False."""
        if self._size >= self.queue_max:
            return self._overflow()
        self._queue.append([entry])
        self._size += 1
        self._ready.set()
        return True

    def push_many(self, entries: list[Entry]) -> bool:
        """Queue ``entries`` (one topic's batch, oldest first; kept as given, not copied); on overflow as ``push``."""
        if self._size + len(entries) > self.queue_max:
            return self._overflow()
        self._queue.append(entries)
        self._size += len(entries)
        self._ready.set()
        return True

    def take(self) -> list[Entry]:
        """Everything queued so far (oldest first); empties the queue."""
        return [entry for batch in self.take_batches() for entry in batch]

    def take_batches(self) -> list[list[Entry]]:
        """Everything queued so far as the batches it came in (oldest first; do not modify them); empties the queue."""
        self._ready.clear()
        batches = list(self._queue)
        self._queue.clear()
        self._size = 0
        return batches

    def wake(self) -> None:
        """Make a pending ``wait()`` return (used for shutdown)."""
        self._ready.set()

    async def wait(self) -> None:
        """Until something is queued, the queue overflowed, or ``wake()`` was called."""
        await self._ready.wait()


class SSEHub:
    """One XREAD loop per process feeding every SSE subscriber (see module docstring).

    ``reader`` must be a dedicated bytes client with a single connection; ``helper`` a bytes client used
    for registration lookups and ``CLIENT UNBLOCK``. Times: ``block_ms`` in milliseconds.
    """

    def __init__(
        self, reader: Redis, helper: Redis, *, block_ms: int = 1000, count: int = 500, queue_max: int = 10_000
    ) -> None:
        self.reader = reader
        self.helper = helper
        self.block_ms = block_ms
        self.count = count
        self.queue_max = queue_max
        self.counters = {
            "reads": 0, "entries_read": 0, "delivered": 0, "overflows": 0, "unblocks": 0, "read_errors": 0,
            "reconnects": 0,
        }  # fmt: skip
        #: False from a failed XREAD until the next one succeeds (Redis away).
        self.reader_up = True
        self._subs: dict[str, set[Subscription]] = {}
        self._positions: dict[str, StreamId] = {}
        self._generation = 0
        self._reading_generation: int | None = None
        self._client_id: int | None = None
        self._topics_changed = asyncio.Event()
        self._read_returned = asyncio.Event()
        self._subscribers_changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._unblock_task: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the reader task (call inside the running loop, e.g. from lifespan)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="sse-hub-reader")

    async def close(self) -> None:
        """Stop the reader and close the dedicated reader client."""
        for task in (self._task, self._unblock_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._task = self._unblock_task = None
        await self.reader.aclose()

    # -- subscribers -------------------------------------------------------------------------------

    @property
    def subscriber_count(self) -> int:
        """Number of live subscriptions."""
        return len({id(s) for subs in self._subs.values() for s in subs})

    def stats(self) -> dict[str, Any]:
        """Counters: ``reads`` (XREAD calls), ``entries_read`` (entries read by the hub, once each),
        ``delivered`` (entries queued to subscribers), ``overflows``, ``unblocks``, ``read_errors`` (failed XREADs),
        ``reconnects`` (recoveries after failures), ``subscribers``, ``topics``, ``readers`` (always 1 while
        running), ``reader_up`` (False while Redis is away)."""
        running = self._task is not None and not self._task.done()
        return {
            **self.counters,
            "subscribers": self.subscriber_count,
            "topics": len(self._subs),
            "readers": 1 if running else 0,
            "reader_up": self.reader_up,
        }

    async def subscribe(self, topics: Sequence[str]) -> Subscription:
        """Register a subscriber for ``topics`` and fix the hub's position for topics new to it.

        Raises redis errors (the subscriber is then not registered).
        """
        sub = Subscription(topics, self.queue_max)
        for topic in sub.topics:
            self._subs.setdefault(topic, set()).add(sub)
        self._notify_subscribers()
        new = [t for t in sub.topics if t not in self._positions]
        if not new:
            return sub
        try:
            async with self.helper.pipeline(transaction=False) as pipe:
                for topic in new:
                    pipe.xrevrange(keys.event_stream(topic), max="+", min="-", count=1)
                results = await pipe.execute()
        except BaseException:
            self.unsubscribe(sub)
            raise
        for topic, raw in zip(new, results):
            self._positions.setdefault(topic, parse_stream_id(raw[0][0]) if raw else ZERO_ID)
        self._generation += 1
        self._topics_changed.set()
        self._request_unblock()
        return sub

    def join(self, topics: Sequence[str]) -> tuple[Subscription, dict[str, StreamId]] | None:
        """Register a subscriber that starts "now" without any Redis call, when the hub already reads every topic.

        Returns the subscription and, per topic, the hub's position (the last id it has read and queued):
        every entry after it reaches the subscription's queue, so no catch-up is needed. None when a topic is
        new to the hub (use ``subscribe`` and read the stream's end), and while the reader is down (Redis away:
        the request then takes the Redis path and answers 503, as every new stream does during an outage).
        Synchronous: registration and positions are taken together, with no dispatch in between. The connect
        storm of 1,000 clients costs no Redis call.
        """
        positions = self._positions
        if not self.reader_up or any(t not in positions for t in topics):
            return None
        sub = Subscription(topics, self.queue_max)
        for topic in sub.topics:
            self._subs.setdefault(topic, set()).add(sub)
        self._notify_subscribers()
        return sub, {t: positions[t] for t in sub.topics}

    def unsubscribe(self, sub: Subscription) -> None:
        """Forget ``sub`` (synchronous: safe in ``finally`` during cancellation). Idempotent."""
        for topic in sub.topics:
            subs = self._subs.get(topic)
            if subs is None:
                continue
            subs.discard(sub)
            if not subs:
                del self._subs[topic]
                self._positions.pop(topic, None)
        self._notify_subscribers()

    async def wait_for_subscribers(self, count: int, timeout_s: float) -> None:
        """Wait until exactly ``count`` subscribers are registered; raises TimeoutError after ``timeout_s``."""
        async with asyncio.timeout(timeout_s):
            while self.subscriber_count != count:
                await self._subscribers_changed.wait()

    def _notify_subscribers(self) -> None:
        event, self._subscribers_changed = self._subscribers_changed, asyncio.Event()
        event.set()

    # -- reader ------------------------------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        backoff = EqualJitterBackoff(cap=RECONNECT_CAP_S, base=RECONNECT_BASE_S)
        while True:
            self._topics_changed.clear()
            if not self._positions:
                await self._topics_changed.wait()
                continue
            generation = self._generation
            streams = {keys.event_stream(t): format_stream_id(p) for t, p in self._positions.items()}
            try:
                if self._client_id is None:
                    self._client_id = int(await self.reader.client_id())
                self._read_returned.clear()
                self._reading_generation = generation
                self.counters["reads"] += 1
                reply = await self.reader.xread(streams, count=self.count, block=self.block_ms)  # type: ignore[arg-type]
                if reply:
                    reply = await self._top_up(streams, reply)
            except (RedisError, OSError) as exc:
                # The failed connection is dropped by redis-py; the next XREAD opens a fresh one, whose
                # CLIENT ID differs, and reads from the same positions: nothing added meanwhile is skipped.
                self._client_id = None
                self.reader_up = False
                self.counters["read_errors"] += 1
                failures += 1
                log = logger.warning if failures == 1 else logger.debug
                log("sse hub: XREAD failed (%d in a row): %s: %s", failures, type(exc).__name__, exc)
                await asyncio.sleep(backoff.compute(failures - 1))
                continue
            finally:
                self._reading_generation = None
                self._read_returned.set()
            if failures:
                logger.info("sse hub: XREAD recovered after %d failures", failures)
                self.counters["reconnects"] += 1
                self.reader_up = True
                failures = 0
            if reply:
                self._dispatch(reply)

    async def _top_up(self, streams: dict[str, str], reply: list[Any]) -> list[Any]:
        """``reply`` plus what a non-blocking XREAD from after it returns, merged per stream.

        A blocked XREAD is answered as soon as the first entry of a burst lands, and only with the stream that
        woke it; the rest of the burst (and other topics' entries) is read here, so one burst reaches each
        client as one write instead of two, and topics stay in id order within the dispatch."""
        merged: dict[Any, list[Any]] = {}
        after = dict(streams)
        total = 0
        for key, raw in reply:
            merged[key] = list(raw)
            total += len(raw)
            if raw:
                after[key.decode() if isinstance(key, bytes) else key] = raw[-1][0]
        if total >= self.count:
            return reply
        self.counters["reads"] += 1
        more = await self.reader.xread(after, count=self.count)  # type: ignore[arg-type]
        for key, raw in more or ():
            merged.setdefault(key, []).extend(raw)
        return list(merged.items())

    def _dispatch(self, reply: list[Any]) -> None:
        batches = []
        for key, raw in reply:
            if not raw:
                continue
            self.counters["entries_read"] += len(raw)
            topic = keys.topic_of_stream(key.decode() if isinstance(key, bytes) else key)
            position = self._positions.get(topic)
            if position is None:  # last subscriber left while the read was in flight
                continue
            last = parse_stream_id(raw[-1][0])
            if last > position:
                self._positions[topic] = last
            batches.append(Batch(to_entries(topic, raw)))
        delivered = overflows = 0
        if len(batches) == 1:  # the common case: one busy topic; one queue extend per subscriber
            batch = batches[0]
            for sub in self._subs.get(batch[0].topic, ()) if batch else ():
                if sub.push_many(batch):
                    delivered += len(batch)
                else:
                    overflows += 1
            self.counters["delivered"] += delivered
            self.counters["overflows"] += overflows
            return
        for entry in heapq.merge(*batches, key=lambda e: e.sid):
            for sub in self._subs.get(entry.topic, ()):
                if sub.push(entry):
                    delivered += 1
                else:
                    overflows += 1
        self.counters["delivered"] += delivered
        self.counters["overflows"] += overflows

    def _request_unblock(self) -> None:
        if self._unblock_task is None or self._unblock_task.done():
            self._unblock_task = asyncio.create_task(self._unblock(), name="sse-hub-unblock")

    async def _unblock(self) -> None:
        """Interrupt an XREAD blocked on an older topic set (bounded retries; block_ms is the backstop)."""
        for _ in range(max(1, self.block_ms // 50)):
            reading, client_id = self._reading_generation, self._client_id
            if reading is None or reading >= self._generation or client_id is None:
                return
            try:
                await self.helper.client_unblock(client_id)
            except (RedisError, OSError) as exc:
                logger.debug("sse hub: CLIENT UNBLOCK failed: %s", exc)
                return
            self.counters["unblocks"] += 1
            try:
                async with asyncio.timeout(0.05):
                    await self._read_returned.wait()
            except TimeoutError:
                continue
