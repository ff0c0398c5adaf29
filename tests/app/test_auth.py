"""Auth: the full route x token matrix, open mode, private SSE per account, ?access_token=, constant-time verify,
CORS, the accounts API, and ``python -m app.serve`` refusing a non-loopback address without tokens."""

from __future__ import annotations

import asyncio
import hmac
import os
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.fernet import Fernet
from redis.asyncio import Redis
from starlette.routing import Route
from starlette.testclient import TestClient

from app import auth
from app.auth import Authenticator, scrub_access_token
from app.main import create_app
from app.sse_cursor import fingerprint
from control import keys
from control.accounts import make_grant
from control.settings import Settings, SettingsError

REPO = Path(__file__).resolve().parents[2]
CONTROL = "control-token-0123456789abcdef"
READ = "read-token-0123456789abcdef"
ALICE = "alice-token-0123456789abcdef"  # account-only: bitmart:alice, no scopes
BOB = "bob-token-0123456789abcdef"  # account-only: bitmart:bob
FILE_CONTROL = "file-control-token-0123456789"
WRONG = "wrong-token-0123456789abcdef"
#: Path parameter values used to build a concrete URL for every route (a new parameter name fails loudly).
SAMPLE_PARAMS = {"symbol": "BTCUSDT", "account": "alice", "exchange": "bitmart"}
PRIVATE_PREFIXES = ("/sse/orders/", "/sse/positions/", "/sse/balances/")


def expected_access(path: str) -> str:
    """The spec (issue #3), independent of the app's own table: what each endpoint needs."""
    if path.startswith(PRIVATE_PREFIXES):
        return "account"
    if path.startswith("/sse") or path in ("/status", "/help"):
        return "read"
    return "control"


def route_requests(app: Any) -> list[tuple[str, str]]:
    """(method, concrete path) for every method of every route of ``app`` (HEAD rides on GET)."""
    out = []
    for route in app.routes:
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
            {"token": ALICE, "accounts": ["bitmart:alice"]},
            {"token": BOB, "scopes": [], "accounts": ["bitmart:bob"]},
            {"token": FILE_CONTROL, "scopes": ["control"]},
            *(extra_tokens or []),
        ],
    }
    path = tmp_path / "accounts.json"
    path.write_bytes(orjson.dumps(doc))
    os.chmod(path, 0o600)
    return str(path)


@pytest.fixture
def secured_settings(make_settings: Callable[..., Settings], tmp_path: Path) -> Settings:
    # limits off: the matrix makes many requests from one address; tests/app/test_ratelimit.py covers limits
    return make_settings(CONTROL_TOKEN=CONTROL, READ_TOKEN=READ, ACCOUNTS_FILE=write_secrets(tmp_path),
                         RATE_LIMIT_CONTROL_PER_MIN="0", RATE_LIMIT_READ_PER_MIN="0", RATE_LIMIT_SSE_PER_MIN="0",
                         RATE_LIMIT_AUTH_FAIL_PER_MIN="0")  # fmt: skip


@pytest.fixture
def secured(secured_settings: Settings, redis: Redis) -> Iterator[TestClient]:
    with TestClient(create_app(secured_settings)) as client:
        yield client


@pytest.fixture
def open_client(make_settings: Callable[..., Settings], redis: Redis) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(CTRL_ADDR="127.0.0.1:18089"))) as client:
        yield client


def call(client: TestClient, method: str, path: str, token: str | None = None, **kwargs: Any) -> Any:
    """One request; SSE GETs are streamed and closed at once (status and headers only)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    headers.update(kwargs.pop("headers", {}))
    if method == "GET" and path.startswith("/sse"):
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


# -- the matrix ------------------------------------------------------------------------------------------


def test_every_route_is_in_the_access_policy(secured_settings: Settings) -> None:
    app = create_app(secured_settings)
    policy_routes = [route for route, _ in app.state.access_policy]
    assert app.routes == policy_routes
    assert len(ROUTE_REQUESTS) >= 25  # sanity: the enumeration really found the app's routes
    for route, rule in app.state.access_policy:
        assert rule.access == expected_access(route.path_format.format(**{n: SAMPLE_PARAMS[n] for n in
                                                                          route.param_convertors}))  # fmt: skip


@pytest.mark.parametrize(("method", "path"), ROUTE_REQUESTS, ids=[f"{m} {p}" for m, p in ROUTE_REQUESTS])
def test_secured_route_matrix(secured: TestClient, method: str, path: str) -> None:
    access = expected_access(path)
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


# -- private SSE per account -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["orders", "positions", "balances"])
def test_private_sse_account_matrix(secured: TestClient, kind: str) -> None:
    base = f"/sse/{kind}"
    assert call(secured, "GET", f"{base}/alice", ALICE).status_code == 200
    assert call(secured, "GET", f"{base}/alice?exchange=bitmart", ALICE).status_code == 200
    assert call(secured, "GET", f"{base}/bob", BOB).status_code == 200
    assert call(secured, "GET", f"{base}/alice", CONTROL).status_code == 200
    assert call(secured, "GET", f"{base}/bob", FILE_CONTROL).status_code == 200
    err = assert_error(call(secured, "GET", f"{base}/bob", ALICE), 403, "forbidden")
    assert "bitmart:bob" in err["message"]
    assert_error(call(secured, "GET", f"{base}/alice", BOB), 403, "forbidden")
    assert_error(call(secured, "GET", f"{base}/alice?exchange=binanceusdm", ALICE), 403, "forbidden")
    assert_error(call(secured, "GET", f"{base}/alice", READ), 403, "forbidden")  # public read is not enough
    assert_error(call(secured, "GET", f"{base}/al:ice", ALICE), 400, "validation_error")
    assert_error(call(secured, "GET", f"{base}/alice?exchange=kraken", ALICE), 400, "validation_error")


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


@pytest.mark.parametrize(("kind", "channel"), [("orders", "order"), ("positions", "position"), ("balances", "balance")])
async def test_private_sse_streams_its_topic(secured: TestClient, redis: Redis, kind: str, channel: str) -> None:
    topic = f"gateio:{channel}:alice"
    payload = orjson.dumps({"type": channel, "exchange": "gateio", "account": "alice", "id": "42"})
    await redis.xadd(keys.event_stream(topic), {keys.STREAM_FIELD: payload}, id="1732300000000-0")
    await redis.xadd(keys.event_stream(f"gateio:{channel}:bob"), {keys.STREAM_FIELD: b'{"type":"x"}'})
    url = f"/sse/{kind}/alice?exchange=gate&backlog=5"  # alias accepted
    with secured.stream("GET", url, headers={"Authorization": f"Bearer {CONTROL}"}) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        first, ready = read_events(resp, "ready")
    assert first == {"id": f"{fingerprint([topic])}:1732300000000-0", "event": channel, "data": payload.decode(),
                     "retry": "2000"}  # fmt: skip
    assert orjson.loads(ready["data"]) == {"type": "ready", "topics": [topic]}


def test_public_sse_refuses_private_topics(secured: TestClient) -> None:
    for token in (READ, CONTROL):
        err = assert_error(call(secured, "GET", "/sse?topic=bitmart:order:alice", token), 400, "validation_error")
        assert "/sse/orders/{account}" in err["details"]["topic"]["0"][0]


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


# -- accounts API ----------------------------------------------------------------------------------------


@pytest.fixture
def key_settings(make_settings: Callable[..., Settings], tmp_path: Path) -> Settings:
    return make_settings(CONTROL_TOKEN=CONTROL, ACCOUNTS_FILE=write_secrets(tmp_path),
                         BINANCE_API_KEY="bn-key-0123456789", BINANCE_API_SECRET="bn-secret-0123456789",
                         FEEDPLANE_SECRET_KEY=Fernet.generate_key().decode())  # fmt: skip


def test_accounts_api(key_settings: Settings, redis: Redis) -> None:
    headers = {"Authorization": f"Bearer {CONTROL}"}
    body = {"exchange": "gate", "account": "carol", "api_key": "carol-key-0123456789", "api_secret": "carol-s-012345"}
    with TestClient(create_app(key_settings)) as client:
        created = client.post("/accounts", json=body, headers=headers)
        assert created.status_code == 201
        assert created.json() == {"exchange": "gateio", "account": "carol", "source": "api", "key": "caro…" +
                                  created.json()["key"][5:]}  # fmt: skip
        assert client.post("/accounts", json={**body, "memo": "m"}, headers=headers).status_code == 200  # replaced
        listing = client.get("/accounts", headers=headers).json()["accounts"]
        assert [(a["exchange"], a["account"], a["source"]) for a in listing] == [
            ("binanceusdm", "default", "env"), ("bitmart", "alice", "file"), ("gateio", "carol", "api")]  # fmt: skip
        assert "0123456789" not in str(listing)
        for conflict in ({**body, "exchange": "binanceusdm", "account": "default"}, {**body, "exchange": "bitmart",
                                                                                      "account": "alice"}):  # fmt: skip
            assert_error(client.post("/accounts", json=conflict, headers=headers), 409, "account_exists")
        assert_error(client.delete("/accounts/bitmart/alice", headers=headers), 409, "account_read_only")
        assert_error(client.delete("/accounts/binanceusdm/default", headers=headers), 409, "account_read_only")
        assert client.delete("/accounts/gate/carol", headers=headers).json() == {
            "deleted": {"exchange": "gateio", "account": "carol"}}  # fmt: skip
        assert_error(client.delete("/accounts/gateio/carol", headers=headers), 404, "account_not_found")
        resp = client.put("/accounts", json=body, headers=headers)
        assert_error(resp, 405, "method_not_allowed")
        assert set(resp.headers["allow"].split(", ")) == {"GET", "HEAD", "POST"}


def test_accounts_validation_never_echoes_values(key_settings: Settings, redis: Redis) -> None:
    secret = "Zx9-very-secret-value-do-not-echo"
    headers = {"Authorization": f"Bearer {CONTROL}"}
    good = {"exchange": "bitmart", "account": "dave", "api_key": "dave-key-0123456789", "api_secret": secret}
    cases: list[tuple[dict[str, Any], str]] = [
        ({**good, "account": "bad name!"}, "account"),
        ({**good, "exchange": "kraken"}, "exchange"),
        ({**good, "api_secret": [secret]}, "api_secret"),
        ({**good, "api_secret": secret + " x"}, "api_secret"),
        ({**good, "api_secret": secret * 20}, "api_secret"),
        ({**good, "api_secret": ""}, "api_secret"),
        ({**good, "api_key": secret + "\n"}, "api_key"),
        ({**good, "memo": [secret]}, "memo"),
        ({**good, "surprise": secret}, "surprise"),
        ({k: v for k, v in good.items() if k != "api_key"}, "api_key"),
    ]
    with TestClient(create_app(key_settings)) as client:
        for payload, field in cases:
            resp = client.post("/accounts", json=payload, headers=headers)
            err = assert_error(resp, 400, "validation_error")
            assert field in err["details"], (field, err)
            assert secret[:8] not in resp.text and secret[-8:] not in resp.text, resp.text
        resp = client.post("/accounts", content=b'{"api_secret": "' + secret.encode() + b'", oops}', headers=headers)
        assert_error(resp, 400, "invalid_json")
        assert secret[:8] not in resp.text


def test_accounts_disabled_without_secret_key(make_settings: Callable[..., Settings], redis: Redis) -> None:
    with TestClient(create_app(make_settings())) as client:
        err = assert_error(client.post("/accounts", json={"exchange": "bitmart"}), 503, "accounts_disabled")
        assert "FEEDPLANE_SECRET_KEY" in err["message"]
        assert client.get("/accounts").json() == {"accounts": []}
