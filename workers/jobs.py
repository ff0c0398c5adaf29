"""arq job functions. Jobs are thin nudges: the desired state in Redis is the truth.

``reconcile`` is enqueued by the control server after every desired-state change (job id
``control.jobs.reconcile_job_id(version)``). Whichever worker takes it re-plans and wakes its
runtime; the other workers learn of the new plan through the ``plan`` message on ``fp:ctl`` and
their heartbeat. A lost or duplicated job is harmless.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from control.logging_config import request_id_var
from workers.planner import plan, read_plan
from workers.runtime import WorkerRuntime

log = logging.getLogger(__name__)


async def reconcile(ctx: dict[str, Any], version: int = 0, request_id: str | None = None) -> dict[str, int]:
    """Re-plan for the current desired state and wake this worker's runtime.

    ``version`` is the desired-state version the enqueuer saw (for logs; the plan always uses the
    latest); ``request_id`` the control request that enqueued the job: every log line of the job carries it
    (``control.logging_config.request_id_var``). Returns ``{"version", "connections", "topics"}`` of the plan
    now in Redis. When another process holds the planner lock, its plan is reported instead (the heartbeat
    re-plans if needed). Raises ``redis.exceptions.RedisError`` on Redis trouble, so arq retries the job.
    """
    token = request_id_var.set(request_id)
    try:
        return await _reconcile(ctx, version)
    finally:
        request_id_var.reset(token)


async def _reconcile(ctx: dict[str, Any], version: int) -> dict[str, int]:
    runtime: WorkerRuntime = ctx["runtime"]
    result = await plan(runtime.redis, runtime.settings, runtime.adapters, now_ms=int(time.time() * 1000))
    if result is None:
        result = await read_plan(runtime.redis)
    runtime.wake()
    log.info(
        "worker %s: reconcile v%d -> plan v%d (%d connections, %d topics)",
        runtime.worker_id, version, result.version, result.connections, result.topics,
    )
    return {"version": result.version, "connections": result.connections, "topics": result.topics}
