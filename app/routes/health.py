"""Health probes: ``GET /health/live``, ``GET /health/ready`` (no token) and ``GET /health`` (summary, read scope).

* ``/health/live``: 200 ``{"status": "ok"}`` when the process and its event loop answer. Never touches Redis, so
  a Redis outage does not make a process manager restart a healthy control server.
* ``/health/ready``: 200 ``{"status": "ready"}`` when Redis answers within ``READY_REDIS_TIMEOUT_S`` and at
  least one worker's heartbeat is fresh (within LEASE_TTL_S, the rule ``/status`` shows as ``alive``); else 503
  with the error envelope, ``code`` = the reason: ``redis_unavailable`` (no answer, an error, or too slow),
  ``events_redis_unavailable`` (``EVENTS_REDIS_URL`` is set and it, or on a cluster any master, does not answer
  PING in that time: SSE and /ws could not serve) or ``no_live_worker``. A load balancer sends traffic only to a ready control server. Nothing else is disclosed:
  no worker ids, hosts, counts or Redis address.
* ``/health``: the summary an operator reads (redis latency, workers alive of total, paused), behind a token.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.errors import error_response, now_ms
from app.query import check_query
from app.routes.status import decorate_workers
from app.sse_entries import READ_ERRORS
from control.events_redis import is_cluster
from control.store import ControlStore

#: Seconds Redis gets to answer the readiness check (PING and the worker heartbeats, one round trip).
READY_REDIS_TIMEOUT_S = 1.0
REDIS_UNAVAILABLE, NO_LIVE_WORKER = "redis_unavailable", "no_live_worker"
EVENTS_REDIS_UNAVAILABLE = "events_redis_unavailable"
_MESSAGES = {
    REDIS_UNAVAILABLE: f"Redis did not answer within {READY_REDIS_TIMEOUT_S:g} s",
    EVENTS_REDIS_UNAVAILABLE: f"the events Redis (EVENTS_REDIS_URL) did not answer within {READY_REDIS_TIMEOUT_S:g} s",
    NO_LIVE_WORKER: "no worker heartbeat within LEASE_TTL_S",
}


async def check(request: Request) -> dict[str, Any]:
    """``{"ready": bool, "reason": str | None, "latency_ms": float | None, "workers": total, "alive": n,
    "paused": bool | None}``; never raises for a Redis problem (it is the answer)."""
    store: ControlStore = request.app.state.store
    started = time.perf_counter()
    try:
        async with asyncio.timeout(READY_REDIS_TIMEOUT_S):
            workers, paused = await asyncio.gather(store.workers(), store.is_paused())
    except (RedisError, OSError, TimeoutError, ValueError):
        return {"ready": False, "reason": REDIS_UNAVAILABLE, "latency_ms": None, "workers": 0, "alive": 0,
                "paused": None}  # fmt: skip
    latency_ms = round((time.perf_counter() - started) * 1000, 3)
    alive = sum(1 for w in decorate_workers(workers, request.app.state.settings, now_ms()) if w["alive"])
    reason = None if alive else NO_LIVE_WORKER
    if request.app.state.settings.events_split and not await _events_redis_answers(request.app.state.sse_redis):
        reason = EVENTS_REDIS_UNAVAILABLE
    return {"ready": reason is None, "reason": reason, "latency_ms": latency_ms, "workers": len(workers),
            "alive": alive, "paused": paused}  # fmt: skip


async def _events_redis_answers(client: Any) -> bool:
    """True when the events Redis answers PING within ``READY_REDIS_TIMEOUT_S`` (on a cluster: every master)."""
    try:
        async with asyncio.timeout(READY_REDIS_TIMEOUT_S):
            if is_cluster(client):
                await client.ping(target_nodes=client.get_primaries())
            else:
                await client.ping()
    except READ_ERRORS:  # TimeoutError (asyncio.timeout) is an OSError
        return False
    return True


async def live(request: Request) -> Response:
    """200 ``{"status": "ok"}``: the event loop runs this handler; no Redis, no token.
    ---
    get:
      summary: liveness probe (process and event loop answer; never touches Redis; no token)
      responses:
        200: {description: alive, content: {application/json: {schema: HealthProbeSchema}}}
    """
    check_query(request.query_params)
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> Response:
    """200 ``{"status": "ready"}``, or 503 envelope with code ``redis_unavailable`` / ``no_live_worker``.
    ---
    get:
      summary: readiness probe (Redis answers within 1 s and a worker heartbeat is fresh; no token)
      responses:
        200: {description: ready, content: {application/json: {schema: HealthProbeSchema}}}
        503:
          description: not ready; error.code is the reason (redis_unavailable, events_redis_unavailable, no_live_worker)
          content: {application/json: {schema: ErrorEnvelopeSchema}}
    """
    check_query(request.query_params)
    result = await check(request)
    if not result["ready"]:
        return error_response(503, result["reason"], _MESSAGES[result["reason"]])
    return JSONResponse({"status": "ready"})


async def health(request: Request) -> Response:
    """200 ``{"status": "ok"|"degraded", "ready", "reason", "redis": {"ok", "latency_ms"}, "workers": {"total",
    "alive"}, "paused", "server_time"}`` (read scope). Always 200: the probes are for machines, this is for people.
    ---
    get:
      summary: health summary (Redis latency, workers alive of total, paused)
      responses:
        200: {description: the summary, content: {application/json: {schema: HealthSchema}}}
    """
    check_query(request.query_params)
    result = await check(request)
    return JSONResponse(
        {
            "status": "ok" if result["ready"] else "degraded",
            "ready": result["ready"],
            "reason": result["reason"],
            "redis": {"ok": result["latency_ms"] is not None, "latency_ms": result["latency_ms"]},
            "workers": {"total": result["workers"], "alive": result["alive"]},
            "paused": result["paused"],
            "server_time": now_ms(),
        }
    )


#: No token (``app.auth.PUBLIC_RULE``).
PUBLIC_ROUTES = [
    Route("/health/live", live, methods=["GET"], name="health_live"),
    Route("/health/ready", ready, methods=["GET"], name="health_ready"),
]
#: Read scope.
ROUTES = [Route("/health", health, methods=["GET"], name="health")]
