"""Binance USD-M REST: the order-book snapshot and the signed open-orders/positions snapshots (§9)."""

from __future__ import annotations

import pytest

from tests.exchanges._event_keys import POSITION_KEYS
from tests.exchanges.binanceusdm._helpers import ADAPTER, CREDS, topic
from workers.exchanges.base import BookUpdate, RestRequest, SnapshotRequest

# --- REST order-book snapshot ----------------------------------------------------------------------


def test_snapshot_request_uses_the_documented_1000_levels() -> None:
    assert ADAPTER.snapshot_request("BTCUSDT", 20) == SnapshotRequest(
        "/fapi/v1/depth", {"symbol": "BTCUSDT", "limit": "1000"}
    )
    assert ADAPTER.snapshot_request("ETHUSDT", 100) == SnapshotRequest(
        "/fapi/v1/depth", {"symbol": "ETHUSDT", "limit": "1000"}
    )
    assert ADAPTER.book_sync.rule == "binance"
    assert ADAPTER.resync_frame(topic("depth")) is None


def test_snapshot_without_event_time() -> None:
    body = b'{"lastUpdateId":7,"bids":[["1.0","2"]],"asks":[]}'

    snap = ADAPTER.parse_snapshot("BTCUSDT", body, 5)

    assert snap == BookUpdate("binanceusdm:depth:BTCUSDT", "BTCUSDT", [("1.0", "2")], [], None, 7, None, True, None, 5)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"code":-1121,"msg":"Invalid symbol."}', "-1121: Invalid symbol."),
        (b"not json", None),
        (b"[]", "not an object"),
        (b'{"lastUpdateId":"7","bids":[],"asks":[]}', "must be an integer"),
        (b'{"lastUpdateId":7,"bids":[]}', "malformed"),
        (b'{"lastUpdateId":7,"bids":[["1"]],"asks":[]}', "unpack"),
        (b'{"lastUpdateId":7,"bids":null,"asks":[]}', "malformed"),
    ],
)
def test_bad_snapshot_raises_value_error(body: bytes, message: str | None) -> None:
    with pytest.raises(ValueError, match=message):
        ADAPTER.parse_snapshot("BTCUSDT", body, 0)


def test_signed_snapshot_requests() -> None:
    # binance_usdm.md §8 own vector: recvWindow=5000&timestamp=1700000000000 -> 46c9d045…
    signed = {
        "recvWindow": "5000",
        "timestamp": "1700000000000",
        "signature": "46c9d04512e820aefb87e9db7c33ebdb62b816c0d577d318f3897e1d338a659c",
    }
    headers = {"X-MBX-APIKEY": "feedplane-test-apikey-0001"}

    assert ADAPTER.open_orders_request(CREDS, 1_700_000_000_000) == RestRequest(
        "GET", "/fapi/v1/openOrders", signed, headers
    )
    assert ADAPTER.positions_request(CREDS, 1_700_000_000_000) == RestRequest(
        "GET", "/fapi/v2/positionRisk", signed, headers
    )


#: "Current All Open Orders" doc example (comments dropped).
OPEN_ORDERS_BODY = b"""[{"avgPrice":"0.00000","clientOrderId":"abc","cumQuote":"0","executedQty":"0","orderId":1917641,
"origQty":"0.40","origType":"TRAILING_STOP_MARKET","price":"0","reduceOnly":false,"side":"BUY","positionSide":"SHORT",
"status":"NEW","stopPrice":"9300","closePosition":false,"symbol":"BTCUSDT","time":1579276756075,"timeInForce":"GTC",
"type":"TRAILING_STOP_MARKET","activatePrice":"9020","priceRate":"0.3","updateTime":1579276756075,
"workingType":"CONTRACT_PRICE","priceProtect":false,"priceMatch":"NONE","selfTradePreventionMode":"NONE",
"goodTillDate":0}]"""
#: "Position Information V2" (hedge mode) and "V3" (one-way) doc examples.
POSITIONS_V2_BODY = b"""[{"symbol":"BTCUSDT","positionAmt":"0.001","entryPrice":"22185.2","breakEvenPrice":"0.0",
"markPrice":"21123.05052574","unRealizedProfit":"-1.06214947","liquidationPrice":"19731.45529116","leverage":"4",
"maxNotionalValue":"100000000","marginType":"cross","isolatedMargin":"0.00000000","isAutoAddMargin":"false",
"positionSide":"LONG","notional":"21.12305052","isolatedWallet":"0","updateTime":1655217461579},
{"symbol":"BTCUSDT","positionAmt":"0.000","entryPrice":"0.0","breakEvenPrice":"0.0","markPrice":"21123.05052574",
"unRealizedProfit":"0.00000000","liquidationPrice":"0","leverage":"4","maxNotionalValue":"100000000",
"marginType":"cross","isolatedMargin":"0.00000000","isAutoAddMargin":"false","positionSide":"SHORT","notional":"0",
"isolatedWallet":"0","updateTime":0}]"""
POSITIONS_V3_BODY = b"""[{"symbol":"ADAUSDT","positionSide":"BOTH","positionAmt":"30","entryPrice":"0.385",
"breakEvenPrice":"0.385077","markPrice":"0.41047590","unRealizedProfit":"0.76427700","liquidationPrice":"0",
"isolatedMargin":"0","notional":"12.31427700","marginAsset":"USDT","isolatedWallet":"0","initialMargin":"0.61571385",
"maintMargin":"0.08004280","positionInitialMargin":"0.61571385","openOrderInitialMargin":"0","adl":2,
"bidNotional":"0","askNotional":"0","updateTime":1720736417660}]"""


def test_parse_open_orders_doc_example() -> None:
    assert ADAPTER.parse_open_orders(OPEN_ORDERS_BODY, "main", 9) == [
        (
            "binanceusdm:order:main",
            {
                "type": "order",
                "exchange": "binanceusdm",
                "account": "main",
                "symbol": "BTCUSDT",
                "order_id": "1917641",
                "client_order_id": "abc",
                "side": "buy",
                "order_type": "trailing_stop_market",
                "status": "new",
                "status_raw": "NEW",
                "price": "0",
                "size": "0.40",
                "filled_size": "0",
                "avg_fill_price": "0.00000",
                "reduce_only": False,
                "ts_exchange": 1579276756075,
                "ts_received": 9,
                "snapshot": True,
            },
        )
    ]


def test_parse_positions_v2_and_v3_doc_examples() -> None:
    long_, short = ADAPTER.parse_positions(POSITIONS_V2_BODY, "main", 9)
    [(_, one_way)] = ADAPTER.parse_positions(POSITIONS_V3_BODY, "main", 9)

    assert long_ == (
        "binanceusdm:position:main",
        {
            "type": "position",
            "exchange": "binanceusdm",
            "account": "main",
            "symbol": "BTCUSDT",
            "side": "long",
            "mode": "hedge",
            "size": "0.001",
            "entry_price": "22185.2",
            "mark_price": "21123.05052574",
            "liquidation_price": "19731.45529116",
            "leverage": "4",
            "margin_mode": "cross",
            "unrealized_pnl": "-1.06214947",
            "ts_exchange": 1655217461579,
            "ts_received": 9,
            "snapshot": True,
        },
    )
    assert (short[1]["side"], short[1]["size"], short[1]["ts_exchange"]) == ("short", "0.000", None)
    assert (one_way["side"], one_way["mode"], one_way["size"], one_way["leverage"], one_way["margin_mode"]) == (
        "both",
        "one_way",
        "30",
        None,
        None,
    )
    assert list(one_way) == POSITION_KEYS


@pytest.mark.parametrize(
    ("body", "text"),
    [
        (b'{"code":-2015,"msg":"Invalid API-key, IP, or permissions for action."}', "-2015: Invalid API-key"),
        (b'{"orders":[]}', "not a list"),
        (b'[{"symbol":"BTCUSDT"}]', "malformed"),
    ],
)
def test_rest_snapshot_errors(body: bytes, text: str) -> None:
    with pytest.raises(ValueError, match=text):
        ADAPTER.parse_open_orders(body, "main", 0)
    with pytest.raises(ValueError, match=text):
        ADAPTER.parse_positions(body, "main", 0)
