"""BitMart private channels: order/position/asset pushes (exchanges.md §1.7), fixtures, order status mapping."""

from __future__ import annotations

import json
from typing import Any

import pytest

from control.topics import Topic
from scripts.tapes import BITMART_FIXTURES, read_jkorf
from tests.exchanges._event_keys import BALANCE_KEYS, ORDER_KEYS, POSITION_KEYS
from tests.exchanges.bitmart._helpers import ADAPTER, OWN
from workers.exchanges.base import Ack, AdapterError, OutFrame, Parsed
from workers.exchanges.bitmart import BitmartParser
from workers.exchanges.bitmart.private import order_status
from workers.exchanges.bitmart.wire import native_topic

PRIVATE = [Topic.parse(f"bitmart:{channel}:main") for channel in ("order", "position", "balance")]


def private_parser() -> BitmartParser:
    return ADAPTER.new_parser("main")


def fixture_parses(name: str, account: str | None = "main") -> tuple[list[Parsed], list[Parsed]]:
    """(replies, pushes) of a JKorf private conversation through one parser."""
    p = ADAPTER.new_parser(account)
    frames = read_jkorf(f"{BITMART_FIXTURES}/{name}")
    replies = [p.parse(f.raw, 1_000) for f in frames if f.direction == "<"]
    pushes = [p.parse(f.raw, 2_000) for f in frames if f.direction == "="]
    return replies, pushes


def order_push(order: dict[str, Any], action: int = 2) -> str:
    return json.dumps({"group": "futures/order", "data": [{"action": action, "order": order}]})


def order(**kw: Any) -> dict[str, Any]:
    base = {
        "order_id": "1",
        "client_order_id": "",
        "price": "100",
        "size": "10",
        "symbol": "BTCUSDT",
        "state": 2,
        "side": 1,
        "type": "limit",
        "deal_avg_price": "0",
        "deal_size": "0",
        "update_time": 1700000000000,
    }
    return {**base, **kw}


def test_private_topics_route_validate_and_subscribe() -> None:
    assert ADAPTER.private_channels == {"order", "position", "balance"}
    assert [ADAPTER.route(t) for t in PRIVATE] == ["private:main"] * 3
    for topic in PRIVATE:
        ADAPTER.validate(topic)
    with pytest.raises(AdapterError):
        ADAPTER.validate(Topic("bitmart", "order", "bad:name"))
    assert [native_topic(t) for t in PRIVATE] == ["futures/order", "futures/position", "futures/asset:USDT"]

    [frame] = ADAPTER.subscribe_frames(PRIVATE, batch_size=20, first_request_id=1, creds=OWN)
    [unsub] = ADAPTER.unsubscribe_frames(PRIVATE[:1], batch_size=20, first_request_id=1, creds=OWN)

    assert frame == OutFrame(
        '{"action":"subscribe","args":["futures/order","futures/position","futures/asset:USDT"]}',
        ("bitmart:order:main", "bitmart:position:main", "bitmart:balance:main"),
    )
    assert unsub.text == '{"action":"unsubscribe","args":["futures/order"]}'
    assert OWN.api_key not in frame.text  # credentials travel in the login frame only


def test_private_subscribe_round_trip_to_acks() -> None:
    [frame] = ADAPTER.subscribe_frames(PRIVATE, batch_size=20, first_request_id=1)
    p = private_parser()
    acks = [
        p.parse(json.dumps({"action": "subscribe", "group": arg, "success": True}), 0).acks[0]
        for arg in json.loads(frame.text)["args"]
    ]

    assert [a.topic for a in acks] == list(frame.topics)


def test_orders_fixture() -> None:
    replies, pushes = fixture_parses("Orders.txt")

    assert replies == [
        Parsed(acks=[Ack(ok=True, action="login")]),
        Parsed(acks=[Ack(ok=True, action="subscribe", topic="bitmart:order:main")]),
    ]
    assert pushes == [
        Parsed(
            events=[
                (
                    "bitmart:order:main",
                    {
                        "type": "order",
                        "exchange": "bitmart",
                        "account": "main",
                        "symbol": "BTCUSDT",
                        "order_id": "220906179895578",
                        "client_order_id": "BM1234",
                        "side": "buy",
                        "order_type": "limit",
                        "status": "canceled",  # action 3 (cancel) whatever state 2 says
                        "status_raw": "2/3",
                        "price": "1",
                        "size": "1000",
                        "filled_size": "1000",
                        "avg_fill_price": "0",
                        "reduce_only": None,  # the doc example has no position_mode
                        "ts_exchange": 1662368173000,
                        "ts_received": 2_000,
                        "snapshot": False,
                    },
                )
            ]
        )
    ]
    assert list(pushes[0].events[0][1]) == ORDER_KEYS


def test_positions_fixture() -> None:
    replies, pushes = fixture_parses("Positions.txt")

    assert replies[1] == Parsed(acks=[Ack(ok=True, action="subscribe", topic="bitmart:position:main")])
    assert pushes == [
        Parsed(
            events=[
                (
                    "bitmart:position:main",
                    {
                        "type": "position",
                        "exchange": "bitmart",
                        "account": "main",
                        "symbol": "BTCUSDT",
                        "side": "long",
                        "mode": None,
                        "size": "2000",
                        "entry_price": "19406.2092",
                        "mark_price": None,
                        "liquidation_price": "15621.998406",
                        "leverage": None,
                        "margin_mode": "isolated",
                        "unrealized_pnl": None,
                        "ts_exchange": 1662692862255,
                        "ts_received": 2_000,
                        "snapshot": False,
                    },
                )
            ]
        )
    ]
    assert list(pushes[0].events[0][1]) == POSITION_KEYS


def test_balances_fixture() -> None:
    # the fixture subscribes USDT, BTC and ETH: every asset ack and push maps to the one balance topic
    replies, pushes = fixture_parses("Balances.txt")

    assert (
        replies
        == [Parsed(acks=[Ack(ok=True, action="login")])]
        + [Parsed(acks=[Ack(ok=True, action="subscribe", topic="bitmart:balance:main")])] * 3
    )
    assert pushes == [
        Parsed(
            events=[
                (
                    "bitmart:balance:main",
                    {
                        "type": "balance",
                        "exchange": "bitmart",
                        "account": "main",
                        "asset": "BTC",
                        "balance": None,
                        "available": "1000",
                        "frozen": "1000",
                        "ts_exchange": None,
                        "ts_received": 2_000,
                        "snapshot": False,
                    },
                )
            ]
        )
    ]
    assert list(pushes[0].events[0][1]) == BALANCE_KEYS


@pytest.mark.parametrize("name", ["Balances.txt", "Orders.txt", "Positions.txt"])
def test_private_fixtures_without_an_account(name: str) -> None:
    # a parser without an account (a public socket) names no private topic: login acks only
    replies, pushes = fixture_parses(name, account=None)

    assert replies[0] == Parsed(acks=[Ack(ok=True, action="login")])
    assert all(r == Parsed(unknown=True) for r in replies[1:])
    assert pushes == [Parsed(unknown=True)]


def test_failed_private_subscribe_ack() -> None:
    raw = '{"action":"subscribe","group":"futures/order","success":false,"error":"futures/order need authenication"}'

    assert private_parser().parse(raw, 0) == Parsed(
        acks=[Ack(ok=False, topic="bitmart:order:main", error="futures/order need authenication")]
    )


@pytest.mark.parametrize(
    ("state", "action", "size", "deal_size", "status"),
    [
        (1, 2, "10", "0", "new"),  # approval, submitted
        (2, 2, "10", "0", "new"),  # check
        (2, 1, "10", "4", "partially_filled"),  # open with a fill
        (4, 1, "10", "10", "filled"),  # finished, all dealt
        (4, 1, "10.0", "10", "filled"),  # compared as decimals
        (4, 1, "10", "4", "canceled"),  # finished with a remainder (IOC / market)
        (4, 3, "10", "0", "canceled"),  # cancel
        (4, 3, "10", "4", "canceled"),  # partly filled, then cancelled
        (2, 3, "10", "10", "canceled"),  # a cancel push wins over the state (the fixture)
        (4, 4, "10", "0", "canceled"),  # liquidate-cancel
        (4, 5, "10", "0", "canceled"),  # ADL-cancel
        (4, 6, "10", "10", "filled"),  # partial liquidation match
        (4, 9, "10", "10", "filled"),  # active ADL match
        (2, None, "10", "0", "new"),  # REST open order: no action
        (2, None, "10", "3", "partially_filled"),
    ],
)
def test_order_status_mapping(state: int, action: int | None, size: str, deal_size: str, status: str) -> None:
    assert order_status(state, action, size, deal_size) == status


def test_order_status_raw_and_malformed_sizes() -> None:
    [(_, event)] = private_parser().parse(order_push(order(state=4, deal_size="10"), action=1), 0).events

    assert (event["status"], event["status_raw"]) == ("filled", "4/1")
    with pytest.raises(ValueError, match="deal_size"):
        private_parser().parse(order_push(order(deal_size="lots")), 0)
    with pytest.raises(ValueError, match="size"):
        order_status(4, 1, "NaN", "1")
    with pytest.raises(ValueError, match="malformed bitmart futures/order push"):
        private_parser().parse(order_push(order(side=7)), 0)


@pytest.mark.parametrize(
    ("side", "mode", "expected_side", "reduce_only"),
    [
        (1, "hedge_mode", "buy", False),  # buy_open_long
        (2, "hedge_mode", "buy", False),  # buy_close_short
        (3, "hedge_mode", "sell", False),  # sell_close_long
        (4, "hedge_mode", "sell", False),  # sell_open_short
        (1, "one_way_mode", "buy", False),
        (2, "one_way_mode", "buy", True),  # buy, reduce-only
        (3, "one_way_mode", "sell", True),  # sell, reduce-only
        (4, "one_way_mode", "sell", False),
        (3, None, "sell", None),  # mode unknown
    ],
)
def test_order_side_and_reduce_only(side: int, mode: str | None, expected_side: str, reduce_only: bool | None) -> None:
    fields: dict[str, Any] = {"side": side}
    if mode is not None:
        fields["position_mode"] = mode
    [(_, event)] = private_parser().parse(order_push(order(**fields)), 0).events

    assert (event["side"], event["reduce_only"]) == (expected_side, reduce_only)


def test_order_client_id_and_type_pass_through() -> None:
    [(_, blank)] = private_parser().parse(order_push(order(client_order_id="")), 0).events
    [(_, plan)] = private_parser().parse(order_push(order(type="plan_order", client_order_id="abc")), 0).events

    assert blank["client_order_id"] is None
    assert (plan["order_type"], plan["client_order_id"]) == ("plan_order", "abc")


def test_position_push_short_cross_hedge() -> None:
    raw = json.dumps(
        {
            "group": "futures/position",
            "data": [
                {
                    "symbol": "LTCUSDT",
                    "hold_volume": "5",
                    "position_type": 2,
                    "open_type": 2,
                    "open_avg_price": "70.1",
                    "liquidate_price": "90",
                    "update_time": 5,
                    "position_mode": "hedge_mode",
                }
            ],
        }
    )
    [(topic, event)] = private_parser().parse(raw, 9).events

    assert topic == "bitmart:position:main"
    assert (event["side"], event["mode"], event["margin_mode"], event["entry_price"]) == (
        "short",
        "hedge",
        "cross",
        "70.1",  # no hold_avg_price: the open average
    )


def test_private_parser_account_is_validated() -> None:
    with pytest.raises(ValueError):
        ADAPTER.new_parser("bad:account")
