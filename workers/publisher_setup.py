"""The worker's event publisher from its settings: one Redis, or split mode (``EVENTS_REDIS_URL``).

With ``EVENTS_REDIS_URL`` blank (or equal to ``REDIS_URL``) this is exactly ``Publisher(redis_bytes, ...)``: one
script per batch on the one Redis. Otherwise the publisher writes the events to
``make_events_redis(settings.events_url, decode=False)`` (a Redis or a Redis Cluster; the publisher owns and closes
that client) and the control state to ``redis_bytes`` (``workers.publish_nodes``).
"""

from __future__ import annotations

from redis.asyncio import Redis

from control.events_redis import is_cluster, make_events_redis
from control.settings import Settings
from workers.publisher import Publisher


def min_replicas(settings: Settings, cluster: bool) -> int:
    """``EVENTS_MIN_REPLICAS``, with its ``-1`` ("auto") resolved: 1 on a Redis Cluster, else 0."""
    if settings.events_min_replicas >= 0:
        return settings.events_min_replicas
    return 1 if cluster else 0


def publisher_for(settings: Settings, redis_bytes: Redis, worker_id: str) -> Publisher:
    """The publisher of a worker: ``redis_bytes`` is the control Redis (bytes client). Connects to nothing yet."""
    if not settings.events_split:
        return Publisher(redis_bytes, stream_maxlen=settings.stream_maxlen, worker_id=worker_id)
    events = make_events_redis(settings.events_url, decode=False)
    return Publisher(redis_bytes, stream_maxlen=settings.stream_maxlen, worker_id=worker_id, events=events,
                     min_replicas=min_replicas(settings, is_cluster(events)))  # fmt: skip
