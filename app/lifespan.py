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
from app.sse_hub import SSEHub
from control.redis_client import make_redis
from control.settings import Settings
from control.store import ControlStore

logger = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    """Put ``store``, ``dispatcher``, ``sse_redis``, ``hub`` and ``sse_ticker`` on ``app.state`` (``settings`` is set by create_app)."""
    settings: Settings = app.state.settings
    control_redis = make_redis(settings.redis_url, decode=True)
    sse_redis = make_redis(settings.redis_url, decode=False)
    # Dedicated single connection for the hub's blocking XREAD: its CLIENT ID stays fixed for CLIENT UNBLOCK,
    # and retries=0 so a dropped connection surfaces (the hub then re-reads the id).
    reader = make_redis(settings.redis_url, decode=False, retries=0, max_connections=1)
    try:
        arq = await open_arq_pool(settings.redis_url)
    except (RedisError, OSError) as exc:
        logger.warning("redis unreachable at startup (%s: %s); arq pool opens on first use", type(exc).__name__, exc)
        arq = None
    store = ControlStore(control_redis)
    dispatcher = Dispatcher(store, settings.redis_url, arq)
    hub = SSEHub(reader, sse_redis)
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
