"""The live dashboard's data: one shared sampler that turns ``/status`` plus the topics' Redis Streams into snapshots.

``DashboardFeed.next()`` gives a snapshot about every ``interval_s`` seconds to each dashboard client
(``GET /dashboard/feed``, ``app.routes.dashboard``, between ``join()`` and ``leave()``). One sampling task serves every client: it runs while at least
one client is connected, and a client that is slower than the sampler only ever gets the newest snapshot (no
queue builds up). A snapshot is the ``/status`` document (``app.routes.status.status_snapshot``) where every
subscription record also carries, measured from its Redis Stream ``fp:stream:{topic}`` since the previous tick:

- ``events``: the stream's ``entries-added`` (every event ever written, trimming aside; Redis 7) or, on a Redis
  without it, its length;
- ``rate``: events per second over the last tick (float, null on the first tick or after a stream reset);
- ``latency_ms``: median, over up to ``LATENCY_SAMPLE`` of the entries written since the previous tick, of the
  entry's Redis time (its stream id's ms part: the publisher adds with ``*``) minus the event's ``ts_exchange``:
  the exchange->Redis latency in ms. When the exchange clock cannot be compared (no ``ts_exchange``, or more than
  ``CLOCK_SKEW_LIMIT_MS`` away, as with replayed recordings) it is Redis time minus ``ts_received`` instead (the
  worker's receive->Redis latency) and ``latency_from`` says ``"worker"`` rather than ``"exchange"``. Null when
  no entry was written during the tick.

and the snapshot carries ``log``: the newest ``LOG_SIZE`` reconnects and gaps first seen by this sampler (newest
first), each ``{"at" (ms), "kind": "reconnect"|"gap", "reason", "count", "source" (connection or worker id),
"exchange", "detail"}``, found by comparing the connections' ``reconnects``/``reasons``/``gaps``/``books.gaps``
and the workers' ``publisher.gaps_by_reason`` counters between two ticks. While Redis is unreachable a snapshot
is ``{"server_time", "error": "redis_unavailable", "log"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import statistics
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisClusterException, RedisError

from app.routes.status import status_snapshot
from app.sse_hub import parse_stream_id
from control import keys

logger = logging.getLogger(__name__)

#: Newest stream entries read per topic and tick for the latency median.
LATENCY_SAMPLE = 20
#: Beyond this (ms) the exchange's and Redis' clocks are treated as not comparable (replayed or skewed times).
CLOCK_SKEW_LIMIT_MS = 60_000
#: Reconnects and gaps kept for the ``log`` of a snapshot.
LOG_SIZE = 30


@dataclass(slots=True)
class _Meter:
    """A topic's stream position at the previous tick."""

    added: int
    last_id: bytes | None
    at_s: float


def _id_ms(stream_id: bytes) -> int:
    return int(stream_id.split(b"-", 1)[0])


def latency(entries: Iterable[tuple[bytes, dict[bytes, bytes]]]) -> tuple[float | None, str | None]:
    """``(median ms, "exchange"|"worker")`` of Redis time minus the events' exchange (else receive) time.

    ``entries``: ``XRANGE``/``XREVRANGE`` replies (stream id, fields with ``d`` = event JSON). Uses the exchange's
    ``ts_exchange`` when every sampled event has one within ``CLOCK_SKEW_LIMIT_MS`` of Redis time, else
    ``ts_received``. ``(None, None)`` for no usable entry. Malformed entries are skipped.
    """
    exchange: list[int] = []
    worker: list[int] = []
    comparable = True
    for stream_id, fields in entries:
        try:
            event = orjson.loads(fields[b"d"])
            at = _id_ms(stream_id)
        except (KeyError, ValueError, orjson.JSONDecodeError):
            continue
        if not isinstance(event, dict):
            continue
        ts_exchange, ts_received = event.get("ts_exchange"), event.get("ts_received")
        if isinstance(ts_exchange, int) and abs(at - ts_exchange) <= CLOCK_SKEW_LIMIT_MS:
            exchange.append(at - ts_exchange)
        else:
            comparable = False
        if isinstance(ts_received, int):
            worker.append(at - ts_received)
    if exchange and comparable:
        return float(statistics.median(exchange)), "exchange"
    if worker:
        return float(statistics.median(worker)), "worker"
    return None, None


def _counters(status: dict[str, Any]) -> dict[tuple[str, str, str], tuple[int, str | None, str | None]]:
    """Every reconnect and gap counter of a status document: ``(kind, source, reason) -> (count, exchange, detail)``."""
    out: dict[tuple[str, str, str], tuple[int, str | None, str | None]] = {}
    for conn in status.get("connections") or []:
        cid, exchange, detail = str(conn.get("id")), conn.get("exchange"), conn.get("last_error")
        reasons = conn.get("reasons") or {}
        for reason, count in reasons.items():
            if isinstance(count, int):
                out[("reconnect", cid, str(reason))] = (count, exchange, detail)
        if not reasons and isinstance(conn.get("reconnects"), int):
            out[("reconnect", cid, "reconnect")] = (conn["reconnects"], exchange, detail)
        for reason, count in (conn.get("gaps") or {}).items():
            if isinstance(count, int):
                out[("gap", cid, str(reason))] = (count, exchange, None)
        book_gaps = (conn.get("books") or {}).get("gaps")
        if isinstance(book_gaps, int):
            out[("gap", cid, "book_sequence")] = (book_gaps, exchange, (conn.get("books") or {}).get("last_error"))
    for worker in status.get("workers") or []:
        by_reason = (worker.get("publisher") or {}).get("gaps_by_reason") or {}
        for reason, count in by_reason.items() if isinstance(by_reason, dict) else ():
            if isinstance(count, int):
                out[("gap", str(worker.get("id")), str(reason))] = (count, None, None)
    return out


def counter_events(before: dict[str, Any] | None, after: dict[str, Any], at_ms: int) -> list[dict[str, Any]]:
    """Log entries for every reconnect/gap counter that grew from ``before`` to ``after`` (status documents).

    A counter absent from ``before`` (a new connection) counts from 0; nothing is reported when ``before`` is None
    (the first tick is a baseline, not news).
    """
    if before is None:
        return []
    old = _counters(before)
    out = []
    for (kind, source, reason), (count, exchange, detail) in sorted(_counters(after).items()):
        previous = old.get((kind, source, reason), (0, None, None))[0]
        if count > previous:
            out.append({"at": at_ms, "kind": kind, "reason": reason, "count": count - previous, "source": source,
                        "exchange": exchange, "detail": detail})  # fmt: skip
    return out


class DashboardFeed:
    """Shared sampler of the dashboard (see module docstring). ``state``: the app's state (``store``, ``settings``);
    ``redis``: a bytes (``decode=False``) client for the streams; ``interval_s``: seconds between snapshots."""

    def __init__(self, state: Any, redis: Redis, interval_s: float = 1.0) -> None:
        self.state = state
        self.redis = redis
        self.interval_s = interval_s
        self.log: deque[dict[str, Any]] = deque(maxlen=LOG_SIZE)
        self._meters: dict[str, _Meter] = {}
        self._previous: dict[str, Any] | None = None
        self._latest: dict[str, Any] | None = None
        self._seq = 0
        self._changed = asyncio.Event()
        self._clients = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def clients(self) -> int:
        """Dashboard clients connected now."""
        return self._clients

    def join(self) -> None:
        """A client arrives: start the sampling task if it is not running."""
        self._clients += 1
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="dashboard-feed")

    async def leave(self) -> None:
        """A client left (pair of ``join``): the last one stops the sampling task."""
        self._clients -= 1
        if self._clients == 0:
            await self.close()

    async def next(self, seen: int) -> tuple[int, dict[str, Any]]:
        """Wait for a snapshot newer than number ``seen`` (0 at first); returns ``(its number, snapshot)``.

        Only the newest snapshot is returned, so a slow client skips snapshots rather than queueing them. Safe to
        cancel (e.g. from a timeout)."""
        while self._seq == seen or self._latest is None:
            await self._changed.wait()
        return self._seq, self._latest

    async def close(self) -> None:
        """Stop the sampling task (restarted by the next client); the log and the counters' baseline are kept."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            try:
                snapshot = await self.sample()
            except (RedisError, OSError, RedisClusterException) as exc:
                logger.warning("dashboard feed: redis unavailable: %s: %s", type(exc).__name__, exc)
                snapshot = {"server_time": int(time.time() * 1000), "error": "redis_unavailable",
                            "log": list(self.log)}  # fmt: skip
            self._latest = snapshot
            self._seq += 1
            changed, self._changed = self._changed, asyncio.Event()
            changed.set()
            await asyncio.sleep(self.interval_s)  # the sampling period, not a synchronization

    async def sample(self) -> dict[str, Any]:
        """One snapshot now (see module docstring). Raises RedisError/OSError when Redis is unreachable."""
        status = await status_snapshot(self.state)
        self.log.extendleft(counter_events(self._previous, status, status["server_time"]))
        self._previous = status
        topics = [record["topic"] for record in status["subscriptions"]]
        measures = await self.measure(topics)
        for record in status["subscriptions"]:
            record.update(measures.get(record["topic"], {}))
        status["log"] = list(self.log)
        return status

    async def measure(self, topics: list[str]) -> dict[str, dict[str, Any]]:
        """``{topic: {"events", "rate", "latency_ms", "latency_from"}}`` (module docstring), two round trips."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for topic in topics:
                pipe.xinfo_stream(keys.event_stream(topic))
            infos = await pipe.execute(raise_on_error=False)
        now = time.monotonic()
        added: dict[str, tuple[int, bytes | None]] = {}
        for topic, info in zip(topics, infos, strict=True):
            if isinstance(info, dict):
                total = info.get("entries-added", info.get("length")) or 0
                last = info.get("last-generated-id") or (info.get("last-entry") or [None])[0]
                added[topic] = (int(total), last if isinstance(last, bytes) else None)
        async with self.redis.pipeline(transaction=False) as pipe:
            sampled = []
            for topic, (_, last) in added.items():
                meter = self._meters.get(topic)
                if last is None or (meter is not None and meter.last_id == last):
                    continue
                newer = meter is not None and meter.last_id and parse_stream_id(meter.last_id) < parse_stream_id(last)
                low = b"(" + meter.last_id if newer and meter is not None and meter.last_id else b"-"
                pipe.xrevrange(keys.event_stream(topic), max=b"+", min=low, count=LATENCY_SAMPLE)
                sampled.append(topic)
            replies = await pipe.execute(raise_on_error=False) if sampled else []
        entries = {t: r for t, r in zip(sampled, replies, strict=True) if isinstance(r, list)}
        out: dict[str, dict[str, Any]] = {}
        for topic in topics:
            total, last = added.get(topic, (0, None))
            meter = self._meters.get(topic)
            rate = None
            if meter is not None and total >= meter.added and now > meter.at_s:
                rate = round((total - meter.added) / (now - meter.at_s), 2)
            lat, source = latency(entries.get(topic, []))
            out[topic] = {"events": total, "rate": rate, "latency_ms": lat, "latency_from": source}
            self._meters[topic] = _Meter(total, last, now)
        for gone in set(self._meters) - set(topics):
            del self._meters[gone]
        return out
