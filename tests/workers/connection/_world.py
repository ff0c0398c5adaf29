"""Shared pieces of the connection tests: timers, topics, the recording publisher and frame helpers.

Conditions are awaited event-driven: ``sim.wait_for`` (re-checked on every frame in or out and every
open/close) or ``RecordingPublisher.wait_for`` (re-checked on every publish/set_state call).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import orjson
from redis.asyncio import Redis

from control import keys
from control.topics import Topic
from scripts.simulator import ExchangeSimulator, SimConnection
from tests.workers._recording import RecordingPublisher
from workers.exchanges import get_adapter

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
