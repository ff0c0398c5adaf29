"""The control server's request ids and Prometheus metrics: ``ControlMetrics``, ``Observer``, ``GET /metrics``.

Request ids. Every HTTP request gets one: the client's ``X-Request-ID`` when it is 1 to 128 of
``A-Z a-z 0-9 . _ : / + = -``, else a fresh 32-hex-digit id. It is echoed in the response's ``X-Request-ID``
header, set in ``control.logging_config.request_id_var`` while the request is handled (every log line of the
request carries it), and passed in the arq job the request enqueues (``app.dispatch``), so the worker's log line
that handles the job carries it too.

Metrics (prometheus-client, one ``CollectorRegistry`` per app, served at ``GET /metrics`` in the text exposition
format; the route needs the ``read`` scope like ``/status``)::

    feedplane_http_requests_total{method,route,status}        requests by route template (/sse/klines/{symbol}),
                                                             ``<unmatched>`` for no route (``route_template``)
    feedplane_http_request_duration_seconds{method,route}     histogram, until the response headers were sent
                                                             (an SSE stream's duration is not a latency)
    feedplane_sse_clients                                     SSE streams open now
    feedplane_sse_events_total                                SSE events sent (counted per batch written)
    feedplane_rate_limit_refusals_total{route}                429 answers
    feedplane_redis_errors_total{where}                       Redis unreachable: request (503), rate_limit, sse
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.query import check_query
from control.logging_config import request_id_var

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")
UNMATCHED = "<unmatched>"
#: Latency buckets in seconds (control requests take a Redis round trip or two; ``?wait=`` up to 30 s).
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ControlMetrics:
    """The control server's metrics (module docstring), in their own ``registry``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("feedplane_http_requests", "HTTP requests answered, by route template and status",
                                ("method", "route", "status"), registry=r)  # fmt: skip
        self.latency = Histogram("feedplane_http_request_duration_seconds",
                                 "time from the request to its response headers, seconds", ("method", "route"),
                                 buckets=LATENCY_BUCKETS_S, registry=r)  # fmt: skip
        self.sse_clients = Gauge("feedplane_sse_clients", "SSE streams open now", registry=r)
        self.sse_events = Counter("feedplane_sse_events", "SSE events sent to clients", registry=r)
        self.rate_limited = Counter("feedplane_rate_limit_refusals", "requests refused with 429 (rate limits)",
                                    ("route",), registry=r)  # fmt: skip
        self.redis_errors = Counter("feedplane_redis_errors", "Redis unreachable while serving, by where",
                                    ("where",), registry=r)  # fmt: skip

    def redis_error(self, where: str) -> None:
        """Count one Redis failure seen by ``where`` (``request``, ``rate_limit``, ``sse``)."""
        self.redis_errors.labels(where).inc()

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)


def metrics_of(scope_or_app: Any) -> ControlMetrics | None:
    """The app's ``ControlMetrics`` (``app.state.metrics``) from an ASGI scope or an app; None if it has none."""
    app = scope_or_app.get("app") if isinstance(scope_or_app, dict) else scope_or_app
    state = getattr(app, "state", None)
    metrics = getattr(state, "metrics", None)
    return metrics if isinstance(metrics, ControlMetrics) else None


def request_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's ``X-Request-ID`` when well-formed (see module docstring), else a new uuid4 hex id."""
    for name, value in headers:
        if name.lower() == b"x-request-id":
            text = value.decode("latin-1").strip()
            if _REQUEST_ID_RE.fullmatch(text):
                return text
            break
    return uuid.uuid4().hex


class Observer:
    """Pure ASGI middleware, outermost: request id (context variable and response header) and HTTP metrics."""

    def __init__(self, app: ASGIApp, metrics: ControlMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope.get("headers") or [])
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500
        header = (REQUEST_ID_HEADER.lower().encode(), request_id.encode())

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
                self._observe(scope, status, time.perf_counter() - started)
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            request_id_var.reset(token)

    def _observe(self, scope: Scope, status: int, elapsed_s: float) -> None:
        template = route_template(scope)
        method = scope.get("method", "")
        m = self.metrics
        m.requests.labels(method, template, str(status)).inc()
        m.latency.labels(method, template).observe(elapsed_s)
        if status == 429:
            m.rate_limited.labels(template).inc()


def route_template(scope: Scope) -> str:
    """The path template of the request's route (``/sse/klines/{symbol}``): the one the router chose, else (a request
    answered before routing: 401, 403, 429, 413) the first route whose path matches; ``UNMATCHED`` for none."""
    route = scope.get("route")
    if isinstance(route, Route):
        return route.path
    for candidate in getattr(scope.get("app"), "routes", ()):
        if isinstance(candidate, Route) and candidate.matches(scope)[0] is not Match.NONE:
            return candidate.path
    return UNMATCHED


async def metrics_endpoint(request: Request) -> Response:
    """``GET /metrics``: the control server's metrics in Prometheus' text format (``read`` scope).
    ---
    get:
      summary: Prometheus metrics of the control server (workers - METRICS_PORT + process number)
      responses:
        200: {description: "the text exposition format (version 0.0.4)", content: {text/plain: {schema: {type: string}}}}
    """
    check_query(request.query_params)
    metrics = metrics_of(request.app)
    body = metrics.exposition() if metrics is not None else b""
    return Response(body, media_type=CONTENT_TYPE_LATEST)


ROUTES = [Route("/metrics", metrics_endpoint, methods=["GET"])]
