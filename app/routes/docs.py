"""``GET /openapi.json`` (the OpenAPI 3.1 document, ``app.openapi``) and ``GET /docs`` (Swagger UI), no token.

The docs page works offline: its script and style come from the ``swagger-ui-py`` package's bundled Swagger UI
(Apache-2.0, ``swagger_ui/static`` in that wheel), served here under ``/docs/static/``; no CDN. The document
is built once per app, on first request, from the app's own access policy, so it lists exactly the routes the
app serves.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from app.openapi import TITLE, build_spec
from app.query import check_query

STATIC_PATH = "/docs/static"

_PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{TITLE}</title>
<link rel="stylesheet" href="{STATIC_PATH}/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{STATIC_PATH}/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({{url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true,
  persistAuthorization: false, tryItOutEnabled: false}});
</script>
</body>
</html>
"""


def spec_of(request: Request) -> dict[str, Any]:
    """The app's OpenAPI document, built on first use and kept on ``app.state.openapi``."""
    state = request.app.state
    doc: dict[str, Any] | None = getattr(state, "openapi", None)
    if doc is None:
        doc = state.openapi = build_spec(state.access_policy, open_mode=state.auth_open)
    return doc


async def openapi_json(request: Request) -> Response:
    """200 the OpenAPI 3.1 document.
    ---
    get:
      summary: this API's OpenAPI 3.1 document (no token)
      responses:
        200: {description: the document, content: {application/json: {schema: {type: object}}}}
    """
    check_query(request.query_params)
    return JSONResponse(spec_of(request))


async def docs(request: Request) -> Response:
    """200 the Swagger UI page for ``/openapi.json`` (assets from ``/docs/static``, offline).
    ---
    get:
      summary: API documentation page (Swagger UI, offline assets; no token)
      responses:
        200: {description: an HTML page, content: {text/html: {schema: {type: string}}}}
    """
    check_query(request.query_params)
    return HTMLResponse(_PAGE)


ROUTES: list[BaseRoute] = [
    Route("/openapi.json", openapi_json, methods=["GET"], name="openapi"),
    Route("/docs", docs, methods=["GET"], name="docs"),
    Mount(STATIC_PATH, app=StaticFiles(packages=[("swagger_ui", "static")]), name="docs_static"),
]
