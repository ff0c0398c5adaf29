"""Shared pieces of the connection tests: timers, topics, the recording publisher and frame helpers.

Conditions are awaited event-driven: ``sim.wait_for`` (re-checked on every frame in or out and every
open/close) or ``RecordingPublisher.wait_for`` (re-checked on every publish/set_state call).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from redis.asyncio import Redis

from control import keys
from control.topics import Topic
from scripts.simulator import ExchangeSimulator, SimConnection
from workers.exchanges import get_adapter
from workers.publisher import Publisher

FAST = {
    "SUBSCRIBE_DELAY_MS": "50",
    "PING_INTERVAL_S": "0.2",
    "PONG_TIMEOUT_S": "0.3",
    "RECONNECT_DELAY_S": "0.05",
    "RECONNECT_MAX_DELAY_S": "0.5",
    "STALL_TIMEOUT_S": "0.5",
}
BM_TRADE = Topic.parse("bitmart:trade:BTCUSDT")
BM_KLINE = Topic.parse("bitmart:kline:BTCUSDT:1m")
BN_TRADE = Topic.parse("binanceusdm:trade:BTCUSDT")


class RecordingPublisher(Publisher):
    """The real Publisher, also counting calls so tests can await conditions on them."""

    def __init__(self, redis: Redis, **kw: Any) -> None:
        super().__init__(redis, **kw)
        self.counts: Counter[str] = Counter()
        self.states: dict[str, dict[str, Any]] = {}
        self._poke = asyncio.Event()

    def publish(self, topic: str, event: dict[str, Any], conn_id: str | None = None) -> None:
        super().publish(topic, event, conn_id)
        self.counts[topic] += 1
        self._poke.set()

    def set_state(self, topic: str, record: dict[str, Any], conn_id: str | None = None) -> None:
        super().set_state(topic, record, conn_id)
        self.states[topic] = record
        self._poke.set()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self._poke.clear()
                await self._poke.wait()


def bitmart_url(sim: ExchangeSimulator) -> str:
    return get_adapter("bitmart").ws_url(sim.bitmart_public_url, "public")


def binance_url(sim: ExchangeSimulator, route: str) -> str:
    return get_adapter("binanceusdm").ws_url(sim.binance_base_url, route)


def client_frames(sim_conn: SimConnection, action: str) -> list[tuple[float, dict[str, Any]]]:
    out = []
    for t, text in sim_conn.received:
        msg = orjson.loads(text)
        if msg.get("action") == action or msg.get("method") == action.upper():
            out.append((t, msg))
    return out


def all_active(pub: RecordingPublisher, topics: Iterable[Topic]) -> Callable[[], bool]:
    return lambda: all(pub.states.get(str(t), {}).get("state") == "active" for t in topics)


async def stream_events(raw: Redis, topic: Topic) -> list[dict[str, Any]]:
    entries = await raw.xrange(keys.event_stream(str(topic)))
    return [orjson.loads(f[keys.STREAM_FIELD.encode()]) for _, f in entries]
