"""``GET /status``: pause flag, desired-state version, workers, connections, subscriptions and gaps.

All records come from ``control.store.ControlStore``; times are epoch milliseconds. Each connection also shows
its lease as Redis has it now (``lease``: owner and milliseconds left, from ``control.store.lease_owners``), its
reconnects by kind (``reasons``) and the gaps it announced (``gaps``). Each worker shows its publisher backlog
(``publisher``: ``queue_depth``, ``oldest_queued_age_ms``, ``dropped``, ``fenced``, ...), written with its heartbeat.
Filters (``?state=``, ``exchange``, ``topic`` prefix, ``stale``), the ``?summary=1`` counts and paging
(``?limit=N``, then ``page.next``) keep the answer small at tens of thousands of topics (``StatusQuerySchema``).
The top-level ``gaps`` adds up, per reason, the gaps announced by the connections running now, the books' sequence
gaps (``book_sequence``) and the publishers' backlog overflows (``redis_backlog_overflow``).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.errors import now_ms
from app.query import StatusQuerySchema
from control.settings import Settings
from control.store import ACTIVE, FAILED, lease_owners
from control.topics import EXCHANGE_ALIASES, is_private

#: ``reason`` of the gap events a publisher writes after dropping events on backlog overflow (workers.publisher).
GAP_BACKLOG_OVERFLOW = "redis_backlog_overflow"
#: Summary key of the order books' own sequence gaps (``books.gaps`` in a connection record).
GAP_BOOK_SEQUENCE = "book_sequence"
_QUERY = StatusQuerySchema()


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


def _query(request: Request) -> dict[str, Any]:
    """The validated ``StatusQuerySchema`` (raises ValidationError -> 400); ``exchange`` canonical."""
    params = dict(request.query_params)
    query: dict[str, Any] = _QUERY.load(params)
    if "exchange" in query:
        query["exchange"] = EXCHANGE_ALIASES.get(query["exchange"], query["exchange"])
    return query


def filter_subscriptions(records: list[dict[str, Any]], query: dict[str, Any]) -> list[dict[str, Any]]:
    """Keep the (decorated) records matching ``state``, ``exchange``, ``topic`` (a prefix) and ``stale``."""
    state, exchange, prefix, stale = (query.get(k) for k in ("state", "exchange", "topic", "stale"))
    return [
        r
        for r in records
        if (state is None or r["state"] == state)
        and (exchange is None or r["topic"].partition(":")[0] == exchange)
        and (prefix is None or r["topic"].startswith(prefix))
        and (stale is None or r["stale"] is stale)
    ]


def page(
    records: list[dict[str, Any]], query: dict[str, Any], path: str
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One page of ``records`` (sorted by topic): those after ``after``, at most ``limit`` (all without it).

    Returns the page and ``{"limit", "total", "next"}``; ``next`` is the path and query of the following page
    (the same filters, ``after`` = this page's last topic), or None on the last page."""
    total = len(records)
    after = query.get("after")
    if after is not None:
        records = [r for r in records if r["topic"] > after]
    limit = query.get("limit") or max(len(records), 1)
    chunk = records[:limit]
    following = None
    if len(records) > limit:
        params = {k: v for k, v in query.items() if k not in ("after", "summary")}
        params.update(limit=limit, after=chunk[-1]["topic"])
        following = f"{path}?{urlencode({k: _param(v) for k, v in params.items()})}"
    return chunk, {"limit": limit, "total": total, "next": following}


def _param(value: Any) -> str:
    return str(int(value)) if isinstance(value, bool) else str(value)


def _count(values: Iterable[str]) -> dict[str, int]:
    return dict(sorted(Counter(values).items()))


def summary(
    paused: bool, version: int, workers: list[dict[str, Any]], connections: list[dict[str, Any]],
    subscriptions: list[dict[str, Any]], now: int,
) -> dict[str, Any]:  # fmt: skip
    """``/status?summary=1``: counts of workers (total, alive), connections by state, and subscriptions by
    state, exchange and reason (a failed subscription's error text), plus the gap summary."""
    return {
        "server_time": now,
        "paused": paused,
        "desired_version": version,
        "workers": {"total": len(workers), "alive": sum(1 for w in workers if w["alive"])},
        "connections": _count(str(c.get("state")) for c in connections),
        "subscriptions": {
            "total": len(subscriptions),
            "stale": sum(1 for r in subscriptions if r["stale"]),
            "by_state": _count(r["state"] for r in subscriptions),
            "by_exchange": _count(r["topic"].partition(":")[0] for r in subscriptions),
            "by_reason": _count(str(r.get("error")) for r in subscriptions if r["state"] == FAILED),
        },
        "gaps": gap_summary(connections, workers),
    }


async def status_snapshot(state: Any) -> dict[str, Any]:
    """The whole ``/status`` document from ``state`` (an app's ``state``: ``store``, ``settings``).

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
    """200 ``{"server_time", "paused", "desired_version", "workers", "connections", "subscriptions", "gaps",
    "page"}``, or the counts with ``?summary=1``; filters and paging as in ``StatusQuerySchema``.
    ---
    get:
      summary: workers, connections, subscriptions (state, stale), gaps; filters, counts, paging
      description: >-
        Filters apply to the subscription list (and `exchange` to connections too). `summary=1` answers
        counts only. Paging: `limit=N`, then follow `page.next` (it carries the filters and
        `after=<last topic>`); topics are in ascending order.
      parameters: [{in: query, schema: StatusQuerySchema}]
      responses:
        200:
          description: the status, or its summary with summary=1
          content:
            application/json:
              schema: {anyOf: [StatusResponseSchema, StatusSummarySchema]}
    """
    query = _query(request)
    doc = await status_snapshot(request.app.state)
    connections = doc["connections"]
    if (exchange := query.get("exchange")) is not None:  # the gap summary stays over every connection
        connections = [c for c in connections if c.get("exchange") == exchange]
    selected = filter_subscriptions(doc["subscriptions"], query)
    if query.get("summary"):
        counts = summary(doc["paused"], doc["desired_version"], doc["workers"], connections, selected,
                         doc["server_time"])  # fmt: skip
        return JSONResponse(counts | {"gaps": doc["gaps"]})
    records, paging = page(selected, query, request.url.path)
    return JSONResponse(doc | {"connections": connections, "subscriptions": records, "page": paging})


ROUTES = [Route("/status", status, methods=["GET"])]
