"""Binance USD-M conditional orders (ALGO_UPDATE) and partial ACCOUNT_UPDATE (issue 10)."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from tests.exchanges._event_keys import ORDER_KEYS
from tests.exchanges.binanceusdm._helpers import fixture_bytes, parser, position, user_parser
from workers.exchanges.base import Parsed

#: The "Event: Algo Order Update" response example, https://developers.binance.com/docs/derivatives/
#: usds-margined-futures/user-data-streams/Event-Algo-Order-Update (comments dropped; X varied by the tests).
ALGO_UPDATE_DOC = {
    "e": "ALGO_UPDATE", "T": 1750515742297, "E": 1750515742303,
    "o": {
        "caid": "Q5xaq5EGKgXXa0fD7fs0Ip", "aid": 2148719, "at": "CONDITIONAL", "o": "TAKE_PROFIT", "s": "BNBUSDT",
        "S": "SELL", "ps": "BOTH", "f": "GTC", "q": "0.01", "X": "CANCELED", "ai": "", "ap": "0.00000",
        "aq": "0.00000", "act": "0", "tp": "750", "p": "750", "V": "EXPIRE_MAKER", "wt": "CONTRACT_PRICE",
        "pm": "NONE", "cp": False, "pP": False, "R": False, "tt": 0, "gtd": 0, "rm": "Reduce Only reject",
    },
}  # fmt: skip
ALGO_ORDER_KEYS = [*ORDER_KEYS, "trigger_price", "trigger_price_type", "actual_order_id", "algo"]


def algo_update(**order: Any) -> bytes:
    return orjson.dumps({**ALGO_UPDATE_DOC, "o": {**ALGO_UPDATE_DOC["o"], **order}})


def test_algo_update_doc_example_is_an_order_event_with_its_trigger() -> None:
    [(topic, event)] = user_parser().parse(algo_update(), 3).events

    assert topic == "binanceusdm:order:main"
    assert event == {
        "type": "order",
        "exchange": "binanceusdm",
        "account": "main",
        "symbol": "BNBUSDT",
        "order_id": "2148719",  # the algo id: its own id space
        "client_order_id": "Q5xaq5EGKgXXa0fD7fs0Ip",
        "side": "sell",
        "order_type": "take_profit",
        "status": "canceled",
        "status_raw": "CANCELED",
        "price": "750",
        "size": "0.01",
        "filled_size": "0.00000",
        "avg_fill_price": "0.00000",
        "reduce_only": False,
        "ts_exchange": 1750515742303,
        "ts_received": 3,
        "snapshot": False,
        "trigger_price": "750",
        "trigger_price_type": "contract_price",
        "actual_order_id": None,
        "algo": True,
    }
    assert list(event) == ALGO_ORDER_KEYS


@pytest.mark.parametrize(
    ("changes", "status", "actual"),
    [
        ({"X": "NEW"}, "new", None),
        ({"X": "TRIGGERING"}, "triggered", None),
        ({"X": "TRIGGERED", "ai": "8886774"}, "triggered", "8886774"),
        ({"X": "FINISHED", "ai": 8886774, "aq": "0.01", "ap": "751.2"}, "filled", "8886774"),
        ({"X": "FINISHED", "ai": "8886774", "aq": "0.004", "ap": "751.2"}, "canceled", "8886774"),
        ({"X": "FINISHED", "ai": "8886774", "aq": "0"}, "canceled", "8886774"),
        ({"X": "FINISHED", "ai": "8886774", "q": "0", "cp": True, "aq": "0.3"}, "filled", "8886774"),  # close-all
        ({"X": "FINISHED", "ai": "8886774", "aq": None, "ap": None}, "triggered", "8886774"),
        ({"X": "REJECTED"}, "rejected", None),
        ({"X": "EXPIRED"}, "expired", None),
        ({"X": "SOMETHING_NEW"}, "new", None),
    ],
)
def test_algo_update_statuses(changes: dict[str, Any], status: str, actual: str | None) -> None:
    order = {k: v for k, v in changes.items() if v is not None}
    frame = orjson.loads(algo_update(**order))
    for k in (k for k, v in changes.items() if v is None):
        del frame["o"][k]
    [(_, event)] = user_parser().parse(orjson.dumps(frame), 3).events

    assert (event["status"], event["status_raw"], event["actual_order_id"]) == (status, changes["X"], actual)


def test_algo_update_trailing_stop_and_mark_price_trigger() -> None:
    raw = algo_update(o="TRAILING_STOP_MARKET", X="NEW", wt="MARK_PRICE", tp="9020", p="0", R=True)

    [(_, event)] = user_parser().parse(raw, 3).events

    assert (event["order_type"], event["trigger_price"], event["trigger_price_type"], event["reduce_only"]) == (
        "trailing_stop_market", "9020", "mark_price", True)  # fmt: skip


@pytest.mark.parametrize(("name", "status"), [("algo_update_new", "new"), ("algo_update_canceled", "canceled")])
def test_algo_update_fixtures(name: str, status: str) -> None:
    [(topic, event)] = user_parser().parse(fixture_bytes(name), 3).events

    assert topic == "binanceusdm:order:main"
    assert (event["order_id"], event["status"], event["trigger_price"], event["algo"]) == ("2148719", status, "750", True)
    assert parser().parse(fixture_bytes(name), 3) == Parsed(unknown=True)  # no account: not ours to publish


def test_malformed_algo_update_raises() -> None:
    with pytest.raises(ValueError, match="ALGO_UPDATE"):
        user_parser().parse('{"e":"ALGO_UPDATE","E":1,"o":{"s":"BTCUSDT"}}', 0)


def test_account_update_with_an_unknown_position_side_keeps_what_parses() -> None:
    """One position with a side outside BOTH/LONG/SHORT (and one without ``pa``, one balance without ``a``) must not
    cost the frame's other positions and balances: they are published, the rest counted and reported."""
    doc = json.loads(fixture_bytes("account_update"))
    good_position, good_balance = doc["a"]["P"][1], doc["a"]["B"][0]
    doc["a"]["P"] = [good_position, {**good_position, "s": "ETHUSDT", "ps": "SIDEWAYS"}, {"s": "XRPUSDT", "ps": "BOTH"}]
    doc["a"]["B"] = [{"wb": "1.0"}, good_balance]
    p = user_parser()

    parsed = p.parse(json.dumps(doc), 3)

    assert parsed.events == [
        ("binanceusdm:position:main", position("BTCUSDT", "long", "hedge", "20", "6563.6", "isolated", "2850.21200")),
        ("binanceusdm:balance:main", {
            "type": "balance", "exchange": "binanceusdm", "account": "main", "asset": "USDT",
            "balance": "122624.12345678", "available": None, "frozen": None, "ts_exchange": 1564745798939,
            "ts_received": 3, "snapshot": False,
        }),
    ]  # fmt: skip
    assert parsed.error is not None and "ACCOUNT_UPDATE" in parsed.error and "'SIDEWAYS'" in parsed.error
    assert "2 of 3 positions" in parsed.error and "1 of 2 balances" in parsed.error
    assert (p.account_positions_skipped, p.account_balances_skipped) == (2, 1)
    assert p.parse(fixture_bytes("account_update"), 4).error is None  # a clean frame reports nothing
    assert (p.account_positions_skipped, p.account_balances_skipped) == (2, 1)


def test_account_update_where_nothing_parses_is_reported_not_fatal() -> None:
    p = user_parser()
    raw = '{"e":"ACCOUNT_UPDATE","E":1,"a":{"m":"ORDER","P":[{"s":"X","pa":"1","ps":"SIDEWAYS"}],"B":[]}}'

    parsed = p.parse(raw, 0)

    assert parsed.events == [] and parsed.error == (
        "binanceusdm ACCOUNT_UPDATE: skipped 1 of 1 positions (X: unknown position side 'SIDEWAYS')")
    assert (p.account_positions_skipped, p.account_balances_skipped) == (1, 0)
