"""Binance USD-M order adapter (pure): the documented signing vector, request shapes, answers and refusals."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import urlencode

import pytest

from workers.exchanges.base import AdapterError
from workers.exchanges.binanceusdm.orders import BinanceUsdmOrders
from workers.exchanges.binanceusdm.private import signed_request
from workers.exchanges.order_contract import OrderSpec, PositionInfo, TriggerSpec

ORDERS = BinanceUsdmOrders()
DOC_SECRET = "2b5eb11e18796d12d88f13dc27dbbd02c2cc51ff7059765ed9821957d82bb4d9"


@dataclass(frozen=True)
class Creds:
    exchange: str = "binanceusdm"
    account: str = "default"
    api_key: str = "bkey"
    api_secret: str = DOC_SECRET
    memo: str = ""


def test_order_signing_follows_the_documented_vector() -> None:
    # the doc's POST /fapi/v1/order example (binance_usdm.md §8): the signing the adapter's calls go through
    params = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "quantity": "1", "price": "9000", "timeInForce": "GTC"}
    req = signed_request(Creds(), "POST", "/fapi/v1/order", params, 1591702613943)
    assert req.params["signature"] == "3c661234138461fcc7a7d8746c6558c9842d4e10870d2ecbedf7777cad694af9"
    spec = OrderSpec("BTCUSDT", "buy", "limit", "1", "9000", "gtc", False, "c-1")
    req = ORDERS.order_request(Creds(), spec, 1591702613943)
    sent = dict(req.params)
    signature = sent.pop("signature")
    assert sent == {**params, "newClientOrderId": "c-1", "newOrderRespType": "RESULT", "recvWindow": "5000",
                    "timestamp": "1591702613943"}  # fmt: skip
    assert signature == hmac.new(DOC_SECRET.encode(), urlencode(sent).encode(), hashlib.sha256).hexdigest()
    assert req.headers == {"X-MBX-APIKEY": "bkey"} and req.body == b""


def test_request_shapes() -> None:
    c, now = Creds(), 0
    one_way = [PositionInfo("BTCUSDT", "both", "-0.5", "20", "cross", False)]
    steps = ORDERS.leverage_requests(c, "BTCUSDT", 10, "isolated", one_way, now)
    assert [(n, r.path, r.params.get("marginType"), r.params.get("leverage")) for n, r in steps] == [
        ("margin_mode", "/fapi/v1/marginType", "ISOLATED", None), ("leverage", "/fapi/v1/leverage", None, "10")]
    assert ORDERS.leverage_requests(c, "BTCUSDT", 20, "cross", one_way, now) == []
    close = ORDERS.close_spec("BTCUSDT", "short", one_way, "x")
    assert close is not None and (close.side, close.size, close.reduce_only) == ("buy", "0.5", True)
    assert ORDERS.close_spec("BTCUSDT", "long", one_way, "x") is None
    hedge = [PositionInfo("BTCUSDT", "long", "2", "20", "cross", True)]
    spec = ORDERS.close_spec("BTCUSDT", "long", hedge, "x")
    params = ORDERS.order_request(c, spec, now).params if spec else {}
    assert params["positionSide"] == "LONG" and "reduceOnly" not in params and params["type"] == "MARKET"
    tp = ORDERS.trigger_request(c, TriggerSpec("BTCUSDT", "take_profit", "short", "50000", "mark", "c-tp", True), now)
    assert (tp.path, tp.params["side"], tp.params["positionSide"], tp.params["type"], tp.params["workingType"]) == (
        "/fapi/v1/algoOrder", "BUY", "SHORT", "TAKE_PROFIT_MARKET", "MARK_PRICE")
    with pytest.raises(AdapterError, match="index"):
        ORDERS.trigger_request(c, TriggerSpec("BTCUSDT", "stop_loss", "long", "1", "index", "c"), now)
    with pytest.raises(AdapterError, match="symbol"):
        ORDERS.get_request(c, "", "1", None, now)
    get = ORDERS.get_request(c, "BTCUSDT", None, "c-1", now)
    assert get.params["origClientOrderId"] == "c-1"


def test_answers_and_refusals() -> None:
    refusal = ORDERS.refusal(400, b'{"code":-2013,"msg":"Order does not exist."}')
    assert refusal is not None and ORDERS.is_not_found(refusal) and refusal.code == "-2013"
    assert ORDERS.refusal(400, b'{"code":-4046,"msg":"No need to change margin type."}') is None
    assert ORDERS.parse_trigger(b'{"algoId":2146760,"clientAlgoId":"x"}') == "2146760"
    assert ORDERS.parse_open_triggers(b'[{"algoId":1,"symbol":"BTCUSDT"}]') == [("BTCUSDT", "1")]
    order = ORDERS.parse_order(b'{"orderId":22542179,"symbol":"BTCUSDT","clientOrderId":"c-1","side":"BUY",'
                               b'"type":"LIMIT","status":"NEW","price":"9000","origQty":"1","executedQty":"0",'
                               b'"avgPrice":"0.00000","reduceOnly":false,"updateTime":1566818724722}', "a", 1)
    assert (order["order_id"], order["status"], order["price"], order["ts_exchange"]) == ("22542179", "new", "9000",
                                                                                         1566818724722)  # fmt: skip
    assert ORDERS.client_order_id(None, "ab" * 20) == "fp" + "ab" * 11
    with pytest.raises(AdapterError):
        ORDERS.client_order_id("has space", "")
