"""The simulated Binance USD-M order API: signed calls to every endpoint, fills at the tape price, resting limits
filled by the tape, algo (conditional) TP/SL orders, rejections with Binance's codes, and the pushed user-data
events run through the Binance adapter's own parser."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import orjson
import pytest

from scripts.sim.binance_private import binance_sign
from scripts.sim.tapes import BINANCE, cached_tape, get_tape
from scripts.simulator import ExchangeSimulator, _read_accounts
from tests.simulator._helpers import send
from tests.simulator._orders import BinanceClient, Pushes, binance_socket
from tests.simulator._private import BN_KEY, BN_SECRET
from workers.exchanges.binanceusdm import BinanceUsdmAdapter

PARSER = BinanceUsdmAdapter().new_parser("main")
ORDER = "/fapi/v1/order"
ALGO = "/fapi/v1/algoOrder"


@pytest.fixture
async def bn(sim: ExchangeSimulator, session: aiohttp.ClientSession) -> BinanceClient:
    sim.add_account(BINANCE, BN_KEY, BN_SECRET)
    await sim.set_price(BINANCE, "BTCUSDT", Decimal("61800.00"))
    return BinanceClient(sim, session)


async def pushes(sim: ExchangeSimulator, session: aiohttp.ClientSession) -> Pushes:
    return Pushes(await binance_socket(sim, session), since_ms=sim.now_ms())


def parsed(msg: dict[str, Any]) -> list[dict[str, Any]]:
    """The events the adapter makes of a pushed frame."""
    return [event for _, event in PARSER.parse(orjson.dumps(msg), 1).events]


async def test_market_order_fill_close_and_pushes_parsed_by_the_adapter(
    sim: ExchangeSimulator, session: aiohttp.ClientSession, bn: BinanceClient
) -> None:
    user = await pushes(sim, session)
    status, order = await bn.call("POST", ORDER, symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.010",
                                  newClientOrderId="fp-m1", newOrderRespType="RESULT")  # fmt: skip
    assert status == 200, order
    assert (order["status"], order["avgPrice"], order["executedQty"], order["clientOrderId"]) == (
        "FILLED", "61800.00", "0.010", "fp-m1")  # fmt: skip
    new = parsed(await user.binance("ORDER_TRADE_UPDATE", x="NEW"))[0]
    assert (new["status"], new["client_order_id"], new["order_id"]) == ("new", "fp-m1", str(order["orderId"]))
    fill = parsed(await user.binance("ORDER_TRADE_UPDATE", x="TRADE"))[0]
    assert (fill["status"], fill["filled_size"], fill["avg_fill_price"], fill["side"]) == (
        "filled", "0.010", "61800.00", "buy")  # fmt: skip
    position, balance = parsed(await user.binance("ACCOUNT_UPDATE"))
    assert (position["size"], position["entry_price"], position["side"], position["margin_mode"]) == (
        "0.010", "61800.00", "both", "cross")  # fmt: skip
    assert (balance["asset"], balance["balance"]) == ("USDT", "100000.00000000")
    for key, value in (("orderId", str(order["orderId"])), ("origClientOrderId", "fp-m1")):
        status, again = await bn.call("GET", ORDER, symbol="BTCUSDT", **{key: value})
        assert status == 200 and again["orderId"] == order["orderId"] and again["status"] == "FILLED"
    status, risk = await bn.call("GET", "/fapi/v2/positionRisk", symbol="BTCUSDT")
    assert status == 200 and (risk[0]["positionAmt"], risk[0]["entryPrice"]) == ("0.010", "61800.00")

    await sim.set_price(BINANCE, "BTCUSDT", Decimal("62000.00"))  # +200 x 0.010 = +2 USDT
    status, close = await bn.call("POST", ORDER, symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.010",
                                  reduceOnly="true", newClientOrderId="fp-c1")  # fmt: skip
    assert status == 200 and close["status"] == "NEW" and close["executedQty"] == "0.000"  # ACK: as accepted
    position, balance = parsed(await user.binance("ACCOUNT_UPDATE"))
    assert position["size"] == "0.000" and balance["balance"] == "100002.00000000"
    status, again = await bn.call("GET", ORDER, symbol="BTCUSDT", origClientOrderId="fp-c1")
    assert again["status"] == "FILLED" and again["reduceOnly"] is True
    await user.ws.close()


async def test_limit_order_rests_and_fills_when_the_replayed_tape_crosses(
    sim: ExchangeSimulator, session: aiohttp.ClientSession, bn: BinanceClient
) -> None:
    try:
        tape = cached_tape(BINANCE, "btcusdt@trade", None)
    except LookupError:
        tape = get_tape(BINANCE, "btcusdt@trade", None)
    assert tape is not None
    low = min(Decimal(orjson.loads(f)["p"]) for f in tape.frames)
    sim.engine.release(BINANCE, "BTCUSDT")
    user = await pushes(sim, session)
    status, order = await bn.call("POST", ORDER, symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC",
                                  quantity="0.002", price=f"{low:.2f}", newClientOrderId="fp-rest")  # fmt: skip
    assert status == 200 and order["status"] == "NEW", order
    status, open_orders = await bn.call("GET", "/fapi/v1/openOrders", symbol="BTCUSDT")
    assert status == 200 and [o["clientOrderId"] for o in open_orders] == ["fp-rest"]
    market = await session.ws_connect(f"{sim.binance_base_url}/public/ws")
    await send(market, {"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 1})
    fill = parsed(await user.binance("ORDER_TRADE_UPDATE", x="TRADE"))[0]
    assert (fill["status"], fill["avg_fill_price"], fill["client_order_id"]) == ("filled", f"{low:.2f}", "fp-rest")
    await market.close()
    await user.ws.close()


async def test_algo_take_profit_and_stop_loss(
    sim: ExchangeSimulator, session: aiohttp.ClientSession, bn: BinanceClient
) -> None:
    user = await pushes(sim, session)
    await bn.call("POST", ORDER, symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.010")
    base = {"algoType": "CONDITIONAL", "symbol": "BTCUSDT", "side": "SELL", "closePosition": "true"}
    status, tp = await bn.call("POST", ALGO, **base, type="TAKE_PROFIT_MARKET", triggerPrice="62500",
                               clientAlgoId="fp-tp")  # fmt: skip
    assert status == 200 and (tp["algoStatus"], tp["triggerPrice"], tp["closePosition"]) == ("NEW", "62500.00", True)
    status, sl = await bn.call("POST", ALGO, **base, type="STOP_MARKET", triggerPrice="61000", workingType="MARK_PRICE",
                               clientAlgoId="fp-sl")  # fmt: skip
    assert status == 200 and sl["workingType"] == "MARK_PRICE"
    new = parsed(await user.binance("ALGO_UPDATE", caid="fp-sl", X="NEW"))[0]
    assert (new["status"], new["trigger_price"], new["trigger_price_type"], new["algo"]) == (
        "new", "61000.00", "mark_price", True)  # fmt: skip
    status, listed = await bn.call("GET", "/fapi/v1/openAlgoOrders", symbol="BTCUSDT")
    assert status == 200 and [a["clientAlgoId"] for a in listed] == ["fp-tp", "fp-sl"]

    await sim.set_price(BINANCE, "BTCUSDT", Decimal("61800.00"), mark=Decimal("60900.00"))  # mark crosses the SL
    done = parsed(await user.binance("ALGO_UPDATE", caid="fp-sl", X="FINISHED"))[0]
    assert done["status"] == "filled" and done["actual_order_id"]
    close = parsed(await user.binance("ORDER_TRADE_UPDATE", x="TRADE", c="fp-sl"))[0]
    assert close["order_id"] == done["actual_order_id"] and close["reduce_only"] is True
    status, sl_now = await bn.call("GET", ALGO, algoId=str(sl["algoId"]))
    assert status == 200 and sl_now["algoStatus"] == "FINISHED" and sl_now["actualOrderId"] == done["actual_order_id"]
    status, cancelled = await bn.call("DELETE", ALGO, clientAlgoId="fp-tp")
    assert status == 200 and cancelled == {"algoId": tp["algoId"], "clientAlgoId": "fp-tp", "code": "200",
                                           "msg": "success"}  # fmt: skip
    assert parsed(await user.binance("ALGO_UPDATE", caid="fp-tp", X="CANCELED"))[0]["status"] == "canceled"
    status, err = await bn.call("DELETE", ALGO, clientAlgoId="fp-tp")
    assert (status, err) == (400, {"code": -2011, "msg": "Unknown order sent."})
    status, err = await bn.call("POST", ALGO, **base, type="TAKE_PROFIT_MARKET", triggerPrice="61000")
    assert (status, err) == (400, {"code": -2021, "msg": "Order would immediately trigger."})
    await user.ws.close()


async def test_leverage_margin_type_cancel_and_exchange_info(
    sim: ExchangeSimulator, session: aiohttp.ClientSession, bn: BinanceClient
) -> None:
    status, lev = await bn.call("POST", "/fapi/v1/leverage", symbol="BTCUSDT", leverage="20")
    assert status == 200 and (lev["leverage"], lev["symbol"]) == (20, "BTCUSDT")
    status, err = await bn.call("POST", "/fapi/v1/leverage", symbol="BTCUSDT", leverage="200")
    assert (status, err["code"]) == (400, -4028)
    status, ok = await bn.call("POST", "/fapi/v1/marginType", symbol="BTCUSDT", marginType="ISOLATED")
    assert (status, ok) == (200, {"code": 200, "msg": "success"})
    status, err = await bn.call("POST", "/fapi/v1/marginType", symbol="BTCUSDT", marginType="ISOLATED")
    assert (status, err) == (400, {"code": -4046, "msg": "No need to change margin type."})
    status, risk = await bn.call("GET", "/fapi/v2/positionRisk", symbol="BTCUSDT")
    assert (risk[0]["marginType"], risk[0]["leverage"], risk[0]["positionAmt"]) == ("isolated", "20", "0.000")

    status, order = await bn.call("POST", ORDER, symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC",
                                  quantity="0.002", price="61000.00", newClientOrderId="fp-cxl")  # fmt: skip
    assert status == 200 and order["status"] == "NEW"
    status, err = await bn.call("POST", ORDER, symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC",
                                quantity="0.002", price="61000.00", newClientOrderId="fp-cxl")  # fmt: skip
    assert (status, err) == (400, {"code": -4116, "msg": "ClientOrderId is duplicated."})
    status, cancelled = await bn.call("DELETE", ORDER, symbol="BTCUSDT", origClientOrderId="fp-cxl")
    assert status == 200 and cancelled["status"] == "CANCELED"
    status, err = await bn.call("DELETE", ORDER, symbol="BTCUSDT", orderId=str(order["orderId"]))
    assert (status, err) == (400, {"code": -2011, "msg": "Unknown order sent."})
    status, err = await bn.call("GET", ORDER, symbol="BTCUSDT", orderId="1")
    assert (status, err) == (400, {"code": -2013, "msg": "Order does not exist."})

    async with session.get(f"{sim.binance_rest_url}/fapi/v1/exchangeInfo") as r:
        info = await r.json()
    filters = {f["filterType"]: f for f in info["symbols"][0]["filters"]}
    assert info["symbols"][0]["symbol"] == "BTCUSDT"
    assert (filters["PRICE_FILTER"]["tickSize"], filters["LOT_SIZE"]["stepSize"]) == ("0.10", "0.001")


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"symbol": "NOPEUSDT", "side": "BUY", "type": "MARKET", "quantity": "1"}, -1121),
        ({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.002",
          "price": "61000.05"}, -4014),  # off the 0.10 tick
        ({"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.0101"}, -1111),  # step 0.001
        ({"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.001"}, -4164),  # 61.8 < 100 USDT
        ({"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "100"}, -2019),
        ({"symbol": "BTCUSDT", "side": "SELL", "type": "MARKET", "quantity": "0.010", "reduceOnly": "true"}, -2022),
        ({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTX", "quantity": "0.002",
          "price": "62000"}, -5022),  # post-only that would take
        ({"symbol": "BTCUSDT", "side": "SELL", "type": "STOP_MARKET", "quantity": "0.002", "stopPrice": "60000"}, -4120),
        ({"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET"}, -1102),
        ({"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.01", "positionSide": "LONG"}, -4061),
    ],
)  # fmt: skip
async def test_order_rejections(bn: BinanceClient, params: dict[str, str], code: int) -> None:
    status, err = await bn.call("POST", ORDER, **params)
    assert (status, err["code"]) == (400, code), err
    assert set(err) == {"code", "msg"}


async def test_signature_checked_over_query_and_body(sim: ExchangeSimulator, bn: BinanceClient) -> None:
    wrong = BinanceClient(sim, bn.session, BN_KEY, "not-the-secret")
    status, err = await wrong.call("POST", ORDER, symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.01")
    assert (status, err) == (400, {"code": -1022, "msg": "Signature for this request is not valid."})
    # parameters in a form body, signature last in the body (totalParams = query + body)
    form = urlencode({"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.010",
                      "newClientOrderId": "fp-body", "timestamp": str(sim.now_ms())})  # fmt: skip
    form += f"&signature={binance_sign(BN_SECRET, form)}"
    headers = {"X-MBX-APIKEY": BN_KEY, "Content-Type": "application/x-www-form-urlencoded"}
    async with bn.session.post(f"{sim.binance_rest_url}{ORDER}", data=form, headers=headers) as r:
        assert r.status == 200 and (await r.json())["clientOrderId"] == "fp-body"
    assert sim.stats["rest_auth_failures"] == 1


def test_accounts_file_of_the_cli(tmp_path: Path) -> None:
    good = tmp_path / "accounts.json"
    good.write_text(orjson.dumps([{"exchange": BINANCE, "api_key": BN_KEY, "api_secret": BN_SECRET}]).decode())
    assert _read_accounts(good)[0]["api_key"] == BN_KEY
    bad = tmp_path / "bad.json"
    bad.write_text('{"exchange": "binanceusdm"}')
    with pytest.raises(SystemExit, match="expected a list"):
        _read_accounts(bad)
    with pytest.raises(SystemExit, match="missing.json"):
        _read_accounts(tmp_path / "missing.json")


async def test_ioc_and_fok_limits_that_cannot_fill_expire(bn: BinanceClient) -> None:
    for tif in ("IOC", "FOK"):
        status, order = await bn.call("POST", ORDER, symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce=tif,
                                      quantity="0.002", price="61000.00", newOrderRespType="RESULT")  # fmt: skip
        assert (status, order["status"], order["executedQty"]) == (200, "EXPIRED", "0.000"), order
