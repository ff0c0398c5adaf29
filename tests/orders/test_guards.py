"""Guards (symbols, leverage, notional; per account), the kill switch, and orders being off by default."""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest
from redis.asyncio import Redis
from starlette.testclient import TestClient

from app.main import create_app
from control.orders import HALT, QUEUE, OrderRequest, reply_key
from control.settings import Settings
from tests.orders._fake_gate import FakeGate
from tests.orders.conftest import Api, running_executor
from workers.orders import OrderExecutor

ORDER = {"exchange": "gateio", "symbol": "BTC_USDT", "type": "limit", "side": "buy", "size": "2", "price": "59000.5"}


def test_orders_are_off_unless_enabled(make_settings: Callable[..., Settings], redis: Redis) -> None:
    with TestClient(create_app(make_settings(CTRL_ADDR="127.0.0.1:18089"))) as client:
        for method, path in [("POST", "/orders"), ("GET", "/orders/1"), ("DELETE", "/orders/1"),
                             ("POST", "/positions/close"), ("POST", "/trading/halt"),
                             ("POST", "/gate/place-futures-order")]:  # fmt: skip
            resp = client.request(method, path, json=ORDER if method == "POST" else None)
            assert resp.status_code == 409 and resp.json()["error"]["code"] == "orders_disabled", (path, resp.text)


@pytest.mark.parametrize(
    ("env", "body", "code"),
    [
        ({"ORDERS_SYMBOLS": "ETH_USDT,SOL_USDT"}, ORDER, "guard_symbol"),
        ({"ORDERS_MAX_LEVERAGE": "5"}, {**ORDER, "leverage": 10}, "guard_leverage"),
        ({"ORDERS_MAX_NOTIONAL": "10"}, ORDER, "guard_notional"),  # 2 contracts x 0.0001 BTC x 59000.5 = 11.8001
        ({"ORDERS_GUARDS": '{"gateio:default": {"max_notional": "5"}}', "ORDERS_MAX_NOTIONAL": "1000"}, ORDER,
         "guard_notional"),
    ],
)
async def test_guards_refuse(make_settings: Callable[..., Settings], order_env: dict[str, str], redis: Redis,
                             gate: FakeGate, env: dict[str, str], body: dict[str, object], code: str) -> None:  # fmt: skip
    settings = make_settings(**{**order_env, **env})
    async with running_executor(settings, redis):
        with TestClient(create_app(settings)) as client:
            resp = await Api(client).post("/orders", json=body)
    assert resp.status_code == 403 and resp.json()["error"]["code"] == code, resp.text
    assert ("POST", "orders") not in gate.calls


async def test_within_the_guards_passes(make_settings: Callable[..., Settings], order_env: dict[str, str],
                                        redis: Redis, gate: FakeGate) -> None:  # fmt: skip
    settings = make_settings(**order_env, ORDERS_MAX_NOTIONAL="100", ORDERS_MAX_LEVERAGE="20",
                             ORDERS_SYMBOLS="BTC_USDT")  # fmt: skip
    async with running_executor(settings, redis):
        with TestClient(create_app(settings)) as client:
            resp = await Api(client).post("/orders", json={**ORDER, "leverage": 20})
            tick = await Api(client).post("/orders", json={**ORDER, "price": "59000.55"})
    assert resp.status_code == 201, resp.text
    assert tick.status_code == 400 and "multiple of 0.1" in tick.json()["error"]["message"]


async def test_kill_switch(api: Api, executor: OrderExecutor, gate: FakeGate, redis: Redis) -> None:
    placed = await api.post("/orders", json={**ORDER, "take_profit": {"price": "65000"}})
    assert placed.status_code == 201
    halted = await api.post("/trading/halt", json={"exchange": "gateio", "account": "default", "cancel_open": True})
    assert halted.status_code == 200, halted.text
    [outcome] = halted.json()["cancel_open"]
    assert outcome["status"] == 200 and {c["kind"] for c in outcome["canceled"]} == {"order", "trigger"}
    assert all(o["status"] == "finished" for o in gate.orders.values())
    assert all(t["status"] == "cancelled" for t in gate.triggers.values())
    refused = await api.post("/orders", json=ORDER)
    assert refused.status_code == 423 and refused.json()["error"]["code"] == "trading_halted"
    # the worker refuses too: a request queued before the halt is not executed
    request = OrderRequest("place", "gateio", "default", {**ORDER, "client_order_id": "q1"},
                           deadline_ms=executor.now_ms() + 3000, sent_ms=executor.now_ms())  # fmt: skip
    await redis.lpush(QUEUE, request.encode())
    _, raw = await redis.blpop([reply_key(request.id)], timeout=3)
    assert orjson.loads(raw)["status"] == 423
    resumed = await api.post("/trading/resume", json={})
    assert resumed.json() == {"resumed": ["gateio:default"], "still_halted": False}
    assert await redis.hgetall(HALT) == {}
    assert (await api.post("/orders", json=ORDER)).status_code == 201
    everyone = await api.post("/trading/halt")
    assert everyone.json()["halted"] == "*"
    assert (await api.post("/orders", json=ORDER)).status_code == 423
    assert (await api.post("/trading/resume", json={"exchange": "gateio", "account": "default"})).json()[
        "still_halted"] is True  # fmt: skip


async def test_bad_input_is_400(api: Api, redis: Redis) -> None:
    cases = [
        ({**ORDER, "size": 0.5}, "size"),
        ({**ORDER, "size": " 2"}, "size"),
        ({**ORDER, "size": "1e3"}, "size"),
        ({**ORDER, "price": None}, "price"),
        ({**ORDER, "type": "market"}, "price"),
        ({**ORDER, "exchange": "bitmart"}, "exchange"),
        ({**ORDER, "side": None}, "side"),
        ({**ORDER, "reduce_only": True, "stop_loss": {"price": "1"}}, "reduce_only"),
        ({**ORDER, "client_order_id": "has space"}, "client_order_id"),
        ({**ORDER, "extra": 1}, "extra"),
        ({**ORDER, "account": "nobody"}, "account"),
    ]
    for body, field in cases:
        resp = await api.post("/orders", json=body)
        assert resp.status_code == 400, (body, resp.text)
        assert field in resp.json()["error"]["details"], (field, resp.json())
    # refused before the queue: no worker was asked (no answer written), nothing in Redis changed
    assert await redis.keys("fp:orders:reply:*") == []
    halted = await api.post("/trading/halt", json={"exchange": "gateio", "account": "nobody", "cancel_open": True})
    assert halted.status_code == 200 and halted.json()["cancel_open"] == [
        {"exchange": "gateio", "account": "nobody", "status": 400,
         "error": {"code": "unknown_account", "message": "unknown account gateio:nobody", "details": {}}}]  # fmt: skip
    assert await redis.keys("fp:orders:reply:*") == []
