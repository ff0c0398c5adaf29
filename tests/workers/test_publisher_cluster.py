"""Split mode on a real 3-master Redis Cluster (``tests/cluster.py``): a batch spanning every master is written
exactly once, a reply lost on one node makes the whole batch resend without writing anything twice, SPUBLISH
reaches a shard subscriber of the topic's node, a slot map gone stale is refreshed, and a master killed while
events flow (``own_cluster.fail_master``) loses nothing silently: lost == announced, no duplicates."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from control import keys
from control.events_redis import make_events_redis, master_tags, slot_tag
from control.redis_client import make_redis
from tests.cluster import LocalCluster
from tests.e2e import redis_roles
from tests.loss import align
from workers.event_nodes import Node
from workers.publisher import Publisher

pytestmark = pytest.mark.integration


def trade(i: int, topic: str) -> dict[str, Any]:
    return {"type": "trade", "exchange": "bitmart", "symbol": topic.split(":")[2], "trade_id": str(i),
            "price": "61800.30", "size": "0.006", "side": "buy", "ts_exchange": 1_700_000_000_000 + i,
            "ts_received": 1_700_000_000_500 + i}  # fmt: skip


async def spread_topics(cluster: RedisCluster, per_node: int) -> dict[str, list[str]]:
    """``node name -> per_node topics`` whose slots that master serves."""
    await cluster.initialize()
    out: dict[str, list[str]] = {n.name: [] for n in cluster.get_primaries()}
    i = 0
    while any(len(v) < per_node for v in out.values()):
        topic = f"bitmart:trade:S{i}USDT"
        name = cluster.get_node_from_key(keys.event_stream(topic)).name
        if len(out[name]) < per_node:
            out[name].append(topic)
        i += 1
    return out


async def stored(cluster: RedisCluster, topic: str) -> list[dict[str, Any]]:
    import orjson

    entries = await cluster.xrange(keys.event_stream(topic))
    return [orjson.loads(f[keys.STREAM_FIELD.encode()]) for _, f in entries]


@contextlib.asynccontextmanager
async def cluster_publisher(control: Redis, url: str, **kw: Any) -> AsyncIterator[Publisher]:
    pub = Publisher(control, stream_maxlen=100_000, events=make_events_redis(url, decode=False), **kw)
    pub.start()
    try:
        yield pub
    finally:
        await pub.close(timeout_s=1.0)


@pytest.fixture
def control(redis_bytes: Redis) -> Redis:
    """The control Redis: the session's test database (flushed), bytes."""
    return redis_bytes


async def test_a_batch_over_every_master_is_written_once_and_spublished(redis_cluster: LocalCluster,
                                                                      control: Redis) -> None:  # fmt: skip
    reader = make_events_redis(redis_cluster.url, decode=False)
    assert isinstance(reader, RedisCluster)
    topics = await spread_topics(reader, 2)
    one = next(iter(topics.values()))[0]
    node = reader.get_node_from_key(keys.event_channel(one))
    sub = Redis(host=node.host, port=node.port)
    shard = sub.pubsub()
    await shard.execute_command("SSUBSCRIBE", keys.event_channel(one))
    assert (await shard.parse_response(timeout=2))[0] == b"ssubscribe"
    flat = [t for ts in topics.values() for t in ts]
    async with cluster_publisher(control, redis_cluster.url, max_batch=1000) as pub:
        for i in range(60):
            pub.publish(flat[i % len(flat)], trade(i, flat[i % len(flat)]))
        assert await pub.flush(10.0)
        stats = pub.stats
    assert stats["batches"] == 1 and stats["events_published"] == 60 and stats["unreplicated"] == 0
    lowest = {n.name: min(s for s, ns in reader.nodes_manager.slots_cache.items() if ns[0].name == n.name)
              for n in reader.get_primaries()}  # fmt: skip
    assert master_tags(reader) == {name: slot_tag(slot) for name, slot in lowest.items()}  # the same keys
    for n, topic in enumerate(flat):
        assert [int(e["trade_id"]) for e in await stored(reader, topic)] == list(range(n, 60, len(flat)))
        assert await reader.get(keys.latest(topic)) is not None
    message = await shard.parse_response(timeout=2)
    assert message[0] == b"smessage" and message[1] == keys.event_channel(one).encode()
    assert set(await control.hkeys(keys.TOPIC_LAST_EVENT)) == {t.encode() for t in flat}
    await shard.aclose()
    await sub.aclose()
    await reader.aclose()


async def test_a_lost_reply_on_one_node_resends_the_batch_and_writes_nothing_twice(
    redis_cluster: LocalCluster, control: Redis
) -> None:
    reader = make_events_redis(redis_cluster.url, decode=False)
    assert isinstance(reader, RedisCluster)
    topics = await spread_topics(reader, 1)
    flat = [t for ts in topics.values() for t in ts]
    victim = next(iter(topics))
    port = int(victim.rsplit(":", 1)[1])
    cutter = redis_roles.ReplyCutter(port)
    await cutter.start()
    try:
        async with cluster_publisher(control, redis_cluster.url) as pub:
            assert pub.split is not None
            for i, topic in enumerate(flat):
                pub.publish(topic, trade(i, topic))
            assert await pub.flush(10.0)  # slot map read, script loaded everywhere
            nodes = pub.split.nodes
            node = nodes.node(victim)
            nodes._nodes[victim] = Node(victim, node.tag, make_redis(f"redis://127.0.0.1:{cutter.port}/0",
                                                                     decode=False, retries=0))  # fmt: skip
            await node.client.aclose()
            cutter.arm(b"EVALSHA")
            for i in range(3, 63):
                pub.publish(flat[i % 3], trade(i, flat[i % 3]))
            assert await pub.flush(10.0)
            stats = pub.stats
        counts = {t: [int(e["trade_id"]) for e in await stored(reader, t)] for t in flat}
        dup = sum(len(v) - len(set(v)) for v in counts.values())
        print(f"\nlost reply on {victim}: cuts {cutter.cuts}, stored {sum(map(len, counts.values()))}/63, dup {dup}, "
              f"node retries {stats['node_retries']}, resends skipped {stats['resends_skipped']}")  # fmt: skip
        assert cutter.cuts == 1 and stats["node_retries"] >= 1
        for n, topic in enumerate(flat):
            assert counts[topic] == list(range(n, 63, 3))
    finally:
        await cutter.stop()
        await reader.aclose()


async def test_a_stale_slot_map_writes_nothing_on_the_wrong_node_and_is_resent(redis_cluster: LocalCluster,
                                                                              control: Redis) -> None:  # fmt: skip
    """The writer believes a topic lives on another master (a slot map gone stale): that node's script refuses
    the whole part (TRYAGAIN) before writing any of it, the map is re-read, the batch resent: each event once."""
    reader = make_events_redis(redis_cluster.url, decode=False)
    assert isinstance(reader, RedisCluster)
    topics = await spread_topics(reader, 2)
    names = list(topics)
    mine, other = topics[names[0]], topics[names[1]]
    async with cluster_publisher(control, redis_cluster.url) as pub:
        assert pub.split is not None
        nodes = pub.split.nodes
        true_node_of = nodes.node_of
        wrong = {mine[0]: names[1]}  # once: mine[0] "moved" to the master of `other`

        def stale(topic: str) -> str:
            return wrong.pop(topic, None) or true_node_of(topic)

        nodes.node_of = stale  # type: ignore[method-assign]
        for i in range(40):  # one batch: other[0], mine[0], other[1] (on the wrong node's group: other[*] too)
            topic = (other[0], mine[0], other[1])[i % 3]
            pub.publish(topic, trade(i, topic))
        assert await pub.flush(10.0)
        stats = pub.stats
    counts = {t: [int(e["trade_id"]) for e in await stored(reader, t)] for t in (other[0], mine[0], other[1])}
    print(f"\nstale slot map: node retries {stats['node_retries']}, stored {sum(map(len, counts.values()))}/40, "
          f"last error {stats['last_error']}")  # fmt: skip
    assert stats["node_retries"] == 1 and "TryAgainError" in str(stats["last_error"])
    for n, topic in enumerate((other[0], mine[0], other[1])):
        assert counts[topic] == list(range(n, 40, 3))
    await reader.aclose()


async def test_a_failover_while_events_flow_loses_nothing_silently(own_cluster: LocalCluster, control: Redis
                                                                   ) -> None:  # fmt: skip
    """A master is SIGKILLed while a real Publisher writes to topics on every master; its replica is promoted.
    Writes counted only after WAIT 1, so every event is in its stream exactly once, or announced by a gap."""
    reader = make_events_redis(own_cluster.url, decode=False)
    assert isinstance(reader, RedisCluster)
    topics = await spread_topics(reader, 2)
    flat = [t for ts in topics.values() for t in ts]
    sent: dict[str, list[int]] = {t: [] for t in flat}
    async with cluster_publisher(control, own_cluster.url, max_batch=200, min_replicas=1) as pub:
        stop = asyncio.Event()

        async def produce() -> None:
            i = 0
            while not stop.is_set():
                for topic in flat:
                    pub.publish(topic, trade(i, topic))
                    sent[topic].append(i)
                i += 1
                await asyncio.sleep(0.002)

        producer = asyncio.create_task(produce())
        await asyncio.sleep(0.5)
        victim = own_cluster.master_of(keys.event_stream(flat[0]))
        started = time.monotonic()
        took = await asyncio.to_thread(own_cluster.fail_master, victim)
        await asyncio.sleep(0.5)
        stop.set()
        await producer
        assert await pub.flush(30.0)
        flushed = time.monotonic() - started
        stats = pub.stats
    await reader.nodes_manager.initialize()
    total = None
    for topic in flat:
        loss = align(sent[topic], await stored(reader, topic))
        total = loss if total is None else total + loss
    assert total is not None
    print(f"\nfailover ({took:.1f} s to promote, all written {flushed:.1f} s after the kill): {total.line()}; "
          f"node retries {stats['node_retries']}, unconfirmed WAITs {stats['unconfirmed']}, unreplicated "
          f"{stats['unreplicated']}, redis errors {stats['redis_errors']}")  # fmt: skip
    assert total.lost == total.announced == 0 and total.duplicates == 0 and total.unknown == 0
    assert total.stored + total.lost == sum(map(len, sent.values()))
    await reader.aclose()


async def test_markers_and_order_events_use_the_events_cluster(redis_cluster: LocalCluster, redis_url: str) -> None:
    """The handover markers (XREVRANGE per topic, topics on every master) and the order executor's alert event
    (XADD + SPUBLISH) and latest-price reads (two GETs, two slots) on a cluster events Redis."""
    from types import SimpleNamespace

    import orjson

    from control.settings import Settings
    from workers.handover import Handovers
    from workers.orders import OrderExecutor

    events = make_events_redis(redis_cluster.url, decode=False)
    assert isinstance(events, RedisCluster)
    text = make_redis(redis_url)
    try:
        topics = [t for ts in (await spread_topics(events, 1)).values() for t in ts]
        for i, topic in enumerate(topics):
            await events.xadd(keys.event_stream(topic), {keys.STREAM_FIELD: orjson.dumps(trade(i, topic))})
        handovers = Handovers(text)
        handovers.events = events
        markers = await handovers.markers(topics)
        assert [m["trade_id"] if m else None for m in markers.values()] == ["0", "1", "2"]
        executor = OrderExecutor(Settings(), redis=text, blocking=text, session=None,  # type: ignore[arg-type]
                                 worker_id="w1", events=events)  # fmt: skip
        await events.set(keys.latest("gateio:trade:BTC_USDT"), orjson.dumps({"price": "61800.5"}))
        assert await executor.last_price("gateio", "BTC_USDT") == "61800.5"
        topic = "gateio:order:main"
        node = events.get_node_from_key(keys.event_channel(topic))
        sub = Redis(host=node.host, port=node.port)
        shard = sub.pubsub()
        await shard.execute_command("SSUBSCRIBE", keys.event_channel(topic))
        await shard.parse_response(timeout=2)
        await executor.alert(SimpleNamespace(exchange="gateio", account="main"), "stop-loss failed", {})  # type: ignore[arg-type]
        message = await shard.parse_response(timeout=2)
        assert message[0] == b"smessage" and b"stop-loss failed" in message[2]
        assert len(await stored(events, topic)) == 1
        await shard.aclose()
        await sub.aclose()
    finally:
        await text.aclose()
        await events.aclose()
