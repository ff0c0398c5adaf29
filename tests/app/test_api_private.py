"""JSON API: private subscriptions per account (ACCOUNTS_FILE, run-time accounts, the worker's answer)."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from starlette.testclient import TestClient

from app.errors import now_ms
from control import keys
from control.jobs import reconcile_job_id
from control.settings import Settings
from control.store import ControlStore
from tests.app._api import assert_envelope, snapshot


async def test_private_subscribe_without_body_is_the_default_account(account_client: TestClient, redis: Redis) -> None:
    resp = account_client.post("/orders/subscribe")
    assert resp.status_code == 202, resp.text
    assert resp.json() == {"accepted": ["bitmart:order:default"], "added": ["bitmart:order:default"], "already": [],
                           "paused": False}  # fmt: skip
    assert await redis.hkeys(keys.DESIRED) == ["bitmart:order:default"]
    version = await ControlStore(redis).version()
    assert await redis.zrange(keys.ARQ_QUEUE, 0, -1) == [reconcile_job_id(version)]  # workers are nudged
    again = account_client.post("/orders/subscribe", json={})
    assert again.json()["already"] == ["bitmart:order:default"] and await ControlStore(redis).version() == version
    assert account_client.post("/orders/unsubscribe").json() == {"removed": ["bitmart:order:default"],
                                                                  "not_subscribed": []}  # fmt: skip
    assert await redis.hkeys(keys.DESIRED) == []


async def test_private_subscribe_named_accounts_on_every_exchange(account_client: TestClient, redis: Redis) -> None:
    calls = [("/orders/subscribe", {"exchange": "binanceusdm", "account": "alice"}, "binanceusdm:order:alice"),
             ("/positions/subscribe", {"exchange": "binanceusdm", "account": "alice"}, "binanceusdm:position:alice"),
             ("/balances/subscribe", {"exchange": "gate", "account": "g1"}, "gateio:balance:g1"),
             ("/positions/subscribe", {"account": "default"}, "bitmart:position:default"),
             ("/balances/subscribe", {"exchange": "bitmart"}, "bitmart:balance:default")]  # fmt: skip
    for path, body, topic in calls:
        resp = account_client.post(path, json=body)
        assert resp.status_code == 202 and resp.json()["added"] == [topic], resp.text
    assert sorted(await redis.hkeys(keys.DESIRED)) == sorted(t for _, _, t in calls)
    resp = account_client.post("/balances/unsubscribe", json={"exchange": "gateio", "account": "g1"})
    assert resp.json() == {"removed": ["gateio:balance:g1"], "not_subscribed": []}
    resp = account_client.post("/positions/unsubscribe", json={"exchange": "gateio", "account": "g1"})
    assert resp.json() == {"removed": [], "not_subscribed": ["gateio:position:g1"]}


async def test_private_subscribe_waits_for_the_worker(account_client: TestClient, redis: Redis) -> None:
    resp = account_client.post("/orders/subscribe?wait=0.2")
    assert resp.status_code == 202
    assert [(s["topic"], s["state"]) for s in resp.json()["subscriptions"]] == [("bitmart:order:default", "pending")]
    await ControlStore(redis).set_states({"bitmart:order:default": {"state": "failed", "error": "login refused: x",
                                                                    "since": now_ms(), "conn": "c1"}})  # fmt: skip
    resp = account_client.post("/orders/subscribe?wait=1")
    assert resp.status_code == 200
    [record] = resp.json()["subscriptions"]
    assert record["state"] == "failed" and record["error"] == "login refused: x"


@pytest.mark.parametrize("path", ["/orders/subscribe", "/positions/subscribe", "/balances/subscribe"])
async def test_private_subscribe_refuses_an_unknown_account(
    account_client: TestClient, redis_bytes: Redis, path: str
) -> None:
    before = await snapshot(redis_bytes)
    for body in ({"account": "bob"}, {"exchange": "binanceusdm"}, {"exchange": "gateio", "account": "default"}):
        err = assert_envelope(account_client.post(path, json=body), 400, "validation_error")
        assert list(err["details"]) == ["account"] and "unknown account" in err["details"]["account"][0]
        assert "0123456789" not in str(err)
    assert await snapshot(redis_bytes) == before == {}


async def test_private_topics_are_never_stale(account_client: TestClient, redis: Redis, settings: Settings) -> None:
    account_client.post("/orders/subscribe")
    old = now_ms() - int(settings.stall_timeout_s * 1000) - 10_000
    await ControlStore(redis).set_states({"bitmart:order:default": {"state": "active", "error": None, "since": old,
                                                                    "conn": "c1"}})  # fmt: skip
    [record] = account_client.get("/status").json()["subscriptions"]
    assert record["state"] == "active" and record["stale"] is False  # a quiet account is not a stalled feed


async def test_private_accounts_added_at_run_time(account_client: TestClient, redis: Redis) -> None:
    body = {"exchange": "bitmart", "account": "carol", "api_key": "carol-key-0123456789",
            "api_secret": "carol-secret-0123456789", "memo": "carol-memo"}  # fmt: skip
    assert_envelope(account_client.post("/orders/subscribe", json={"account": "carol"}), 400, "validation_error")
    assert account_client.post("/accounts", json=body).status_code == 201
    assert account_client.post("/orders/subscribe", json={"account": "carol"}).json()["added"] == ["bitmart:order:carol"]
    assert account_client.delete("/accounts/bitmart/carol").status_code == 200
    assert_envelope(account_client.post("/positions/subscribe", json={"account": "carol"}), 400, "validation_error")
    resp = account_client.post("/orders/unsubscribe", json={"account": "carol"})  # a deleted account's topics go too
    assert resp.json()["removed"] == ["bitmart:order:carol"]
