"""arq worker settings: ``arq workers.settings.WorkerSettings`` (run by supervisord, one per process).

Importing this module connects to nothing: ``redis_settings`` is computed from ``REDIS_URL`` (or
the default) and arq connects when the worker starts. With a ``redis+sentinel://`` URL, ``redis_pool`` is
a not-yet-connected client of the sentinels' current master instead. ``on_startup`` then reads every setting with
``Settings.from_env``; an invalid value fails the worker start with ``SettingsError`` whose message
names the variable (``LEASE_TTL_S: must be ...``). It configures logging (stdout, worker id in
every line, ``LOG_FORMAT`` text or json; arq's own logger too), opens an ``aiohttp.ClientSession`` and two Redis
clients of the control Redis (text, and bytes for the event publisher; with ``EVENTS_REDIS_URL`` set the publisher
writes the events to that Redis or Redis Cluster, ``workers.publisher_setup``), starts a ``WorkerRuntime`` kept in ``ctx["runtime"]``, with
``ORDERS_ENABLED=1`` a ``workers.orders.OrderExecutor`` (``ctx["orders"]``), and serves this process's Prometheus
metrics on ``METRICS_PORT + PROCESS_NUM`` (``workers.metrics``; bound to CTRL_ADDR's host; 0 = off).
``on_shutdown`` drains the runtime (unsubscribe, flush, release leases) and closes everything in reverse order.

The worker id is ``WORKER_ID`` (supervisord sets one per process) or ``{host}-{pid}``.
"""

from __future__ import annotations

import logging
import os
from typing import Any, ClassVar

import aiohttp
from arq.connections import ArqRedis, RedisSettings
from arq.worker import func

from control import keys
from control.events_redis import make_events_redis
from control.jobs import RECONCILE
from control.logging_config import configure_logging
from control.redis_client import RETRY_ON_ERROR, make_redis, outage_retry, parse_sentinel_url, sentinel_master
from control.settings import Settings, SettingsError
from workers.jobs import reconcile
from workers.metrics import registry_for, serve_metrics
from workers.orders import OrderExecutor
from workers.runtime import WorkerRuntime

log = logging.getLogger(__name__)

_DEFAULT_REDIS_URL = Settings().redis_url
#: How long arq's pool rides out a Redis outage (seconds). The runtime keeps its exchange sockets through any outage
#: (``workers.suspend``); arq's poll loop must not end the process (and cut every socket) after ``OUTAGE_S``.
ARQ_OUTAGE_S = 24 * 3600.0

if os.environ.get("FEEDPLANE_REDIS_EMBEDDED") == "1":
    # scripts/run's last-resort fallback is fakeredis's TCP server, which has no INFO command; arq's
    # start-up banner sends INFO and the server then drops the connection (stack-notes.md §7).
    import arq.worker

    async def _skip_redis_info(redis: Any, log_func: Any) -> None:
        log_func("redis: embedded fakeredis server (INFO not supported)")

    arq.worker.log_redis_info = _skip_redis_info


def _redis_settings_from_env() -> RedisSettings:
    """arq's connection settings from ``REDIS_URL``; a malformed URL falls back to the default here and
    is reported by ``on_startup`` (``Settings.from_env``) with the variable's name.

    The pool retries through a Redis outage (``outage_retry``, ``ARQ_OUTAGE_S``): arq's poll loop would otherwise end
    the worker process on the first Redis error, and with it the publisher's buffer and every exchange socket.
    """
    url = os.environ.get("REDIS_URL", "").strip() or _DEFAULT_REDIS_URL
    try:
        settings = RedisSettings.from_dsn(url)
    except (ValueError, TypeError, RuntimeError):  # RuntimeError: a scheme arq does not parse (sentinel)
        settings = RedisSettings.from_dsn(_DEFAULT_REDIS_URL)
    settings.retry = outage_retry(ARQ_OUTAGE_S)
    settings.retry_on_error = list(RETRY_ON_ERROR)
    return settings


def _sentinel_pool_from_env() -> ArqRedis | None:
    """For a ``redis+sentinel://`` ``REDIS_URL``: arq's pool as a client of the current master, else None.

    arq's own sentinel mode passes neither timeouts nor a retry policy to the master connections, so a failover
    would end the worker's poll loop (and the process). This pool carries ``outage_retry`` like the plain one,
    and asks the sentinels for the master again on every reconnect. Connects to nothing until the worker runs.
    """
    url = os.environ.get("REDIS_URL", "").strip()
    try:
        target = parse_sentinel_url(url)
    except ValueError:
        return None  # reported by on_startup with the variable's name
    if target is None:
        return None
    pool = sentinel_master(
        target,
        redis_class=ArqRedis,
        socket_connect_timeout=5,
        retry=outage_retry(ARQ_OUTAGE_S),
        retry_on_error=list(RETRY_ON_ERROR),
    )
    pool.default_queue_name = keys.ARQ_QUEUE
    return pool


async def startup(ctx: dict[str, Any]) -> None:
    """arq ``on_startup``: build settings, logging, HTTP session, Redis clients and the runtime."""
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        log.critical("worker: invalid settings: %s", exc)
        raise
    configure_logging(level=settings.log_level, loggers=("workers", "control", "arq"), stream="stdout",
                      worker_id=settings.worker_id, fmt=settings.log_format, role="worker")  # fmt: skip
    session = aiohttp.ClientSession()
    ctx["session"] = session
    ctx["redis_text"] = make_redis(settings.redis_url)
    ctx["redis_bytes"] = make_redis(settings.redis_url, decode=False)
    runtime = WorkerRuntime(
        settings,
        worker_id=settings.worker_id,
        redis=ctx["redis_text"],
        redis_bytes=ctx["redis_bytes"],
        session=session,
    )
    ctx["runtime"] = runtime
    await runtime.start()
    if settings.orders_enabled:  # order requests (control.orders): a blocking read on a connection of its own
        ctx["redis_orders"] = make_redis(settings.redis_url, max_connections=1)
        if settings.events_split:  # alert events and latest prices live on EVENTS_REDIS_URL
            ctx["redis_events"] = make_events_redis(settings.events_url, decode=False)
        executor = OrderExecutor(settings, redis=ctx["redis_text"], blocking=ctx["redis_orders"], session=session,
                                 worker_id=settings.worker_id, events=ctx.get("redis_events"))  # fmt: skip
        executor.start()
        ctx["orders"] = executor
    if settings.metrics_port:
        port = settings.metrics_port + settings.process_num
        ctx["metrics_stop"] = await serve_metrics(registry_for(runtime), settings.ctrl_host, port)
    log.info("worker %s: started (%s)", settings.worker_id, settings)


async def shutdown(ctx: dict[str, Any]) -> None:
    """arq ``on_shutdown``: drain the runtime, then close the session and Redis clients.

    Tolerates a partial ``startup`` (arq runs this even when startup failed)."""
    executor: OrderExecutor | None = ctx.pop("orders", None)
    if executor is not None:
        await executor.stop()
    metrics_stop = ctx.pop("metrics_stop", None)
    if metrics_stop is not None:
        await metrics_stop()
    runtime: WorkerRuntime | None = ctx.pop("runtime", None)
    if runtime is not None:
        await runtime.stop(drain=True)
    session: aiohttp.ClientSession | None = ctx.pop("session", None)
    if session is not None:
        await session.close()
    for name in ("redis_events", "redis_orders", "redis_bytes", "redis_text"):
        client = ctx.pop(name, None)
        if client is not None:
            await client.aclose()


class WorkerSettings:
    """Passed to ``arq.worker.Worker`` as keyword arguments (names must match its signature)."""

    functions: ClassVar[list[Any]] = [func(reconcile, name=RECONCILE, keep_result=0, max_tries=3)]
    queue_name = keys.ARQ_QUEUE
    redis_settings = _redis_settings_from_env()
    redis_pool = _sentinel_pool_from_env()  # None unless REDIS_URL names sentinels
    on_startup = startup
    on_shutdown = shutdown
    job_completion_wait = 2
    keep_result = 0
    handle_signals = True
    max_jobs = 10
    poll_delay = 0.2
    health_check_interval = 60
