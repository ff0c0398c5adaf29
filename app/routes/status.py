"""``GET /status``: pause flag, desired-state version, workers, connections and subscriptions.

All records come from ``control.store.ControlStore``; times are epoch milliseconds.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.errors import now_ms
from control.settings import Settings
from control.store import ACTIVE
from control.topics import is_private


def decorate_subscriptions(records: list[dict[str, Any]], settings: Settings, now: int) -> list[dict[str, Any]]:
    """Add ``stale``: active and no event for more than STALL_TIMEOUT_S since ``max(since, last_event_at)``.

    Never for private topics (orders, positions, balances): an account may rightly be quiet for hours."""
    stall_ms = settings.stall_timeout_s * 1000
    out = []
    for record in records:
        reference = max(record.get("since") or 0, record.get("last_event_at") or 0)
        stale = record.get("state") == ACTIVE and now - reference > stall_ms and not is_private(record["topic"])
        out.append({**record, "stale": stale})
    return out


def decorate_workers(records: list[dict[str, Any]], settings: Settings, now: int) -> list[dict[str, Any]]:
    """Add ``alive``: the worker's ``heartbeat_at`` is within LEASE_TTL_S of ``now``."""
    lease_ms = settings.lease_ttl_s * 1000
    out = []
    for record in records:
        beat = record.get("heartbeat_at")
        alive = isinstance(beat, (int, float)) and now - beat <= lease_ms
        out.append({**record, "connections": record.get("connections") or [], "alive": alive})
    return out


async def status(request: Request) -> Response:
    """200 ``{"server_time", "paused", "desired_version", "workers", "connections", "subscriptions"}``."""
    store = request.app.state.store
    settings = request.app.state.settings
    paused, version, workers, connections, subscriptions = await asyncio.gather(
        store.is_paused(), store.version(), store.workers(), store.connections(), store.subscriptions()
    )
    now = now_ms()
    return JSONResponse(
        {
            "server_time": now,
            "paused": paused,
            "desired_version": version,
            "workers": decorate_workers(workers, settings, now),
            "connections": connections,
            "subscriptions": decorate_subscriptions(subscriptions, settings, now),
        }
    )


ROUTES = [Route("/status", status, methods=["GET"])]
