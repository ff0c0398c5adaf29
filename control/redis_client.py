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

Redis Sentinel: ``REDIS_URL=redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]`` (the
URL form of the ``redis-sentinel-url`` package and several other clients; port 26379 by default) names the
sentinels and the monitored service instead of one server. Every client then asks a sentinel for the current
master on each new connection (redis-py's ``SentinelConnectionPool``), and a failover looks like a short Redis
outage: the connection to the demoted master fails (or answers READONLY, which redis-py turns into a connection
error), the same retry policies above reconnect, and the next connection goes to the promoted master. The
credentials in the URL are for the data nodes; sentinels are asked without AUTH.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection
from redis.backoff import EqualJitterBackoff, ExponentialWithJitterBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

#: Errors after which a command is retried on a fresh connection (``retry_on_error``).
RETRY_ON_ERROR = (RedisConnectionError, RedisTimeoutError)
#: Outage ``outage_retry`` rides out by default (seconds).
OUTAGE_S = 30.0
#: ``outage_retry`` delays: from OUTAGE_BASE_S doubling to OUTAGE_CAP_S, each drawn from [d/2, d].
OUTAGE_BASE_S = 0.05
OUTAGE_CAP_S = 1.0

SENTINEL_SCHEME = "redis+sentinel"
SENTINEL_PORT = 26379
#: Socket timeouts (seconds) for the short queries to a sentinel; a silent one is skipped for the next.
SENTINEL_TIMEOUT_S = 2.0

R = TypeVar("R", bound=Redis)


@dataclass(frozen=True)
class SentinelURL:
    """A parsed ``redis+sentinel://`` URL: where the sentinels are and which service (master) to ask for.

    ``sentinels``: ``((host, port), ...)``; ``db``: database number on the master; ``username``/``password``:
    AUTH on the data nodes (None when absent). ``repr`` leaves the password out.
    """

    sentinels: tuple[tuple[str, int], ...]
    service_name: str
    db: int = 0
    username: str | None = None
    password: str | None = None

    def __repr__(self) -> str:
        hosts = ",".join(f"{h}:{p}" for h, p in self.sentinels)
        return f"SentinelURL({hosts}/{self.service_name}/{self.db})"


def parse_sentinel_url(url: str) -> SentinelURL | None:
    """The sentinels and service of a ``redis+sentinel://`` URL, or None for any other scheme.

    Raises ``ValueError`` (without the password in its message) when a sentinel URL is malformed: no host, a bad
    port, no service name, a database that is not a number, or anything after the database.
    """
    parts = urlsplit(url)
    if parts.scheme != SENTINEL_SCHEME:
        return None
    hostinfo = parts.netloc.rpartition("@")[2]
    sentinels: list[tuple[str, int]] = []
    for item in hostinfo.split(","):
        host, port = _host_port(item.strip())
        sentinels.append((host, port))
    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise ValueError("a redis+sentinel:// URL needs the service name: redis+sentinel://host:26379/mymaster/0")
    if len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ValueError("after the service name only the database number may follow (.../mymaster/0)")
    return SentinelURL(
        sentinels=tuple(sentinels),
        service_name=unquote(path[0]),
        db=int(path[1]) if len(path) == 2 else 0,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def _host_port(item: str) -> tuple[str, int]:
    if not item:
        raise ValueError("a redis+sentinel:// URL needs at least one sentinel host")
    if item.startswith("["):  # [::1]:26379
        host, _, rest = item[1:].partition("]")
        port_text = rest.removeprefix(":")
    else:
        host, _, port_text = item.partition(":")
    if not host:
        raise ValueError(f"sentinel {item!r} has no host")
    if not port_text:
        return host, SENTINEL_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"sentinel {item!r} has a bad port")
    return host, int(port_text)


class _SentinelConnection(SentinelManagedConnection):
    """A master connection that tries each address the sentinels name once.

    redis-py nests the connection's retry here: ``connect`` retries "ask the sentinels, then connect", and the
    inner connect retries the same address again. With ``outage_retry`` a crashed master's address would be
    retried for the whole outage budget before the sentinels were asked for the promoted one.
    """

    async def connect_to(self, address: tuple[str, int]) -> None:
        retry, self.retry = self.retry, Retry(NoBackoff(), 0)
        try:
            await super().connect_to(address)  # type: ignore[no-untyped-call]  # untyped in redis-py 5
        finally:
            self.retry = retry


class _SentinelPool(SentinelConnectionPool):
    """Closes the connections to the sentinels too when its client closes (redis-py leaves them open)."""

    async def disconnect(self, inuse_connections: bool = True) -> None:
        await super().disconnect(inuse_connections)
        for sentinel in self.sentinel_manager.sentinels:
            await sentinel.connection_pool.disconnect()


def sentinel_master(
    target: SentinelURL, *, redis_class: type[R] = Redis, **connection_kwargs: Any  # type: ignore[assignment]
) -> R:
    """A ``redis_class`` client of ``target``'s current master; connects to nothing until first used.

    ``connection_kwargs`` are the usual ``Redis`` connection options (timeouts, retry, decode_responses,
    max_connections, ...); they apply to the master connections, not to the sentinel queries.
    """
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(target.sentinels),
        sentinel_kwargs={"socket_timeout": SENTINEL_TIMEOUT_S, "socket_connect_timeout": SENTINEL_TIMEOUT_S},
    )
    client: R = sentinel.master_for(
        target.service_name,
        redis_class=redis_class,
        connection_pool_class=_SentinelPool,
        db=target.db,
        username=target.username,
        password=target.password,
        connection_class=_SentinelConnection,
        **connection_kwargs,
    )
    return client


def outage_retry(outage_s: float = OUTAGE_S) -> Retry:
    """A redis-py ``Retry`` that keeps a command (and its connect) retrying through a Redis outage of about
    ``outage_s`` seconds, with delays of 0.5..1 s once capped, so a restarted Redis is found within a second."""
    retries = max(1, math.ceil(outage_s / (0.75 * OUTAGE_CAP_S)))
    return Retry(
        EqualJitterBackoff(cap=OUTAGE_CAP_S, base=OUTAGE_BASE_S),
        retries,
        supported_errors=(RedisConnectionError, RedisTimeoutError, OSError),  # type: ignore[arg-type]
    )


def make_redis(url: str, *, decode: bool = True, retries: int = 3, max_connections: int | None = None) -> Redis:
    """A ``redis.asyncio.Redis`` for ``url``.

    ``decode=True`` returns ``str`` (control state); ``decode=False`` returns ``bytes`` (event hot path,
    SSE). ``socket_timeout=None`` so blocking reads (``XREAD BLOCK``) are not cut by a client timeout;
    ``socket_connect_timeout=5`` s; ``protocol=2`` keeps reply shapes identical on redis-py 5 and 8.
    ``retries``: attempts again after a connection error (0 = fail at once, for a caller running its own
    reconnect loop); see the module docstring. A ``redis+sentinel://`` URL gives a client of the current master.
    Raises ``ValueError`` for a malformed sentinel URL.
    """
    options: dict[str, Any] = {
        "decode_responses": decode,
        "socket_timeout": None,
        "socket_connect_timeout": 5,
        "health_check_interval": 30,
        "protocol": 2,
        "retry": Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries),
        "retry_on_error": list(RETRY_ON_ERROR),
        "max_connections": max_connections,
    }
    target = parse_sentinel_url(url)
    client: Redis = sentinel_master(target, **options) if target is not None else Redis.from_url(url, **options)
    return client


def display_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, for messages that are not logged through the redaction filter."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return parts._replace(netloc=f"{user}:***@{hostinfo}").geturl()
