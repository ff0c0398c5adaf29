"""From the shared ``SSEHub`` reader to one ``/ws`` client: one forwarder per subscribe message.

A ``Group`` holds the hub ``Subscription`` of the topics one subscribe message added and a task that forwards its
entries, exactly as the SSE route joins the hub: the hub subscription is made first, then ``catch_up`` replays
every entry after each topic's start (the client's ``since``, or the stream's last id read just before joining),
then the live entries follow; an entry is sent only when its id is past the topic's last one sent, so a topic
is never delivered twice, and nothing between the start and the live entries is skipped. The hub reads each
topic once per process whatever the number of clients; each entry's message text is built once per process
(``EventTexts``) and shared by every client of the hub's entry.

When the hub drops this subscription's queue (its ``overflowed``: the forwarder was busy replaying), the group
replays from its cursors again: the Stream still holds everything. A client that is too slow is cut by the send
queue (``app.ws.connection``), never here. Redis errors during a replay are retried with backoff, from the
cursors. A hub ``Rewind`` notice (entries lost on a failed-over Redis Cluster master) moves a topic's cursor back
and sends ``{"type":"gap","topic","cursor","data":{gap event, reason "redis_failover"}}``, as a resume does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import orjson
from redis.asyncio import Redis
from redis.backoff import EqualJitterBackoff

from app.sse_entries import READ_ERRORS, Rewind
from app.sse_hub import Entry, SSEHub, StreamId, Subscription, catch_up
from app.ws import protocol as p
from app.ws.connection import BATCH_MAX, BATCH_MAX_CHARS

if TYPE_CHECKING:
    from app.ws.connection import Connection

logger = logging.getLogger(__name__)

_BACKOFF = EqualJitterBackoff(cap=1.0, base=0.05)


class EventTexts:
    """Message text per stream entry, built once per process and shared by every client it reaches.

    The hub hands the same ``Entry`` object to every subscriber of its topic, so the cache is keyed by the
    object's identity and keeps the entry alive while cached (its id cannot be reused meanwhile). Entries a
    client replays from Redis are its own objects: their text is built for that client. FIFO-bounded to ``size``.
    """

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._texts: dict[int, tuple[Entry, str]] = {}

    def text(self, entry: Entry) -> str:
        """``protocol.event_text(entry)``, from the cache when another client already had this entry."""
        cached = self._texts.get(id(entry))
        if cached is not None and cached[0] is entry:
            return cached[1]
        if len(self._texts) >= self.size:
            del self._texts[next(iter(self._texts))]
        text = p.event_text(entry)
        self._texts[id(entry)] = (entry, text)
        return text


TEXTS = EventTexts()


class Chunks:
    """Queue items for a run of one topic's entries: ``(texts joined with ",", topic, last cursor, events)``.

    Every client of a topic gets the same ``Entry`` objects from the hub in the same runs, so a run's items are
    built once per process and shared (keyed by the run's first and last entry's identity and its length; the
    entries are kept alive while cached): for the other clients a run costs one dict lookup, not one per event.
    A run is cut into chunks of at most ``BATCH_MAX`` events and ``BATCH_MAX_CHARS`` characters. A client
    behind the others gets other runs, built for it. FIFO-bounded to ``size``.
    """

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._runs: dict[tuple[int, int, int], tuple[Entry, Entry, list[tuple[str, str, str, int]]]] = {}

    def items(self, topic: str, entries: Sequence[Entry]) -> list[tuple[str, str, str, int]]:
        """The queue items of ``entries`` (non-empty, all of ``topic``, oldest first); the list is shared: read only."""
        first, last = entries[0], entries[-1]
        key = (id(first), id(last), len(entries))
        cached = self._runs.get(key)
        if cached is not None and cached[0] is first and cached[1] is last:
            return cached[2]
        out: list[tuple[str, str, str, int]] = []
        text = TEXTS.text
        parts: list[str] = []
        size = 0
        for entry in entries:
            part = text(entry)
            parts.append(part)
            size += len(part)
            if len(parts) >= BATCH_MAX or size >= BATCH_MAX_CHARS:
                out.append((parts[0] if len(parts) == 1 else ",".join(parts), topic, entry.id, len(parts)))
                parts, size = [], 0
        if parts:
            out.append((parts[0] if len(parts) == 1 else ",".join(parts), topic, last.id, len(parts)))
        if len(self._runs) >= self.size:
            del self._runs[next(iter(self._runs))]
        self._runs[key] = (first, last, out)
        return out


CHUNKS = Chunks()


class Group:
    """The topics of one subscribe message on one connection (module docstring): ``sub`` the hub subscription of
    ``topics`` (only the hub's public API is used: ``take``, ``wait``, ``overflowed``, ``unsubscribe``).

    ``owner``/``last`` are the connection's maps (topic -> owning group, topic -> last id queued); a topic
    unsubscribed, or subscribed again by a later message, is no longer this group's and its entries are skipped.
    """

    def __init__(self, conn: Connection, hub: SSEHub, redis: Redis, sub: Subscription, topics: Sequence[str],
                 owner: dict[str, Group], last: dict[str, StreamId]) -> None:  # fmt: skip
        self.conn = conn
        self.hub = hub
        self.redis = redis
        self.sub = sub
        self.topics = tuple(topics)
        #: The one topic of a one-topic group (then a batching client gets shared chunks), else None.
        self.single = self.topics[0] if len(self.topics) == 1 else None
        self.owner = owner
        self.last = last
        self.task: asyncio.Task[None] | None = None

    def mine(self) -> list[str]:
        """Topics of this group still owned by it."""
        return [t for t in self.topics if self.owner.get(t) is self]

    def start(self) -> None:
        """Start forwarding (catch-up, then live)."""
        self.task = self.conn.spawn(self._run(), f"ws-feed-{self.conn.id}")

    def stop(self) -> None:
        """Stop forwarding and leave the hub (synchronous, idempotent)."""
        if self.task is not None:
            self.task.cancel()
        self.hub.unsubscribe(self.sub)

    def deliver(self, entries: Sequence[Entry]) -> bool:
        """Queue the entries past each topic's cursor; False once the connection refuses (cut or closing).

        A one-topic group of a batching client queues shared chunks (``Chunks``); otherwise one item per event."""
        owner, last = self.owner, self.last
        single = self.single
        if single is not None and self.conn.limits.batch:
            if owner.get(single) is not self:
                return not self.conn.closing
            after = last[single]
            fresh = entries if entries and entries[0].sid > after else [e for e in entries if e.sid > after]
            if not fresh:
                return not self.conn.closing
            last[single] = fresh[-1].sid
            return self.conn.send_events(CHUNKS.items(single, fresh), len(fresh))
        text = TEXTS.text
        out = []
        for entry in entries:
            topic = entry.topic
            if owner.get(topic) is not self or entry.sid <= last[topic]:
                continue
            last[topic] = entry.sid
            out.append((text(entry), topic, entry.id, 1))
        return self.conn.send_events(out, len(out)) if out else not self.conn.closing

    def _forward(self, batches: list[list[Entry]]) -> bool:
        """``deliver`` the hub's batches as one run, applying ``Rewind`` notices in their place."""
        run: list[Entry] = []
        for batch in batches:
            if not isinstance(batch, Rewind):
                run.extend(batch)
                continue
            if run and not self.deliver(run):
                return False
            run = []
            self.rewind(batch[0])
        return self.deliver(run) if run else not self.conn.closing

    def rewind(self, notice: Entry) -> None:
        """A ``Rewind`` notice: a topic of this group whose cursor is past ``notice.sid`` moves back there (new
        entries may reuse ids it has seen) and the client gets the ``gap``."""
        topic = notice.topic
        if self.owner.get(topic) is self and self.last[topic] > notice.sid:
            self.last[topic] = notice.sid
            data = orjson.loads(notice.data)
            self.conn.send_control(p.dumps({"type": "gap", "topic": topic, "cursor": notice.id, "data": data}))

    async def _run(self) -> None:
        sub = self.sub
        try:
            if not await self._replay():
                return
            while True:
                if sub.overflowed:
                    sub.overflowed = False
                    if not await self._replay():
                        return
                    continue
                batches = sub.take_batches()
                if batches:
                    if not self._forward(batches):
                        return
                    continue
                await sub.wait()
        finally:
            self.hub.unsubscribe(sub)

    async def _replay(self) -> bool:
        """Everything after each owned topic's cursor up to the stream's end; False when the connection refused."""
        failures = 0
        while True:
            cursors = {t: self.last[t] for t in self.mine()}
            if not cursors:
                return True
            try:
                async for entry in catch_up(self.redis, cursors):
                    if self.conn.queued >= self.conn.limits.send_queue_max // 2:
                        await self.conn.room()  # replaying is our pace, not the client's fault: wait, do not cut
                    if not self.deliver((entry,)):
                        return False
                return True
            except READ_ERRORS as exc:
                failures += 1
                if failures == 1:
                    logger.warning("ws %s: replay waits for redis (%s: %s)", self.conn.id, type(exc).__name__, exc)
                await asyncio.sleep(_BACKOFF.compute(failures - 1))
