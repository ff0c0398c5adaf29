"""Binance USD-M order routes end to end: control server -> Redis -> order executor -> (fake) Binance REST."""

from __future__ import annotations

from redis.asyncio import Redis

from control import keys
from tests.orders._fake_binance import FakeBinance
from tests.orders.conftest import Api
from workers.orders import OrderExecutor

LIMIT = {"exchange": "binanceusdm", "symbol": "BTCUSDT", "type": "limit", "side": "buy", "size": "0.010",
         "price": "59000.10", "time_in_force": "post_only", "leverage": 10, "margin_mode": "isolated",
         "client_order_id": "bn-1", "take_profit": {"price": "62000"}, "stop_loss": {"price": "58000.5",
                                                                                   "price_type": "mark"}}  # fmt: skip


async def test_limit_with_tp_sl_get_and_cancel(api: Api, executor: OrderExecutor, binance: FakeBinance,
                                               redis: Redis) -> None:  # fmt: skip
    resp = await api.post("/orders", json=LIMIT)
    assert resp.status_code == 201, resp.text
    body = resp.json()
    order = body["order"]
    assert (order["client_order_id"], order["price"], order["size"], order["status"]) == ("bn-1", "59000.10",
                                                                                          "0.010", "new")  # fmt: skip
    placed = binance.orders[int(order["order_id"])]
    assert placed["timeInForce"] == "GTX" and placed["clientOrderId"] == "bn-1"
    assert binance.position["leverage"] == "10" and binance.position["marginType"] == "isolated"
    assert [s["step"] for s in body["steps"]] == ["guards", "positions", "margin_mode", "leverage", "entry",
                                                  "take_profit", "stop_loss"]  # fmt: skip
    tp, sl = binance.algos[int(body["take_profit"]["order_id"])], binance.algos[int(body["stop_loss"]["order_id"])]
    assert (tp["algoType"], tp["type"], tp["side"], tp["triggerPrice"], tp["workingType"], tp["closePosition"]) == (
        "CONDITIONAL", "TAKE_PROFIT_MARKET", "SELL", "62000", "CONTRACT_PRICE", "true")
    assert (sl["type"], sl["workingType"], sl["clientAlgoId"]) == ("STOP_MARKET", "MARK_PRICE", "bn-1-sl")
    assert "binanceusdm:order:default" in await redis.hkeys(keys.DESIRED)
    query = {"exchange": "binanceusdm", "symbol": "BTCUSDT"}
    got = await api.get(f"/orders/{order['order_id']}", params=query)
    assert got.status_code == 200 and got.json()["order"]["order_id"] == order["order_id"]
    by_client = await api.get("/orders/client/bn-1", params=query)
    assert by_client.status_code == 200 and by_client.json()["order"]["order_id"] == order["order_id"]
    nothing = await api.get("/orders/client/nope", params=query)
    assert nothing.status_code == 404 and nothing.json()["error"]["code"] == "order_not_found"
    no_symbol = await api.get(f"/orders/{order['order_id']}", params={"exchange": "binanceusdm"})
    assert no_symbol.status_code == 400 and "symbol" in no_symbol.json()["error"]["message"]
    gone = await api.delete(f"/orders/{order['order_id']}", params={**query, "tp_id": body["take_profit"]["order_id"],
                                                                    "sl_id": body["stop_loss"]["order_id"]})  # fmt: skip
    assert gone.status_code == 200, gone.text
    assert gone.json()["order"]["status"] == "canceled" and tp["algoStatus"] == sl["algoStatus"] == "CANCELED"
    again = await api.post("/orders", json=LIMIT)  # same client order id: never a second order
    assert again.status_code == 200 and again.json()["replayed"] is True and len(binance.orders) == 1


async def test_market_close_and_refusal(api: Api, executor: OrderExecutor, binance: FakeBinance) -> None:
    resp = await api.post("/orders", json={"exchange": "binanceusdm", "symbol": "BTCUSDT", "type": "market",
                                           "position_type": "long", "size": "0.005"})  # fmt: skip
    assert resp.status_code == 201 and resp.json()["order"]["status"] == "filled", resp.text
    assert binance.position["positionAmt"] == "0.005"
    closed = await api.post("/positions/close", json={"exchange": "binanceusdm", "symbol": "BTCUSDT", "side": "long"})
    assert closed.status_code == 201, closed.text
    placed = binance.orders[int(closed.json()["order"]["order_id"])]
    assert (placed["side"], placed["origQty"], placed["reduceOnly"]) == ("SELL", "0.005", True)
    assert binance.position["positionAmt"] == "0.000"
    binance.refuse["POST /fapi/v1/order"] = (400, -2019, "Margin is insufficient.")
    refused = await api.post("/orders", json={**LIMIT, "client_order_id": "bn-2"})
    assert refused.status_code == 502
    err = refused.json()["error"]
    assert (err["code"], err["details"]["exchange_code"], err["details"]["exchange_message"]) == (
        "exchange_error", "-2019", "Margin is insufficient.")
    bad_step = await api.post("/orders", json={**LIMIT, "client_order_id": "bn-3", "size": "0.0105"})
    assert bad_step.status_code == 400 and "multiple of 0.001" in bad_step.json()["error"]["message"]
    index = await api.post("/orders", json={**LIMIT, "client_order_id": "bn-4", "take_profit": {"price": "1",
                                                                                               "price_type": "index"}})
    assert index.status_code == 400 and "last or mark" in index.json()["error"]["message"]


async def test_halt_cancels_open_binance_orders(api: Api, executor: OrderExecutor, binance: FakeBinance) -> None:
    placed = await api.post("/orders", json=LIMIT)
    assert placed.status_code == 201, placed.text
    halted = await api.post("/trading/halt", json={"exchange": "binanceusdm", "account": "default",
                                                   "cancel_open": True})  # fmt: skip
    [outcome] = halted.json()["cancel_open"]
    assert outcome["status"] == 200, outcome
    assert sorted(c["kind"] for c in outcome["canceled"]) == ["order", "trigger", "trigger"]
    assert all(o["status"] == "CANCELED" for o in binance.orders.values())
    assert all(a["algoStatus"] == "CANCELED" for a in binance.algos.values())
    refused = await api.post("/orders", json={**LIMIT, "client_order_id": "bn-9"})
    assert refused.status_code == 423
