"""The one writer of events to Redis: a bounded queue drained in batches, one Redis command per batch.

Connections call ``publish()`` (synchronous, never blocks, never awaits); one writer task turns
whatever has accumulated into ONE Redis command (style.md habit 7): an ``EVALSHA`` of a small
Lua script that does, inside Redis::

    once per batch, per connection:  GET fp:lease:{conn}  (fencing, below)
    per event, in receive order:     XADD fp:stream:{topic} MAXLEN ~ N * d <json> ; PUBLISH fp:pub:{topic} <json>
    per topic in the batch:          SET fp:last:{topic} <last json>
    once per batch:                  HSET fp:topic:last_event {topic: ts_received ms ...}
                                     HSET fp:subs {topic: state json ...}   (queued by set_state)

A batch is at most ``max_batch`` events (default 500: the script holds Redis for ~2 ms), 4x that while a deep
backlog waits (``workers.publish_queue.EventQueue.take``). The script, its argument layout and reply, and which
Redis errors are transient live in ``workers.publish_script``.

Fencing. ``publish(topic, event, conn_id)`` tags an event with the connection that produced it. For every connection
present in a batch the script reads its lease once and writes that connection's events (and its ``set_state`` records)
only when the lease holds this publisher's ``worker_id`` at that instant; the rest are skipped and counted
(``stats["fenced"]``). The check and the writes are one atomic script, so a worker that lost its lease can never write
after another worker took the connection over. Events without a ``conn_id`` (or a publisher without a ``worker_id``)
are not fenced. Callers must flush before releasing a lease on a graceful stop, or the events still queued for that
connection are fenced.

Redis outages. A batch whose script call failed on a connection error, or on an error reply of a Redis that cannot
take writes *now* (``READONLY`` from a demoted master or a replica, ``LOADING``, ``MASTERDOWN``, ``TRYAGAIN``,
``OOM``, ...: ``workers.publish_script.is_transient``) is sent again whole (with backoff) until Redis takes it, in
order. Nothing is written twice: Redis refuses such a batch before writing any of it, and a batch it executed but
whose reply was lost with the connection is recognised by its number when resent (``fp:batch:{publisher}``, see
``workers.publish_script``). Meanwhile new events queue up, in order, to ``max_queue`` (plus the one batch in flight);
``stats`` reports the backlog (``queue_depth``, ``inflight``, ``oldest_queued_age_ms``). Beyond the bound the OLDEST
queued event is dropped.

Losses are always announced: every event that does not reach its stream is counted per topic and reason, and a later
batch starts with one ``gap`` event per (topic, reason), before any later event of that topic; a gap event Redis
refuses in turn is tried again, with backoff, until it is written. The queue, the gap event's shape, its ``reason``
codes (``GAP_REASON_*``) and the memory bound live in ``workers.publish_queue``.

Paused writes: ``pause_writes()`` holds every batch until ``resume_writes()`` (events queue as in an outage) while a
connection is suspended (``workers.suspend``). Lag beyond LAG_MAX_MS: ``queue.shed`` (``workers.lag_guard``). Split
mode (``events``: not the control Redis): ``workers.publish_nodes`` writes each batch (per node, fence tokens, WAIT).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from collections import Counter
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from workers.backoff import Backoff
from workers.logutil import RateLimitedLog
from workers.metrics import IngestStats
from workers.publish_nodes import SplitWriter
from workers.publish_queue import GAP_REASON_ERROR, GAP_REASON_OVERFLOW, GAP_REASON_UNSERIALIZABLE, EventQueue, Gaps
from workers.publish_script import PUBLISH_SCRIPT, Item, ScriptArgs, is_transient, use_hiredis_packing

__all__ = ["GAP_REASON_ERROR", "GAP_REASON_OVERFLOW", "GAP_REASON_UNSERIALIZABLE", "Publisher"]

log = logging.getLogger(__name__)
_dumps = orjson.dumps
#: Seconds between two log lines for the same failing command (a broken key fails in every batch).
_ERROR_LOG_EVERY_S = 10.0


class Publisher:
    """Batches normalized events (``control.events``) into Redis; see the module docstring.

    :param redis: a ``decode_responses=False`` client (``control.redis_client.make_redis(url, decode=False)``).
    :param stream_maxlen: approximate cap of every event stream (``MAXLEN ~``).
    :param max_batch: most events per batch (one script call); 4x while a deep backlog waits.
    :param max_queue: most events held while Redis is slow or down; the oldest beyond it are dropped
        and announced with a gap event.
    :param high_water: queue depth at which ``congested`` turns true (readers then await ``room()``);
        default ``min(20_000, max_queue)``.
    :param worker_id: the lease owner this publisher writes for; events published with a ``conn_id`` are
        written only while ``fp:lease:{conn_id}`` holds this id. "" turns fencing off.
    :param events: split mode: a client of the events Redis (``control.events_redis.make_events_redis``); ``redis``
        then holds the control state only. :param min_replicas: split mode's ``WAIT`` (``workers.publish_nodes``).

    ``stats`` (a fresh dict on each read): ``events_published`` (written, gap events included), ``batches``,
    ``max_batch_seen``, ``queue_depth`` (queued, not yet in a batch), ``inflight`` (events of the batch being
    written), ``oldest_queued_age_ms`` (age of the oldest unwritten event, in flight included; 0 when none),
    ``dropped`` (all events lost, each announced by a gap event), ``dropped_by_topic`` (losses per topic),
    ``dropped_by_reason`` (losses per gap reason), ``gaps_published`` (gap events written for them),
    ``gaps_by_reason`` (the same per reason), ``gaps_pending`` (gap events waiting to be written), ``fenced``
    (events skipped because their connection's lease was not ours), ``redis_errors`` (failed batch writes plus
    failed commands), ``resends_skipped`` (batches found already written when resent after a lost reply),
    ``last_error`` (str or None); split mode adds ``SplitWriter.stats`` (``unreplicated`` ...).
    """

    def __init__(self, redis: Redis, *, stream_maxlen: int, max_batch: int = 500, max_queue: int = 200_000,
                 high_water: int | None = None, worker_id: str = "", events: Any = None, min_replicas: int = 0,
                 ) -> None:  # fmt: skip
        high_water = min(20_000, max_queue) if high_water is None else high_water
        if max_batch < 1 or max_queue < 1 or not 1 <= high_water <= max_queue:
            raise ValueError("max_batch and max_queue must be >= 1 and high_water within 1..max_queue")
        self.high_water = high_water
        #: The queued events, the batch in flight and the losses not yet announced.
        self._events = EventQueue(max_queue, high_water)
        #: Cleared while writes are paused (``pause_writes``).
        self._writable = asyncio.Event()
        self._writable.set()
        #: Per connection id: batches in which its events were fenced (``workers.suspend``).
        self.fenced_batches: Counter[str] = Counter()
        self.redis, self.stream_maxlen, self.max_batch, self.max_queue = redis, stream_maxlen, max_batch, max_queue
        self.worker_id = worker_id
        self._owner = worker_id.encode()
        self._states: dict[str, tuple[bytes, str | None]] = {}
        #: Monotonic time before which gap events Redis refused are not tried again on their own.
        self._gap_retry_at = 0.0
        self._failures = Backoff(0.1, 5.0, rng=random.Random())  # delays after batches Redis refused for good
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: This instance's id in ``fp:batch:{publisher}`` (exactly-once resends, see ``workers.publish_script``).
        self.publisher_id = f"{worker_id or 'anon'}:{secrets.token_hex(6)}"
        self._batch_no = 0  # batches handed to the script (their numbers)
        self._resends_skipped = 0
        use_hiredis_packing(redis)  # a batch's ~2 arguments per event, packed in C
        self._args: ScriptArgs | SplitWriter = ScriptArgs(stream_maxlen, self._owner, self.publisher_id)
        self._script: Any = redis.register_script(PUBLISH_SCRIPT)  # EVALSHA, loading the script on NOSCRIPT
        self.split = None if events is None else SplitWriter(redis, events, stream_maxlen=stream_maxlen,
            owner=self._owner, publisher=self.publisher_id, min_replicas=min_replicas)  # fmt: skip
        if self.split is not None:
            self._args = self._script = self.split
        # Progress counters for flush() (events are numbered by the queue, see workers.publish_queue).
        self._state_gen = 0  # set_state() calls
        self._state_done = 0  # state generation known written
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._published = 0
        self._batches = 0
        self._max_batch_seen = 0
        self._gaps_published: Counter[str] = Counter()
        self._fenced = 0
        self._redis_errors = 0
        self._last_error: str | None = None
        #: A broken key fails every batch: its error is logged now and then (a new error text at once).
        self._error_log = RateLimitedLog(log, _ERROR_LOG_EVERY_S)
        #: Events written per topic and their ts_received -> Redis latency, once per batch (``workers.metrics``).
        self.ingest = IngestStats()

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
            self._events.lose_unqueued(topic, ts if isinstance(ts, int) else None, conn_id if self._owner else None,
                                       GAP_REASON_UNSERIALIZABLE)  # fmt: skip
            if not self._wake.is_set():
                self._wake.set()
            return
        self._events.append((topic, payload, event.get("ts_received"), conn_id if self._owner else None,
                             time.monotonic()))  # fmt: skip
        if not self._wake.is_set():
            self._wake.set()

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
    def queue(self) -> EventQueue:
        """The queue; ``workers.lag_guard``'s ``shed`` and a handed-over connection's ``discard`` act on it."""
        return self._events

    @property
    def congested(self) -> bool:
        """True while ``high_water`` or more events wait to be written."""
        return not self._events.room.is_set()

    async def room(self) -> None:
        """Return once the queue has drained below ``high_water // 2`` (immediately when not congested).

        Connections await this after a frame while ``congested``: a burst faster than Redis takes
        then slows the socket reader (TCP backpressure) instead of growing memory.
        """
        await self._events.room.wait()

    @property
    def stats(self) -> dict[str, Any]:
        """Counters, see the class docstring."""
        events = self._events
        return {
            "events_published": self._published, "batches": self._batches, "max_batch_seen": self._max_batch_seen,
            "queue_depth": len(events.items), "inflight": events.inflight_n,
            "oldest_queued_age_ms": events.oldest_age_ms(), "dropped": events.dropped,
            "dropped_by_topic": dict(events.dropped_by_topic), "dropped_by_reason": dict(events.dropped_by_reason),
            "gaps_published": self._gaps_published.total(), "gaps_by_reason": dict(self._gaps_published),
            "gaps_pending": events.gaps_pending, "fenced": self._fenced + events.discarded,
            "redis_errors": self._redis_errors, "resends_skipped": self._resends_skipped,
            "last_error": self._last_error, **(self.split.stats if self.split is not None else {}),
        }

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer task (idempotent; needs a running loop)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="publisher-writer")

    async def flush(self, timeout_s: float) -> bool:
        """Wait until everything queued before this call is written (or lost and announced); False on timeout."""
        target = (self._events.appended, self._state_gen)
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
        inflight = self._events.inflight_n
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            if (current := asyncio.current_task()) is not None and current.cancelling():
                raise
        self._task = None
        if not flushed:
            log.warning("publisher closed with %d events unwritten and %d gap events unannounced",
                        len(self._events.items) + inflight, self._events.gaps_pending)  # fmt: skip
        if self.split is not None:  # split mode: the events client is the publisher's
            await self.split.aclose()

    # -- writer -----------------------------------------------------------------------------------

    def _done(self, events_target: int, state_target: int) -> bool:
        return self._state_done >= state_target and self._events.done(events_target)

    def _notify(self) -> None:
        for events_target, state_target, fut in self._waiters:
            if not fut.done() and self._done(events_target, state_target):
                fut.set_result(None)

    async def _run(self) -> None:
        events = self._events
        queue = events.items
        wake = self._wake
        while True:
            if not queue and not self._states:
                if not events.gaps:
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
            start, batch, gaps = events.take(self.max_batch)
            states, self._states = self._states, {}
            state_gen = self._state_gen
            result = await self._write(batch, states, gaps)
            events.settle()
            self._batches += 1
            self._max_batch_seen = max(self._max_batch_seen, len(batch))
            if result is None:
                await self._refused(batch, start, states, gaps)
            else:
                self._state_done = state_gen
                self._written(batch, start, gaps, *result)
            events.after_batch()
            self._notify()

    def _written(self, batch: list[Item], start: int, gaps: Gaps, fenced: int, lost: list[int], fenced_conns: set[str]
                 ) -> None:  # fmt: skip
        """Account for a batch the script ran (``lost``: ``EventQueue.written``; ``fenced_conns``: not written)."""
        refused = self._events.written(batch, start, gaps, lost)
        taken = batch
        if fenced or lost:  # rare: only the events Redis took count as published
            skip = {int(n) - 1 - len(gaps) for n in lost}
            taken = [it for i, it in enumerate(batch) if i not in skip and it[3] not in fenced_conns]
        self.ingest.written(taken, time.time_ns() // 1_000_000)
        for i, drops in enumerate(gaps.values()):
            if i not in refused:
                self._gaps_published[drops.reason] += 1
        self._published += len(batch) + len(gaps) - fenced - len(lost)
        if refused:
            self._gap_retry_at = time.monotonic() + self._failures.next_delay()
        elif not lost:
            self._failures.reset()

    async def _refused(
        self, batch: list[Item], start: int, states: dict[str, tuple[bytes, str | None]], gaps: Gaps
    ) -> None:
        """Redis refused the whole batch for good: its events are lost (announced later), its gap events and
        state records wait for a later batch; pause before the next attempt, which would likely fail too."""
        self._events.refused(batch, start, gaps)
        for topic, state in states.items():
            self._states.setdefault(topic, state)  # unless set_state() gave a newer one meanwhile
        delay = self._failures.next_delay()
        self._gap_retry_at = time.monotonic() + delay
        await asyncio.sleep(delay)

    async def _write(
        self, batch: list[Item], states: dict[str, tuple[bytes, str | None]], gaps: Gaps
    ) -> tuple[int, list[int], set[str]] | None:
        """Send one batch; while Redis is unreachable or cannot take writes (``is_transient``) retry the same
        batch with backoff until it succeeds.

        Returns ``(fenced events, numbers of the events whose XADD failed, fenced connections)``, or None when
        Redis refused the whole batch with an error resending would repeat (``NOPERM``, a script error).
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
                log.warning("redis writable again after %.1f s and %d retries; %d events queued",
                            time.monotonic() - outage_since, backoff.attempts, len(self._events.items))  # fmt: skip
            failed, first, fenced, fenced_conns, lost = reply[:5]
            if len(reply) > 5:  # written by an earlier run whose reply was lost: nothing written twice
                self._resends_skipped += 1
                log.info("batch %d was already written (its reply was lost); not written again", self._batch_no)
            # Command-level errors (e.g. WRONGTYPE) are deterministic: count and log, never resend.
            if failed:
                text = first.decode(errors="replace") if isinstance(first, bytes) else str(first)
                self._redis_errors += int(failed)
                self._last_error = f"ResponseError: {text}"
                self._error_log.log(logging.ERROR, "%d redis commands failed in a batch, %d events not written "
                                    "(announced by gap events); first: %s", failed, len(lost), text, key=text)  # fmt: skip
            fenced_ids = {conns[int(i) - 1] for i in fenced_conns}
            if fenced_ids:
                self._fenced += int(fenced)
                self.fenced_batches.update(fenced_ids)
                log.warning("worker %s does not hold the lease of %s: %d events not written (fenced)",
                            self.worker_id, ", ".join(sorted(fenced_ids)), fenced)  # fmt: skip
            return int(fenced), lost, fenced_ids
