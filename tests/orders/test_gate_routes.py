"""Gate.io order routes end to end: control server -> Redis -> order executor -> (fake) Gate REST -> answer."""

from __future__ import annotations

import orjson
from redis.asyncio import Redis

from control import keys
from control.orders import audit_key
from tests.orders._fake_gate import KEY, SECRET, FakeGate
from tests.orders.conftest import Api
from workers.orders import OrderExecutor

LIMIT = {"exchange": "gateio", "symbol": "BTC_USDT", "type": "limit", "side": "buy", "size": "2", "price": "59000.5",
         "leverage": 10, "margin_mode": "isolated", "client_order_id": "bot-1",
         "take_profit": {"price": "62000", "price_type": "last"}, "stop_loss": {"price": "58000", "price_type": "mark"}}


async def test_limit_order_with_tp_sl(api: Api, executor: OrderExecutor, gate: FakeGate, redis: Redis) -> None:
    resp = await api.post("/orders", json=LIMIT)
    assert resp.status_code == 201, resp.text
    body = resp.json()
    order = body["order"]
    assert order["client_order_id"] == body["client_order_id"] == "t-bot-1"
    assert order["status"] == "new" and order["price"] == "59000.5" and order["size"] == "2" and order["side"] == "buy"
    assert isinstance(order["order_id"], str)
    placed = gate.orders[int(order["order_id"])]
    assert placed["text"] == "t-bot-1" and placed["tif"] == "gtc" and placed["size"] == "2"
    tp, sl = gate.triggers[int(body["take_profit"]["order_id"])], gate.triggers[int(body["stop_loss"]["order_id"])]
    assert tp["trigger"] == {"strategy_type": 0, "price_type": 0, "price": "62000", "rule": 1}
    assert sl["trigger"] == {"strategy_type": 0, "price_type": 1, "price": "58000", "rule": 2}
    assert tp["initial"] == {"contract": "BTC_USDT", "size": 0, "price": "0", "tif": "ioc", "close": True}
    assert tp["order_type"] == "close-long-position"
    assert [s["step"] for s in body["steps"]] == ["guards", "positions", "leverage", "entry", "take_profit", "stop_loss"]
    assert gate.positions["BTC_USDT"]["leverage"] == "10"
    # the order topic is subscribed so its updates arrive; the audit stream holds the action without secrets
    assert "gateio:order:default" in await redis.hkeys(keys.DESIRED)
    entries = await redis.xrange(audit_key("gateio", "default"))
    assert [orjson.loads(e[1]["d"])["outcome"] for e in entries] == ["ok"]
    assert KEY not in entries[0][1]["d"] and SECRET not in entries[0][1]["d"]
    # read it back by id and by client order id, then cancel it with its TP/SL
    got = await api.get(f"/orders/{order['order_id']}", params={"exchange": "gateio"})
    assert got.status_code == 200 and got.json()["order"]["order_id"] == order["order_id"]
    got = await api.get("/orders/client/bot-1", params={"exchange": "gate"})
    assert got.status_code == 200 and got.json()["order"]["order_id"] == order["order_id"]
    params = {"exchange": "gateio", "tp_id": body["take_profit"]["order_id"], "sl_id": body["stop_loss"]["order_id"]}
    gone = await api.delete(f"/orders/{order['order_id']}", params=params)
    assert gone.status_code == 200, gone.text
    assert gone.json()["order"]["status"] == "canceled"
    assert tp["status"] == sl["status"] == "cancelled"


async def test_same_client_order_id_is_placed_once(api: Api, executor: OrderExecutor, gate: FakeGate) -> None:
    first = await api.post("/orders", json=LIMIT)
    again = await api.post("/orders", json=LIMIT)
    assert first.status_code == 201 and again.status_code == 200, again.text
    assert again.json()["replayed"] is True and again.json()["order"] == first.json()["order"]
    assert sum(1 for m, t in gate.calls if (m, t) == ("POST", "orders")) == 1
    assert len(gate.triggers) == 2


async def test_market_order_and_close(api: Api, executor: OrderExecutor, gate: FakeGate) -> None:
    resp = await api.post("/orders", json={"exchange": "gateio", "symbol": "BTC_USDT", "type": "market",
                                           "position_type": "short", "size": "3"})  # fmt: skip
    assert resp.status_code == 201, resp.text
    assert resp.json()["order"]["status"] == "filled" and resp.json()["order"]["side"] == "sell"
    assert resp.json()["client_order_id"].startswith("t-fp")
    assert gate.positions["BTC_USDT"]["size"] == "-3"
    flat = await api.post("/positions/close", json={"exchange": "gateio", "symbol": "BTC_USDT", "side": "long"})
    assert flat.status_code == 409 and flat.json()["error"]["code"] == "no_position"
    close = {"exchange": "gateio", "symbol": "BTC_USDT", "side": "short", "client_order_id": "close-1"}
    closed = await api.post("/positions/close", json=close)
    assert closed.status_code == 201, closed.text
    again = await api.post("/positions/close", json=close)  # a retry: answered from what was done, nothing sent
    assert again.status_code == 200 and again.json()["replayed"] is True
    assert sum(1 for m, t in gate.calls if (m, t) == ("POST", "orders")) == 2
    assert gate.orders[int(closed.json()["order"]["order_id"])]["is_reduce_only"] is True
    assert gate.positions["BTC_USDT"]["size"] == "0"


async def test_exchange_refusal_is_502_with_its_code(api: Api, executor: OrderExecutor, gate: FakeGate) -> None:
    gate.refuse["POST orders"] = (400, "INSUFFICIENT_AVAILABLE", "balance not enough")
    resp = await api.post("/orders", json={**LIMIT, "client_order_id": "bot-2"})
    assert resp.status_code == 502
    err = resp.json()["error"]
    assert err["code"] == "exchange_error"
    assert err["details"]["exchange_code"] == "INSUFFICIENT_AVAILABLE"
    assert err["details"]["exchange_message"] == "balance not enough"
    assert [(s["step"], s["status"]) for s in err["details"]["steps"]][-2:] == [("leverage", "done"),
                                                                                ("entry", "failed")]  # fmt: skip


async def test_stop_loss_failure_after_a_fill_alerts(api: Api, executor: OrderExecutor, gate: FakeGate,
                                                     redis: Redis) -> None:  # fmt: skip
    gate.refuse["POST price_orders"] = (400, "INVALID_PARAM_VALUE", "trigger price too close")
    body = {"exchange": "gateio", "symbol": "BTC_USDT", "type": "market", "side": "buy", "size": "1",
            "client_order_id": "bot-3", "stop_loss": {"price": "59000"}}  # fmt: skip
    resp = await api.post("/orders", json=body)
    assert resp.status_code == 502
    details = resp.json()["error"]["details"]
    assert details["step"] == "stop_loss" and details["alert"] is True
    assert details["order"]["status"] == "filled"
    [(_, fields)] = await redis.xrange(keys.event_stream("gateio:order:default"))
    alert = orjson.loads(fields[keys.STREAM_FIELD])
    assert alert["type"] == "alert" and alert["client_order_id"] == "t-bot-3" and "unprotected" in alert["message"]
    # a retry after the problem is gone places only the stop-loss
    gate.refuse.clear()
    retry = await api.post("/orders", json=body)
    assert retry.status_code == 201, retry.text
    assert retry.json()["order"]["order_id"] == details["order"]["order_id"]
    assert sum(1 for m, t in gate.calls if (m, t) == ("POST", "orders")) == 1 and len(gate.triggers) == 1


async def test_bad_queue_items_and_bad_exchange_answers(api: Api, executor: OrderExecutor, gate: FakeGate,
                                                        redis: Redis) -> None:  # fmt: skip
    from control.orders import QUEUE

    await redis.lpush(QUEUE, b"not json", b'{"op":"explode"}')  # dropped and logged; the executor keeps serving
    gate.refuse.clear()
    original = gate._place

    async def garbled(data: dict[str, object]) -> object:
        from aiohttp import web

        await original(data)
        return web.Response(status=201, body=b'{"id": 1, "size": "x"}', content_type="application/json")

    gate._place = garbled  # type: ignore[method-assign]
    resp = await api.post("/orders", json={**LIMIT, "client_order_id": "garbled-1"})
    assert resp.status_code == 502 and resp.json()["error"]["code"] == "exchange_error", resp.text
