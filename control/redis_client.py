"""Redis client construction with explicit timeouts, retry and protocol.

Written to behave the same on redis-py 5.x (pinned beside arq) and 8.x (stack-notes.md §1, §6):
every option that changed default between them is passed explicitly.

Two retry policies:

- ``make_redis`` (request-serving and control clients): a few quick retries of a command whose connection
  broke. A Redis that refuses connections fails the command at once, so a request answers 503 without delay,
  and the long-lived loops (publisher, SSE hub, runtime tick) run their own reconnect loops with backoff.
- ``outage_retry`` (a worker's arq pool): arq's poll loop ends the worker process on the first Redis error,
  taking the publisher's buffer and every exchange socket with it. This policy keeps retrying for about
  ``OUTAGE_S`` seconds, and also retries a refused connect: redis-py 5 retries the connect attempt only on the
  errors its ``Retry`` lists, and a refusal surfaces there as ``OSError`` (``ConnectionRefusedError``).
  Wire it with ``RedisSettings(retry=outage_retry(), retry_on_error=list(RETRY_ON_ERROR))``.
"""

from __future__ import annotations

import math

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import EqualJitterBackoff, ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

#: Errors after which a command is retried on a fresh connection (``retry_on_error``).
RETRY_ON_ERROR = (RedisConnectionError, RedisTimeoutError)
#: Outage ``outage_retry`` rides out by default (seconds).
OUTAGE_S = 30.0
#: ``outage_retry`` delays: from OUTAGE_BASE_S doubling to OUTAGE_CAP_S, each drawn from [d/2, d].
OUTAGE_BASE_S = 0.05
OUTAGE_CAP_S = 1.0


def outage_retry(outage_s: float = OUTAGE_S) -> Retry:
    """A redis-py ``Retry`` that keeps a command (and its connect) retrying through a Redis outage of about
    ``outage_s`` seconds, with delays of 0.5..1 s once capped, so a restarted Redis is found within a second."""
    retries = max(1, math.ceil(outage_s / (0.75 * OUTAGE_CAP_S)))
    return Retry(
        EqualJitterBackoff(cap=OUTAGE_CAP_S, base=OUTAGE_BASE_S),
        retries,
        supported_errors=(RedisConnectionError, RedisTimeoutError, OSError),
    )


def make_redis(url: str, *, decode: bool = True, retries: int = 3, max_connections: int | None = None) -> Redis:
    """A ``redis.asyncio.Redis`` for ``url``.

    ``decode=True`` returns ``str`` (control state); ``decode=False`` returns ``bytes`` (event hot path,
    SSE). ``socket_timeout=None`` so blocking reads (``XREAD BLOCK``) are not cut by a client timeout;
    ``socket_connect_timeout=5`` s; ``protocol=2`` keeps reply shapes identical on redis-py 5 and 8.
    ``retries``: attempts again after a connection error (0 = fail at once, for a caller running its own
    reconnect loop); see the module docstring.
    """
    return Redis.from_url(
        url,
        decode_responses=decode,
        socket_timeout=None,
        socket_connect_timeout=5,
        health_check_interval=30,
        protocol=2,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries),
        retry_on_error=list(RETRY_ON_ERROR),
        max_connections=max_connections,
    )
