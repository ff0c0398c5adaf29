"""Binance USD-M user data: listenKey, ORDER_TRADE_UPDATE / ACCOUNT_UPDATE events (binance_usdm.md §7-§9)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from control.accounts import Account
from control.topics import Topic
from tests.exchanges._event_keys import BALANCE_KEYS, ORDER_KEYS, POSITION_KEYS
from tests.exchanges.binanceusdm._helpers import (
    ADAPTER,
    CREDS,
    fixture_bytes,
    parser,
    position,
    user_parser,
)
from workers.exchanges.base import AdapterError, Parsed, RestRequest
from workers.exchanges.binanceusdm.private import listen_key_request, order_status, parse_listen_key, private_ws_url

PRIVATE = [Topic.parse(f"binanceusdm:{channel}:main") for channel in ("order", "position", "balance")]


def test_listen_key_requests() -> None:
    for method in ("POST", "PUT", "DELETE", "put"):
        assert listen_key_request(CREDS, method) == RestRequest(
            method.upper(), "/fapi/v1/listenKey", {}, {"X-MBX-APIKEY": "feedplane-test-apikey-0001"}
        )
    with pytest.raises(ValueError, match="POST, PUT or DELETE"):
        listen_key_request(CREDS, "GET")
    with pytest.raises(AdapterError, match="cannot sign binanceusdm"):
        listen_key_request(Account("bitmart", "main", "k", "s"), "POST")


def test_parse_listen_key() -> None:
    key = "pqia91ma19a5s61cv6a81va65sdf19v8a65a1a5s61cv6a81va65sdf19v8a65a1"

    assert parse_listen_key(json.dumps({"listenKey": key}).encode()) == key
    with pytest.raises(ValueError, match="-1125: This listenKey does not exist."):
        parse_listen_key(b'{"code":-1125,"msg":"This listenKey does not exist."}')
    with pytest.raises(ValueError, match="no listenKey"):
        parse_listen_key(b"{}")  # a DELETE reply
    with pytest.raises(ValueError):
        parse_listen_key(b"[]")


def test_private_ws_url_and_routes() -> None:
    assert private_ws_url("wss://fstream.binance.com/", "abc123") == (
        "wss://fstream.binance.com/private/ws?listenKey=abc123"
    )
    assert ADAPTER.private_channels == {"order", "position", "balance"}
    assert [ADAPTER.route(t) for t in PRIVATE] == ["private:main"] * 3
    for t in PRIVATE:
        ADAPTER.validate(t)
    with pytest.raises(AdapterError, match="listenKey"):
        ADAPTER.ws_url("wss://fstream.binance.com", "private:main")
    assert ADAPTER.login_frame(CREDS, 1) is None


def test_private_topics_need_no_frames() -> None:
    public = Topic("binanceusdm", "trade", "BTCUSDT")

    assert ADAPTER.subscribe_frames(PRIVATE, batch_size=10, first_request_id=1, creds=CREDS) == []
    assert ADAPTER.unsubscribe_frames(PRIVATE, batch_size=10, first_request_id=1) == []
    [frame] = ADAPTER.subscribe_frames([*PRIVATE, public], batch_size=10, first_request_id=4)
    assert (frame.text, frame.topics) == ('{"method":"SUBSCRIBE","params":["btcusdt@aggTrade"],"id":4}', (str(public),))


def test_order_trade_update_fixture() -> None:
    [(topic, event)] = user_parser().parse(fixture_bytes("order_update_trade"), 3).events

    assert topic == "binanceusdm:order:main"
    assert event == {
        "type": "order",
        "exchange": "binanceusdm",
        "account": "main",
        "symbol": "BTCUSDT",
        "order_id": "8886774",
        "client_order_id": "TEST",
        "side": "buy",
        "order_type": "limit",
        "status": "partially_filled",
        "status_raw": "PARTIALLY_FILLED",
        "price": "7100.50",
        "size": "0.001",
        "filled_size": "0.001",
        "avg_fill_price": "7100.50",
        "reduce_only": False,
        "ts_exchange": 1568879465651,
        "ts_received": 3,
        "snapshot": False,
    }
    assert list(event) == ORDER_KEYS


@pytest.mark.parametrize(
    ("name", "fields"),
    [
        # (side, order_type, status, status_raw, size, filled, avg, reduce_only, client id, order id)
        ("order_update_new", ("buy", "trailing_stop_market", "new", "NEW", "0.001", "0", "0", False, "TEST", "8886774")),
        ("order_update_trade_partial", ("buy", "limit", "partially_filled", "PARTIALLY_FILLED", "0.002", "0.001",
                                        "7100.50", False, "TEST", "8886774")),
        ("order_update_calculated", ("sell", "limit", "filled", "FILLED", "0.014", "0.014", "9910.12", True,
                                     "autoclose-1234567890", "8886999")),
        ("order_update_calculated_pending", ("sell", "limit", "new", "NEW", "0.014", "0", "0", True,
                                             "autoclose-pending-0000", "8887004")),
        ("order_update_delivery", ("sell", "limit", "filled", "FILLED", "1", "1", "70000.0", True,
                                   "delivery_autoclose-12345", "8887003")),
        ("order_update_settlement", ("sell", "limit", "filled", "FILLED", "0.010", "0.010", "50000.00", True,
                                     "settlement_autoclose-9999", "8887002")),
        # statuses outside the documented set: derived from z vs q
        ("order_update_adl", ("buy", "limit", "filled", "NEW_ADL", "0.005", "0.005", "42000.00", True,
                              "adl_autoclose_12345", "8887001")),
        ("order_update_insurance", ("sell", "limit", "filled", "NEW_INSURANCE", "0.020", "0.020", "45000.00", True,
                                    "autoclose-insurance-5678", "8887003")),
    ],
)  # fmt: skip
def test_order_update_fixtures(name: str, fields: tuple[Any, ...]) -> None:
    [(topic, event)] = user_parser().parse(fixture_bytes(name), 3).events
    keys = ("side", "order_type", "status", "status_raw", "size", "filled_size", "avg_fill_price", "reduce_only",
            "client_order_id", "order_id")  # fmt: skip

    assert topic == "binanceusdm:order:main"
    assert tuple(event[k] for k in keys) == fields
    assert list(event) == ORDER_KEYS


@pytest.mark.parametrize(
    ("status", "size", "filled", "expected"),
    [
        ("NEW", "1", "0", "new"),
        ("PARTIALLY_FILLED", "1", "0.5", "partially_filled"),
        ("FILLED", "1", "1", "filled"),
        ("CANCELED", "1", "0.5", "canceled"),
        ("EXPIRED", "1", "0", "expired"),
        ("EXPIRED_IN_MATCH", "1", "0", "expired"),
        ("REJECTED", "1", "0", "rejected"),
        ("NEW_INSURANCE", "0.020", "0.02", "filled"),
        ("NEW_ADL", "1", "0.4", "partially_filled"),
        ("SOMETHING_NEW", "1", "0", "new"),
    ],
)
def test_order_status_mapping(status: str, size: str, filled: str, expected: str) -> None:
    assert order_status(status, size, filled) == expected


def test_account_update_fixture() -> None:
    parsed = user_parser().parse(fixture_bytes("account_update"), 3)

    assert parsed == Parsed(
        events=[
            ("binanceusdm:position:main", position("BTCUSDT", "both", "one_way", "0", "0.00000", "isolated", "0")),
            (
                "binanceusdm:position:main",
                position("BTCUSDT", "long", "hedge", "20", "6563.6", "isolated", "2850.21200"),
            ),
            (
                "binanceusdm:position:main",
                position("BTCUSDT", "short", "hedge", "-10", "6563.8", "isolated", "-1423.15600"),
            ),
            (
                "binanceusdm:balance:main",
                {
                    "type": "balance",
                    "exchange": "binanceusdm",
                    "account": "main",
                    "asset": "USDT",
                    "balance": "122624.12345678",
                    "available": None,  # cw is the cross wallet balance, not the available one
                    "frozen": None,
                    "ts_exchange": 1564745798939,
                    "ts_received": 3,
                    "snapshot": False,
                },
            ),
        ]
    )
    assert list(parsed.events[0][1]) == POSITION_KEYS
    assert list(parsed.events[3][1]) == BALANCE_KEYS


def test_account_update_bnfcr_fixture() -> None:
    [(topic, event)] = user_parser().parse(fixture_bytes("account_update_bnfcr"), 3).events

    assert topic == "binanceusdm:balance:main"
    assert (event["asset"], event["balance"], event["ts_exchange"]) == ("BNFCR", "5001.28983031", 1781606859764)


def test_trade_lite_is_unknown() -> None:
    assert user_parser().parse(fixture_bytes("trade_lite"), 3) == Parsed(unknown=True)


@pytest.mark.parametrize("name", ["order_update_trade", "account_update"])
def test_user_events_without_an_account_are_unknown(name: str) -> None:
    assert parser().parse(fixture_bytes(name), 3) == Parsed(unknown=True)


@pytest.mark.parametrize(
    "raw",
    [
        '{"e":"listenKeyExpired","E":1576653824250,"listenKey":"abc"}',
        '{"e":"listenKeyExpired","E":"1576653824250","listenKey":"abc"}',  # the older doc example
        '{"stream":"abc","data":{"e":"listenKeyExpired","E":1576653824250,"listenKey":"abc"}}',
    ],
)
def test_listen_key_expired_asks_for_a_reconnect(raw: str) -> None:
    assert user_parser().parse(raw, 1) == Parsed(reconnect="listenKeyExpired")
    assert parser().parse(raw, 1) == Parsed(reconnect="listenKeyExpired")


def test_user_event_in_the_stream_envelope() -> None:
    payload = json.loads(fixture_bytes("order_update_new"))

    [(topic, _)] = user_parser().parse(json.dumps({"stream": "abc", "data": payload}), 3).events

    assert topic == "binanceusdm:order:main"


def test_malformed_user_events_raise() -> None:
    with pytest.raises(ValueError, match="ORDER_TRADE_UPDATE"):
        user_parser().parse('{"e":"ORDER_TRADE_UPDATE","E":1,"o":{"s":"BTCUSDT"}}', 0)
    with pytest.raises(ValueError, match="ACCOUNT_UPDATE"):
        user_parser().parse('{"e":"ACCOUNT_UPDATE","E":1,"A":{}}', 0)  # no "a" object at all
