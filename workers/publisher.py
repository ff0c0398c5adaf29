"""The one writer of events to Redis: a bounded queue drained in batches, one Redis command per batch.

Connections call ``publish()`` (synchronous, never blocks, never awaits); one writer task turns
whatever has accumulated into ONE Redis command (style.md habit 7): an ``EVALSHA`` of a small
Lua script that does, inside Redis::

    once per batch, per connection:  GET fp:lease:{conn}  (fencing, below)
    per event, in receive order:     XADD fp:stream:{topic} MAXLEN ~ N * d <json> ; PUBLISH fp:pub:{topic} <json>
    per topic in the batch:          SET fp:last:{topic} <last json>
    once per batch:                  HSET fp:topic:last_event {topic: ts_received ms ...}
                                     HSET fp:subs {topic: state json ...}   (queued by set_state)

A batch is at most ``max_batch`` events (default 500: the script holds Redis for ~2 ms). The script, its
argument layout and reply, and which Redis errors are transient live in ``workers.publish_script``.

Fencing. ``publish(topic, event, conn_id)`` tags an event with the connection that produced it.
For every connection present in a batch the script reads its lease once and writes that
connection's events (and its ``set_state`` records) only when the lease holds this publisher's
``worker_id`` at that instant; the rest are skipped and counted (``stats["fenced"]``). The check
and the writes are one atomic script, so a worker that lost its lease can never write after
another worker took the connection over. Events without a ``conn_id`` (or a publisher without a
``worker_id``) are not fenced. Callers must flush before releasing a lease on a graceful stop,
or the events still queued for that connection are fenced.

Redis outages. A batch whose script call failed on a connection error,
or on an error reply of a Redis that cannot take writes *now* (``READONLY`` from a demoted master or a
replica, ``LOADING``, ``MASTERDOWN``, ``TRYAGAIN``, ``OOM``, ...: ``workers.publish_script.is_transient``)
is sent again whole (with backoff) until Redis takes it, in order. Nothing is written twice: Redis
refuses such a batch before writing any of it, and a batch it executed but whose reply was lost
with the connection is recognised by its number when resent (``fp:batch:{publisher}``, see
``workers.publish_script``). Meanwhile new events queue up, in order, to
``max_queue`` (plus the one batch in flight); ``stats`` reports the backlog (``queue_depth``,
``inflight``, ``oldest_queued_age_ms``). Beyond the bound the OLDEST queued event is dropped.

Losses are always announced. Every event that does not reach its stream is counted per topic and
reason, and a later batch starts with one gap event per (topic, reason), before any later event of
that topic::

    {"type": "gap", "topic": T, "reason": R,
     "since": <ts_received of the first lost event>, "until": <ts_received of the last lost>,
     "dropped": <number of events lost>}

``reason``: ``redis_backlog_overflow`` (dropped from a full queue), ``redis_error`` (Redis refused the
event for good: the whole batch failed with a non-transient error such as ``NOPERM``, or its XADD
failed, e.g. ``WRONGTYPE`` on the stream key), ``unserializable`` (an adapter built an event orjson
cannot encode). A gap event Redis refuses in turn is kept (merged with later losses of the same
topic and reason) and tried again, with backoff, until it is written. Memory stays bounded at
``max_queue + max_batch`` events plus one small record per (topic, reason) with losses.

Paused writes. ``pause_writes()`` keeps every batch (and its retries) from being sent until ``resume_writes()``;
events queue meanwhile as in an outage. The runtime pauses while a connection is suspended (``workers.suspend``):
its queued events must reach Redis only once its lease is ours again, or they would be fenced. ``fenced_batches``
counts, per connection, the batches in which its events were fenced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from collections import Counter, deque
from itertools import chain
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from workers.backoff import Backoff
from workers.publish_script import PUBLISH_SCRIPT, Item, ScriptArgs, is_transient

log = logging.getLogger(__name__)

_dumps = orjson.dumps
#: ``reason`` of the gap event announcing events dropped because the queue hit ``max_queue``.
GAP_REASON_OVERFLOW = "redis_backlog_overflow"
#: ``reason`` of the gap event announcing events Redis refused for good (see the module docstring).
GAP_REASON_ERROR = "redis_error"
#: ``reason`` of the gap event announcing an event that could not be serialized (an adapter bug).
GAP_REASON_UNSERIALIZABLE = "unserializable"

#: Seconds between two log lines for the same failing command (a broken key fails in every batch).
_ERROR_LOG_EVERY_S = 10.0

_Item = Item  # one queued event (see workers.publish_script.Item)


class _Drops:
    """Events of one topic lost for one reason and not announced yet (its gap event is pending).

    ``first``: the number (in publish order) of the earliest event it covers; ``flush`` waits for the
    announcement of every loss numbered below its target."""

    __slots__ = ("conn", "count", "first", "reason", "since", "until")

    def __init__(self, reason: str, first: int) -> None:
        self.reason = reason
        self.first = first
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

    def absorb_older(self, older: _Drops) -> None:
        """Merge ``older`` (losses before every one of these: a gap event Redis refused) into this record."""
        self.count += older.count
        self.first = min(self.first, older.first)
        if older.since is not None:
            self.since = older.since
            if self.until is None:
                self.until = older.until

    def event(self, topic: str) -> dict[str, Any]:
        """The gap event announcing these losses (``control.events.GapEvent`` plus ``dropped``)."""
        return {"type": "gap", "topic": topic, "reason": self.reason, "since": self.since,
                "until": self.until, "dropped": self.count}  # fmt: skip


#: Pending losses, keyed by (topic, reason).
_Gaps = dict[tuple[str, str], _Drops]


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
    ``dropped`` (all events lost, each announced by a gap event), ``dropped_by_topic`` (losses per topic),
    ``dropped_by_reason`` (losses per gap reason), ``gaps_published`` (gap events written for them),
    ``gaps_by_reason`` (the same per reason), ``gaps_pending`` (gap events waiting to be written),
    ``fenced`` (events skipped because their connection's lease was not ours), ``redis_errors`` (failed
    batch writes plus failed commands), ``resends_skipped`` (batches found already written when resent after a
    lost reply), ``last_error`` (str or None).
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
        #: (topic, reason) -> losses not yet announced; the next batch starts with their gap events.
        self._gaps: _Gaps = {}
        self._inflight_gaps: _Gaps = {}  # the gap events of the batch being written
        #: Monotonic time before which gap events Redis refused are not tried again on their own.
        self._gap_retry_at = 0.0
        self._failures = Backoff(0.1, 5.0, rng=random.Random())  # delays after batches Redis refused for good
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: This instance's id in ``fp:batch:{publisher}`` (exactly-once resends, see ``workers.publish_script``).
        self.publisher_id = f"{worker_id or 'anon'}:{secrets.token_hex(6)}"
        self._args = ScriptArgs(stream_maxlen, self._owner, self.publisher_id)
        self._batch_no = 0  # batches handed to the script (their numbers)
        self._resends_skipped = 0
        self._script = redis.register_script(PUBLISH_SCRIPT)  # EVALSHA, loading the script on NOSCRIPT
        # Progress counters for flush(): events are numbered in append order.
        self._appended = 0  # events ever appended
        self._popped = 0  # events taken off the queue (into a batch, or dropped)
        self._inflight_start: int | None = None  # number of the first event of the batch being written
        self._inflight_oldest: float | None = None  # queued_at of the oldest event in flight
        self._inflight_n = 0
        self._state_gen = 0  # set_state() calls
        self._state_done = 0  # state generation known written
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._drop_warned = False
        self._published = 0
        self._batches = 0
        self._max_batch_seen = 0
        self._dropped = 0
        self._dropped_by_topic: Counter[str] = Counter()
        self._dropped_by_reason: Counter[str] = Counter()
        self._gaps_published: Counter[str] = Counter()
        self._fenced = 0
        self._redis_errors = 0
        self._last_error: str | None = None
        self._logged_error = ""  # the last command error logged, and when (monotonic)
        self._logged_at = 0.0

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
            self._last_error = f"unserializable event for {topic}: {exc}"
            log.error("dropping an event of %s: %s", topic, exc)
            ts = event.get("ts_received")
            # Numbered like a queued event taken off at once, so flush() waits for its announcement.
            self._appended += 1
            self._popped += 1
            self._lose(topic, ts if isinstance(ts, int) else None, conn_id if self._owner else None,
                       GAP_REASON_UNSERIALIZABLE, self._appended - 1)  # fmt: skip
            if not self._wake.is_set():
                self._wake.set()
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
        self._lose(topic, ts, conn, GAP_REASON_OVERFLOW, self._popped)
        self._popped += 1
        if not self._drop_warned:
            self._drop_warned = True
            log.warning("publisher queue full (max_queue=%d): dropping the oldest events", self.max_queue)

    def _lose(self, topic: str, ts: int | None, conn: str | None, reason: str, number: int) -> None:
        """Count event ``number`` (publish order) of ``topic`` as lost; its gap event goes out with a later batch."""
        self._dropped += 1
        self._dropped_by_topic[topic] += 1
        self._dropped_by_reason[reason] += 1
        drops = self._gaps.get((topic, reason))
        if drops is None:
            drops = self._gaps[(topic, reason)] = _Drops(reason, number)
        drops.add(ts, conn)

    def _requeue(self, key: tuple[str, str], drops: _Drops) -> None:
        """A gap event Redis did not take: keep its losses pending (before any newer loss of that key)."""
        pending = self._gaps.get(key)
        if pending is None:
            self._gaps[key] = drops
        else:
            pending.absorb_older(drops)

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
            "dropped_by_reason": dict(self._dropped_by_reason),
            "gaps_published": self._gaps_published.total(),
            "gaps_by_reason": dict(self._gaps_published),
            "gaps_pending": len(self._gaps) + len(self._inflight_gaps),
            "fenced": self._fenced,
            "redis_errors": self._redis_errors,
            "resends_skipped": self._resends_skipped,
            "last_error": self._last_error,
        }

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer task (idempotent; needs a running loop)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="publisher-writer")

    async def flush(self, timeout_s: float) -> bool:
        """Wait until everything queued before this call is written (or lost and announced); False on timeout."""
        target = (self._appended, self._state_gen)
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
            log.warning("publisher closed with %d events unwritten and %d gap events unannounced",
                        len(self._queue) + inflight, len(self._gaps) + len(self._inflight_gaps))  # fmt: skip

    # -- writer -----------------------------------------------------------------------------------

    def _done(self, events_target: int, state_target: int) -> bool:
        start = self._inflight_start
        if (
            self._popped < events_target
            or (start is not None and start < events_target)
            or self._state_done < state_target
        ):
            return False
        # Every loss among those events is announced (its gap event written).
        return all(d.first >= events_target for d in chain(self._gaps.values(), self._inflight_gaps.values()))

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
                if not self._gaps:
                    wake.clear()
                    self._notify()
                    await wake.wait()
                    continue
                delay = self._gap_retry_at - time.monotonic()
                if delay > 0:  # only gap events Redis refused last time: try them again later (or with new events)
                    wake.clear()
                    self._notify()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await wake.wait()
                    continue
            # Gaps first: every event they announce is older than anything still queued.
            gaps, self._gaps = self._gaps, {}
            self._inflight_gaps = gaps
            n = min(len(queue), self.max_batch)
            start = self._inflight_start = self._popped
            batch = [queue.popleft() for _ in range(n)]
            self._popped += n
            self._inflight_n = n
            self._inflight_oldest = batch[0][4] if batch else None
            states, self._states = self._states, {}
            state_gen = self._state_gen
            result = await self._write(batch, states, gaps)
            self._inflight_start = self._inflight_oldest = None
            self._inflight_n = 0
            self._inflight_gaps = {}
            self._batches += 1
            self._max_batch_seen = max(self._max_batch_seen, n)
            if result is None:
                await self._refused(batch, start, states, gaps)
            else:
                self._state_done = state_gen
                self._written(batch, start, gaps, *result)
            if not self._room.is_set() and len(queue) <= self.high_water // 2:
                self._room.set()
            if self._drop_warned and not queue:
                self._drop_warned = False
                log.warning("publisher queue drained; %d events dropped so far", self._dropped)
            self._notify()

    def _written(self, batch: list[_Item], start: int, gaps: _Gaps, fenced: int, lost: list[int]) -> None:
        """Account for a batch the script ran: ``lost`` are the 1-based numbers of the events (gap events first)
        whose XADD failed. Lost events become pending losses; refused gap events stay pending."""
        n_gaps = len(gaps)
        refused: set[int] = set()
        if lost:
            pending = list(gaps.items())
            for number in lost:
                i = int(number) - 1
                if i < n_gaps:
                    refused.add(i)
                    self._requeue(*pending[i])
                else:
                    topic, _, ts, conn, _ = batch[i - n_gaps]
                    self._lose(topic, ts, conn, GAP_REASON_ERROR, start + i - n_gaps)
        for i, drops in enumerate(gaps.values()):
            if i not in refused:
                self._gaps_published[drops.reason] += 1
        self._published += len(batch) + n_gaps - fenced - len(lost)
        if refused:
            self._gap_retry_at = time.monotonic() + self._failures.next_delay()
        elif not lost:
            self._failures.reset()

    async def _refused(
        self, batch: list[_Item], start: int, states: dict[str, tuple[bytes, str | None]], gaps: _Gaps
    ) -> None:
        """Redis refused the whole batch for good: its events are lost (announced later), its gap events and
        state records wait for a later batch; pause before the next attempt, which would likely fail too."""
        for key, drops in gaps.items():
            self._requeue(key, drops)
        for i, (topic, _, ts, conn, _) in enumerate(batch):
            self._lose(topic, ts, conn, GAP_REASON_ERROR, start + i)
        for topic, state in states.items():
            self._states.setdefault(topic, state)  # unless set_state() gave a newer one meanwhile
        delay = self._failures.next_delay()
        self._gap_retry_at = time.monotonic() + delay
        await asyncio.sleep(delay)

    async def _write(
        self, batch: list[_Item], states: dict[str, tuple[bytes, str | None]], gaps: _Gaps
    ) -> tuple[int, list[int]] | None:
        """Send one batch; while Redis is unreachable or cannot take writes (``is_transient``) retry the same
        batch with backoff until it succeeds.

        Returns ``(fenced events, numbers of the events whose XADD failed)``, or None when Redis refused the
        whole batch with an error resending would repeat (``NOPERM``, a script error).
        """
        backoff: Backoff | None = None
        outage_since = 0.0
        announce = [(topic, drops.conn, _dumps(drops.event(topic))) for (topic, _), drops in gaps.items()]
        self._batch_no += 1
        script_keys, script_args, conns = self._args.build(announce, batch, states, self._batch_no)
        while True:
            if not self._writable.is_set():
                await self._writable.wait()
            try:
                reply = await self._script(keys=script_keys, args=script_args)
            except Exception as exc:  # classified below: resent, or lost and announced; never raised
                self._redis_errors += 1
                self._last_error = f"{type(exc).__name__}: {exc}"
                if not is_transient(exc):
                    log.error("redis refused a batch of %d events: %s; announcing them as lost",
                              len(batch), self._last_error, exc_info=not isinstance(exc, RedisError))  # fmt: skip
                    return None
                if backoff is None:
                    backoff = Backoff(0.1, 1.0, rng=random.Random())
                    outage_since = time.monotonic()
                    log.warning("redis unavailable or not writable, holding %d events and retrying: %s",
                                len(batch), self._last_error)  # fmt: skip
                await asyncio.sleep(backoff.next_delay())
                continue
            if backoff is not None:
                log.warning(
                    "redis writable again after %.1f s and %d retries; %d events queued",
                    time.monotonic() - outage_since,
                    backoff.attempts,
                    len(self._queue),
                )
            failed, first, fenced, fenced_conns, lost = reply[:5]
            if len(reply) > 5:  # written by an earlier run whose reply was lost: nothing written twice
                self._resends_skipped += 1
                log.info("batch %d was already written (its reply was lost); not written again", self._batch_no)
            # Command-level errors (e.g. WRONGTYPE) are deterministic: count and log, never resend.
            if failed:
                text = first.decode(errors="replace") if isinstance(first, bytes) else str(first)
                self._redis_errors += int(failed)
                self._last_error = f"ResponseError: {text}"
                now = time.monotonic()
                if text != self._logged_error or now - self._logged_at >= _ERROR_LOG_EVERY_S:  # a broken key fails
                    self._logged_error, self._logged_at = text, now  # every batch: log it now and then
                    log.error("%d redis commands failed in a batch, %d events not written (announced by gap events); "
                              "first: %s", failed, len(lost), text)  # fmt: skip
            if fenced_conns:
                self._fenced += int(fenced)
                self.fenced_batches.update(conns[int(i) - 1] for i in fenced_conns)
                log.warning(
                    "worker %s does not hold the lease of %s: %d events not written (fenced)",
                    self.worker_id, ", ".join(conns[int(i) - 1] for i in fenced_conns), fenced,
                )  # fmt: skip
            return int(fenced), lost
