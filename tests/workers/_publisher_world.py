"""Shared pieces of the publisher tests: topics, event builders and waits (the ``raw`` fixture: conftest)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
from redis.asyncio import Redis

from control import keys
from workers.publisher import GAP_REASON_OVERFLOW, Publisher

TOPICS = ("bitmart:trade:BTCUSDT", "bitmart:kline:ETHUSDT:1m", "binanceusdm:trade:BTCUSDT")


def trade(i: int, topic: str) -> dict[str, Any]:
    return {
        "type": "trade",
        "exchange": topic.split(":")[0],
        "symbol": topic.split(":")[2],
        "trade_id": str(i),
        "price": "61800.30",
        "size": "0.006",
        "side": "buy",
        "ts_exchange": 1_700_000_000_000 + i,
        "ts_received": 1_700_000_000_500 + i,
    }


async def stream_events(client: Redis, topic: str) -> list[dict[str, Any]]:
    entries = await client.xrange(keys.event_stream(topic))
    return [orjson.loads(fields[keys.STREAM_FIELD.encode()]) for _, fields in entries]


def gap(topic: str, first: int, last: int, dropped: int) -> dict[str, Any]:
    """The overflow gap event for dropped trades ``first..last`` (by ``trade(i)`` number)."""
    return {"type": "gap", "topic": topic, "reason": GAP_REASON_OVERFLOW, "since": trade(first, topic)["ts_received"],
            "until": trade(last, topic)["ts_received"], "dropped": dropped}  # fmt: skip


async def wait_stats(pub: Publisher, check: Callable[[dict[str, Any]], bool], timeout_s: float = 5.0) -> None:
    """Bounded wait for the writer task's progress (it reports through ``stats`` only)."""
    async with asyncio.timeout(timeout_s):
        while not check(pub.stats):
            await asyncio.sleep(0.01)


# -- fencing --------------------------------------------------------------------------------------------
