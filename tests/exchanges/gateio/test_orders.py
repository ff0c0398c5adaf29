"""Gate.io order adapter (pure): the documented signing vector, request shapes, answers and refusals."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

import orjson
import pytest

from workers.exchanges.base import AdapterError
from workers.exchanges.gateio.orders import GateioOrders
from workers.exchanges.order_contract import OrderSpec, PositionInfo, TriggerSpec

ORDERS = GateioOrders()


@dataclass(frozen=True)
class Creds:
    exchange: str = "gateio"
    account: str = "default"
    api_key: str = "gatekey"
    api_secret: str = "gatesecret_fedcba9876543210"
    memo: str = ""


def test_place_matches_the_documented_vector() -> None:
    # exchanges.md §2.7 "own POST" vector, verified against ccxt: same body, same SIGN
    spec = OrderSpec("BTC_USDT", "buy", "limit", "1", "60000", "gtc", False, "t-test1")
    req = ORDERS.order_request(Creds(), spec, 1_700_000_000_000)
    assert (req.method, req.path, req.params) == ("POST", "/api/v4/futures/usdt/orders", {})
    assert req.body == b'{"contract":"BTC_USDT","size":1,"price":"60000","tif":"gtc","text":"t-test1"}'
    assert req.headers["Timestamp"] == "1700000000" and req.headers["KEY"] == "gatekey"
    assert req.headers["SIGN"] == ("5fa8367774fc24b4fa9212b5e725ecc499986139c693d488942443a3ea2d5747"
                                   "59a03de7b9362ea5682999852520f578a04a2b54920aa8bee51da5358f2fc6c3")  # fmt: skip


def _sign(method: str, path: str, query: str, body: bytes, ts: str) -> str:
    text = f"{method}\n{path}\n{query}\n{hashlib.sha512(body).hexdigest()}\n{ts}"
    return hmac.new(b"gatesecret_fedcba9876543210", text.encode(), hashlib.sha512).hexdigest()


def test_every_request_is_signed_over_what_is_sent() -> None:
    c, now = Creds(), 1_700_000_000_000
    long = [PositionInfo("BTC_USDT", "both", "2", "5", "isolated", False)]
    requests = [
        ORDERS.get_request(c, "BTC_USDT", None, "t-abc", now),
        ORDERS.cancel_request(c, "BTC_USDT", "123", now),
        ORDERS.trigger_request(c, TriggerSpec("BTC_USDT", "stop_loss", "long", "58000", "mark", "t-x-sl"), now),
        ORDERS.cancel_trigger_request(c, "BTC_USDT", "77", now),
        ORDERS.open_triggers_request(c, now),
        ORDERS.positions_request(c, "BTC_USDT", now),
        *(r for _, r in ORDERS.leverage_requests(c, "BTC_USDT", 20, "cross", long, now)),
    ]
    for req in requests:
        query = "&".join(f"{k}={v}" for k, v in req.params.items())
        assert req.headers["SIGN"] == _sign(req.method, req.path, query, req.body, "1700000000"), req.path


def test_leverage_and_margin_mode() -> None:
    c, now = Creds(), 0
    isolated10 = [PositionInfo("BTC_USDT", "both", "0", "10", "isolated", False)]
    assert ORDERS.leverage_requests(c, "BTC_USDT", 10, "isolated", isolated10, now) == []  # already so
    [(step, req)] = ORDERS.leverage_requests(c, "BTC_USDT", 20, None, isolated10, now)
    assert (step, req.path, req.params) == ("leverage", "/api/v4/futures/usdt/positions/BTC_USDT/leverage",
                                            {"leverage": "20"})  # fmt: skip
    [(_, req)] = ORDERS.leverage_requests(c, "BTC_USDT", 5, "cross", isolated10, now)
    assert req.params == {"leverage": "0", "cross_leverage_limit": "5"}
    dual = [PositionInfo("BTC_USDT", "long", "0", "10", "isolated", True)]
    [(_, req)] = ORDERS.leverage_requests(c, "BTC_USDT", 3, None, dual, now)
    assert req.path == "/api/v4/futures/usdt/dual_comp/positions/BTC_USDT/leverage"
    with pytest.raises(AdapterError, match="isolated"):
        ORDERS.leverage_requests(c, "BTC_USDT", None, "isolated", [], now)


def test_market_sell_close_and_triggers() -> None:
    c = Creds()
    sell = ORDERS.order_request(c, OrderSpec("BTC_USDT", "sell", "market", "3", None, "gtc", True, "t-a"), 0)
    assert orjson.loads(sell.body) == {"contract": "BTC_USDT", "size": -3, "price": "0", "tif": "ioc", "text": "t-a",
                                       "reduce_only": True}  # fmt: skip
    single = [PositionInfo("BTC_USDT", "both", "-3", "10", "isolated", False)]
    assert ORDERS.close_spec("BTC_USDT", "long", single, "t-c") is None
    spec = ORDERS.close_spec("BTC_USDT", "short", single, "t-c")
    assert spec is not None and orjson.loads(ORDERS.order_request(c, spec, 0).body)["close"] is True
    dual = [PositionInfo("BTC_USDT", "long", "4", "10", "isolated", True)]
    spec = ORDERS.close_spec("BTC_USDT", "long", dual, "t-d")
    body = orjson.loads(ORDERS.order_request(c, spec, 0).body) if spec else {}
    assert body["auto_size"] == "close_long" and body["reduce_only"] is True and body["size"] == 0
    tp = orjson.loads(ORDERS.trigger_request(c, TriggerSpec("BTC_USDT", "take_profit", "short", "50000", "index",
                                                            "t-e", hedge=True), 0).body)  # fmt: skip
    assert tp["trigger"]["rule"] == 2 and tp["trigger"]["price_type"] == 2 and tp["order_type"] == "close-short-position"
    assert tp["initial"]["auto_size"] == "close_short"


def test_client_order_ids_and_refusals() -> None:
    assert ORDERS.client_order_id("bot-1", "") == "t-bot-1"
    assert ORDERS.client_order_id("t-bot-1", "") == "t-bot-1"
    assert ORDERS.client_order_id(None, "ab" * 20) == "t-fp" + ("ab" * 13)
    with pytest.raises(AdapterError):
        ORDERS.client_order_id("x" * 29, "")
    refusal = ORDERS.refusal(400, b'{"label":"INVALID_PARAM_VALUE","message":"size"}')
    assert refusal is not None and (refusal.status, refusal.code, refusal.message) == (400, "INVALID_PARAM_VALUE", "size")
    missing = ORDERS.refusal(404, b'{"label":"ORDER_NOT_FOUND","message":"Order not found"}')
    assert missing is not None and ORDERS.is_not_found(missing)
    assert ORDERS.refusal(201, b"{}") is None
    rules = ORDERS.parse_contract(b'{"name":"BTC_USDT","quanto_multiplier":"0.0001","order_price_round":"0.1",'
                                  b'"order_size_min":1,"mark_price":"60000.1"}', "BTC_USDT")  # fmt: skip
    assert (rules.tick, rules.lot, rules.min_size, rules.multiplier, rules.ref_price) == ("0.1", "1", "1", "0.0001",
                                                                                         "60000.1")  # fmt: skip
