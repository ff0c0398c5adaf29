"""The masters of the events Redis (split mode): which node serves a topic, a client per node, and slot-map refresh.

``EVENTS_REDIS_URL`` names one Redis or a Redis Cluster (``control.events_redis``). The split-mode writer
(``workers.publish_nodes``) and the fence pushes (``workers.fence``) talk to each master directly, with a plain
``redis.asyncio.Redis`` per master built from the cluster client's own connection options (credentials, TLS), so
they choose what goes into one round trip (an ``EVALSHA`` plus its ``WAIT``). The cluster client is kept for its slot
map only. A plain events Redis is "a cluster of one node": one master, hash tag ``events``.

A node's *tag* (``control.events_redis.master_tags``) is a hash tag of the lowest slot it serves; the per-node keys
(``fp:batch:{tag}:..``, ``fp:fence:{tag}:..``) carry it. A replica promoted in a failover serves the same slots, so
the tag and those keys (replicated with the data) stay the same.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster

from control.events_redis import EventsRedis, master_tags, topic_slot
from workers.publish_script import use_hiredis_packing

log = logging.getLogger(__name__)

#: The tag of a plain (non-cluster) events Redis.
PLAIN_TAG = "events"


@dataclass(frozen=True)
class Node:
    """One master: ``name`` ``host:port``, ``tag`` its hash tag, ``client`` a plain client of it (bytes)."""

    name: str
    tag: str
    client: Redis


class EventNodes:
    """The events Redis as a set of masters (see the module docstring).

    :param events: a ``decode_responses=False`` client from ``control.events_redis.make_events_redis``.
    ``stale`` is true until the slot map was read, and again after ``invalidate()`` (a MOVED, a failover):
    ``refresh()`` then re-reads it. Raises ``redis.exceptions.RedisError`` (or ``OSError``) when no node answers.
    """

    def __init__(self, events: EventsRedis) -> None:
        self.events = events
        self.cluster: RedisCluster | None = events if isinstance(events, RedisCluster) else None
        self.stale = True
        self._nodes: dict[str, Node] = {}
        self._slot_of: dict[str, int] = {}
        self._initialized = False
        if self.cluster is None:
            assert isinstance(events, Redis)
            use_hiredis_packing(events)
            self._nodes[PLAIN_TAG] = Node(PLAIN_TAG, PLAIN_TAG, events)
            self.stale = False

    def invalidate(self) -> None:
        """Mark the slot map as out of date (``refresh`` re-reads it before the next write)."""
        if self.cluster is not None:
            self.stale = True

    async def refresh(self) -> None:
        """Re-read the slot map (cluster) and keep one client per current master; clients of nodes that are no
        longer masters are closed."""
        cluster = self.cluster
        if cluster is None:
            return
        if not self._initialized:
            await cluster.initialize()
            self._initialized = True
        else:
            await cluster.nodes_manager.initialize()
        nodes: dict[str, Node] = {}
        tags = master_tags(cluster)
        for primary in cluster.get_primaries():
            old = self._nodes.get(primary.name)
            tag = tags.get(primary.name)
            if tag is None:
                continue  # a master without slots (being added or emptied) takes no events
            if old is not None and old.tag == tag:
                nodes[primary.name] = old
                continue
            pool = ConnectionPool(connection_class=primary.connection_class, **primary.connection_kwargs)
            client = Redis.from_pool(pool)  # closes its pool with it
            use_hiredis_packing(client)
            nodes[primary.name] = Node(primary.name, tag, client)
        for name, node in self._nodes.items():
            if name not in nodes or nodes[name] is not node:
                await node.client.aclose()
        self._nodes = nodes
        self.stale = False
        log.debug("events nodes: %s", ", ".join(f"{n.name}{{{n.tag}}}" for n in nodes.values()))

    async def ready(self) -> list[Node]:
        """The current masters, refreshing the slot map first when it is stale."""
        if self.stale:
            await self.refresh()
        return list(self._nodes.values())

    def node_of(self, topic: str) -> str:
        """The name of the master that serves ``topic``'s keys (after ``ready()``); ``KeyError`` when its slot has
        no known master (the caller invalidates and retries)."""
        cluster = self.cluster
        if cluster is None:
            return PLAIN_TAG
        slot = self._slot_of.get(topic)
        if slot is None:
            if len(self._slot_of) > 100_000:
                self._slot_of.clear()
            slot = self._slot_of[topic] = topic_slot(topic)
        return str(cluster.nodes_manager.slots_cache[slot][0].name)

    def node(self, name: str) -> Node:
        """The master called ``name`` (``KeyError`` if it is not one)."""
        return self._nodes[name]

    async def aclose(self) -> None:
        """Close the per-node clients this object opened (not the events client it was given)."""
        for node in self._nodes.values():
            if node.client is not self.events:
                await node.client.aclose()
        self._nodes = {}
        self.invalidate()
