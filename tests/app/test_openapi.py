"""The OpenAPI document: valid 3.1, every route of the app in it, in ``/help`` and in README; the docs page offline.

A new route without the YAML block in its endpoint's docstring (``app.openapi``) fails
``test_every_route_is_documented``: that is intended.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from openapi_spec_validator import validate
from starlette.routing import Match, Mount, Route, WebSocketRoute
from starlette.testclient import TestClient

from app.main import create_app
from app.openapi import build_spec, routes_markdown
from app.routes import access_policy
from control.settings import Settings
from tests.app._auth import ALICE, READ

README = Path(__file__).resolve().parents[2] / "README.md"
_IMPLICIT = {"HEAD", "OPTIONS"}


def _operations(app: Any) -> list[tuple[str, Route]]:
    """(method, route) for every documented-to-be method of every route: the Mount of static files excluded, and
    ``GET /ws`` (a WebSocket, which OpenAPI cannot describe: README's "WebSocket fan-out" section does)."""
    out = []
    for route in app.routes:
        if isinstance(route, (Mount, WebSocketRoute)):
            continue
        assert isinstance(route, Route), route
        out.extend((method, route) for method in sorted((route.methods or set()) - _IMPLICIT))
    return out


def test_document_is_valid_openapi_3_1(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    assert doc["openapi"] == "3.1.0"
    validate(doc)  # openapi-spec-validator: raises on any violation of the 3.1 schema
    assert doc["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}


def test_every_route_is_documented(secured_settings: Settings) -> None:
    app = create_app(secured_settings)
    doc = build_spec(app.state.access_policy)
    validate(doc)  # the secured form (the open one is checked above)
    expected = {(m.lower(), r.path) for m, r in _operations(app)}
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert expected - documented == set(), "routes without an OpenAPI operation (docstring YAML, app.openapi)"
    assert documented - expected == set()


def test_security_follows_the_access_policy() -> None:
    doc = build_spec(access_policy())
    for route, rule in access_policy():
        if not isinstance(route, Route):
            continue
        for method, op in doc["paths"][route.path].items():
            scopes = {s for requirement in op["security"] for values in requirement.values() for s in values}
            assert scopes == (set() if rule.access == "public" else {rule.access}), (method, route.path)
            if rule.access != "public":
                assert {"401", "403", "429", "503"} <= set(op["responses"]), route.path
            if "requestBody" in op:
                assert "413" in op["responses"] and "400" in op["responses"], route.path


def test_sse_routes_are_event_streams() -> None:
    doc = build_spec(access_policy())
    stream = doc["components"]["responses"]["EventStream"]
    assert list(stream["content"]) == ["text/event-stream"]
    sse_paths = [p for p in doc["paths"] if p.startswith("/sse")]
    assert len(sse_paths) == 7  # with the seed connector's /sse/sse/orders/{userId}
    for path in [*sse_paths, "/dashboard/feed"]:
        assert doc["paths"][path]["get"]["responses"]["200"] == {"$ref": "#/components/responses/EventStream"}


def test_schemas_come_from_the_validating_schemas() -> None:
    doc = build_spec(access_policy())
    schemas = doc["components"]["schemas"]
    klines = schemas["KlinesRequest"]
    assert klines["additionalProperties"] is False  # unknown = RAISE, as the server answers
    assert klines["properties"]["tfs"]["maxItems"] == 9 and klines["required"] == ["tfs"]
    assert schemas["DepthRequest"]["properties"]["levels"]["maximum"] == 100
    account = schemas["AccountRequest"]  # from control.credentials.ACCOUNT_SCHEMA
    assert set(account["required"]) == {"exchange", "account", "api_key", "api_secret"}
    assert account["additionalProperties"] is False
    status = doc["paths"]["/status"]["get"]
    assert {p["name"] for p in status["parameters"]} == {"state", "exchange", "topic", "stale", "summary", "limit",
                                                        "after"}  # fmt: skip
    envelope = schemas["ErrorEnvelope"]
    assert envelope["required"] == ["error"]


def test_every_route_is_in_help(secured: TestClient) -> None:
    body = secured.get("/help?format=json", headers={"Authorization": f"Bearer {READ}"}).json()
    items = body["endpoints"] + body["accounts"] + body["orders"]
    for method, route in _operations(secured.app):
        scopes = [{"type": "http", "method": method, "path": item["path"].split("?")[0], "root_path": ""}
                  for item in items if item["method"] == method]  # fmt: skip
        assert any(route.matches(scope)[0] == Match.FULL for scope in scopes), f"{method} {route.path} not in /help"


def test_readme_route_table_is_generated() -> None:
    text = README.read_text()
    found = re.search(r"<!-- routes:begin -->\n(.*?)<!-- routes:end -->", text, re.DOTALL)
    assert found, "README lacks the route table markers"
    assert found.group(1) == routes_markdown(build_spec(access_policy())), (
        "README's route table is stale: replace it with the output of `python -m app.openapi`"
    )


def test_docs_page_works_offline_without_a_token(secured: TestClient) -> None:
    page = secured.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert assets and all(a.startswith("/docs/static/") for a in assets), assets  # nothing from a CDN
    assert "http://" not in page.text and "https://" not in page.text
    for asset in assets:
        resp = secured.get(asset)
        assert resp.status_code == 200 and len(resp.content) > 10_000, asset
    assert secured.get("/openapi.json", headers={"Authorization": f"Bearer {ALICE}"}).status_code == 200
    assert secured.get("/openapi.json").json()["paths"]["/status"]
