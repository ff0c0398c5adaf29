"""Lifespan: open Redis clients, the arq pool and the SSE hub on startup; close them on shutdown.

Nothing connects at import time. Startup never fails because Redis is down: requests then answer
503 ``redis_unavailable`` and the arq pool is opened on first use.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from redis.exceptions import RedisError
from starlette.applications import Starlette

from app.dispatch import Dispatcher, open_arq_pool
from app.routes.sse import make_ticker
from app.sse_cluster_reader import ClusterHub
from app.sse_hub import SSEHub
from control.events_redis import EventsRedis, is_cluster, make_events_redis
from control.redis_client import make_redis
from control.settings import Settings
from control.store import ControlStore

logger = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    """Put ``store``, ``dispatcher``, ``sse_redis``, ``hub`` and ``sse_ticker`` on ``app.state`` (``settings`` is set by create_app).

    ``sse_redis`` is the bytes client of the *events* Redis (``Settings.events_url``: EVENTS_REDIS_URL, else
    REDIS_URL), used by every read of event data (SSE, WebSocket, dashboard); ``store`` and ``dispatcher`` stay
    on the control Redis (REDIS_URL)."""
    settings: Settings = app.state.settings
    control_redis = make_redis(settings.redis_url, decode=True)
    sse_redis = make_events_redis(settings.events_url, decode=False)
    try:
        arq = await open_arq_pool(settings.redis_url)
    except (RedisError, OSError) as exc:
        logger.warning("redis unreachable at startup (%s: %s); arq pool opens on first use", type(exc).__name__, exc)
        arq = None
    store = ControlStore(control_redis)
    dispatcher = Dispatcher(store, settings.redis_url, arq)
    hub = open_hub(settings.events_url, sse_redis)
    hub.start()
    ticker = make_ticker(settings)  # keep-alive, shutdown and slow-client cuts of every SSE stream
    ticker.start()
    app.state.sse_ticker = ticker
    app.state.store = store
    app.state.dispatcher = dispatcher
    app.state.sse_redis = sse_redis
    app.state.hub = hub
    try:
        yield
    finally:
        await ticker.close()
        await hub.close()
        await dispatcher.close()
        await sse_redis.aclose()
        await control_redis.aclose()


def open_hub(events_url: str, events: EventsRedis) -> SSEHub:
    """The SSE/WebSocket hub of the events Redis: ``ClusterHub`` (one reader per master node) on a cluster, else
    ``SSEHub`` with its dedicated single-connection reader (its CLIENT ID stays fixed for CLIENT UNBLOCK;
    retries=0 so a dropped connection surfaces and the hub re-reads the id)."""
    if is_cluster(events):  # a client of its own: its slot-map refreshes must not disturb the routes' client
        return ClusterHub(make_events_redis(events_url, decode=False), owned=True)  # type: ignore[arg-type]
    reader = make_events_redis(events_url, decode=False, retries=0, max_connections=1)
    return SSEHub(reader, events)  # type: ignore[arg-type]
