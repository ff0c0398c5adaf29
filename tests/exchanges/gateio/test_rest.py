"""Gate.io signed REST snapshots: requests, open orders and positions, errors (exchanges.md §2.7)."""

from __future__ import annotations

import pytest

from tests.exchanges.gateio._helpers import ADAPTER, CREDS
from workers.exchanges.gateio.private import (
    rest_signature,
)


def test_snapshot_requests() -> None:
    orders = ADAPTER.open_orders_request(CREDS, 1_700_000_000_000)
    positions = ADAPTER.positions_request(CREDS, 1_700_000_000_000)

    assert (orders.method, orders.path, orders.params) == ("GET", "/api/v4/futures/usdt/orders", {"status": "open"})
    assert orders.headers == {
        "KEY": "gatekey_0123456789abcdef",
        "Timestamp": "1700000000",
        "SIGN": rest_signature(CREDS.api_secret, "GET", "/api/v4/futures/usdt/orders", "status=open", "", 1700000000),
        "X-Gate-Size-Decimal": "1",
    }
    assert (positions.method, positions.path, positions.params) == ("GET", "/api/v4/futures/usdt/positions", {})
    assert positions.headers["SIGN"] == rest_signature(
        CREDS.api_secret, "GET", "/api/v4/futures/usdt/positions", "", "", "1700000000"
    )


#: REST shapes per the APIv4 FuturesOrder / Position models (sizes as decimal strings: X-Gate-Size-Decimal).
REST_ORDERS = b"""[{"id":15675394,"user":100000,"contract":"BTC_USDT","create_time":1546569968.184,"size":"-6024",
"iceberg":"0","left":"-6000","price":"3765","fill_price":"3765.1","mkfr":"-0.00025","tkfr":"0.00075","tif":"gtc",
"refu":0,"is_reduce_only":true,"is_close":false,"is_liq":false,"text":"t-my-custom-id","status":"open",
"finish_as":""}]"""
REST_POSITIONS = b"""[{"user":10000,"contract":"BTC_USDT","size":"-9440","leverage":"0","risk_limit":"100",
"leverage_max":"100","maintenance_rate":"0.005","value":"2.497143098997","margin":"4.431548146258",
"entry_price":"3779.55","liq_price":"99999999","mark_price":"3780.32","unrealised_pnl":"-0.000507486844",
"realised_pnl":"0.045543982432","history_pnl":"0","last_close_pnl":"0","realised_point":"0","history_point":"0",
"adl_ranking":5,"pending_orders":16,"mode":"single","cross_leverage_limit":"10","update_time":1684994400}]"""


def test_parse_open_orders() -> None:
    assert ADAPTER.parse_open_orders(REST_ORDERS, "main", 3) == [
        (
            "gateio:order:main",
            {
                "type": "order",
                "exchange": "gateio",
                "account": "main",
                "symbol": "BTC_USDT",
                "order_id": "15675394",
                "client_order_id": "t-my-custom-id",
                "side": "sell",
                "order_type": "limit",
                "status": "partially_filled",
                "status_raw": "open",
                "price": "3765",
                "size": "6024",
                "filled_size": "24",
                "avg_fill_price": "3765.1",
                "reduce_only": True,
                "ts_exchange": 1546569968184,  # create_time seconds, converted exactly
                "ts_received": 3,
                "snapshot": True,
            },
        )
    ]


def test_parse_positions() -> None:
    assert ADAPTER.parse_positions(REST_POSITIONS, "main", 3) == [
        (
            "gateio:position:main",
            {
                "type": "position",
                "exchange": "gateio",
                "account": "main",
                "symbol": "BTC_USDT",
                "side": "both",
                "mode": "one_way",
                "size": "-9440",
                "entry_price": "3779.55",
                "mark_price": "3780.32",
                "liquidation_price": "99999999",
                "leverage": "10",
                "margin_mode": "cross",
                "unrealized_pnl": "-0.000507486844",
                "ts_exchange": 1684994400000,
                "ts_received": 3,
                "snapshot": True,
            },
        )
    ]


@pytest.mark.parametrize(
    ("body", "text"),
    [
        (b'{"label":"INVALID_KEY","message":"Invalid key provided"}', "INVALID_KEY: Invalid key provided"),
        (b'{"orders":[]}', "not a list"),
        (b'[{"contract":"BTC_USDT"}]', "malformed"),
    ],
)
def test_rest_snapshot_errors(body: bytes, text: str) -> None:
    with pytest.raises(ValueError, match=text):
        ADAPTER.parse_open_orders(body, "main", 0)
    with pytest.raises(ValueError, match=text):
        ADAPTER.parse_positions(body, "main", 0)
