"""BitMart signed REST snapshots: open orders and positions doc examples, errors (``workers.exchanges.bitmart.rest``)."""

from __future__ import annotations

import json

import pytest

from tests.exchanges._event_keys import POSITION_KEYS
from tests.exchanges.bitmart._helpers import ADAPTER

#: The futures v2 doc's "Get All Open Orders" example reply.
OPEN_ORDERS_BODY = json.dumps(
    {
        "code": 1000,
        "message": "Ok",
        "data": [
            {
                "order_id": "220908185908509",
                "client_order_id": "BM123",
                "price": "14277",
                "size": "7216",
                "symbol": "BTCUSDT",
                "state": 4,
                "side": 3,
                "type": "limit",
                "position_mode": "hedge_mode",
                "leverage": "0",
                "open_type": "isolated",
                "deal_avg_price": "14277",
                "deal_size": "7216",
                "preset_take_profit_price_type": 1,
                "preset_stop_loss_price_type": 2,
                "preset_take_profit_price": "68000",
                "preset_stop_loss_price": "60000",
                "create_time": 1662368173000,
                "update_time": 1662368173000,
            }
        ],
        "trace": "80ba1f07-1b6f-46ad-81dd-78ac7e9bbccd",
    }
).encode()
#: The futures v2 doc's "Get Current Position" example reply.
POSITIONS_BODY = json.dumps(
    {
        "code": 1000,
        "message": "Ok",
        "data": [
            {
                "symbol": "BTCUSDT",
                "leverage": "5",
                "timestamp": 1663814313531,
                "current_fee": "5.00409471",
                "open_timestamp": 1662714817820,
                "current_value": "16680.3157",
                "mark_value": "16673.27053207877",
                "mark_price": "93000.50",
                "position_value": "18584.272343943943943944339",
                "position_cross": "3798.397624451826977945",
                "maintenance_margin": "4798.397624451826977945",
                "margin_type": "Isolated",
                "position_mode": "hedge_mode",
                "close_vol": "100",
                "close_avg_price": "20700.7",
                "open_avg_price": "20200",
                "entry_price": "20201",
                "current_amount": "899",
                "unrealized_value": "1903.956643943943943944339",
                "realized_value": "55.049173071454605573",
                "position_type": 2,
                "account": "futures",
            }
        ],
        "trace": "ae96cae5-1f09-4ea5-971e-4474a6724bc8",
    }
).encode()


def test_parse_open_orders_doc_example() -> None:
    assert ADAPTER.parse_open_orders(OPEN_ORDERS_BODY, "main", 7) == [
        (
            "bitmart:order:main",
            {
                "type": "order",
                "exchange": "bitmart",
                "account": "main",
                "symbol": "BTCUSDT",
                "order_id": "220908185908509",
                "client_order_id": "BM123",
                "side": "sell",
                "order_type": "limit",
                "status": "filled",
                "status_raw": "4",
                "price": "14277",
                "size": "7216",
                "filled_size": "7216",
                "avg_fill_price": "14277",
                "reduce_only": False,
                "ts_exchange": 1662368173000,
                "ts_received": 7,
                "snapshot": True,
            },
        )
    ]


def test_parse_positions_doc_example() -> None:
    [(topic, event)] = ADAPTER.parse_positions(POSITIONS_BODY, "main", 7)

    assert topic == "bitmart:position:main"
    assert event == {
        "type": "position",
        "exchange": "bitmart",
        "account": "main",
        "symbol": "BTCUSDT",
        "side": "short",
        "mode": "hedge",
        "size": "899",
        "entry_price": "20201",
        "mark_price": "93000.50",
        "liquidation_price": None,
        "leverage": "5",
        "margin_mode": "isolated",
        "unrealized_pnl": "1903.956643943943943944339",
        "ts_exchange": 1663814313531,
        "ts_received": 7,
        "snapshot": True,
    }
    assert list(event) == POSITION_KEYS


@pytest.mark.parametrize(
    ("body", "text"),
    [
        (b'{"code":30005,"message":"Header X-BM-SIGN is wrong","data":{}}', "30005: Header X-BM-SIGN is wrong"),
        (b"[]", "not an object"),
        (b'{"code":1000,"data":{}}', "no data list"),
        (b'{"code":1000,"data":[{"symbol":"X"}]}', "malformed"),
    ],
)
def test_rest_snapshot_errors(body: bytes, text: str) -> None:
    with pytest.raises(ValueError, match=text):
        ADAPTER.parse_open_orders(body, "main", 0)
    with pytest.raises(ValueError):
        ADAPTER.parse_positions(body, "main", 0)
