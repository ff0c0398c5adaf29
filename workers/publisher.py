"""The one writer of events to Redis: a bounded queue drained in batches into one pipeline each.

Connections call ``publish()`` (synchronous, never blocks, never awaits); one writer task turns
whatever has accumulated into a single non-transactional pipeline (style.md habit 7)::

    per event, in receive order:  XADD fp:stream:{topic} MAXLEN ~ N * d <json> ; PUBLISH fp:pub:{topic} <json>
    per topic in the batch:       SET fp:last:{topic} <last json>
    once per batch:               HSET fp:topic:last_event {topic: ts_received ms ...}
                                  HSET fp:subs {topic: state json ...}   (queued by set_state)

Delivery is at least once: a batch whose pipeline failed on a connection error is sent again
whole, so a consumer may see an entry twice after a Redis outage, never out of order. While
Redis is unreachable the queue grows up to ``max_queue`` events; beyond that the oldest are
dropped and counted (``stats["dropped"]``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from control import keys
from workers.backoff import Backoff

log = logging.getLogger(__name__)

_dumps = orjson.dumps
#: Errors after which the same batch is sent again (the server may not have seen it).
RETRYABLE = (RedisConnectionError, RedisTimeoutError, OSError)
_STREAM_FIELD = keys.STREAM_FIELD.encode()
# Command words pre-encoded: redis-py packs pipelines in Python, and bytes skip its encoder work.
_XADD, _MAXLEN, _APPROX, _AUTO_ID, _PUBLISH, _SET = b"XADD", b"MAXLEN", b"~", b"*", b"PUBLISH", b"SET"


class Publisher:
    """Batches normalized events (``control.events``) into Redis; see the module docstring.

    :param redis: a ``decode_responses=False`` client (``control.redis_client.make_redis(url, decode=False)``).
    :param stream_maxlen: approximate cap of every event stream (``MAXLEN ~``).
    :param max_batch: most events per pipeline.
    :param max_queue: most events held while Redis is slow or down; the oldest beyond it are dropped.

    ``stats`` (a fresh dict on each read): ``events_published``, ``batches``, ``max_batch_seen``,
    ``queue_depth``, ``dropped``, ``redis_errors`` (failed pipelines plus failed commands),
    ``last_error`` (str or None).
    """

    def __init__(self, redis: Redis, *, stream_maxlen: int, max_batch: int = 2000, max_queue: int = 200_000) -> None:
        if max_batch < 1 or max_queue < 1:
            raise ValueError("max_batch and max_queue must be >= 1")
        self.redis = redis
        self.stream_maxlen = stream_maxlen
        self.max_batch = max_batch
        self.max_queue = max_queue
        self._queue: deque[tuple[str, bytes, int | None]] = deque()
        self._states: dict[str, bytes] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._keys: dict[str, tuple[bytes, bytes, bytes]] = {}
        # Progress counters for flush(): events are numbered in append order.
        self._appended = 0  # events ever appended
        self._popped = 0  # events taken off the queue (into a batch, or dropped)
        self._inflight_start: int | None = None  # number of the first event of the batch being written
        self._state_gen = 0  # set_state() calls
        self._state_done = 0  # state generation known written
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._drop_warned = False
        self._published = 0
        self._batches = 0
        self._max_batch_seen = 0
        self._dropped = 0
        self._redis_errors = 0
        self._last_error: str | None = None

    # -- producer side (hot path: synchronous, no awaits) ----------------------------------------

    def publish(self, topic: str, event: dict[str, Any]) -> None:
        """Queue ``event`` (a ``control.events`` dict) for ``topic``; serializes it once with orjson.

        Never blocks, never raises. When the queue already holds ``max_queue`` events the oldest is dropped.
        """
        try:
            payload = _dumps(event)
        except TypeError as exc:  # orjson.JSONEncodeError: an adapter bug must not kill the reader
            self._dropped += 1
            self._last_error = f"unserializable event for {topic}: {exc}"
            log.error("dropping an event of %s: %s", topic, exc)
            return
        queue = self._queue
        if len(queue) >= self.max_queue:
            queue.popleft()
            self._popped += 1
            self._dropped += 1
            if not self._drop_warned:
                self._drop_warned = True
                log.warning("publisher queue full (max_queue=%d): dropping the oldest events", self.max_queue)
        queue.append((topic, payload, event.get("ts_received")))
        self._appended += 1
        if not self._wake.is_set():
            self._wake.set()

    def set_state(self, topic: str, record: dict[str, Any]) -> None:
        """Queue a subscription-state record (``{"state","error","since","conn"}``, see ``control.store``)
        for ``HSET fp:subs``; coalesced per topic (the last record wins) and written with the next batch."""
        self._states[topic] = _dumps(record)
        self._state_gen += 1
        if not self._wake.is_set():
            self._wake.set()

    @property
    def stats(self) -> dict[str, Any]:
        """Counters, see the class docstring."""
        return {
            "events_published": self._published,
            "batches": self._batches,
            "max_batch_seen": self._max_batch_seen,
            "queue_depth": len(self._queue),
            "dropped": self._dropped,
            "redis_errors": self._redis_errors,
            "last_error": self._last_error,
        }

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer task (idempotent; needs a running loop)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="publisher-writer")

    async def flush(self, timeout_s: float) -> bool:
        """Wait until everything queued before this call is written (or dropped); False on timeout."""
        target = (self._appended, self._state_gen)
        if self._done(*target):
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter = (target[0], target[1], fut)
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(fut, timeout_s)
            return True
        except TimeoutError:
            return False
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    async def close(self, timeout_s: float = 5.0) -> None:
        """Flush for up to ``timeout_s`` seconds, then stop the writer; logs what could not be written."""
        task = self._task
        if task is None:
            return
        flushed = await self.flush(timeout_s)
        inflight = self._popped - self._inflight_start if self._inflight_start is not None else 0
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            if (current := asyncio.current_task()) is not None and current.cancelling():
                raise
        self._task = None
        if not flushed:
            log.warning("publisher closed with %d events unwritten", len(self._queue) + inflight)

    # -- writer -----------------------------------------------------------------------------------

    def _done(self, events_target: int, state_target: int) -> bool:
        start = self._inflight_start
        return (
            self._popped >= events_target
            and (start is None or start >= events_target)
            and self._state_done >= state_target
        )

    def _notify(self) -> None:
        if self._waiters:
            for events_target, state_target, fut in self._waiters:
                if not fut.done() and self._done(events_target, state_target):
                    fut.set_result(None)

    async def _run(self) -> None:
        queue = self._queue
        wake = self._wake
        while True:
            if not queue and not self._states:
                wake.clear()
                self._notify()  # drops alone may have completed a flush target
                await wake.wait()
                continue
            n = min(len(queue), self.max_batch)
            self._inflight_start = self._popped
            batch = [queue.popleft() for _ in range(n)]
            self._popped += n
            states, self._states = self._states, {}
            state_gen = self._state_gen
            written = await self._write(batch, states)
            self._inflight_start = None
            self._state_done = state_gen
            self._published += n if written else 0
            self._batches += 1
            if n > self._max_batch_seen:
                self._max_batch_seen = n
            if self._drop_warned and not queue:
                self._drop_warned = False
                log.warning("publisher queue drained; %d events dropped so far", self._dropped)
            self._notify()

    async def _write(self, batch: list[tuple[str, bytes, int | None]], states: dict[str, bytes]) -> bool:
        """Send one batch; on connection errors retry the same batch with backoff until it succeeds.

        Returns False when the batch was given up after an unexpected (non-connectivity) error.
        """
        backoff: Backoff | None = None
        outage_since = 0.0
        while True:
            pipe = self._build(batch, states)
            try:
                results = await pipe.execute(raise_on_error=False)
            except RETRYABLE as exc:
                self._redis_errors += 1
                self._last_error = f"{type(exc).__name__}: {exc}"
                if backoff is None:
                    backoff = Backoff(0.1, 2.0, rng=random.Random())
                    outage_since = time.monotonic()
                    log.warning("redis unavailable, holding %d events and retrying: %s", len(batch), self._last_error)
                await asyncio.sleep(backoff.next_delay())
                continue
            except Exception as exc:  # not a connectivity problem: resending would fail the same way
                self._redis_errors += 1
                self._dropped += len(batch)
                self._last_error = f"{type(exc).__name__}: {exc}"
                log.exception("dropping a batch of %d events after an unexpected error", len(batch))
                return False
            if backoff is not None:
                log.warning(
                    "redis reachable again after %.1f s and %d retries; %d events queued",
                    time.monotonic() - outage_since,
                    backoff.attempts,
                    len(self._queue),
                )
            # Command-level errors (e.g. WRONGTYPE) are deterministic: count and log, never resend.
            failed = [r for r in results if isinstance(r, Exception)]
            if failed:
                self._redis_errors += len(failed)
                self._last_error = f"{type(failed[0]).__name__}: {failed[0]}"
                log.error("%d redis commands failed in a batch; first: %s", len(failed), self._last_error)
            return True

    def _build(self, batch: list[tuple[str, bytes, int | None]], states: dict[str, bytes]) -> Any:
        pipe = self.redis.pipeline(transaction=False)
        cmd = pipe.execute_command
        maxlen = b"%d" % self.stream_maxlen
        field = _STREAM_FIELD
        key_cache = self._keys
        last_payload: dict[str, bytes] = {}
        last_ts: dict[str, int] = {}
        for topic, payload, ts in batch:
            k = key_cache.get(topic)
            if k is None:
                if len(key_cache) > 100_000:
                    key_cache.clear()
                k = key_cache[topic] = (
                    keys.event_stream(topic).encode(),
                    keys.event_channel(topic).encode(),
                    keys.latest(topic).encode(),
                )
            cmd(_XADD, k[0], _MAXLEN, _APPROX, maxlen, _AUTO_ID, field, payload)
            cmd(_PUBLISH, k[1], payload)
            last_payload[topic] = payload
            if ts is not None:
                last_ts[topic] = ts
        for topic, payload in last_payload.items():
            cmd(_SET, key_cache[topic][2], payload)
        if last_ts:
            pipe.hset(keys.TOPIC_LAST_EVENT, mapping=last_ts)
        if states:
            pipe.hset(keys.SUB_STATE, mapping=states)
        return pipe
