"""Redis client construction with explicit timeouts, retry and protocol.

Written to behave the same on redis-py 5.x (pinned beside arq) and 8.x (stack-notes.md §1, §6):
every option that changed default between them is passed explicitly.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError


def make_redis(url: str, *, decode: bool = True, retries: int = 3, max_connections: int | None = None) -> Redis:
    """A ``redis.asyncio.Redis`` for ``url``.

    ``decode=True`` returns ``str`` (control state); ``decode=False`` returns ``bytes`` (event hot path,
    SSE). ``socket_timeout=None`` so blocking reads (``XREAD BLOCK``) are not cut by a client timeout;
    ``socket_connect_timeout=5`` s; ``protocol=2`` keeps reply shapes identical on redis-py 5 and 8.
    """
    return Redis.from_url(
        url,
        decode_responses=decode,
        socket_timeout=None,
        socket_connect_timeout=5,
        health_check_interval=30,
        protocol=2,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        max_connections=max_connections,
    )
