"""The live dashboard: ``GET /dashboard`` (the page), ``/dashboard/assets/<file>`` (its JS, CSS, vendored uPlot: a
``Mount`` of static files, like the docs page's ``/docs/static``, so not in the OpenAPI document) and
``GET /dashboard/feed`` (SSE: one ``snapshot`` event per second, ``app.dashboard_feed``).

Auth (``app.auth``): the page and its assets are static files without data (``PUBLIC_RULE``), so a browser can
open the page in a secured deployment and paste a token into it. The feed is a public SSE route (``read``
scope); the page passes the pasted token as ``?access_token=`` (an EventSource cannot send headers), which the
middleware cuts out before anything logs the query. The token stays in the page's memory: the server never
stores it, and the subscribe/unsubscribe form sends it as ``Authorization: Bearer`` to the control API.

Feed events: ``event: snapshot``, ``data:`` the snapshot JSON (``app.dashboard_feed`` module docstring); the first
carries ``retry: 2000``. On server shutdown a final ``bye`` event.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import orjson
from sse_starlette import EventSourceResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import NotModifiedResponse, StaticFiles
from starlette.types import Scope

from app.auth import PUBLIC_RULE, SSE_RULE, Rule
from app.dashboard_feed import DashboardFeed
from app.query import check_query
from app.routes.sse import RETRY_MS, SHUTDOWN_GRACE_S, sse_frame

STATIC_DIR = Path(__file__).resolve().parent.parent / "static" / "dashboard"
#: The page may only load files from this server (no CDN): scripts, styles, and connections to itself.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")  # fmt: skip
_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-cache"}  # fmt: skip


def dashboard_feed(request: Request) -> DashboardFeed:
    """The app's shared ``DashboardFeed`` (created on first use, on the app's ``sse_redis`` bytes client)."""
    state = request.app.state
    feed: DashboardFeed | None = getattr(state, "dashboard", None)
    if feed is None:
        feed = state.dashboard = DashboardFeed(state, state.sse_redis)
    return feed


async def page(request: Request) -> Response:
    """200 ``text/html``: the dashboard page (``app/static/dashboard/index.html``), told whether tokens are on
    (``<meta name="feedplane-auth" content="open|secured">``: the page then asks for a token before connecting).
    ---
    get:
      summary: the live dashboard page (HTML; its assets under /dashboard/assets/; no token)
      responses:
        200: {description: the page, content: {text/html: {schema: {type: string}}}}
        400:
          description: "validation_error: an unknown query parameter"
          content: {application/json: {schema: ErrorEnvelopeSchema}}
    """
    check_query(request.query_params)
    mode = "open" if request.app.state.auth_open else "secured"
    html = (STATIC_DIR / "index.html").read_text(encoding="utf-8").replace("{{AUTH_MODE}}", mode)
    return HTMLResponse(html, headers=_HEADERS)


async def _events(feed: DashboardFeed, shutdown: anyio.Event) -> AsyncIterator[bytes]:
    seen = 0
    feed.join()
    try:
        while not shutdown.is_set():
            snapshot: Any = None
            with anyio.move_on_after(0.5):  # wake now and then to notice shutdown; never yield inside the scope
                number, snapshot = await feed.next(seen)
            if snapshot is not None:
                yield sse_frame("snapshot", orjson.dumps(snapshot), None, RETRY_MS if seen == 0 else None)
                seen = number
        yield sse_frame("bye", b'{"type":"bye"}', None)
    finally:
        await feed.leave()


async def feed(request: Request) -> Response:
    """200 ``text/event-stream`` of ``snapshot`` events (module docstring).
    ---
    get:
      summary: the dashboard's feed (SSE) - one status snapshot with rates and latency a second
      description: "event: snapshot, data: the snapshot JSON (app.dashboard_feed), one a second; bye on shutdown"
      responses: {200: EventStream}
    """
    check_query(request.query_params)
    state = request.app.state
    shutdown = anyio.Event()
    return EventSourceResponse(
        _events(dashboard_feed(request), shutdown),
        ping=state.settings.sse_ping_s,
        sep="\n",
        shutdown_event=shutdown,
        shutdown_grace_period=min(SHUTDOWN_GRACE_S, state.settings.drain_timeout_s / 2),
    )


#: URL name under ``/dashboard/assets/`` -> (file under ``STATIC_DIR``, media type). Only these names are served,
#: so nothing else on disk can be reached (not ``index.html``, the template of the page).
ASSETS = {
    "dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
    "uPlot.iife.min.js": ("vendor/uPlot.iife.min.js", "text/javascript; charset=utf-8"),
    "uPlot.min.css": ("vendor/uPlot.min.css", "text/css; charset=utf-8"),
    "uPlot.LICENSE": ("vendor/uPlot.LICENSE", "text/plain; charset=utf-8"),
}


class AssetFiles(StaticFiles):
    """``StaticFiles`` (path checks, GET/HEAD only, ETag and 304) limited to ``ASSETS``, each with its media type
    and the page's security headers (``CSP``). Any other name: 404 (the error envelope, ``app.errors``)."""

    def __init__(self) -> None:
        super().__init__(directory=STATIC_DIR)

    async def get_response(self, path: str, scope: Scope) -> Response:
        """The asset ``path`` (its URL name) or ``HTTPException`` 404 / 405."""
        if scope["method"] not in ("GET", "HEAD"):
            raise HTTPException(status_code=405, headers={"Allow": "GET, HEAD"})
        entry = ASSETS.get(path)
        if entry is None:
            raise HTTPException(status_code=404)
        file, media_type = entry
        path_on_disk = STATIC_DIR / file  # stat_result given: ETag and Last-Modified are set now, for the 304 check
        response = FileResponse(path_on_disk, media_type=media_type, headers=_HEADERS, stat_result=path_on_disk.stat())
        if self.is_not_modified(response.headers, Headers(scope=scope)):
            return NotModifiedResponse(response.headers)
        return response


POLICY: list[tuple[BaseRoute, Rule]] = [
    (Route("/dashboard", page, methods=["GET"]), PUBLIC_RULE),
    (Route("/dashboard/feed", feed, methods=["GET"]), SSE_RULE),
    (Mount("/dashboard/assets", app=AssetFiles(), name="dashboard_assets"), PUBLIC_RULE),
]
