"""The simulated Gate.io order API: signed calls to every endpoint, fills at the tape price, resting limits filled by
the tape, TP/SL triggers, rejections, and the pushed frames run through the Gate adapter's own parser."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import aiohttp
import orjson
import pytest

from scripts.sim.tapes import GATE, cached_tape, get_tape
from scripts.simulator import ExchangeSimulator
from tests.simulator._helpers import nothing_arrives, send
from tests.simulator._orders import GateClient, Pushes, gate_socket
from tests.simulator._private import GATE_KEY, GATE_SECRET, GATE_UID, gate_sub
from workers.exchanges.gateio import GateioAdapter

PARSER = GateioAdapter().new_parser("main")


@pytest.fixture
async def gate(sim: ExchangeSimulator, session: aiohttp.ClientSession) -> GateClient:
    sim.add_account("gateio", GATE_KEY, GATE_SECRET, memo=GATE_UID)
    await sim.set_price(GATE, "BTC_USDT", Decimal("61800.0"))
    return GateClient(sim, session)


def parsed(msg: dict[str, Any]) -> dict[str, Any]:
    """The one event the adapter makes of a pushed frame."""
    events = PARSER.parse(orjson.dumps(msg), 1).events
    assert len(events) == 1, events
    return events[0][1]  # type: ignore[no-any-return]


async def test_market_order_fill_close_and_pushes_parsed_by_the_adapter(
    sim: ExchangeSimulator, session: aiohttp.ClientSession, gate: GateClient
) -> None:
    ws = await gate_socket(sim, session)
    pushes = Pushes(ws)
    body = {"contract": "BTC_USDT", "size": 10, "price": "0", "tif": "ioc", "text": "t-fp1"}
    status, order = await gate.call("POST", "/orders", body=body)
    assert status == 200, order
    assert (order["status"], order["finish_as"], order["size"], order["left"]) == ("finished", "filled", "10", "0")
    assert order["fill_price"] == "61800" and order["text"] == "t-fp1" and order["user"] == int(GATE_UID)
    event = parsed(await pushes.gate("futures.orders"))
    assert event | {"ts_exchange": None} == event | {
        "symbol": "BTC_USDT", "order_id": str(order["id"]), "client_order_id": "t-fp1", "side": "buy",
        "order_type": "market", "status": "filled", "size": "10", "filled_size": "10", "avg_fill_price": "61800",
        "reduce_only": False, "ts_exchange": None,
    }  # fmt: skip
    position = parsed(await pushes.gate("futures.positions"))
    assert (position["size"], position["entry_price"], position["side"], position["margin_mode"]) == (
        "10", "61800", "both", "isolated")  # fmt: skip
    for ident in (str(order["id"]), "t-fp1"):  # by id and by the client id
        status, again = await gate.call("GET", f"/orders/{ident}")
        assert status == 200 and again["id"] == order["id"]
    status, pos = await gate.call("GET", "/positions/BTC_USDT")
    assert status == 200 and (pos["size"], pos["entry_price"], pos["mode"]) == ("10", "61800", "single")

    await sim.set_price(GATE, "BTC_USDT", Decimal("62000.0"))  # +200 x 10 contracts x 0.0001 BTC = +0.2 USDT
    status, close = await gate.call("POST", "/orders", body={"contract": "BTC_USDT", "size": 0, "price": "0",
                                                             "tif": "ioc", "close": True})  # fmt: skip
    assert status == 200 and (close["is_close"], close["size"], close["finish_as"]) == (True, "0", "filled")
    assert parsed(await pushes.gate("futures.orders", is_close=True))["status"] == "filled"
    assert parsed(await pushes.gate("futures.positions", size="0"))["size"] == "0"
    balance = await pushes.gate("futures.balances")
    assert balance["result"][0]["change"] == "0.2"
    assert parsed(balance)["balance"] == "100000.2" and parsed(balance)["asset"] == "USDT"
    status, account = await gate.call("GET", "/accounts")
    assert status == 200 and account["total"] == "100000.2" and account["in_dual_mode"] is False
    await ws.close()


async def test_limit_order_rests_and_fills_when_the_replayed_tape_crosses(
    sim: ExchangeSimulator, session: aiohttp.ClientSession, gate: GateClient
) -> None:
    tape = cached_tape_or_load("futures.trades:BTC_USDT")
    low = min(Decimal(_price(f)) for f in tape.frames)
    sim.engine.release(GATE, "BTC_USDT")  # prices come from the tape again (61800.0 until it plays)
    ws = await gate_socket(sim, session)
    pushes = Pushes(ws)
    status, order = await gate.call("POST", "/orders", body={"contract": "BTC_USDT", "size": 3, "price": str(low),
                                                             "tif": "gtc", "text": "t-rest"})  # fmt: skip
    assert status == 200 and (order["status"], order["left"], order["finish_as"]) == ("open", "3", "_new"), order
    assert parsed(await pushes.gate("futures.orders"))["status"] == "new"
    status, open_orders = await gate.call("GET", "/orders", query="status=open&contract=BTC_USDT")
    assert status == 200 and [o["id"] for o in open_orders] == [order["id"]]
    market = await session.ws_connect(sim.gate_ws_url)
    await send(market, {"time": 1, "channel": "futures.trades", "event": "subscribe", "payload": ["BTC_USDT"]})
    filled = parsed(await pushes.gate("futures.orders", status="finished"))
    assert (filled["status"], filled["avg_fill_price"], filled["filled_size"]) == (
        "filled",
        format(low.normalize(), "f"),
        "3",
    )
    await market.close()
    await ws.close()


def cached_tape_or_load(native: str) -> Any:
    try:
        return cached_tape(GATE, native, None)
    except LookupError:
        return get_tape(GATE, native, None)


def _price(frame: str) -> str:
    return str(orjson.loads(frame)["result"][-1]["price"])


async def test_take_profit_and_stop_loss_fire_on_last_and_mark_price(
    sim: ExchangeSimulator, session: aiohttp.ClientSession, gate: GateClient
) -> None:
    ws = await gate_socket(sim, session)
    pushes = Pushes(ws)
    status, _ = await gate.call("POST", "/orders", body={"contract": "BTC_USDT", "size": 4, "price": "0", "tif": "ioc"})
    assert status == 200
    close = {"contract": "BTC_USDT", "size": 0, "price": "0", "tif": "ioc", "close": True, "reduce_only": True}
    tp = {"initial": close | {"text": "t-tp"}, "trigger": {"strategy_type": 0, "price_type": 0, "price": "62500",
                                                              "rule": 1}, "order_type": "close-long-position"}  # fmt: skip
    sl = {"initial": close | {"text": "t-sl"}, "trigger": {"strategy_type": 0, "price_type": 1, "price": "61000",
                                                              "rule": 2}, "order_type": "close-long-position"}  # fmt: skip
    (s1, tp_id), (s2, sl_id) = [await gate.call("POST", "/price_orders", body=b) for b in (tp, sl)]
    assert (s1, s2) == (200, 200) and set(tp_id) == {"id"}
    status, listed = await gate.call("GET", "/price_orders", query="status=open&contract=BTC_USDT")
    assert status == 200 and [t["id"] for t in listed] == [sl_id["id"], tp_id["id"]]
    assert listed[0]["trigger"]["price_type"] == 1 and listed[0]["status"] == "open"

    await sim.set_price(GATE, "BTC_USDT", Decimal("61800.0"), mark=Decimal("60900.0"))  # mark crosses the SL only
    fired = await pushes.gate("futures.autoorders", status="finished")
    assert fired["result"][0]["id"] == sl_id["id"] and fired["result"][0]["finish_as"] == "succeeded"
    close_order = parsed(await pushes.gate("futures.orders", is_close=True))
    assert close_order["status"] == "filled" and close_order["reduce_only"] is True
    assert close_order["order_id"] == str(fired["result"][0]["trade_id"])
    assert parsed(await pushes.gate("futures.positions", size="0"))["size"] == "0"
    await sim.set_price(GATE, "BTC_USDT", Decimal("62600.0"))  # the TP fires with nothing left to close
    failed = await pushes.gate("futures.autoorders", status="finished")
    assert failed["result"][0]["id"] == tp_id["id"] and failed["result"][0]["finish_as"] == "failed"
    status, tp_now = await gate.call("GET", f"/price_orders/{tp_id['id']}")
    assert status == 200 and tp_now["status"] == "finished" and tp_now["reason"]

    await gate.call("POST", "/orders", body={"contract": "BTC_USDT", "size": -2, "price": "0", "tif": "ioc"})
    short_tp = {"initial": close, "trigger": {"price_type": 0, "price": "62000", "rule": 2},
                "order_type": "close-short-position"}  # fmt: skip
    status, created = await gate.call("POST", "/price_orders", body=short_tp)
    status, cancelled = await gate.call("DELETE", f"/price_orders/{created['id']}")
    assert status == 200 and (cancelled["status"], cancelled["finish_as"]) == ("finished", "cancelled")
    await ws.close()


async def test_cancel_leverage_dual_mode_and_contract(gate: GateClient, session: aiohttp.ClientSession) -> None:
    status, order = await gate.call("POST", "/orders", body={"contract": "BTC_USDT", "size": 1, "price": "61000",
                                                             "text": "t-cxl"})  # fmt: skip
    assert status == 200 and order["status"] == "open"
    status, cancelled = await gate.call("DELETE", "/orders/t-cxl")
    assert status == 200 and (cancelled["status"], cancelled["finish_as"], cancelled["left"]) == (
        "finished", "cancelled", "1")  # fmt: skip
    status, finished = await gate.call("GET", "/orders", query="status=finished")
    assert status == 200 and finished[0]["id"] == order["id"]
    status, err = await gate.call("DELETE", f"/orders/{order['id']}")
    assert (status, err["label"]) == (400, "ORDER_FINISHED")

    status, pos = await gate.call("POST", "/positions/BTC_USDT/leverage", query="leverage=0&cross_leverage_limit=20")
    assert status == 200 and (pos["leverage"], pos["cross_leverage_limit"]) == ("0", "20")
    status, err = await gate.call("POST", "/positions/BTC_USDT/leverage", query="leverage=500")
    assert (status, err["label"]) == (400, "LEVERAGE_TOO_HIGH")

    status, account = await gate.call("POST", "/dual_mode", query="dual_mode=true")
    assert status == 200 and account["in_dual_mode"] is True
    await gate.call("POST", "/orders", body={"contract": "BTC_USDT", "size": 5, "price": "0", "tif": "ioc"})
    await gate.call("POST", "/orders", body={"contract": "BTC_USDT", "size": -3, "price": "0", "tif": "ioc"})
    status, legs = await gate.call("GET", "/dual_comp/positions/BTC_USDT")
    assert status == 200 and [(p["mode"], p["size"]) for p in legs] == [("dual_long", "5"), ("dual_short", "-3")]
    status, err = await gate.call("POST", "/orders", body={"contract": "BTC_USDT", "size": 0, "close": True,
                                                           "price": "0", "tif": "ioc"})  # fmt: skip
    assert (status, err["label"]) == (400, "INVALID_PARAM_VALUE")  # dual mode closes with auto_size
    status, closed = await gate.call("POST", "/orders", body={"contract": "BTC_USDT", "size": 0, "price": "0",
                                                              "tif": "ioc", "auto_size": "close_long"})  # fmt: skip
    assert status == 200 and closed["finish_as"] == "filled" and closed["auto_size"] == "close_long"
    status, legs = await gate.call("GET", "/dual_comp/positions/BTC_USDT")
    assert [(p["mode"], p["size"]) for p in legs] == [("dual_long", "0"), ("dual_short", "-3")]
    status, legs = await gate.call("POST", "/dual_comp/positions/BTC_USDT/leverage", query="leverage=5")
    assert status == 200 and [p["leverage"] for p in legs] == ["5", "5"]
    status, listed = await gate.call("GET", "/positions")  # the account's open legs (flat ones left out)
    assert status == 200 and [(p["contract"], p["mode"], p["size"]) for p in listed] == [
        ("BTC_USDT", "dual_short", "-3")]  # fmt: skip

    async with session.get(f"{gate.sim.gate_rest_url}/api/v4/futures/usdt/contracts/BTC_USDT") as r:
        contract = await r.json()
    assert (contract["order_price_round"], contract["quanto_multiplier"], contract["order_size_min"]) == (
        "0.1", "0.0001", 1)  # fmt: skip


@pytest.mark.parametrize(
    ("body", "label"),
    [
        ({"contract": "NOPE_USDT", "size": 1, "price": "0", "tif": "ioc"}, "CONTRACT_NOT_FOUND"),
        ({"contract": "BTC_USDT", "size": 1, "price": "61800.05"}, "INVALID_PARAM_VALUE"),  # off the 0.1 tick
        ({"contract": "BTC_USDT", "size": "1.5", "price": "0", "tif": "ioc"}, "INVALID_PARAM_VALUE"),  # whole contracts
        ({"contract": "BTC_USDT", "size": 100_000_000, "price": "0", "tif": "ioc"}, "INSUFFICIENT_AVAILABLE"),
        ({"contract": "BTC_USDT", "size": -1, "price": "0", "tif": "ioc", "reduce_only": True}, "POSITION_EMPTY"),
        ({"contract": "BTC_USDT", "size": 1, "price": "62000", "tif": "poc"}, "ORDER_POC_IMMEDIATE"),
        ({"contract": "BTC_USDT", "size": 1, "price": "0", "tif": "gtc"}, "INVALID_PARAM_VALUE"),  # market needs ioc
        ({"contract": "BTC_USDT", "size": 1, "price": "0", "tif": "ioc", "text": "fp"}, "INVALID_PARAM_VALUE"),
        ({"size": 1}, "MISSING_REQUIRED_PARAM"),
    ],
)
async def test_order_rejections(gate: GateClient, body: dict[str, Any], label: str) -> None:
    status, err = await gate.call("POST", "/orders", body=body)
    assert (status, err["label"]) == (400, label), err
    assert set(err) == {"label", "message"}


async def test_signature_and_lookup_failures(sim: ExchangeSimulator, gate: GateClient) -> None:
    wrong = GateClient(sim, gate.session, GATE_KEY, "not-the-secret")
    status, err = await wrong.call("POST", "/orders", body={"contract": "BTC_USDT", "size": 1, "price": "0"})
    assert (status, err) == (401, {"label": "INVALID_SIGNATURE", "message": "Signature mismatch"})
    status, err = await gate.call("GET", "/orders/t-nothing")
    assert (status, err["label"]) == (404, "ORDER_NOT_FOUND")
    status, err = await gate.call("POST", "/price_orders", body={
        "initial": {"contract": "BTC_USDT", "size": 0, "price": "0", "close": True},
        "trigger": {"price_type": 0, "price": "60000", "rule": 1}})  # fmt: skip
    assert (status, err["label"]) == (400, "INVALID_PARAM_VALUE")  # last 61800 >= 60000 already
    assert sim.stats["rest_auth_failures"] == 1


async def test_price_control_endpoint(sim: ExchangeSimulator, session: aiohttp.ClientSession, gate: GateClient) -> None:
    async with session.post(f"{sim.http_url}/_sim/price", json={"exchange": GATE, "symbol": "BTC_USDT",
                                                               "last": "63000.5"}) as r:  # fmt: skip
        assert r.status == 200 and await r.json() == {"exchange": GATE, "symbol": "BTC_USDT", "last": "63000.5",
                                                     "mark": "63000.5", "pinned": True}  # fmt: skip
    async with session.delete(f"{sim.http_url}/_sim/price?exchange={GATE}&symbol=BTC_USDT") as r:
        assert (await r.json())["pinned"] is False
    async with session.post(f"{sim.http_url}/_sim/price", json={"exchange": GATE, "symbol": "X", "last": "1"}) as r:
        assert r.status == 400
    async with session.post(f"{sim.http_url}/_sim/balance", json={"exchange": GATE, "api_key": GATE_KEY,
                                                                 "balance": "5"}) as r:  # fmt: skip
        assert r.status == 200
    status, err = await gate.call("POST", "/orders", body={"contract": "BTC_USDT", "size": 10, "price": "0",
                                                           "tif": "ioc"})  # fmt: skip
    assert (status, err["label"]) == (400, "INSUFFICIENT_AVAILABLE")  # 10 x 0.0001 x 63000.5 / 10x > 5 USDT


@pytest.mark.parametrize(
    ("path", "body", "label"),
    [
        ("/orders", [1, 2], "INVALID_REQUEST_BODY"),
        ("/orders", {"contract": "BTC_USDT", "size": [1], "price": "0", "tif": "ioc"}, "INVALID_PARAM_VALUE"),
        ("/orders", {"contract": "BTC_USDT", "size": 1, "price": {"p": 1}}, "INVALID_PARAM_VALUE"),
        ("/orders", {"contract": "BTC_USDT", "size": 1, "price": "0", "tif": ["ioc"]}, "INVALID_PARAM_VALUE"),
        ("/price_orders", {"initial": {"contract": "BTC_USDT", "size": 0, "close": True, "auto_size": ["x"]},
                           "trigger": {"price_type": 0, "price": "70000", "rule": 1}}, "INVALID_PARAM_VALUE"),
        ("/price_orders", {"initial": {"contract": "BTC_USDT", "size": 0, "close": True},
                           "trigger": {"price_type": [0], "price": "70000", "rule": 1}}, "INVALID_PARAM_VALUE"),
        ("/price_orders", {"initial": {"contract": "BTC_USDT", "size": 0, "close": True}, "order_type": 5,
                           "trigger": {"price_type": 0, "price": "70000", "rule": 1}}, "INVALID_PARAM_VALUE"),
        ("/price_orders", {"initial": "x", "trigger": {}}, "MISSING_REQUIRED_PARAM"),
    ],
)  # fmt: skip
async def test_malformed_requests_answer_400(gate: GateClient, path: str, body: Any, label: str) -> None:
    status, err = await gate.call("POST", path, body=body)
    assert (status, err["label"]) == (400, label), err


async def test_status_shows_the_order_books_without_secrets(sim: ExchangeSimulator, gate: GateClient) -> None:
    await gate.call("POST", "/orders", body={"contract": "BTC_USDT", "size": 2, "price": "0", "tif": "ioc"})
    orders = sim.status()["orders"]
    assert orders["prices"]["gateio:BTC_USDT"] == {"last": "61800.0", "mark": "61800.0", "pinned": True}
    (account,) = orders["accounts"]
    assert account["positions"] == {"BTC_USDT:both": "2"} and account["open_orders"] == 0
    assert (
        GATE_KEY not in orjson.dumps(sim.status()).decode() and GATE_SECRET not in orjson.dumps(sim.status()).decode()
    )


async def test_pushes_reach_only_subscriptions_of_that_contract(
    sim: ExchangeSimulator, session: aiohttp.ClientSession, gate: GateClient
) -> None:
    sockets = {}
    for contract in ("ETH_USDT", "BTC_USDT"):
        ws = sockets[contract] = await session.ws_connect(sim.gate_ws_url)
        sim.set_clock(1_700_000_000_000)  # the subscribe vector's time
        await send(ws, gate_sub("futures.orders", [GATE_UID, contract]))
        assert (await Pushes(ws).next(lambda m: m.get("event") == "subscribe"))["result"] == {"status": "success"}
        sim.set_clock(None)
    await gate.call("POST", "/orders", body={"contract": "BTC_USDT", "size": 1, "price": "0", "tif": "ioc"})
    assert (await Pushes(sockets["BTC_USDT"]).gate("futures.orders"))["result"][0]["contract"] == "BTC_USDT"
    await nothing_arrives(sockets["ETH_USDT"])
    for ws in sockets.values():
        await ws.close()


async def test_sizes_are_ints_without_the_decimal_header_and_ioc_limits_expire(gate: GateClient) -> None:
    body = {"contract": "BTC_USDT", "size": -2, "price": "62000", "tif": "ioc", "text": "t-ioc"}
    status, order = await gate.call("POST", "/orders", body=body, decimal=False)
    assert status == 200 and (order["size"], order["left"], order["finish_as"]) == (-2, -2, "ioc"), order
    status, pos = await gate.call("GET", "/positions/BTC_USDT", decimal=False)
    assert status == 200 and pos["size"] == 0
