"""BitMart order book (depthIncrease, exchanges.md §1.6) through the adapter (``workers.exchanges.bitmart.book``)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from control.topics import Topic
from scripts.tapes import BITMART_FIXTURES, read_jkorf
from tests.exchanges.bitmart._helpers import ADAPTER, parser
from workers.exchanges.base import Ack, AdapterError, BookUpdate, Parsed
from workers.exchanges.bitmart.wire import group_to_topic

# --- order book (depthIncrease) ---------------------------------------------------------------------


DEPTH_GROUP = "futures/depthIncrease50:BTCUSDT@100ms"


def depth_push(kind: str, version: Any, bids: Any = (), asks: Any = (), group_symbol: str = "BTCUSDT") -> str:
    data: dict[str, Any] = {"symbol": "BTCUSDT", "ms_t": 1_740_000_000_000 + version if type(version) is int else 0}
    if bids is not None:
        data["bids"] = [{"price": p, "vol": v} for p, v in bids]
    if asks is not None:
        data["asks"] = [{"price": p, "vol": v} for p, v in asks]
    data.update(version=version, type=kind)
    return json.dumps({"group": f"futures/depthIncrease50:{group_symbol}@100ms", "data": data})


def test_depth_increase_snapshot_then_updates() -> None:
    # §1.6: the first push is type "snapshot", then "update"s with version + 1; sizes absolute, "0" deletes,
    # empty sides still advance the version.
    p = parser()
    ack = (
        '{"action":"subscribe","group":"futures/depthIncrease50:BTCUSDT@100ms","success":true,'
        '"request":{"action":"subscribe","args":["futures/depthIncrease50:BTCUSDT@100ms"]}}'
    )
    frames = [
        depth_push("snapshot", 100, bids=[("95000.1", "5"), ("95000.0", "7")], asks=[("95000.2", "3")]),
        depth_push("update", 101, bids=[("95000.1", "0")], asks=[]),
        depth_push("update", 102, bids=None, asks=None),  # no sides at all
        depth_push("update", 103, bids=[], asks=[("95000.3", "9"), ("95000.2", "1")]),
        depth_push("snapshot", 50, bids=[("1", "1")], asks=[("2", "2")]),  # after a "request": a fresh snapshot
    ]

    acks = p.parse(ack, 0).acks
    parsed = [p.parse(raw, 10 + i) for i, raw in enumerate(frames)]

    assert acks == [Ack(ok=True, topic="bitmart:depth:BTCUSDT")]
    assert all(r.events == [] and r.acks == [] and not r.unknown and len(r.book) == 1 for r in parsed)
    book = [r.book[0] for r in parsed]
    assert book[0] == BookUpdate(
        topic="bitmart:depth:BTCUSDT",
        symbol="BTCUSDT",
        bids=[("95000.1", "5"), ("95000.0", "7")],
        asks=[("95000.2", "3")],
        first_id=100,
        last_id=100,
        prev_last_id=None,
        snapshot=True,
        ts_exchange=1_740_000_000_100,
        ts_received=10,
    )
    assert [(u.first_id, u.last_id, u.snapshot) for u in book] == [
        (100, 100, True),
        (101, 101, False),
        (102, 102, False),
        (103, 103, False),
        (50, 50, True),
    ]
    assert [(u.bids, u.asks) for u in book[1:4]] == [
        ([("95000.1", "0")], []),
        ([], []),
        ([], [("95000.3", "9"), ("95000.2", "1")]),
    ]
    assert {u.topic for u in book} == {"bitmart:depth:BTCUSDT"}
    assert all(u.prev_last_id is None and u.ts_received == 10 + i for i, u in enumerate(book))


def test_depth_symbol_comes_from_the_group() -> None:
    [update] = parser().parse(depth_push("update", 7, group_symbol="ETHUSDT"), 0).book

    assert (update.topic, update.symbol) == ("bitmart:depth:ETHUSDT", "ETHUSDT")


def test_depth_version_as_digit_string_is_accepted() -> None:
    [update] = parser().parse(depth_push("update", "12"), 0).book

    assert (update.first_id, update.last_id) == (12, 12)


@pytest.mark.parametrize(
    "raw",
    [
        depth_push("partial", 1),
        depth_push("update", "v1"),
        depth_push("update", 1.5),
        depth_push("update", None),
        json.dumps({"group": DEPTH_GROUP, "data": {"symbol": "BTCUSDT", "bids": [], "asks": [], "type": "update"}}),
        json.dumps({"group": DEPTH_GROUP, "data": {"version": 1, "type": "update", "bids": [{"price": "1"}]}}),
        json.dumps({"group": DEPTH_GROUP, "data": []}),
    ],
)
def test_malformed_depth_push_raises_value_error(raw: str) -> None:
    with pytest.raises(ValueError):
        parser().parse(raw, 0)


def test_other_depth_families_are_not_ours() -> None:
    # depth5 (one side per frame) and depthIncrease20 are not subscribed, so they are unknown (§1.6)
    [frame] = [f for f in read_jkorf(f"{BITMART_FIXTURES}/OrderBook.txt") if f.direction == "="]
    raw = depth_push("snapshot", 1).replace("depthIncrease50", "depthIncrease20")

    assert parser().parse(frame.raw, 0) == Parsed(unknown=True)
    assert parser().parse(raw, 0) == Parsed(unknown=True)
    assert group_to_topic("futures/depth5:ETHUSDT") is None


def test_book_hooks() -> None:
    depth = Topic("bitmart", "depth", "BTCUSDT")

    assert ADAPTER.book_sync.rule == "bitmart"
    assert ADAPTER.snapshot_request("BTCUSDT", 20) is None
    assert ADAPTER.resync_frame(depth) == '{"action":"request","args":["futures/depthIncrease50:BTCUSDT@100ms"]}'
    with pytest.raises(AdapterError):
        ADAPTER.parse_snapshot("BTCUSDT", b"{}", 0)
    with pytest.raises(AdapterError):
        ADAPTER.resync_frame(Topic("bitmart", "trade", "BTCUSDT"))
    with pytest.raises(AdapterError):
        ADAPTER.resync_frame(Topic("binanceusdm", "depth", "BTCUSDT"))


def test_request_reply_is_not_an_ack() -> None:
    # The answer to {"action":"request"} is not a subscription ack (its shape is undocumented)
    raw = '{"action":"request","group":"futures/depthIncrease50:BTCUSDT@100ms","success":true}'

    assert parser().parse(raw, 0) == Parsed(unknown=True)
