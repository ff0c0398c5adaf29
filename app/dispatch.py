"""The ONLY module of the control server that writes desired state or enqueues jobs.

Every change to the desired set or to the pause flag is followed by a nudge: an arq job
``control.jobs.RECONCILE(version, request_id=...)`` (the request's ``X-Request-ID``, ``app.observe``, so the
worker's log line for the job carries it) with the deterministic ``_job_id=reconcile_job_id(version)`` on
``control.keys.ARQ_QUEUE``, plus ``ControlStore.notify("plan")``. The job is only a nudge; workers also
reconcile on their heartbeat, so a failed enqueue is logged and the request still succeeds (the truth,
the desired state, was already written).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

from arq.connections import ArqRedis, RedisSettings, create_pool
from redis.exceptions import RedisError

from control import keys
from control.jobs import RECONCILE, reconcile_job_id
from control.logging_config import request_id_var
from control.redis_client import parse_sentinel_url, sentinel_master
from control.store import ControlStore

logger = logging.getLogger(__name__)


async def open_arq_pool(redis_url: str) -> ArqRedis:
    """An ``ArqRedis`` for ``redis_url`` that fails at once (no arq connect retries) when Redis is down.

    Raises redis ``ConnectionError``/``TimeoutError`` or ``OSError`` when Redis is unreachable. A
    ``redis+sentinel://`` URL gives a client of the sentinels' current master (built here: arq's sentinel mode
    sets no connect timeout).
    """
    target = parse_sentinel_url(redis_url)
    if target is None:
        settings = dataclasses.replace(RedisSettings.from_dsn(redis_url), conn_retries=0, conn_timeout=2)
        return await create_pool(settings, default_queue_name=keys.ARQ_QUEUE)
    pool = sentinel_master(target, redis_class=ArqRedis, socket_connect_timeout=2)
    pool.default_queue_name = keys.ARQ_QUEUE
    try:
        await pool.ping()
    except BaseException:
        await pool.aclose()
        raise
    return pool


class Dispatcher:
    """Applies control commands to Redis: desired topics, pause flag, and the reconcile nudge.

    ``arq`` may be None (Redis was down at startup); the pool is then opened on first use.
    """

    def __init__(self, store: ControlStore, redis_url: str, arq: ArqRedis | None = None) -> None:
        self.store = store
        self.redis_url = redis_url
        self.arq = arq
        self._arq_lock = asyncio.Lock()

    async def close(self) -> None:
        """Close the arq pool (if open)."""
        if self.arq is not None:
            await self.arq.aclose()
            self.arq = None

    async def subscribe(
        self, topics: Sequence[str], now_ms: int, options: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Add ``topics`` to the desired set (idempotent), with per-topic ``options`` (depth ``levels``).

        Returns ``{"accepted": [...], "added": [...], "already": [...], "paused": bool}``; nudges
        workers only when something was added or an option changed. Raises redis errors when Redis
        is unreachable.
        """
        changed = await self.store.set_options({t: options for t in topics}) if options else False
        added = await self.store.add_desired(list(topics), now_ms)
        if added or changed:
            await self._nudge()
        added_set = set(added)
        return {
            "accepted": list(topics),
            "added": added,
            "already": [t for t in topics if t not in added_set],
            "paused": await self.store.is_paused(),
        }

    async def unsubscribe(self, topics: Sequence[str]) -> dict[str, Any]:
        """Remove ``topics``; returns ``{"removed": [...], "not_subscribed": [...]}``; nudges when any was removed."""
        removed = await self.store.remove_desired(list(topics))
        if removed:
            await self._nudge()
        removed_set = set(removed)
        return {"removed": removed, "not_subscribed": [t for t in topics if t not in removed_set]}

    async def stop(self, clear: bool) -> dict[str, Any]:
        """Stop streaming everywhere.

        ``clear=False``: pause (desired state kept, ``start`` resumes). ``clear=True``: forget every
        desired topic and leave the service unpaused. Returns ``{"stopped": True, "paused", "cleared"}``.
        """
        cleared = 0
        if clear:
            cleared = await self.store.clear_desired()
            await self.store.set_paused(False)
        else:
            await self.store.set_paused(True)
        await self._nudge()
        return {"stopped": True, "paused": not clear, "cleared": cleared}

    async def start(self) -> dict[str, Any]:
        """Resume streaming; returns ``{"started": True, "topics": <desired topic count>}``."""
        await self.store.set_paused(False)
        await self._nudge()
        return {"started": True, "topics": len(await self.store.desired())}

    async def _nudge(self) -> None:
        version = await self.store.version()
        try:
            pool = await self._pool()
            job = await pool.enqueue_job(
                RECONCILE, version, request_id=request_id_var.get(), _job_id=reconcile_job_id(version),
                _queue_name=keys.ARQ_QUEUE,
            )
            if job is None:
                logger.debug("reconcile job for version %d already queued", version)
        except (RedisError, OSError) as exc:
            logger.warning("could not enqueue reconcile job (version %d): %s: %s", version, type(exc).__name__, exc)
        await self.store.notify("plan")

    async def _pool(self) -> ArqRedis:
        if self.arq is None:
            async with self._arq_lock:
                if self.arq is None:
                    self.arq = await open_arq_pool(self.redis_url)
        return self.arq
