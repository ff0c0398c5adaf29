"""BookKeeper: the order books of one connection session, kept in sequence and published.

The reader hands every ``BookUpdate`` to ``on_update`` (synchronous and cheap: one sync step, a
delta event per applied update, at most one top-N snapshot per interval). Everything that waits
runs in tasks the keeper owns: REST snapshot fetches (Binance, Gate; at most one in flight per
topic, retried with backoff, 429/418 ``Retry-After`` honoured for the whole keeper) and BitMart's
on-socket resync requests. The sequencing itself is ``workers.orderbook`` (pure).

Events, all on the topic ``{exchange}:depth:{SYMBOL}`` (``control.events``):

- ``depth_delta`` for every applied update, as applied (ids as strings).
- ``depth``: the top ``levels_for(topic)`` levels per side, at most every ``interval_ms`` per topic;
  published on an update once the interval has passed, else by one keeper-wide timer (so the last
  state always goes out), and at once after every snapshot.
- ``gap`` when the book stops being trustworthy: ``sequence``/``crossed`` (an update did not fit;
  the book starts over from a fresh snapshot), ``reconnect`` (``reset``) and ``snapshot_failed``
  (once per failing episode, while retries go on). ``since`` is the receive time (ms) of the last
  update applied before it (the detection time if none); ``until`` is None.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from control.topics import Topic
from workers.backoff import Backoff
from workers.exchanges.base import BookAdapter, BookUpdate
from workers.logutil import RateLimitedLog
from workers.orderbook import APPLIED, BUFFERED, GAP, NEED_SNAPSHOT, STALE, BookSync, Outcome
from workers.publisher import Publisher
from workers.rest import RestError, fetch

log = logging.getLogger(__name__)



class SnapshotError(RestError):
    """A REST snapshot could not be used: no REST route for this exchange, or an answer other than 200 (transport
    errors, timeouts and 429/418 come as ``RestError`` from ``workers.rest.fetch``)."""


@dataclass(slots=True, eq=False)
class _Book:
    topic: str
    symbol: str
    sync: BookSync
    last: BookUpdate | None = None  # last applied update or snapshot (ids and times of depth events)
    good_until: int | None = None  # ts_received (ms) of the last update applied
    last_depth: float = -math.inf  # monotonic time of the last depth event
    requested_at: float = 0.0  # monotonic time a socket snapshot was last asked for (BitMart)
    failing: bool = False  # a snapshot_failed gap was published for the current episode
    fetch: asyncio.Task[None] | None = field(default=None, repr=False)


class BookKeeper:
    """Order books of one connection (see the module docstring); one instance per connection.

    :param conn_id: connection id, in every log line.
    :param adapter: exchange adapter (``BookAdapter``: ``book_sync``, ``snapshot_request``, ``parse_snapshot``, ``resync_frame``).
    :param publisher: event sink. :param session: aiohttp session for REST snapshots.
    :param rest_base_url: REST base URL (``Settings.exchange_rest_uri``), "" when snapshots come on the socket.
    :param interval_ms: least time between two ``depth`` events of one topic.
    :param send_frame: sends a text frame on the current socket (BitMart resync requests).
    :param levels_for: topic -> levels per side of its ``depth`` events.
    :param clock: epoch seconds, for event times only (intervals use ``time.monotonic``).
    :param fetch_timeout_s: bound on one snapshot request. :param retry_initial_s, retry_max_s: fetch backoff.
    :param socket_snapshot_timeout_s: re-ask for a socket snapshot when none came this long after asking.
    :param max_fetches: snapshot requests in flight at once (REST weight: Binance limit=1000 costs 20).

    ``stats``: ``applied`` (updates applied), ``buffered`` (held for a snapshot), ``stale`` (dropped as
    older than the book, or while waiting for a socket snapshot), ``gaps`` (sequence/crossed gaps),
    ``resyncs`` (books started over: gaps, reconnects, snapshots that did not bridge), ``snapshots_fetched``
    (snapshots applied, REST or socket), ``snapshot_failures`` (failed REST fetches).
    """

    def __init__(
        self, *, conn_id: str, adapter: BookAdapter, publisher: Publisher, session: aiohttp.ClientSession,
        rest_base_url: str, interval_ms: int, send_frame: Callable[[str], Awaitable[None]],
        levels_for: Callable[[str], int], clock: Callable[[], float] = time.time,
        fetch_timeout_s: float = 10.0, retry_initial_s: float = 0.5, retry_max_s: float = 30.0,
        socket_snapshot_timeout_s: float = 10.0, max_fetches: int = 4, rng: random.Random | None = None,
    ) -> None:
        self.conn_id, self.adapter, self.publisher, self.session = conn_id, adapter, publisher, session
        self.rest_base_url = rest_base_url.rstrip("/")
        self.interval_s = interval_ms / 1000.0
        self.send_frame, self.levels_for, self.clock = send_frame, levels_for, clock
        self.fetch_timeout_s, self.retry_initial_s, self.retry_max_s = fetch_timeout_s, retry_initial_s, retry_max_s
        self.socket_snapshot_timeout_s = socket_snapshot_timeout_s
        self._rng = rng or random.Random()
        self._exchange = adapter.id
        self._books: dict[str, _Book] = {}
        self._dirty: set[str] = set()  # topics whose last state has not gone out as a depth event
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._fetch_slots = asyncio.Semaphore(max_fetches)
        self._blocked_until = 0.0  # monotonic: no REST request before this (Retry-After)
        self._tasks: set[asyncio.Task[None]] = set()
        self._limited_log = RateLimitedLog(log)
        self.last_error: str | None = None
        self.stats = {"applied": 0, "buffered": 0, "stale": 0, "gaps": 0, "resyncs": 0,
                      "snapshots_fetched": 0, "snapshot_failures": 0}

    # -- topics -----------------------------------------------------------------------------------

    def start(self, topic: str) -> None:
        """Keep a book for ``topic`` (``{exchange}:depth:{SYMBOL}``); idempotent."""
        if topic in self._books:
            return
        sync = self.adapter.book_sync()
        book = _Book(topic, Topic.parse(topic).symbol, sync)
        if not sync.buffers:  # the subscribe brings a snapshot on the socket (BitMart)
            sync.reset(requested=True)
            book.requested_at = time.monotonic()
        self._books[topic] = book

    def stop(self, topic: str) -> None:
        """Forget ``topic``'s book (unsubscribed); no event is published."""
        book = self._books.pop(topic, None)
        if book is not None and book.fetch is not None:
            book.fetch.cancel()
        self._dirty.discard(topic)

    @property
    def topics(self) -> list[str]:
        return list(self._books)

    def book(self, topic: str) -> BookSync | None:
        """The sync (and its ``book``) kept for ``topic`` (tests, diagnostics)."""
        book = self._books.get(topic)
        return book.sync if book is not None else None

    def reset(self, reason: str = "reconnect") -> None:
        """Start every book over (the socket is gone): announce a gap for each live book, drop all state.

        Snapshot fetches in flight are cancelled; the next update asks for a new one (REST), or the
        resubscribe brings one (socket snapshots).
        """
        now = time.monotonic()
        for book in self._books.values():
            if book.fetch is not None:
                book.fetch.cancel()
                book.fetch = None
            if book.sync.synced:
                self._gap_event(book, reason)
                self.stats["resyncs"] += 1
            book.sync.reset(requested=not book.sync.buffers)
            book.last, book.failing, book.requested_at = None, False, now
        self._dirty.clear()

    async def close(self) -> None:
        """Cancel fetches, sends and the depth timer; forget every book."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        tasks = [b.fetch for b in self._books.values() if b.fetch is not None] + list(self._tasks)
        self._books.clear()
        self._dirty.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def status(self) -> dict[str, Any]:
        """Counters for the connection's status record."""
        synced = sum(1 for b in self._books.values() if b.sync.synced)
        return {"books": len(self._books), "synced": synced, **self.stats, "last_error": self.last_error}

    # -- updates (hot path) -----------------------------------------------------------------------

    def on_update(self, update: BookUpdate) -> None:
        """Sequence-check and apply one update from the socket; never raises, never awaits."""
        book = self._books.get(update.topic)
        if book is None:
            return  # not (or no longer) a desired depth topic
        try:
            outcome = book.sync.feed(update)
        except Exception as exc:  # noqa: BLE001 - a malformed level: the book may be half-updated, so start over
            self._log_limited("%s: bad book update (%r); resyncing", update.topic, exc, topic=update.topic)
            book.sync.reset(requested=True)
            outcome = Outcome(GAP, reason="sequence")
        kind = outcome.kind
        if kind is APPLIED:
            self._applied(book, outcome.applied, update if update.snapshot else None)
        elif kind is BUFFERED:
            self.stats["buffered"] += 1
        elif kind is STALE:
            self.stats["stale"] += 1
            if not book.sync.synced and not book.sync.buffers:
                now = time.monotonic()
                if now - book.requested_at >= self.socket_snapshot_timeout_s:
                    self._request_snapshot(book)  # the socket snapshot we asked for never came
        elif kind is NEED_SNAPSHOT:
            if book.sync.buffers:
                self.stats["buffered"] += 1
            self._request_snapshot(book)
        else:
            self._gap(book, outcome.reason or "sequence")

    def _applied(self, book: _Book, applied: list[BookUpdate], snapshot: BookUpdate | None) -> None:
        publish, exchange, topic = self.publisher.publish, self._exchange, book.topic
        for u in applied:
            publish(topic, {
                "type": "depth_delta", "exchange": exchange, "symbol": u.symbol,
                "first_update_id": str(u.first_id if u.first_id is not None else u.last_id),
                "last_update_id": str(u.last_id), "bids": u.bids, "asks": u.asks,
                "ts_exchange": u.ts_exchange, "ts_received": u.ts_received,
            })
        if applied:
            self.stats["applied"] += len(applied)
            book.last = last = applied[-1]
            book.good_until = last.ts_received
        if snapshot is not None:
            self.stats["snapshots_fetched"] += 1
            book.failing = False
            if not applied:
                book.last = snapshot
                book.good_until = snapshot.ts_received
        now = time.monotonic()
        if snapshot is not None or now - book.last_depth >= self.interval_s:
            self._publish_depth(book, now)
        elif topic not in self._dirty:
            self._dirty.add(topic)
            self._arm(book.last_depth + self.interval_s, now)

    def _publish_depth(self, book: _Book, now: float) -> None:
        last, sync = book.last, book.sync
        if last is None or not sync.synced:
            return
        levels = self.levels_for(book.topic)
        bids, asks = sync.book.top(levels)
        self.publisher.publish(book.topic, {
            "type": "depth", "exchange": self._exchange, "symbol": book.symbol, "levels": levels,
            "bids": bids, "asks": asks, "update_id": str(sync.last_id),
            "ts_exchange": last.ts_exchange, "ts_received": last.ts_received,
        })
        book.last_depth = now
        self._dirty.discard(book.topic)

    def _arm(self, due: float, now: float) -> None:
        """Make the one timer fire by ``due`` (monotonic)."""
        if self._timer is not None:
            if self._timer_at <= due:
                return
            self._timer.cancel()
        self._timer_at = due
        self._timer = asyncio.get_running_loop().call_later(max(due - now, 0.0), self._on_timer)

    def _on_timer(self) -> None:
        self._timer, self._timer_at = None, math.inf
        now = time.monotonic()
        next_due = math.inf
        for topic in list(self._dirty):
            book = self._books.get(topic)
            if book is None or not book.sync.synced:
                self._dirty.discard(topic)
                continue
            due = book.last_depth + self.interval_s
            if due <= now:
                self._publish_depth(book, now)
            else:
                next_due = min(next_due, due)
        if next_due < math.inf:
            self._arm(next_due, now)

    # -- gaps and snapshots -----------------------------------------------------------------------

    def _gap(self, book: _Book, reason: str) -> None:
        self.stats["gaps"] += 1
        self.stats["resyncs"] += 1
        self._gap_event(book, reason)
        book.last = None
        self._dirty.discard(book.topic)
        self._log_limited("%s: %s gap; resyncing", book.topic, reason, topic=book.topic)
        self._request_snapshot(book)

    def _gap_event(self, book: _Book, reason: str) -> None:
        since = book.good_until if book.good_until is not None else int(self.clock() * 1000)
        self.publisher.publish(book.topic, {"type": "gap", "topic": book.topic, "reason": reason,
                                            "since": since, "until": None})

    def _request_snapshot(self, book: _Book) -> None:
        if book.sync.buffers:  # REST (Binance, Gate)
            if book.fetch is None or book.fetch.done():
                book.fetch = asyncio.get_running_loop().create_task(self._fetch_loop(book),
                                                                    name=f"snapshot:{book.topic}")
            return
        book.requested_at = time.monotonic()
        frame = self.adapter.resync_frame(Topic.parse(book.topic))
        if frame is None:
            self._log_limited("%s: adapter has no resync frame; waiting for a snapshot", book.topic)
            return
        task = asyncio.get_running_loop().create_task(self._send(frame), name=f"resync:{book.topic}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, frame: str) -> None:
        try:
            await self.send_frame(frame)
        except Exception as exc:  # noqa: BLE001 - the socket is going away; the reconnect resubscribes anyway
            self._log_limited("could not send a resync request: %r", exc)

    async def _fetch_loop(self, book: _Book) -> None:
        """Fetch a snapshot for ``book`` until one is accepted (or the book is stopped/reset)."""
        backoff = Backoff(self.retry_initial_s, self.retry_max_s, rng=self._rng)
        while self._books.get(book.topic) is book:
            try:
                snapshot = await self._fetch(book)
            except Exception as exc:  # noqa: BLE001 - HTTP, timeout or parse error: retried with backoff
                await self._fetch_failed(book, exc, backoff)
                continue
            try:
                outcome = book.sync.feed(snapshot)
            except Exception as exc:  # noqa: BLE001 - a malformed level: the book may be half-replaced
                book.sync.reset(requested=True)
                await self._fetch_failed(book, exc, backoff)
                continue
            if outcome.kind is APPLIED:
                self._applied(book, outcome.applied, snapshot)
                return
            if outcome.kind is STALE:  # already synced from the socket (Gate full:true)
                return
            # The snapshot did not bridge the buffered stream (older than it, or crossed): fetch
            # again. Consumers were told about this episode already (or the book never went live).
            self.stats["resyncs"] += 1
            await asyncio.sleep(backoff.next_delay())

    async def _fetch_failed(self, book: _Book, exc: Exception, backoff: Backoff) -> None:
        """Count and log a failed fetch, announce the episode once, then wait before the next try."""
        self.stats["snapshot_failures"] += 1
        self.last_error = f"{book.topic}: snapshot failed: {exc}"
        delay = backoff.next_delay()
        retry_after = exc.retry_after_s if isinstance(exc, RestError) else None
        if retry_after is not None:
            delay = max(delay, retry_after)
        self._log_limited("%s: snapshot failed (%s); retrying in %.2f s", book.topic, exc, delay, topic=book.topic)
        if not book.failing:
            book.failing = True
            self._gap_event(book, "snapshot_failed")
        await asyncio.sleep(delay)

    async def _fetch(self, book: _Book) -> BookUpdate:
        request = self.adapter.snapshot_request(book.symbol, self.levels_for(book.topic))
        if request is None or not self.rest_base_url:
            raise SnapshotError("no REST snapshot for this exchange (no request or no REST URL)")
        url = self.rest_base_url + request.path
        try:
            async with self._fetch_slots:
                wait = self._blocked_until - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                status, body = await fetch(self.session, "GET", url, params=request.params,
                                           timeout_s=self.fetch_timeout_s,
                                           retry_after_default_s=self.retry_initial_s)  # fmt: skip
        except RestError as exc:  # timeout, transport error, or 429/418 (Retry-After holds the whole keeper)
            if exc.retry_after_s is not None:
                self._blocked_until = max(self._blocked_until, time.monotonic() + exc.retry_after_s)
            raise
        if status != 200:
            raise SnapshotError(f"HTTP {status}: {body[:200]!r}", status=status, body=body[:200])
        return self.adapter.parse_snapshot(book.symbol, body, int(self.clock() * 1000))

    def _log_limited(self, fmt: str, *args: object, topic: str | None = None) -> None:
        self._limited_log.warning("%s: " + fmt, self.conn_id, *args, topic=topic)

