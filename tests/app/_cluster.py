"""Helpers of the tests that read events from a Redis Cluster: topics spread over the masters, and a writer that
does what the workers' publisher does on a cluster (XADD to ``fp:stream:{T}``, then SPUBLISH on ``fp:pub:{T}``)."""

from __future__ import annotations

from collections.abc import Iterable

import orjson
from redis.asyncio.cluster import RedisCluster

from control import keys
from control.events_redis import make_events_redis

BASE_MS = 1_732_300_000_000


async def cluster_client(url: str) -> RedisCluster:
    """An initialized bytes cluster client of ``url``."""
    client = make_events_redis(url, decode=False)
    assert isinstance(client, RedisCluster)
    await client.initialize()
    return client


def topics_per_master(client: RedisCluster, per_master: int = 1, kind: str = "trade") -> list[str]:
    """``per_master`` public topics (``bitmart:trade:CL<i>USDT``) on each master, in master order."""
    out: dict[str, list[str]] = {n.name: [] for n in client.get_primaries()}
    i = 0
    while any(len(v) < per_master for v in out.values()):
        topic = f"bitmart:{kind}:CL{i}USDT" + (":1m" if kind == "kline" else "")
        name = client.get_node_from_key(keys.event_stream(topic)).name
        if len(out[name]) < per_master:
            out[name].append(topic)
        i += 1
    return [t for topics in out.values() for t in topics]


def trade(topic: str, n: int) -> bytes:
    """Trade event JSON number ``n`` of ``topic`` (``trade_id`` = n)."""
    symbol = topic.split(":")[2]
    return orjson.dumps({"type": "trade", "exchange": "bitmart", "symbol": symbol, "trade_id": str(n),
                         "price": f"{100 + n}.25", "size": "0.001", "side": "buy"})  # fmt: skip


async def publish(client: RedisCluster, items: Iterable[tuple[str, int]], ids: bool = False) -> list[tuple[str, str]]:
    """XADD each ``(topic, n)`` (``trade(topic, n)``; id ``BASE_MS+n-0`` when ``ids``, else ``*``), then SPUBLISH
    it on the topic's shard channel, as the publisher does; returns ``[(topic, stream id)]``."""
    out = []
    for topic, n in items:
        data = trade(topic, n)
        sid = await client.xadd(
            keys.event_stream(topic), {keys.STREAM_FIELD: data}, id=f"{BASE_MS + n}-0" if ids else "*"
        )
        channel = keys.event_channel(topic)
        await client.execute_command("SPUBLISH", channel, data, target_nodes=client.get_node_from_key(channel))
        out.append((topic, sid.decode()))
    return out
