"""Gate.io private channels: routes, order/position/balance pushes (exchanges.md §2.6), status mapping."""

from __future__ import annotations

from typing import Any

import pytest

from control.topics import Topic
from tests.exchanges._event_keys import BALANCE_KEYS, ORDER_KEYS, POSITION_KEYS
from tests.exchanges.gateio._helpers import ADAPTER, CREDS, PRIVATE, fixture, parser, push
from workers.exchanges.base import Ack, AdapterError, Parsed
from workers.exchanges.gateio import GateioParser
from workers.exchanges.gateio.private import (
    order_event,
    position_event,
)

# --- private channels (§2.3 auth, §2.6 pushes, §2.7 REST) -------------------------------------------------------------



def private_parser() -> GateioParser:
    return ADAPTER.new_parser("main")


def gate_order(**kw: Any) -> dict[str, Any]:
    base = {
        "contract": "BTC_USDT",
        "create_time_ms": 1700000000000,
        "fill_price": 0,
        "finish_as": "_new",
        "finish_time_ms": 0,
        "id": 42,
        "is_reduce_only": False,
        "left": 10,
        "price": "60000",
        "size": 10,
        "status": "open",
        "text": "web",
        "tif": "gtc",
    }
    return {**base, **kw}


def test_private_routes_and_validation() -> None:
    assert ADAPTER.private_channels == {"order", "position", "balance"}
    assert [ADAPTER.route(t) for t in PRIVATE] == ["private:main"] * 3
    assert ADAPTER.ws_url("wss://fx-ws.gateio.ws/v4/ws/usdt", "private:main") == "wss://fx-ws.gateio.ws/v4/ws/usdt"
    for t in PRIVATE:
        ADAPTER.validate(t)
    with pytest.raises(AdapterError):
        ADAPTER.validate(Topic("gateio", "order", "no way"))
    assert ADAPTER.login_frame(CREDS, 1) is None


def test_order_fixture() -> None:
    [ack] = fixture("SubscribeToOrderUpdates", "<")
    [raw] = fixture("SubscribeToOrderUpdates", "=")
    p = private_parser()

    assert p.parse(ack, 0).acks == [Ack(ok=True, topic="gateio:order:main", request_id=-999)]
    [(topic, event)] = p.parse(raw, 5).events
    assert topic == "gateio:order:main"
    assert event == {
        "type": "order",
        "exchange": "gateio",
        "account": "main",
        "symbol": "BTC_USD",
        "order_id": "4872460",
        "client_order_id": None,  # text "-": not a t- id
        "side": "buy",
        "order_type": "limit",
        "status": "filled",
        "status_raw": "finished/filled",
        "price": "40000.4",
        "size": "1.5",
        "filled_size": "1.0",
        "avg_fill_price": "40000.4",
        "reduce_only": False,
        "ts_exchange": 1628736848321,  # finish_time_ms
        "ts_received": 5,
        "snapshot": False,
    }
    assert list(event) == ORDER_KEYS


def test_position_fixture() -> None:
    [ack] = fixture("SubscribeToPositionUpdates", "<")
    [raw] = fixture("SubscribeToPositionUpdates", "=")
    p = private_parser()

    assert p.parse(ack, 0).acks == [Ack(ok=True, topic="gateio:position:main", request_id=-999)]
    assert p.parse(raw, 5) == Parsed(
        events=[
            (
                "gateio:position:main",
                {
                    "type": "position",
                    "exchange": "gateio",
                    "account": "main",
                    "symbol": "BTC_USD",
                    "side": "both",
                    "mode": "one_way",
                    "size": "3.5",
                    "entry_price": "40000.36666661111",
                    "mark_price": None,
                    "liquidation_price": "0.1",
                    "leverage": None,  # leverage 0 (cross) and cross_leverage_limit 0
                    "margin_mode": "cross",
                    "unrealized_pnl": None,
                    "ts_exchange": 1628736848321,
                    "ts_received": 5,
                    "snapshot": False,
                },
            )
        ]
    )
    assert list(p.parse(raw, 5).events[0][1]) == POSITION_KEYS


def test_balance_fixture() -> None:
    [ack] = fixture("SubscribeToBalanceUpdates", "<")
    [raw] = fixture("SubscribeToBalanceUpdates", "=")
    p = private_parser()

    assert p.parse(ack, 0).acks == [Ack(ok=True, topic="gateio:balance:main", request_id=-999)]
    assert p.parse(raw, 5) == Parsed(
        events=[
            (
                "gateio:balance:main",
                {
                    "type": "balance",
                    "exchange": "gateio",
                    "account": "main",
                    "asset": "BTC",
                    "balance": "9.998739899488",
                    "available": None,
                    "frozen": None,
                    "ts_exchange": 1547199246123,
                    "ts_received": 5,
                    "snapshot": False,
                },
            )
        ]
    )
    assert list(p.parse(raw, 5).events[0][1]) == BALANCE_KEYS


@pytest.mark.parametrize("name", ["SubscribeToOrderUpdates", "SubscribeToPositionUpdates", "SubscribeToBalanceUpdates"])
def test_private_fixtures_without_an_account(name: str) -> None:
    [ack] = fixture(name, "<")
    [raw] = fixture(name, "=")

    assert parser().parse(ack, 0).acks == [Ack(ok=True, request_id=-999)]
    assert parser().parse(raw, 0) == Parsed(unknown=True)


def test_private_auth_failure_ack() -> None:
    raw = (
        '{"time":1,"time_ms":1001,"id":3,"channel":"futures.orders","event":"subscribe",'
        '"error":{"code":4,"message":"{\\"label\\":\\"INVALID_KEY\\"}"},"result":{"status":"fail"}}'
    )

    assert private_parser().parse(raw, 0).acks == [
        Ack(ok=False, topic="gateio:order:main", request_id=3, error='4: {"label":"INVALID_KEY"}')
    ]


@pytest.mark.parametrize(
    ("fields", "status", "status_raw", "filled"),
    [
        ({}, "new", "open/_new", "0"),
        ({"status": "open", "finish_as": ""}, "new", "open", "0"),
        ({"left": 4}, "partially_filled", "open/_new", "6"),
        ({"status": "finished", "finish_as": "filled", "left": 0}, "filled", "finished/filled", "10"),
        ({"status": "finished", "finish_as": "cancelled"}, "canceled", "finished/cancelled", "0"),
        ({"status": "finished", "finish_as": "cancelled", "left": 3}, "canceled", "finished/cancelled", "7"),
        ({"status": "finished", "finish_as": "ioc", "left": 3}, "expired", "finished/ioc", "7"),
        ({"status": "finished", "finish_as": "ioc", "left": 0}, "filled", "finished/ioc", "10"),
        ({"status": "finished", "finish_as": "liquidated", "left": 10}, "canceled", "finished/liquidated", "0"),
        ({"status": "finished", "finish_as": "auto_deleveraged", "left": 0}, "filled", "finished/auto_deleveraged",
         "10"),
        ({"status": "finished", "finish_as": "reduce_only"}, "canceled", "finished/reduce_only", "0"),
        ({"status": "finished", "finish_as": "position_closed"}, "canceled", "finished/position_closed", "0"),
        ({"status": "finished", "finish_as": "stp"}, "canceled", "finished/stp", "0"),
        ({"size": "-2.5", "left": "-0.5"}, "partially_filled", "open/_new", "2.0"),
    ],
)  # fmt: skip
def test_order_status_mapping(fields: dict[str, Any], status: str, status_raw: str, filled: str) -> None:
    event = order_event(gate_order(**fields), "main", 0)

    assert (event["status"], event["status_raw"], event["filled_size"]) == (status, status_raw, filled)


def test_order_side_type_and_client_id() -> None:
    sell = order_event(gate_order(size=-10, left=-10, text="t-my-id_1"), "main", 0)
    market = order_event(gate_order(price="0", tif="ioc", size="3", left="0"), "main", 0)
    close = order_event(gate_order(size=0, left=-5), "main", 0)

    assert (sell["side"], sell["size"], sell["client_order_id"]) == ("sell", "10", "t-my-id_1")
    assert sell["order_type"] == "limit"
    assert (market["side"], market["order_type"], market["price"]) == ("buy", "market", "0")
    assert (close["side"], close["size"], close["filled_size"]) == ("sell", "0", "0")
    assert order_event(gate_order(update_time=1700000000555), "main", 0)["ts_exchange"] == 1700000000555
    assert order_event(gate_order(), "main", 0)["ts_exchange"] == 1700000000000  # create_time_ms while open
    with pytest.raises(ValueError):
        order_event(gate_order(size=1.5), "main", 0)  # a float size is refused


@pytest.mark.parametrize(
    ("fields", "side", "mode", "margin_mode", "leverage"),
    [
        ({"mode": "dual_long", "leverage": 10}, "long", "hedge", "isolated", "10"),
        ({"mode": "dual_short", "leverage": "0", "cross_leverage_limit": "25"}, "short", "hedge", "cross", "25"),
        ({"mode": "single", "leverage": 0, "cross_leverage_limit": 0}, "both", "one_way", "cross", None),
        ({}, "both", None, None, None),
    ],
)
def test_position_modes_and_margin(
    fields: dict[str, Any], side: str, mode: str | None, margin_mode: str | None, leverage: str | None
) -> None:
    event = position_event({"contract": "BTC_USDT", "size": -3, **fields}, "main", 0, frame_ms=9)

    assert (event["side"], event["mode"], event["margin_mode"], event["leverage"]) == (
        side,
        mode,
        margin_mode,
        leverage,
    )
    assert (event["size"], event["ts_exchange"]) == ("-3", 9)


def test_private_push_malformed_raises() -> None:
    with pytest.raises(ValueError, match="futures.orders"):
        private_parser().parse(push("futures.orders", [{"contract": "X"}]), 0)
