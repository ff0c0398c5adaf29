"""The seed Gate.io connector's routes with its own body shape and api-key/api-secret headers."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import orjson
from redis.asyncio import Redis
from starlette.testclient import TestClient

from app.main import create_app
from control import keys
from control.settings import Settings
from tests.orders._fake_gate import KEY, SECRET, FakeGate
from tests.orders.conftest import Api, running_executor
from workers.orders import OrderExecutor

#: The connector's place body (its zod schema ``placeFuturesOrdersSchema``: numeric price/size, ISOLATED|CROSS,
#: long|short, take_profit/stop_loss {enabled, price, price_type}), for its user 16778193.
SEED_BODY = (b'{"userId":"16778193","market_type":"limit","price":59000.1,"contract":"BTC_USDT","leverage":10,'
             b'"leverage_type":"ISOLATED","size":1,"position_type":"long",'
             b'"take_profit":{"enabled":true,"price":"61000","price_type":"last"},'
             b'"stop_loss":{"enabled":true,"price":"58000","price_type":"mark"}}')  # fmt: skip
HEADERS = {"api-key": KEY, "api-secret": SECRET, "Content-Type": "application/json"}


async def test_seed_routes(api: Api, executor: OrderExecutor, gate: FakeGate, redis: Redis) -> None:
    resp = await api.post("/gate/place-futures-order", content=SEED_BODY, headers=HEADERS)
    assert resp.status_code == 201, resp.text
    body = resp.json()
    order = body["order"]
    assert order["price"] == "59000.1" and order["size"] == "1" and order["account"] == "16778193"  # exact decimals
    placed = gate.orders[int(order["order_id"])]
    assert placed["price"] == "59000.1" and placed["size"] == "1"
    assert gate.positions["BTC_USDT"]["leverage"] == "10"
    # the headers stored account gateio:16778193 like POST /accounts: encrypted, never in clear
    record = await redis.hget(keys.ACCOUNTS, "gateio:16778193")
    assert record is not None and KEY not in record and SECRET not in record
    assert "gateio:order:16778193" in await redis.hkeys(keys.DESIRED)
    trade_id = order["order_id"]
    got = await api.get("/gate/get-futures-order", params={"trade_id": trade_id, "userId": "16778193"})
    assert got.status_code == 200 and got.json()["order"]["order_id"] == trade_id
    params = {"trade_id": trade_id, "tp_id": body["take_profit"]["order_id"], "sl_id": body["stop_loss"]["order_id"],
              "userId": "16778193"}  # fmt: skip
    gone = await api.delete("/gate/cancel-futures-order", params=params)
    assert gone.status_code == 200, gone.text
    assert gone.json()["order"]["status"] == "canceled" and gone.json()["stop_loss"]["status"] == "canceled"
    market = SEED_BODY.replace(b'"limit"', b'"market"').replace(b'"enabled":true', b'"enabled":false')
    filled = await api.post("/gate/place-futures-order", content=market, headers=HEADERS)
    assert filled.status_code == 201 and filled.json()["order"]["status"] == "filled", filled.text
    closed = await api.post("/gate/close-futures-order", json={"userId": "16778193", "contract": "BTC_USDT",
                                                               "auto_size": "close_long"})  # fmt: skip
    assert closed.status_code == 201, closed.text
    assert gate.positions["BTC_USDT"]["size"] == "0"


async def test_seed_sse_route_and_bad_bodies(api: Api) -> None:
    with api.client.stream("GET", "/sse/sse/orders/16778193") as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
    bad = await api.post("/gate/place-futures-order", content=SEED_BODY.replace(b'"size":1', b'"size":"x"'))
    assert bad.status_code == 400
    bad = await api.post("/gate/place-futures-order", content=SEED_BODY.replace(b'"ISOLATED"', b'"HALF"'))
    assert bad.status_code == 400 and "leverage_type" in bad.json()["error"]["details"]
    missing = await api.get("/gate/get-futures-order")
    assert missing.status_code == 400 and "trade_id" in missing.json()["error"]["details"]


async def test_tokens_and_the_key_headers(make_settings: Callable[..., Settings], order_env: dict[str, str],
                                          redis: Redis, gate: FakeGate, tmp_path: Path) -> None:  # fmt: skip
    control, trader = "control-token-0123456789abcdef", "trader-token-0123456789abcdef"
    path = tmp_path / "accounts.json"
    path.write_bytes(orjson.dumps({"tokens": [{"token": trader, "accounts": ["gateio:16778193"]}]}))
    os.chmod(path, 0o600)
    settings = make_settings(**order_env, CONTROL_TOKEN=control, ACCOUNTS_FILE=str(path))
    as_trader = {**HEADERS, "Authorization": f"Bearer {trader}"}
    async with running_executor(settings, redis):
        with TestClient(create_app(settings)) as client:
            api = Api(client)
            refused = await api.post("/gate/place-futures-order", content=SEED_BODY, headers=as_trader)
            assert refused.status_code == 403, refused.text  # an account token may not store keys
            assert await redis.hget(keys.ACCOUNTS, "gateio:16778193") is None
            stored = await api.post("/gate/place-futures-order", content=SEED_BODY,
                                    headers={**HEADERS, "Authorization": f"Bearer {control}"})  # fmt: skip
            assert stored.status_code == 201, stored.text
            own = {"Authorization": f"Bearer {trader}", "Content-Type": "application/json"}
            mine = await api.post("/gate/place-futures-order", content=SEED_BODY.replace(b"limit", b"market"),
                                  headers=own)  # fmt: skip
            assert mine.status_code == 201, mine.text  # its own account, keys already stored
            other = await api.post("/orders", json={"exchange": "gateio", "account": "default", "symbol": "BTC_USDT",
                                                    "type": "market", "side": "buy", "size": "1"}, headers=own)
            assert other.status_code == 403 and other.json()["error"]["code"] == "forbidden"
