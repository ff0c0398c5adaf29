"""``GET /status``: pause flag, desired-state version, workers, connections, subscriptions and gaps.

All records come from ``control.store.ControlStore``; times are epoch milliseconds. Each connection also shows
its lease as Redis has it now (``lease``: owner and milliseconds left, from ``control.store.lease_owners``), its
reconnects by kind (``reasons``) and the gaps it announced (``gaps``). Each worker shows its publisher backlog
(``publisher``: ``queue_depth``, ``oldest_queued_age_ms``, ``dropped``, ``fenced``, ...), written with its heartbeat.
The top-level ``gaps`` adds up, per reason, the gaps announced by the connections running now, the books' sequence
gaps (``book_sequence``) and the publishers' backlog overflows (``redis_backlog_overflow``).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.errors import now_ms
from control.settings import Settings
from control.store import ACTIVE, lease_owners
from control.topics import is_private

#: ``reason`` of the gap events a publisher writes after dropping events on backlog overflow (workers.publisher).
GAP_BACKLOG_OVERFLOW = "redis_backlog_overflow"
#: Summary key of the order books' own sequence gaps (``books.gaps`` in a connection record).
GAP_BOOK_SEQUENCE = "book_sequence"


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
        out.append({**record, "connections": record.get("connections") or [], "alive": alive,
                    "publisher": record.get("publisher") or {}})  # fmt: skip
    return out


def decorate_connections(
    records: list[dict[str, Any]], leases: dict[str, tuple[str | None, int | None]], now: int
) -> list[dict[str, Any]]:
    """Add ``lease``: ``{"owner", "expires_in_ms", "expires_at"}`` as Redis has it now, plus ``reasons`` and ``gaps``
    (``{}`` for records written before they existed)."""
    out = []
    for record in records:
        owner, ttl = leases.get(record["id"], (None, None))
        lease = {"owner": owner, "expires_in_ms": ttl, "expires_at": None if ttl is None else now + ttl}
        out.append({**record, "lease": lease, "reasons": record.get("reasons") or {}, "gaps": record.get("gaps") or {}})
    return out


def gap_summary(connections: list[dict[str, Any]], workers: list[dict[str, Any]]) -> dict[str, int]:
    """Gaps per reason: announced by the connections, the books' sequence gaps and the publishers' (per reason)."""
    total: Counter[str] = Counter()
    for record in connections:
        for reason, count in (record.get("gaps") or {}).items():
            if isinstance(count, int):
                total[reason] += count
        books = record.get("books") or {}
        if isinstance(books.get("gaps"), int) and books["gaps"]:
            total[GAP_BOOK_SEQUENCE] += books["gaps"]
    for worker in workers:
        publisher = worker.get("publisher") or {}
        by_reason = publisher.get("gaps_by_reason")
        if isinstance(by_reason, dict):  # per reason: backlog overflow, redis_error, unserializable
            for reason, count in by_reason.items():
                if isinstance(count, int):
                    total[reason] += count
        elif isinstance(publisher.get("gaps_published"), int) and publisher["gaps_published"]:
            total[GAP_BACKLOG_OVERFLOW] += publisher["gaps_published"]  # a worker of an older version
    return dict(sorted(total.items()))


async def status_snapshot(state: Any) -> dict[str, Any]:
    """The ``/status`` document from ``state`` (an app's ``state``: ``store``, ``settings``).

    ``{"server_time", "paused", "desired_version", "workers", "connections", "subscriptions", "gaps"}``; also
    what the dashboard feed (``app.dashboard_feed``) pushes. Raises redis errors (the callers' handlers map them).
    """
    store = state.store
    settings = state.settings
    paused, version, workers, connections, subscriptions = await asyncio.gather(
        store.is_paused(), store.version(), store.workers(), store.connections(), store.subscriptions()
    )
    leases = await lease_owners(store.redis, [c["id"] for c in connections])
    now = now_ms()
    workers = decorate_workers(workers, settings, now)
    connections = decorate_connections(connections, leases, now)
    return {
        "server_time": now,
        "paused": paused,
        "desired_version": version,
        "workers": workers,
        "connections": connections,
        "subscriptions": decorate_subscriptions(subscriptions, settings, now),
        "gaps": gap_summary(connections, workers),
    }


async def status(request: Request) -> Response:
    """200 ``{"server_time", "paused", "desired_version", "workers", "connections", "subscriptions", "gaps"}``."""
    return JSONResponse(await status_snapshot(request.app.state))


ROUTES = [Route("/status", status, methods=["GET"])]
