"""The one writer of events to Redis: a bounded queue drained in batches, one Redis command per batch.

Connections call ``publish()`` (synchronous, never blocks, never awaits); one writer task turns
whatever has accumulated into ONE Redis command (style.md habit 7): an ``EVALSHA`` of a small
Lua script that does, inside Redis::

    once per batch, per connection:  GET fp:lease:{conn}  (fencing, below)
    per event, in receive order:     XADD fp:stream:{topic} MAXLEN ~ N * d <json> ; PUBLISH fp:pub:{topic} <json>
    per topic in the batch:          SET fp:last:{topic} <last json>
    once per batch:                  HSET fp:topic:last_event {topic: ts_received ms ...}
                                     HSET fp:subs {topic: state json ...}   (queued by set_state)

A batch is at most ``max_batch`` events (default 500: the script holds Redis for ~2 ms).

Fencing. ``publish(topic, event, conn_id)`` tags an event with the connection that produced it.
For every connection present in a batch the script reads its lease once and writes that
connection's events (and its ``set_state`` records) only when the lease holds this publisher's
``worker_id`` at that instant; the rest are skipped and counted (``stats["fenced"]``). The check
and the writes are one atomic script, so a worker that lost its lease can never write after
another worker took the connection over. Events without a ``conn_id`` (or a publisher without a
``worker_id``) are not fenced. Callers must flush before releasing a lease on a graceful stop,
or the events still queued for that connection are fenced.

Redis outages. Delivery is at least once: a batch whose script call failed on a connection error
is sent again whole (with backoff) until Redis answers, so a consumer may see an entry twice after
an outage, never out of order. Meanwhile new events queue up, in order, to ``max_queue`` (plus the
one batch in flight); ``stats`` reports the backlog (``queue_depth``, ``inflight``,
``oldest_queued_age_ms``). Beyond the bound the OLDEST queued event is dropped and counted per
topic, and the next batch written starts with one gap event per affected topic, before any later
event of that topic::

    {"type": "gap", "topic": T, "reason": "redis_backlog_overflow",
     "since": <ts_received of the first dropped event>, "until": <ts_received of the last dropped>,
     "dropped": <number of events dropped>}

so consumers know exactly what was lost. Memory stays bounded at ``max_queue + max_batch`` events
plus one small record per topic with drops.

Paused writes. ``pause_writes()`` keeps every batch (and its retries) from being sent until ``resume_writes()``;
events queue meanwhile as in an outage. The runtime pauses while a connection is suspended (``workers.suspend``):
its queued events must reach Redis only once its lease is ours again, or they would be fenced. ``fenced_batches``
counts, per connection, the batches in which its events were fenced.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter, deque
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
#: ``reason`` of the gap event announcing events dropped because the queue hit ``max_queue``.
GAP_REASON_OVERFLOW = "redis_backlog_overflow"
_STREAM_FIELD = keys.STREAM_FIELD.encode()
_LAST_EVENT_KEY = keys.TOPIC_LAST_EVENT.encode()
_SUB_STATE_KEY = keys.SUB_STATE.encode()

#: One batch = one EVALSHA. Packing one command per event in redis-py costs ~20 us of Python per event
#: (44k events/s measured); the same work done by Redis inside a script ran at ~220k events/s.
#: A *slot* is one (topic, connection) pair of the batch; connection index 0 means "not fenced".
#: KEYS: [fp:topic:last_event, fp:subs, lease key per connection (n_conns), then per slot: stream,
#:        pub/sub channel, latest key]
#: ARGV: [maxlen, n_events, n_ts, n_states, n_conns, n_slots, owner, connection index per slot,
#:        (slot 0-based, payload) * n_events, (topic, ts ms, slot) * n_ts, (topic, state json, conn index) * n_states]
#: Commands run with pcall so one failing key (WRONGTYPE) never aborts the rest of the batch.
#: Returns {n_failed, first_error or '', n_fenced_events, fenced connection indexes...}.
_PUBLISH_SCRIPT = """
local maxlen, n_events = ARGV[1], tonumber(ARGV[2])
local n_ts, n_states = tonumber(ARGV[3]), tonumber(ARGV[4])
local n_conns, n_slots, owner = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]
local field = '""" + keys.STREAM_FIELD + """'
local failed, first = 0, nil
local function call(...)
  local ok = redis.pcall(...)
  if type(ok) == 'table' and ok.err then
    failed = failed + 1
    first = first or ok.err
  end
end
local held, lost = {}, {}
for c = 1, n_conns do
  held[c] = redis.pcall('GET', KEYS[2 + c]) == owner
  if not held[c] then lost[#lost + 1] = c end
end
local a = 8
local ok = {}
for s = 0, n_slots - 1 do
  local c = tonumber(ARGV[a])
  ok[s] = c == 0 or held[c]
  a = a + 1
end
local key0 = 2 + n_conns
local last = {}
local fenced = 0
for _ = 1, n_events do
  local s = tonumber(ARGV[a])
  if ok[s] then
    local base = key0 + s * 3
    local payload = ARGV[a + 1]
    call('XADD', KEYS[base + 1], 'MAXLEN', '~', maxlen, '*', field, payload)
    call('PUBLISH', KEYS[base + 2], payload)
    last[KEYS[base + 3]] = payload
  else
    fenced = fenced + 1
  end
  a = a + 2
end
for key, payload in pairs(last) do
  call('SET', key, payload)
end
for _ = 1, n_ts do
  if ok[tonumber(ARGV[a + 2])] then
    call('HSET', KEYS[1], ARGV[a], ARGV[a + 1])
  end
  a = a + 3
end
for _ = 1, n_states do
  local c = tonumber(ARGV[a + 2])
  if c == 0 or held[c] then
    call('HSET', KEYS[2], ARGV[a], ARGV[a + 1])
  end
  a = a + 3
end
local out = {failed, first or '', fenced}
for _, c in ipairs(lost) do
  out[#out + 1] = c
end
return out
"""


#: One queued event: (topic, payload serialized once, ts_received ms or None, connection id or None,
#: time.monotonic() at publish). A plain tuple: it is built on the hot path.
_Item = tuple[str, bytes, int | None, str | None, float]


class _Drops:
    """Events of one topic dropped on overflow and not announced yet (its gap event is pending)."""

    __slots__ = ("conn", "count", "since", "until")

    def __init__(self) -> None:
        self.count = 0
        self.since: int | None = None
        self.until: int | None = None
        self.conn: str | None = None

    def add(self, ts: int | None, conn: str | None) -> None:
        self.count += 1
        if ts is not None:
            if self.since is None:
                self.since = ts
            self.until = ts
        self.conn = conn

    def event(self, topic: str) -> dict[str, Any]:
        """The gap event announcing these drops (``control.events.GapEvent`` plus ``dropped``)."""
        return {"type": "gap", "topic": topic, "reason": GAP_REASON_OVERFLOW, "since": self.since,
                "until": self.until, "dropped": self.count}  # fmt: skip


class Publisher:
    """Batches normalized events (``control.events``) into Redis; see the module docstring.

    :param redis: a ``decode_responses=False`` client (``control.redis_client.make_redis(url, decode=False)``).
    :param stream_maxlen: approximate cap of every event stream (``MAXLEN ~``).
    :param max_batch: most events per batch (one script call).
    :param max_queue: most events held while Redis is slow or down; the oldest beyond it are dropped
        and announced with a gap event.
    :param high_water: queue depth at which ``congested`` turns true (readers then await ``room()``);
        default ``min(20_000, max_queue)``.
    :param worker_id: the lease owner this publisher writes for; events published with a ``conn_id`` are
        written only while ``fp:lease:{conn_id}`` holds this id. "" turns fencing off.

    ``stats`` (a fresh dict on each read): ``events_published`` (written, gap events included), ``batches``,
    ``max_batch_seen``, ``queue_depth`` (queued, not yet in a batch), ``inflight`` (events of the batch being written),
    ``oldest_queued_age_ms`` (age of the oldest unwritten event, in flight included; 0 when none),
    ``dropped`` (all events given up), ``dropped_by_topic`` (overflow drops per topic),
    ``gaps_published`` (gap events written for overflow drops), ``fenced`` (events skipped because
    their connection's lease was not ours), ``redis_errors`` (failed batch writes plus failed
    commands), ``last_error`` (str or None).
    """

    def __init__(
        self,
        redis: Redis,
        *,
        stream_maxlen: int,
        max_batch: int = 500,
        max_queue: int = 200_000,
        high_water: int | None = None,
        worker_id: str = "",
    ) -> None:
        high_water = min(20_000, max_queue) if high_water is None else high_water
        if max_batch < 1 or max_queue < 1 or not 1 <= high_water <= max_queue:
            raise ValueError("max_batch and max_queue must be >= 1 and high_water within 1..max_queue")
        self.high_water = high_water
        #: Set while the queue is below ``high_water``; readers await it (backpressure, see ``room``).
        self._room = asyncio.Event()
        self._room.set()
        #: Cleared while writes are paused (``pause_writes``).
        self._writable = asyncio.Event()
        self._writable.set()
        #: Per connection id: batches in which its events were fenced (``workers.suspend``).
        self.fenced_batches: Counter[str] = Counter()
        self.redis = redis
        self.stream_maxlen = stream_maxlen
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.worker_id = worker_id
        self._owner = worker_id.encode()
        self._queue: deque[_Item] = deque()
        self._states: dict[str, tuple[bytes, str | None]] = {}
        #: topic -> drops not yet announced; the next batch starts with their gap events.
        self._gaps: dict[str, _Drops] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._keys: dict[str, tuple[bytes, bytes, bytes]] = {}
        self._lease_keys: dict[str, bytes] = {}
        self._script = redis.register_script(_PUBLISH_SCRIPT)  # EVALSHA, loading the script on NOSCRIPT
        # Progress counters for flush(): events are numbered in append order.
        self._appended = 0  # events ever appended
        self._popped = 0  # events taken off the queue (into a batch, or dropped)
        self._inflight_start: int | None = None  # number of the first event of the batch being written
        self._inflight_oldest: float | None = None  # queued_at of the oldest event in flight
        self._inflight_n = 0
        self._state_gen = 0  # set_state() calls
        self._state_done = 0  # state generation known written
        self._gap_gen = 0  # overflow drops ever (each one must end up announced)
        self._gap_done = 0  # drops whose gap event was handed to a finished batch
        self._waiters: list[tuple[int, int, int, asyncio.Future[None]]] = []
        self._drop_warned = False
        self._published = 0
        self._batches = 0
        self._max_batch_seen = 0
        self._dropped = 0
        self._dropped_by_topic: Counter[str] = Counter()
        self._gaps_published = 0
        self._fenced = 0
        self._redis_errors = 0
        self._last_error: str | None = None

    # -- producer side (hot path: synchronous, no awaits) ----------------------------------------

    def publish(self, topic: str, event: dict[str, Any], conn_id: str | None = None) -> None:
        """Queue ``event`` (a ``control.events`` dict) for ``topic``; serializes it once with orjson.

        ``conn_id``: the connection that produced it; the event is written only while this worker holds
        that connection's lease (see the module docstring). Never blocks, never raises. When the queue
        already holds ``max_queue`` events the oldest is dropped and later announced by a gap event.
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
            self._drop_oldest()
        queue.append((topic, payload, event.get("ts_received"), conn_id if self._owner else None, time.monotonic()))
        self._appended += 1
        if len(queue) >= self.high_water and self._room.is_set():
            self._room.clear()
        if not self._wake.is_set():
            self._wake.set()

    def _drop_oldest(self) -> None:
        topic, _, ts, conn, _ = self._queue.popleft()
        self._popped += 1
        self._dropped += 1
        self._dropped_by_topic[topic] += 1
        drops = self._gaps.get(topic)
        if drops is None:
            drops = self._gaps[topic] = _Drops()
        drops.add(ts, conn)
        self._gap_gen += 1
        if not self._drop_warned:
            self._drop_warned = True
            log.warning("publisher queue full (max_queue=%d): dropping the oldest events", self.max_queue)

    def set_state(self, topic: str, record: dict[str, Any], conn_id: str | None = None) -> None:
        """Queue a subscription-state record (``{"state","error","since","conn"}``, see ``control.store``)
        for ``HSET fp:subs``; coalesced per topic (the last record wins) and written with the next batch.
        ``conn_id`` fences it like ``publish``."""
        self._states[topic] = (_dumps(record), conn_id if self._owner else None)
        self._state_gen += 1
        if not self._wake.is_set():
            self._wake.set()

    def pause_writes(self) -> None:
        """Send nothing to Redis until ``resume_writes`` (a batch being retried waits too); events keep queuing."""
        self._writable.clear()

    def resume_writes(self) -> None:
        """Undo ``pause_writes`` (idempotent)."""
        self._writable.set()

    @property
    def writes_paused(self) -> bool:
        return not self._writable.is_set()

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
        oldest = self._inflight_oldest
        if oldest is None and self._queue:
            oldest = self._queue[0][4]
        age_ms = 0 if oldest is None else int((time.monotonic() - oldest) * 1000)
        return {
            "events_published": self._published,
            "batches": self._batches,
            "max_batch_seen": self._max_batch_seen,
            "queue_depth": len(self._queue),
            "inflight": self._inflight_n,
            "oldest_queued_age_ms": age_ms,
            "dropped": self._dropped,
            "dropped_by_topic": dict(self._dropped_by_topic),
            "gaps_published": self._gaps_published,
            "fenced": self._fenced,
            "redis_errors": self._redis_errors,
            "last_error": self._last_error,
        }

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer task (idempotent; needs a running loop)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="publisher-writer")

    async def flush(self, timeout_s: float) -> bool:
        """Wait until everything queued before this call is written (or dropped and announced); False on timeout."""
        target = (self._appended, self._state_gen, self._gap_gen)
        if self._done(*target):
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter = (*target, fut)
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
        inflight = self._inflight_n
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

    def _done(self, events_target: int, state_target: int, gap_target: int) -> bool:
        start = self._inflight_start
        return (
            self._popped >= events_target
            and (start is None or start >= events_target)
            and self._state_done >= state_target
            and self._gap_done >= gap_target
        )

    def _notify(self) -> None:
        if self._waiters:
            for events_target, state_target, gap_target, fut in self._waiters:
                if not fut.done() and self._done(events_target, state_target, gap_target):
                    fut.set_result(None)

    async def _run(self) -> None:
        queue = self._queue
        wake = self._wake
        while True:
            if not queue and not self._states and not self._gaps:
                wake.clear()
                self._notify()
                await wake.wait()
                continue
            # Gaps first: every event they announce is older than anything still queued.
            gaps, self._gaps = self._gaps, {}
            gap_gen = self._gap_gen
            n = min(len(queue), self.max_batch)
            self._inflight_start = self._popped
            batch = [queue.popleft() for _ in range(n)]
            self._popped += n
            self._inflight_n = n
            self._inflight_oldest = batch[0][4] if batch else None
            states, self._states = self._states, {}
            state_gen = self._state_gen
            fenced = await self._write(batch, states, gaps)
            self._inflight_start = self._inflight_oldest = None
            self._inflight_n = 0
            self._state_done = state_gen
            self._gap_done = gap_gen
            self._batches += 1
            if fenced is not None:
                self._published += n + len(gaps) - fenced
                self._gaps_published += len(gaps)
            self._max_batch_seen = max(self._max_batch_seen, n)
            if not self._room.is_set() and len(queue) <= self.high_water // 2:
                self._room.set()
            if self._drop_warned and not queue:
                self._drop_warned = False
                log.warning("publisher queue drained; %d events dropped so far", self._dropped)
            self._notify()

    async def _write(
        self, batch: list[_Item], states: dict[str, tuple[bytes, str | None]], gaps: dict[str, _Drops]
    ) -> int | None:
        """Send one batch; on connection errors retry the same batch with backoff until it succeeds.

        Returns the number of fenced events, or None when the batch was given up after an unexpected
        (non-connectivity) error.
        """
        backoff: Backoff | None = None
        outage_since = 0.0
        script_keys, script_args, conns = self._build(batch, states, gaps)
        while True:
            if not self._writable.is_set():
                await self._writable.wait()
            try:
                reply = await self._script(keys=script_keys, args=script_args)
            except RETRYABLE as exc:
                self._redis_errors += 1
                self._last_error = f"{type(exc).__name__}: {exc}"
                if backoff is None:
                    backoff = Backoff(0.1, 1.0, rng=random.Random())
                    outage_since = time.monotonic()
                    log.warning("redis unavailable, holding %d events and retrying: %s", len(batch), self._last_error)
                await asyncio.sleep(backoff.next_delay())
                continue
            except Exception as exc:  # not a connectivity problem: resending would fail the same way
                self._redis_errors += 1
                self._dropped += len(batch)
                self._last_error = f"{type(exc).__name__}: {exc}"
                log.exception("dropping a batch of %d events after an unexpected error", len(batch))
                return None
            if backoff is not None:
                log.warning(
                    "redis reachable again after %.1f s and %d retries; %d events queued",
                    time.monotonic() - outage_since,
                    backoff.attempts,
                    len(self._queue),
                )
            failed, first, fenced = int(reply[0]), reply[1], int(reply[2])
            # Command-level errors (e.g. WRONGTYPE) are deterministic: count and log, never resend.
            if failed:
                text = first.decode(errors="replace") if isinstance(first, bytes) else str(first)
                self._redis_errors += failed
                self._last_error = f"ResponseError: {text}"
                log.error("%d redis commands failed in a batch; first: %s", failed, text)
            if len(reply) > 3:
                lost = [conns[int(i) - 1] for i in reply[3:]]
                self._fenced += fenced
                self.fenced_batches.update(lost)
                log.warning(
                    "worker %s does not hold the lease of %s: %d events not written (fenced)",
                    self.worker_id, ", ".join(lost), fenced,
                )  # fmt: skip
            return fenced

    def _build(
        self, batch: list[_Item], states: dict[str, tuple[bytes, str | None]], gaps: dict[str, _Drops]
    ) -> tuple[list[bytes], list[bytes | int], list[str]]:
        """KEYS and ARGV of ``_PUBLISH_SCRIPT`` for one batch (layout documented on the script), and the
        connection ids in index order (index i + 1)."""
        key_cache = self._keys
        conn_index: dict[str, int] = {}
        slot: dict[tuple[str, str | None], int] = {}
        slot_keys: list[bytes] = []
        slot_conn: list[int] = []
        events: list[bytes | int] = []
        last_ts: dict[str, tuple[int, int]] = {}

        def new_slot(topic: str, conn: str | None) -> int:
            k = key_cache.get(topic)
            if k is None:
                if len(key_cache) > 100_000:
                    key_cache.clear()
                k = key_cache[topic] = (
                    keys.event_stream(topic).encode(),
                    keys.event_channel(topic).encode(),
                    keys.latest(topic).encode(),
                )
            slot_keys.extend(k)
            if conn is None:
                slot_conn.append(0)
            else:
                slot_conn.append(conn_index.setdefault(conn, len(conn_index) + 1))
            index = slot[(topic, conn)] = len(slot_conn) - 1
            return index

        for topic, drops in gaps.items():
            index = slot.get((topic, drops.conn))
            if index is None:
                index = new_slot(topic, drops.conn)
            events.append(index)
            events.append(_dumps(drops.event(topic)))
        for topic, payload, ts, conn, _ in batch:
            index = slot.get((topic, conn))
            if index is None:
                index = new_slot(topic, conn)
            events.append(index)
            events.append(payload)
            if ts is not None:
                last_ts[topic] = (ts, index)
        state_args: list[bytes | int | str] = []
        for topic, (record, conn) in states.items():
            state_args.append(topic)
            state_args.append(record)
            state_args.append(0 if conn is None else conn_index.setdefault(conn, len(conn_index) + 1))
        lease_cache = self._lease_keys
        lease_keys = []
        for conn in conn_index:  # insertion order == index order
            k2 = lease_cache.get(conn)
            if k2 is None:
                if len(lease_cache) > 100_000:
                    lease_cache.clear()
                k2 = lease_cache[conn] = keys.lease(conn).encode()
            lease_keys.append(k2)
        script_keys: list[bytes] = [_LAST_EVENT_KEY, _SUB_STATE_KEY, *lease_keys, *slot_keys]
        args: list[Any] = [self.stream_maxlen, len(events) // 2, len(last_ts), len(states), len(conn_index),
                           len(slot_conn), self._owner, *slot_conn, *events]  # fmt: skip
        for topic, (ts, index) in last_ts.items():
            args.append(topic)
            args.append(ts)
            args.append(index)
        args.extend(state_args)
        return script_keys, args, list(conn_index)
