"""The one writer of events to Redis: a bounded queue drained in batches, one Redis command per batch.

Connections call ``publish()`` (synchronous, never blocks, never awaits); one writer task turns
whatever has accumulated into ONE Redis command (style.md habit 7): an ``EVALSHA`` of a small
Lua script that does, inside Redis::

    per event, in receive order:  XADD fp:stream:{topic} MAXLEN ~ N * d <json> ; PUBLISH fp:pub:{topic} <json>
    per topic in the batch:       SET fp:last:{topic} <last json>
    once per batch:               HSET fp:topic:last_event {topic: ts_received ms ...}
                                  HSET fp:subs {topic: state json ...}   (queued by set_state)

A batch is at most ``max_batch`` events (default 500: the script holds Redis for ~2 ms).

Delivery is at least once: a batch whose script call failed on a connection error is sent again
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
_LAST_EVENT_KEY = keys.TOPIC_LAST_EVENT.encode()
_SUB_STATE_KEY = keys.SUB_STATE.encode()

#: One batch = one EVALSHA. Packing one command per event in redis-py costs ~20 us of Python per event
#: (44k events/s measured); the same work done by Redis inside a script ran at ~220k events/s.
#: KEYS: [fp:topic:last_event, fp:subs, then per topic of the batch: stream, pub/sub channel, latest key]
#: ARGV: [maxlen, n_events, n_ts, n_states, (topic slot 0-based, payload) * n_events,
#:        (topic, ts ms) * n_ts, (topic, state json) * n_states]
#: Commands run with pcall so one failing key (WRONGTYPE) never aborts the rest of the batch;
#: returns {} or {n_failed, first_error}.
_PUBLISH_SCRIPT = """
local maxlen, n_events = ARGV[1], tonumber(ARGV[2])
local n_ts, n_states = tonumber(ARGV[3]), tonumber(ARGV[4])
local field = '""" + keys.STREAM_FIELD + """'
local failed, first = 0, nil
local function call(...)
  local ok = redis.pcall(...)
  if type(ok) == 'table' and ok.err then
    failed = failed + 1
    first = first or ok.err
  end
end
local last = {}
local a = 5
for _ = 1, n_events do
  local base = 2 + tonumber(ARGV[a]) * 3
  local payload = ARGV[a + 1]
  call('XADD', KEYS[base + 1], 'MAXLEN', '~', maxlen, '*', field, payload)
  call('PUBLISH', KEYS[base + 2], payload)
  last[base] = payload
  a = a + 2
end
for base, payload in pairs(last) do
  call('SET', KEYS[base + 3], payload)
end
for _ = 1, n_ts do
  call('HSET', KEYS[1], ARGV[a], ARGV[a + 1])
  a = a + 2
end
for _ = 1, n_states do
  call('HSET', KEYS[2], ARGV[a], ARGV[a + 1])
  a = a + 2
end
if failed > 0 then return {failed, first} end
return {}
"""


class Publisher:
    """Batches normalized events (``control.events``) into Redis; see the module docstring.

    :param redis: a ``decode_responses=False`` client (``control.redis_client.make_redis(url, decode=False)``).
    :param stream_maxlen: approximate cap of every event stream (``MAXLEN ~``).
    :param max_batch: most events per batch (one script call).
    :param max_queue: most events held while Redis is slow or down; the oldest beyond it are dropped.
    :param high_water: queue depth at which ``congested`` turns true (readers then await ``room()``);
        default ``min(20_000, max_queue)``.

    ``stats`` (a fresh dict on each read): ``events_published``, ``batches``, ``max_batch_seen``,
    ``queue_depth``, ``dropped``, ``redis_errors`` (failed batch writes plus failed commands),
    ``last_error`` (str or None).
    """

    def __init__(
        self,
        redis: Redis,
        *,
        stream_maxlen: int,
        max_batch: int = 500,
        max_queue: int = 200_000,
        high_water: int | None = None,
    ) -> None:
        high_water = min(20_000, max_queue) if high_water is None else high_water
        if max_batch < 1 or max_queue < 1 or not 1 <= high_water <= max_queue:
            raise ValueError("max_batch and max_queue must be >= 1 and high_water within 1..max_queue")
        self.high_water = high_water
        #: Set while the queue is below ``high_water``; readers await it (backpressure, see ``room``).
        self._room = asyncio.Event()
        self._room.set()
        self.redis = redis
        self.stream_maxlen = stream_maxlen
        self.max_batch = max_batch
        self.max_queue = max_queue
        self._queue: deque[tuple[str, bytes, int | None]] = deque()
        self._states: dict[str, bytes] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._keys: dict[str, tuple[bytes, bytes, bytes]] = {}
        self._script = redis.register_script(_PUBLISH_SCRIPT)  # EVALSHA, loading the script on NOSCRIPT
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
        if len(queue) >= self.high_water and self._room.is_set():
            self._room.clear()
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
    def congested(self) -> bool:
        """True while ``high_water`` or more events wait to be written."""
        return not self._room.is_set()

    async def room(self) -> None:
        """Return once the queue has drained below ``high_water // 2`` (immediately when not congested).

        Connections await this after a frame while ``congested``: a burst faster than Redis takes
        then slows the socket reader (TCP backpressure) instead of growing memory.
        """
        await self._room.wait()

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
            if not self._room.is_set() and len(queue) <= self.high_water // 2:
                self._room.set()
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
        script_keys, script_args = self._build(batch, states)
        while True:
            try:
                failed = await self._script(keys=script_keys, args=script_args)
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
            if failed:
                count, first = int(failed[0]), failed[1].decode(errors="replace")
                self._redis_errors += count
                self._last_error = f"ResponseError: {first}"
                log.error("%d redis commands failed in a batch; first: %s", count, first)
            return True

    def _build(
        self, batch: list[tuple[str, bytes, int | None]], states: dict[str, bytes]
    ) -> tuple[list[bytes], list[bytes | int]]:
        """KEYS and ARGV of ``_PUBLISH_SCRIPT`` for one batch (layout documented on the script)."""
        key_cache = self._keys
        script_keys: list[bytes] = [_LAST_EVENT_KEY, _SUB_STATE_KEY]
        slot: dict[str, int] = {}
        events: list[bytes | int] = []
        last_ts: dict[str, int] = {}
        for topic, payload, ts in batch:
            index = slot.get(topic)
            if index is None:
                k = key_cache.get(topic)
                if k is None:
                    if len(key_cache) > 100_000:
                        key_cache.clear()
                    k = key_cache[topic] = (
                        keys.event_stream(topic).encode(),
                        keys.event_channel(topic).encode(),
                        keys.latest(topic).encode(),
                    )
                index = slot[topic] = len(slot)
                script_keys.extend(k)
            events.append(index)
            events.append(payload)
            if ts is not None:
                last_ts[topic] = ts
        args: list[bytes | int] = [self.stream_maxlen, len(batch), len(last_ts), len(states), *events]
        for topic, ts in last_ts.items():
            args.append(topic)
            args.append(ts)
        for topic, record in states.items():
            args.append(topic)
            args.append(record)
        return script_keys, args
