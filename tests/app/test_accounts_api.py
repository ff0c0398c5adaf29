"""The accounts API (POST/GET/DELETE /accounts): round trip, validation that never echoes values, disabled
without a secret key."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from redis.asyncio import Redis
from starlette.testclient import TestClient

from app.main import create_app
from control.settings import Settings
from tests.app._auth import CONTROL, assert_error, write_secrets

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
        err = assert_error(client.post("/accounts", json={"exchange": "bitmart"}), 409, "accounts_disabled")
        assert "FEEDPLANE_SECRET_KEY" in err["message"]
        assert client.get("/accounts").json() == {"accounts": []}
