"""The Redis that holds the event data (Streams, pub/sub, latest values): ``EVENTS_REDIS_URL``, or ``REDIS_URL``.

Two Redis roles (README "Processes and scaling"):

- *control*: desired subscriptions, plan, leases, status, arq's queue. Always ``REDIS_URL`` (one server or
  Sentinel): arq and the leases need one keyspace with atomic scripts.
- *events*: ``fp:stream:{topic}``, ``fp:pub:{topic}``, ``fp:last:{topic}``. ``EVENTS_REDIS_URL`` when set, else the
  control Redis. It may be a Redis Cluster: ``redis+cluster://[[user]:password@]host:port[,host:port...]`` (any
  reachable nodes; the client learns the rest with ``CLUSTER SLOTS``).

A topic's three keys carry the topic as their hash tag (``control.keys``), so they live in one slot, on one node.
A command over several topics therefore touches several slots; on a cluster, a Lua script may still take keys of
different slots *of one node* when it declares ``#!lua flags=allow-cross-slot-keys`` (Redis >= 7.0), and
``master_tags`` names, per master, a hash tag that maps to a slot of that master (for per-node keys such as the
publisher's batch record).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.crc import key_slot

from control.redis_client import RETRY_ON_ERROR, make_redis

CLUSTER_SCHEME = "redis+cluster"
CLUSTER_SCHEMES = (CLUSTER_SCHEME, "rediss+cluster")

EventsRedis = Redis | RedisCluster


@dataclass(frozen=True)
class ClusterURL:
    """A parsed ``redis+cluster://`` URL: seed nodes ``[(host, port)]``, credentials (``None`` when absent), TLS."""

    nodes: tuple[tuple[str, int], ...]
    username: str | None
    password: str | None
    tls: bool

    def __repr__(self) -> str:
        return f"ClusterURL(nodes={self.nodes!r}, username={self.username!r}, tls={self.tls})"  # never the password


def parse_cluster_url(url: str) -> ClusterURL | None:
    """``redis+cluster://[[user]:password@]host:port[,host:port...][/]`` (``rediss+cluster://`` for TLS) as a
    ``ClusterURL``; ``None`` for any other scheme. Raises ``ValueError`` naming what is wrong (no node, a bad
    port, a database number: a cluster has only database 0)."""
    parts = urlsplit(url)
    if parts.scheme not in CLUSTER_SCHEMES:
        return None
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    if parts.path not in ("", "/", "/0"):
        raise ValueError("a cluster URL names no database (a Redis Cluster has only database 0)")
    nodes = []
    for item in hostinfo.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"cluster node {item.strip()!r} is not host:port")
        nodes.append((host.strip("[]"), int(port)))
    return ClusterURL(tuple(nodes), unquote(user) or None, unquote(password) or None, parts.scheme == "rediss+cluster")


def make_events_redis(url: str, *, decode: bool = False, retries: int = 3, max_connections: int | None = None) -> EventsRedis:
    """A client of the events Redis at ``url``: ``RedisCluster`` for a ``redis+cluster://`` URL (options as
    ``control.redis_client.make_redis``: no socket timeout, 5 s connect timeout, RESP2, ``retries`` quick
    retries), else ``make_redis(url, ...)``. Connects to nothing until first used. Raises ``ValueError`` for a
    malformed URL."""
    target = parse_cluster_url(url)
    if target is None:
        return make_redis(url, decode=decode, retries=retries, max_connections=max_connections)
    options: dict[str, Any] = {
        "decode_responses": decode,
        "socket_timeout": None,
        "socket_connect_timeout": 5,
        "protocol": 2,
        "retry": Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries),
        "retry_on_error": list(RETRY_ON_ERROR),
        "username": target.username,
        "password": target.password,
        "ssl": target.tls,
    }
    if max_connections is not None:
        options["max_connections"] = max_connections
    cluster: RedisCluster = RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in target.nodes], **options)
    return cluster


def is_cluster(client: Any) -> bool:
    """True when ``client`` is a Redis Cluster client."""
    return isinstance(client, RedisCluster)


_TAGS: dict[int, str] = {}


def slot_tag(slot: int) -> str:
    """A short string (the first lowercase hex number) whose CRC16 hash slot is ``slot`` (0..16383):
    ``"{" + slot_tag(s) + "}"`` in a key name puts that key in slot ``s``. Found by a search for this one slot
    (~16,000 CRC16s on average, not a table of all 16,384: ~0.3 s of a busy worker's first batch), then cached."""
    tag = _TAGS.get(slot)
    if tag is None:
        n = 0
        while key_slot(format(n, "x").encode()) != slot:
            n += 1
        tag = _TAGS[slot] = format(n, "x")
    return tag


def master_tags(cluster: RedisCluster) -> dict[str, str]:
    """``master name -> slot_tag of the lowest slot it serves`` in ``cluster``'s current slot map: a hash tag per
    master for per-node keys (a replica promoted in a failover serves the same slots, so the tag stays)."""
    lowest: dict[str, int] = {}
    for slot, nodes in cluster.nodes_manager.slots_cache.items():
        if nodes and (nodes[0].name not in lowest or slot < lowest[nodes[0].name]):
            lowest[nodes[0].name] = slot
    return {name: slot_tag(slot) for name, slot in lowest.items()}


def topic_slot(topic: str) -> int:
    """The hash slot of ``topic``'s event keys (their hash tag is the topic)."""
    return int(key_slot(topic.encode()))
