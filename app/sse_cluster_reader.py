"""SSE/WebSocket fan-out from a Redis Cluster (``EVENTS_REDIS_URL=redis+cluster://...``): ``ClusterHub``.

``ClusterHub`` is an ``app.sse_hub.SSEHub`` (same subscribers, positions, ``Batch`` dispatch, each entry serialized
once per topic, ``join`` at the hub's position, overflow and slow-client handling) whose reading is done per
master node instead of one ``XREAD BLOCK`` over every stream (a multi-key XREAD must stay in one hash slot on a
cluster):

* A supervisor task maps every topic to the master serving its slot (the cluster client's slot map) and keeps
  one ``NodeReader`` per master that serves a topic; it re-reads the slot map (``CLUSTER SLOTS``) when a reader
  reports an error (connection lost, ``MOVED``/``ASK``, ``CLUSTERDOWN``) and at most every ``REFRESH_S`` otherwise,
  so topics re-home after a failover or a slot migration.
* A ``NodeReader`` has two connections to its node: one for reads, one subscribed with ``SSUBSCRIBE`` to the shard
  channels ``fp:pub:{T}`` of its topics (one SSUBSCRIBE per slot: channels of one command share a slot). The
  writer SPUBLISHes each event after its XADD, so a message marks its slot "dirty" and wakes the reader, which
  sends, pipelined, one non-blocking ``XREAD COUNT n STREAMS k.. id..`` per dirty slot (every slot on the safety
  poll, every ``poll_s``: a lost wakeup costs latency, never data). A full page is read again at once.
* Per topic the hub keeps its position (last id read); every read starts there, and entries at or before it are
  dropped before dispatch, so two readers of one topic during a re-home deliver nothing twice.
* A reader that fails marks itself down (``join`` then sends that node's new clients through Redis, which
  answers 503 while the node is away, as the single-Redis hub does) and its topics *suspect*. Before the next read
  of a suspect topic, its reader checks that the hub's position is still in the stream (``XREVRANGE key pos -
  COUNT 1``): when a master died before its replica had the last entries, the promoted replica's stream ends
  earlier; the hub then moves the topic's position back to the stream's last id and queues a ``Rewind`` notice
  (a ``gap`` event, reason ``redis_failover``) so every client past that point is told and moves back too (new
  entries may reuse the lost ids). An empty stream counts as "lost everything"; a position trimmed off the head
  (MAXLEN) is not a loss.

``stats()`` adds ``nodes`` (per master: ``up``, ``topics``), ``refreshes``, ``wakeups``, ``polls``, ``rewinds``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.backoff import EqualJitterBackoff

from app.sse_cursor import gap_event
from app.sse_entries import (
    READ_ERRORS,
    REDIS_FAILOVER,
    ZERO_ID,
    Entry,
    Rewind,
    StreamId,
    format_stream_id,
    parse_stream_id,
)
from app.sse_hub import RECONNECT_BASE_S, RECONNECT_CAP_S, SSEHub, Subscription
from app.sse_node_reader import NodeReader
from control import keys
from control.events_redis import topic_slot

__all__ = ["POLL_S", "REFRESH_S", "ClusterHub", "NodeReader"]

logger = logging.getLogger(__name__)

#: Safety poll of a node reader (seconds): every slot of the node is read this often even without a wakeup.
POLL_S = 0.2
#: The supervisor re-checks the topic -> node map at least this often (seconds); slot map reads only on errors.
REFRESH_S = 1.0


class ClusterHub(SSEHub):
    """``SSEHub`` reading a Redis Cluster with one ``NodeReader`` per master (module docstring).

    ``cluster``: a bytes ``RedisCluster`` of the hub's own (``close`` closes it when ``owned``). Its own, because
    a slot-map refresh (``nodes_manager.initialize``) replaces the client's node objects and disconnects the old
    ones while another task's command may be using one of them (redis-py 5.3), which leaks that connection.
    ``poll_s``: the safety poll in seconds; ``count``: the page size of each XREAD.
    """

    def __init__(
        self, cluster: RedisCluster, *, count: int = 500, queue_max: int = 10_000, poll_s: float = POLL_S,
        owned: bool = False,
    ) -> None:
        super().__init__(cluster, cluster, count=count, queue_max=queue_max)  # type: ignore[arg-type]
        self.cluster = cluster
        self.owned = owned
        self.poll_s = poll_s
        #: Bumped whenever the topic set or the slot map changes: node readers then regroup their topics.
        self.version = 0
        self.readers: dict[str, NodeReader] = {}
        self.counters.update({"refreshes": 0, "wakeups": 0, "polls": 0, "rewinds": 0})
        #: Topics whose node reader failed since their last read: checked for lost entries before the next one.
        self.suspects: set[str] = set()
        self._refresh = asyncio.Event()

    @property
    def positions(self) -> dict[str, StreamId]:
        """Per topic, the last id the hub has read (read-only for readers; the hub moves it)."""
        return self._positions

    # -- lifecycle and subscribers -----------------------------------------------------------------

    def start(self) -> None:
        """Start the supervisor (call inside the running loop)."""
        if self._task is None:
            self._task = asyncio.create_task(self._supervise(), name="sse-hub-cluster")

    async def close(self) -> None:
        """Stop the supervisor and every node reader; close the cluster client when the hub owns it."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._task = None
        readers, self.readers = list(self.readers.values()), {}
        await asyncio.gather(*(r.close() for r in readers), return_exceptions=True)
        if self.owned:
            await self.cluster.aclose()

    def stats(self) -> dict[str, Any]:
        """``SSEHub.stats`` with ``readers`` = node readers running and ``nodes`` = ``{name: {"up", "topics"}}``."""
        out = super().stats()
        out["readers"] = sum(1 for r in self.readers.values() if not r.task.done())
        out["nodes"] = {name: {"up": r.up, "topics": sum(map(len, r._groups.values()))}
                        for name, r in self.readers.items()}  # fmt: skip
        return out

    def join(self, topics: Sequence[str]) -> tuple[Subscription, dict[str, StreamId]] | None:
        """``SSEHub.join``, refused (None) while the reader of any of the topics' nodes is down."""
        for topic in topics:
            node = self._node_of(topic)
            reader = self.readers.get(node.name) if node is not None else None
            if reader is None or not reader.up:
                return None
        return super().join(topics)

    def unsubscribe(self, sub: Subscription) -> None:
        """``SSEHub.unsubscribe``; readers drop the topics left without subscribers on their next turn."""
        before = len(self._positions)
        super().unsubscribe(sub)
        if len(self._positions) != before:
            self.version += 1

    def _request_unblock(self) -> None:
        """New topics (``subscribe``): regroup and read them at once (replaces CLIENT UNBLOCK)."""
        self.version += 1
        for reader in self.readers.values():
            reader.wake()

    # -- used by the node readers ------------------------------------------------------------------

    def groups_of(self, name: str) -> dict[int, list[str]]:
        """``{slot: [topics]}`` of the hub's topics whose slot master ``name`` serves."""
        cache = self.cluster.nodes_manager.slots_cache
        out: dict[int, list[str]] = {}
        for topic in self._positions:
            slot = topic_slot(topic)
            nodes = cache.get(slot)
            if nodes and nodes[0].name == name:
                out.setdefault(slot, []).append(topic)
        return out

    def node_failed(self, name: str, topics: list[str]) -> None:
        """A reader of ``name`` failed: its topics are suspect (checked before their next read); refresh the map."""
        self.suspects.update(topics)
        self.request_refresh()

    def request_refresh(self) -> None:
        """Ask the supervisor to re-read the slot map."""
        self._refresh.set()

    def update_up(self) -> None:
        """``reader_up``: every node reader is up."""
        self.reader_up = all(r.up for r in self.readers.values())

    def dispatch_fresh(self, reply: list[Any]) -> None:
        """``_dispatch`` the entries after each topic's position (XREAD reply shape: ``[(key, [(id, fields)])]``)."""
        fresh = []
        for key, raw in reply:
            position = self._positions.get(keys.topic_of_stream(key.decode()))
            if position is None or not raw:
                continue
            if parse_stream_id(raw[0][0]) <= position:  # read twice during a re-home: keep only what is new
                raw = [e for e in raw if parse_stream_id(e[0]) > position]
            if raw:
                fresh.append((key, raw))
        if fresh:
            self._dispatch(fresh)

    async def check_suspects(self, client: Redis, topics: list[str]) -> None:
        """For the suspect ones among ``topics`` (served by ``client``'s node): a position no longer in its stream
        is moved back to the stream's end, with a ``Rewind`` notice to the topic's subscribers. Raises redis errors
        (the topics stay suspect)."""
        self.suspects.difference_update([t for t in self.suspects if t not in self._positions])  # left meanwhile
        todo = [t for t in topics if t in self.suspects]
        checks = [t for t in todo if self._positions[t] != ZERO_ID]
        if checks:
            async with client.pipeline(transaction=False) as pipe:
                for topic in checks:
                    key = keys.event_stream(topic)
                    pipe.xrevrange(key, max=format_stream_id(self._positions[topic]), min="-", count=1)
                    pipe.xlen(key)
                replies = await pipe.execute()
            for i, topic in enumerate(checks):
                below, length = replies[2 * i], replies[2 * i + 1]
                position = self._positions.get(topic)
                if position is None:
                    continue
                if below:
                    kept = parse_stream_id(below[0][0])
                    if kept < position:
                        self._rewind(topic, kept)
                elif not length:
                    self._rewind(topic, ZERO_ID)
        self.suspects.difference_update(todo)

    def _rewind(self, topic: str, to: StreamId) -> None:
        logger.warning("sse hub: %s lost entries after %s on the server (failover); clients get a gap",
                       topic, format_stream_id(to))  # fmt: skip
        self._positions[topic] = to
        self.counters["rewinds"] += 1
        gap = gap_event(topic, REDIS_FAILOVER, to[0] if to != ZERO_ID else None, None)
        notice = Rewind([Entry(to, format_stream_id(to), topic, "gap", orjson.dumps(gap))])
        for sub in self._subs.get(topic, ()):
            sub.push_many(notice)

    # -- supervisor --------------------------------------------------------------------------------

    def _node_of(self, topic: str) -> ClusterNode | None:
        nodes = self.cluster.nodes_manager.slots_cache.get(topic_slot(topic))
        return nodes[0] if nodes else None

    async def _supervise(self) -> None:
        backoff = EqualJitterBackoff(cap=RECONNECT_CAP_S, base=RECONNECT_BASE_S)
        failures = 0
        refresh = True
        while True:
            self._topics_changed.clear()
            try:
                if refresh or not self.cluster.nodes_manager.slots_cache:
                    self._refresh.clear()
                    await self.cluster.nodes_manager.initialize()
                    self.counters["refreshes"] += 1
                    self.version += 1
            except READ_ERRORS as exc:
                failures += 1
                self.reader_up = False
                self.counters["read_errors"] += 1
                log = logger.warning if failures == 1 else logger.debug
                log("sse hub: cluster slot map unavailable (%d in a row): %s: %s", failures, type(exc).__name__, exc)
                await asyncio.sleep(backoff.compute(failures - 1))
                continue
            failures = 0
            owners: dict[str, ClusterNode] = {}
            for topic in self._positions:
                node = self._node_of(topic)
                if node is not None:
                    owners.setdefault(node.name, node)
            for name, node in owners.items():
                reader = self.readers.get(name)
                if reader is None or reader.task.done():
                    if reader is not None:
                        await reader.close()
                    self.readers[name] = NodeReader(self, node)
            for name in [n for n in self.readers if n not in owners]:
                await self.readers.pop(name).close()
            self.update_up()
            refresh = False
            try:
                async with asyncio.timeout(REFRESH_S):
                    await _first(self._topics_changed, self._refresh)
            except TimeoutError:
                pass
            if self._refresh.is_set():
                refresh = True
                await asyncio.sleep(RECONNECT_BASE_S)  # a failing node asks often: re-read the map at this pace


async def _first(*events: asyncio.Event) -> None:
    """Until one of ``events`` is set."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
