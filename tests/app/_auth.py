"""Shared tokens, secrets files and request helpers of the auth tests."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.testclient import TestClient

from app.main import create_app
from control.settings import Settings

REPO = Path(__file__).resolve().parents[2]
CONTROL = "control-token-0123456789abcdef"
READ = "read-token-0123456789abcdef"
ALICE = "alice-token-0123456789abcdef"  # account-only: bitmart:alice and gateio:alice, no scopes
BOB = "bob-token-0123456789abcdef"  # account-only: bitmart:bob
FILE_CONTROL = "file-control-token-0123456789"
WRONG = "wrong-token-0123456789abcdef"
#: Path parameter values used to build a concrete URL for every route (a new parameter name fails loudly).
SAMPLE_PARAMS = {"symbol": "BTCUSDT", "account": "alice", "exchange": "bitmart", "order_id": "1",
                 "client_order_id": "c1", "userId": "alice"}
PRIVATE_PREFIXES = ("/sse/orders/", "/sse/positions/", "/sse/balances/", "/sse/sse/orders/")
#: Order routes (issue #14): a control token, or an account token for its own account.
ORDER_PATHS = ("/orders", "/orders/1", "/orders/client/c1", "/positions/close", "/gate/place-futures-order",
               "/gate/close-futures-order", "/gate/cancel-futures-order", "/gate/get-futures-order")
#: No token (issue #12): probes and the API description.
PUBLIC_PATHS = ("/health/live", "/health/ready", "/openapi.json", "/docs")


def expected_access(path: str) -> str:
    """The spec (issues #3, #13, #14), independent of the app's own table: what each endpoint needs."""
    if path == "/dashboard/feed":
        return "read"
    if path == "/dashboard" or path.startswith("/dashboard/assets/"):
        return "public"
    if path.startswith(PRIVATE_PREFIXES) or path in ORDER_PATHS:
        return "account"
    if path in PUBLIC_PATHS or path.startswith("/docs/"):
        return "public"
    if path.startswith("/sse") or path in ("/status", "/help", "/health", "/metrics"):
        return "read"
    return "control"


def route_requests(app: Any) -> list[tuple[str, str]]:
    """(method, concrete path) for every method of every route of ``app`` (HEAD rides on GET); the docs page's
    static files (a Mount) as one asset."""
    out = []
    for route in app.routes:
        if isinstance(route, WebSocketRoute):  # GET /ws authenticates itself: tests/app/ws
            continue
        if isinstance(route, Mount):
            out.append(("GET", f"{route.path}/swagger-ui.css"))
            continue
        assert isinstance(route, Route), route
        params = {name: SAMPLE_PARAMS[name] for name in route.param_convertors}
        path = route.path_format.format(**params)
        out.extend((method, path) for method in sorted((route.methods or set()) - {"HEAD"}))
    return out


ROUTE_REQUESTS = route_requests(create_app(Settings.from_env({})))


def write_secrets(tmp_path: Path, extra_tokens: list[dict[str, Any]] | None = None) -> str:
    doc = {
        "accounts": [
            {"exchange": "bitmart", "account": "alice", "api_key": "alice-key-012345", "api_secret": "alice-s-012345"}
        ],
        "tokens": [
            {"token": ALICE, "accounts": ["bitmart:alice", "gateio:alice"]},
            {"token": BOB, "scopes": [], "accounts": ["bitmart:bob"]},
            {"token": FILE_CONTROL, "scopes": ["control"]},
            *(extra_tokens or []),
        ],
    }
    path = tmp_path / "accounts.json"
    path.write_bytes(orjson.dumps(doc))
    os.chmod(path, 0o600)
    return str(path)


def call(client: TestClient, method: str, path: str, token: str | None = None, **kwargs: Any) -> Any:
    """One request; SSE GETs are streamed and closed at once (status and headers only)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    headers.update(kwargs.pop("headers", {}))
    if method == "GET" and path.startswith(("/sse", "/dashboard/feed")):
        with client.stream(method, path, headers=headers, **kwargs) as resp:
            if resp.status_code != 200:  # an error envelope: read it; a stream: leave it (closing cancels it)
                resp.read()
            return resp
    if method == "POST" and "json" not in kwargs and "content" not in kwargs:
        kwargs["json"] = {}
    return client.request(method, path, headers=headers, **kwargs)


def assert_error(resp: Any, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, (resp.status_code, resp.text)
    err: dict[str, Any] = resp.json()["error"]
    assert err["code"] == code and set(err) == {"code", "message", "details", "timestamp"}
    return err


def read_events(resp: Any, until: str) -> list[dict[str, str]]:
    events, event = [], {}
    for line in resp.iter_lines():
        if not line:
            if event:
                events.append(event)
                if event.get("event") == until:
                    return events
                event = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(": ")
        event[name] = value
    raise AssertionError(f"stream ended before {until}")
