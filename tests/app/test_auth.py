"""Auth: the full route x token matrix, open mode, ?access_token=, constant-time verify, CORS, and
``python -m app.serve`` refusing a non-loopback address without tokens."""

from __future__ import annotations

import asyncio
import hmac
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from starlette.routing import Mount, WebSocketRoute
from starlette.testclient import TestClient

from app import auth
from app.auth import Authenticator, scrub_access_token
from app.main import create_app
from control.accounts import make_grant
from control.settings import Settings, SettingsError
from tests.app._auth import (
    ALICE,
    BOB,
    CONTROL,
    FILE_CONTROL,
    READ,
    REPO,
    ROUTE_REQUESTS,
    SAMPLE_PARAMS,
    WRONG,
    assert_error,
    call,
    expected_access,
    write_secrets,
)

# -- the matrix ------------------------------------------------------------------------------------------


def test_every_route_is_in_the_access_policy(secured_settings: Settings) -> None:
    app = create_app(secured_settings)
    policy_routes = [route for route, _ in app.state.access_policy]
    # GET /ws authenticates itself (app.ws.access: ?token= or Bearer, UNAUTHORIZED then close 1008; tests/app/ws)
    assert [r.path for r in app.routes if isinstance(r, WebSocketRoute)] == ["/ws"]
    assert [r for r in app.routes if not isinstance(r, WebSocketRoute)] == policy_routes
    assert len(ROUTE_REQUESTS) >= 25  # sanity: the enumeration really found the app's routes
    for route, rule in app.state.access_policy:
        if isinstance(route, Mount):  # the docs page's static files
            assert rule.access == expected_access(route.path + "/"), route
            continue
        params = {n: SAMPLE_PARAMS[n] for n in route.param_convertors}
        assert rule.access == expected_access(route.path_format.format(**params))


@pytest.mark.parametrize(("method", "path"), ROUTE_REQUESTS, ids=[f"{m} {p}" for m, p in ROUTE_REQUESTS])
def test_secured_route_matrix(secured: TestClient, method: str, path: str) -> None:
    access = expected_access(path)
    if access == "public":  # probes, the API description, the dashboard's static files: no token needed, and a
        for token in (None, WRONG, ALICE):  # token (even a wrong one) is ignored
            assert call(secured, method, path, token).status_code not in (401, 403, 429)
        return
    resp = call(secured, method, path)
    assert_error(resp, 401, "unauthorized")
    assert resp.headers["www-authenticate"].startswith("Bearer")
    assert_error(call(secured, method, path, WRONG), 401, "unauthorized")
    wrong_scope = {"control": [READ, ALICE], "read": [ALICE, BOB], "account": [READ, BOB]}[access]
    for token in wrong_scope:
        assert_error(call(secured, method, path, token), 403, "forbidden")
    right_scope = {"control": [CONTROL, FILE_CONTROL], "read": [READ, CONTROL], "account": [ALICE, CONTROL]}[access]
    for token in right_scope:
        status = call(secured, method, path, token).status_code
        assert status not in (401, 403), (token, status)


@pytest.mark.parametrize(("method", "path"), ROUTE_REQUESTS, ids=[f"{m} {p}" for m, p in ROUTE_REQUESTS])
def test_open_mode_needs_no_token(open_client: TestClient, method: str, path: str) -> None:
    status = call(open_client, method, path).status_code
    assert status not in (401, 403, 429), status
    assert call(open_client, method, path, WRONG).status_code not in (401, 403)  # a token is simply ignored


async def test_open_mode_has_no_rate_limits(open_client: TestClient, redis: Redis) -> None:
    for _ in range(3):
        assert open_client.get("/status").status_code == 200
    assert await redis.keys("fp:rl:*") == []


def test_unknown_paths_need_a_token_then_404(secured: TestClient) -> None:
    assert_error(call(secured, "GET", "/nope"), 401, "unauthorized")
    assert_error(call(secured, "GET", "/nope", ALICE), 404, "not_found")
    assert_error(call(secured, "GET", "/stop", READ), 403, "forbidden")  # the route's rule holds for a wrong method
    resp = call(secured, "GET", "/stop", CONTROL)
    assert_error(resp, 405, "method_not_allowed")
    assert resp.headers["allow"] == "POST"


def test_401_and_403_envelopes(secured: TestClient) -> None:
    missing = assert_error(call(secured, "GET", "/status"), 401, "unauthorized")
    assert "Authorization: Bearer" in missing["message"]
    sse_missing = assert_error(call(secured, "GET", "/sse/trades/BTCUSDT"), 401, "unauthorized")
    assert "access_token" in sse_missing["message"]
    resp = call(secured, "GET", "/status", WRONG)
    assert assert_error(resp, 401, "unauthorized")["message"] == "invalid token"
    assert resp.headers["www-authenticate"] == 'Bearer realm="feedplane", error="invalid_token"'
    for header in (f"Basic {READ}", READ, "Bearer", "Bearer  "):
        assert_error(secured.get("/status", headers={"Authorization": header}), 401, "unauthorized")
    assert secured.get("/status", headers={"Authorization": f"bearer {READ}"}).status_code == 200
    resp = call(secured, "POST", "/stop", READ)
    err = assert_error(resp, 403, "forbidden")
    assert err["details"] == {"required_scope": "control"} and READ not in resp.text
    assert resp.headers["www-authenticate"] == 'Bearer realm="feedplane", error="insufficient_scope", scope="control"'


# -- ?access_token= --------------------------------------------------------------------------------------


def test_access_token_query_works_for_sse_only(secured: TestClient) -> None:
    assert call(secured, "GET", f"/sse/trades/BTCUSDT?access_token={READ}").status_code == 200
    assert call(secured, "GET", f"/sse?topic=bitmart:trade:BTCUSDT&access_token={READ}&backlog=1").status_code == 200
    assert call(secured, "GET", f"/sse/orders/alice?access_token={ALICE}").status_code == 200
    assert call(secured, "GET", f"/sse/orders/alice?access%5Ftoken={ALICE}").status_code == 200  # encoded name
    assert_error(call(secured, "GET", f"/sse/orders/bob?access_token={ALICE}"), 403, "forbidden")
    assert_error(call(secured, "GET", f"/sse/trades/BTCUSDT?access_token={WRONG}"), 401, "unauthorized")
    assert_error(call(secured, "GET", "/sse/trades/BTCUSDT?access_token="), 401, "unauthorized")
    for method, path, token in (("POST", "/stop", CONTROL), ("GET", "/status", READ), ("POST", "/accounts", CONTROL),
                                ("DELETE", "/accounts/bitmart/x", CONTROL), ("GET", "/nope", READ)):  # fmt: skip
        resp = call(secured, method, f"{path}?access_token={token}")
        assert "Authorization: Bearer" in assert_error(resp, 400, "token_in_query")["message"]
        assert token not in resp.text
    both = call(secured, "GET", f"/sse/trades/BTCUSDT?access_token={READ}", READ)
    assert_error(both, 400, "token_in_query")
    twice = call(secured, "GET", f"/sse/trades/BTCUSDT?access_token={READ}&access_token={READ}")
    assert_error(twice, 400, "token_in_query")


def test_scrub_access_token_keeps_other_parameters_exactly() -> None:
    scope: dict[str, Any] = {"query_string": b"topic=bitmart%3Akline%3ABTCUSDT%3A1m&access_token=a%2Bb&backlog=5"}
    assert scrub_access_token(scope) == (["a+b"], True)
    assert scope["query_string"] == b"topic=bitmart%3Akline%3ABTCUSDT%3A1m&backlog=5"
    scope = {"query_string": b"Access_Token=x&topic=t"}  # names are case-sensitive: not ours, left alone
    assert scrub_access_token(scope) == ([], False) and scope["query_string"] == b"Access_Token=x&topic=t"
    scope = {"query_string": b"%61ccess_token=zz&x=1"}  # fully percent-encoded name
    assert scrub_access_token(scope) == (["zz"], True) and scope["query_string"] == b"x=1"
    assert scrub_access_token({"query_string": b""}) == ([], False)


# -- verification ----------------------------------------------------------------------------------------


def test_verify_compares_digests_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    grants = [make_grant("a", CONTROL, ["control"]), make_grant("b", READ, ["read"]), make_grant("c", ALICE, [])]
    authenticator = Authenticator(grants)
    assert authenticator.verify(READ) == grants[1]
    assert len(calls) == 3  # no early exit on the match
    assert all(isinstance(x, bytes) and len(x) == 32 for pair in calls for x in pair)  # sha256 digests only
    assert not any(READ.encode() in pair or READ in pair for pair in calls)
    calls.clear()
    assert authenticator.verify(WRONG) is None and len(calls) == 3
    assert authenticator.verify("") is None
    assert not hasattr(authenticator, "tokens") and all(CONTROL not in repr(g) for g in authenticator.grants)


def test_one_token_configured_twice_gets_both_grants(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    path = write_secrets(tmp_path, [{"token": READ, "accounts": ["gateio:carol"]}])
    authenticator = Authenticator.from_settings(make_settings(READ_TOKEN=READ, ACCOUNTS_FILE=path))
    grant = authenticator.verify(READ)
    assert grant is not None and grant.id == "env:read"
    assert grant.has("read") and grant.can_read_account("gateio", "carol") and not grant.has("control")


# -- exposure --------------------------------------------------------------------------------------------


def test_non_loopback_needs_a_token(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as err:
        create_app(make_settings(CTRL_ADDR="0.0.0.0:8089"))
    assert err.value.name == "CTRL_ADDR"
    assert "refusing to serve without CONTROL_TOKEN/READ_TOKEN" in str(err.value)
    create_app(make_settings(CTRL_ADDR="0.0.0.0:8089", READ_TOKEN=READ))
    create_app(make_settings(CTRL_ADDR="10.1.2.3:8089", ACCOUNTS_FILE=write_secrets(tmp_path)))  # file tokens count
    for loopback in ("127.0.0.1:8089", "127.8.9.10:8089", "[::1]:8089", "localhost:8089"):
        assert create_app(make_settings(CTRL_ADDR=loopback)).state.auth_open is True


@pytest.mark.integration  # runs app.serve in a subprocess
async def test_serve_refuses_non_loopback_without_tokens() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("CONTROL_TOKEN", "READ_TOKEN", "ACCOUNTS_FILE")}
    env.update(CTRL_ADDR=f"0.0.0.0:{port}", PYTHONUNBUFFERED="1")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app.serve", cwd=REPO, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 2
    text = err.decode()
    assert text.startswith(f"feedplane: CTRL_ADDR: 0.0.0.0:{port} is not a loopback address; refusing to serve "
                           "without CONTROL_TOKEN/READ_TOKEN")  # fmt: skip
    assert out == b""


# -- CORS ------------------------------------------------------------------------------------------------


def test_cors_for_browser_sse_clients(make_settings: Callable[..., Settings], redis: Redis) -> None:
    origin = "https://app.example.com"
    settings = make_settings(CORS_ORIGINS=origin, READ_TOKEN=READ)
    with TestClient(create_app(settings)) as client:
        preflight = client.options("/sse/trades/BTCUSDT", headers={
            "Origin": origin, "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization, last-event-id"})  # fmt: skip
        assert preflight.status_code == 200  # answered without a token
        assert preflight.headers["access-control-allow-origin"] == origin
        allowed = preflight.headers["access-control-allow-headers"].lower()
        assert "authorization" in allowed and "last-event-id" in allowed
        denied = client.get("/status", headers={"Origin": origin})  # the 401 is readable by the page
        assert denied.status_code == 401 and denied.headers["access-control-allow-origin"] == origin
        assert "retry-after" in denied.headers["access-control-expose-headers"].lower()
        ok = client.get("/status", headers={"Origin": origin, "Authorization": f"Bearer {READ}"})
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == origin
        other = client.get("/status", headers={"Origin": "https://evil.example", "Authorization": f"Bearer {READ}"})
        assert "access-control-allow-origin" not in other.headers
    with TestClient(create_app(make_settings(READ_TOKEN=READ))) as client:  # CORS_ORIGINS empty: no CORS at all
        resp = client.get("/status", headers={"Origin": origin, "Authorization": f"Bearer {READ}"})
        assert "access-control-allow-origin" not in resp.headers


# -- /help -----------------------------------------------------------------------------------------------


def test_help_documents_auth(secured: TestClient, open_client: TestClient) -> None:
    body = secured.get("/help?format=json", headers={"Authorization": f"Bearer {READ}"}).json()
    assert body["auth"]["mode"] == "secured"
    for item in body["endpoints"] + body["accounts"]:
        assert item["auth"] == expected_access(item["path"]), item
        if item["auth"] == "public":
            assert "Authorization" not in item["curl"]
            continue
        var = {"control": "$CONTROL_TOKEN", "read": "$READ_TOKEN", "account": "$ACCOUNT_TOKEN"}[item["auth"]]
        assert f'-H "Authorization: Bearer {var}"' in item["curl"]
    assert {e["path"] for e in body["accounts"]} == {"/accounts", "/accounts/bitmart/alice"}
    assert {"/sse/orders/default", "/sse/positions/default", "/sse/balances/default"} <= {
        e["path"] for e in body["endpoints"]}  # fmt: skip
    text = secured.get("/help", headers={"Authorization": f"Bearer {READ}"}).text
    assert "access_token" in text and "[control]" in text and "429" in text and READ not in text
    open_body = open_client.get("/help?format=json").json()
    assert open_body["auth"]["mode"] == "open"
    assert all("Authorization" not in e["curl"] for e in open_body["endpoints"] + open_body["accounts"])
