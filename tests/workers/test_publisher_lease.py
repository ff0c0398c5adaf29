"""Publisher fencing (writes only while this worker holds the lease) and recovery after a real Redis restart.

Tests that restart Redis use a private ``redis-server`` on a free port (``tests.e2e.harness.RedisServer``):
the machine's shared Redis is never stopped.
"""

from __future__ import annotations

import asyncio

import orjson
from redis.asyncio import Redis

from control import keys
from tests.e2e.harness import RedisServer
from tests.workers._publisher_world import TOPICS, gap, stream_events, trade, wait_stats
from workers.leases import Leases
from workers.publisher import Publisher


async def test_fencing_writes_only_while_this_worker_holds_the_lease(raw: Redis, redis: Redis) -> None:
    leases = Leases(redis)
    assert await leases.acquire("c1", "w-a", 60_000)
    a = Publisher(raw, stream_maxlen=1000, worker_id="w-a")
    b = Publisher(raw, stream_maxlen=1000, worker_id="w-b")
    a.start()
    b.start()
    a.publish(TOPICS[0], trade(0, TOPICS[0]), "c1")
    b.publish(TOPICS[0], trade(1, TOPICS[0]), "c1")  # b does not hold c1: skipped
    b.publish(TOPICS[1], trade(2, TOPICS[1]))  # no connection: never fenced
    b.publish(TOPICS[2], trade(3, TOPICS[2]), "c2")  # a free lease is not b's either
    assert await a.flush(5.0) and await b.flush(5.0)
    assert [e["trade_id"] for e in await stream_events(raw, TOPICS[0])] == ["0"]
    assert [e["trade_id"] for e in await stream_events(raw, TOPICS[1])] == ["2"]
    assert await stream_events(raw, TOPICS[2]) == []
    assert (a.stats["fenced"], b.stats["fenced"]) == (0, 2)
    assert b.stats["events_published"] == 1
    # the metrics count what Redis took, fenced events left out (workers.metrics)
    assert (dict(a.ingest.by_topic), dict(b.ingest.by_topic)) == ({TOPICS[0]: 1}, {TOPICS[1]: 1})
    assert (a.ingest.count, b.ingest.count) == (1, 1)

    # Takeover: a's lease is gone and b holds c1 now. From here only b writes, states included.
    await redis.delete(keys.lease("c1"))
    assert await leases.acquire("c1", "w-b", 60_000)
    a.publish(TOPICS[0], trade(4, TOPICS[0]), "c1")
    a.set_state(TOPICS[0], {"state": "failed", "error": "stale", "since": 1, "conn": "c1"}, "c1")
    b.publish(TOPICS[0], trade(5, TOPICS[0]), "c1")
    b.set_state(TOPICS[0], {"state": "active", "error": None, "since": 2, "conn": "c1"}, "c1")
    assert await a.flush(5.0) and await b.flush(5.0)
    assert [e["trade_id"] for e in await stream_events(raw, TOPICS[0])] == ["0", "5"]
    assert orjson.loads(await raw.get(keys.latest(TOPICS[0])))["trade_id"] == "5"
    assert int(await raw.hget(keys.TOPIC_LAST_EVENT, TOPICS[0])) == trade(5, TOPICS[0])["ts_received"]
    assert orjson.loads(await raw.hget(keys.SUB_STATE, TOPICS[0]))["state"] == "active"
    assert a.stats["fenced"] == 1
    assert (a.ingest.by_topic[TOPICS[0]], b.ingest.by_topic[TOPICS[0]]) == (1, 1)
    await a.close()
    await b.close()


async def test_a_fenced_worker_never_writes_after_the_takeover(raw: Redis, redis: Redis) -> None:
    """Two workers publish for one connection while the lease moves from one to the other mid-stream."""
    leases = Leases(redis)
    assert await leases.acquire("c1", "w-a", 60_000)
    a = Publisher(raw, stream_maxlen=100_000, worker_id="w-a", max_batch=7)
    b = Publisher(raw, stream_maxlen=100_000, worker_id="w-b", max_batch=7)
    a.start()
    b.start()

    async def produce(pub: Publisher, name: str) -> None:
        for i in range(600):
            pub.publish(TOPICS[0], {**trade(i, TOPICS[0]), "trade_id": f"{name}{i}"}, "c1")
            if i % 5 == 0:
                await asyncio.sleep(0)

    producers = [asyncio.create_task(produce(a, "a")), asyncio.create_task(produce(b, "b"))]
    await wait_stats(a, lambda s: s["events_published"] >= 100)
    await redis.delete(keys.lease("c1"))  # a's lease expires...
    assert await leases.acquire("c1", "w-b", 60_000)  # ...and b takes the connection over
    await asyncio.gather(*producers)
    assert await a.flush(10.0) and await b.flush(10.0)
    owners = [e["trade_id"][0] for e in await stream_events(raw, TOPICS[0])]
    first_b = owners.index("b")
    assert set(owners[:first_b]) == {"a"} and set(owners[first_b:]) == {"b"}, "a wrote after the takeover"
    assert a.stats["fenced"] + a.stats["events_published"] == 600
    assert b.stats["fenced"] + b.stats["events_published"] == 600
    await a.close()
    await b.close()


async def test_without_a_worker_id_connection_ids_are_ignored(raw: Redis) -> None:
    pub = Publisher(raw, stream_maxlen=1000)
    pub.start()
    pub.publish(TOPICS[0], trade(0, TOPICS[0]), "nobody-holds-this")
    assert await pub.flush(5.0)
    assert [e["trade_id"] for e in await stream_events(raw, TOPICS[0])] == ["0"]
    assert pub.stats["fenced"] == 0
    await pub.close()


# -- a real Redis restart (a private redis-server) --------------------------------------------------------


async def test_recovers_after_a_real_redis_restart_in_order(own_redis: RedisServer, own_client: Redis) -> None:
    pub = Publisher(own_client, stream_maxlen=10_000)
    pub.start()
    pub.publish(TOPICS[0], trade(0, TOPICS[0]))
    assert await pub.flush(5.0)  # connected, script loaded
    await own_redis.astop()
    for i in range(1, 501):
        pub.publish(TOPICS[0], trade(i, TOPICS[0]))
        if i % 50 == 0:
            await asyncio.sleep(0)  # the writer keeps failing on its batch meanwhile
    await wait_stats(pub, lambda s: s["redis_errors"] >= 1)
    assert not await pub.flush(0.2)
    await own_redis.astart()  # same port, empty (no persistence): event 0 went with the old data set
    assert await pub.flush(15.0)
    assert [e["trade_id"] for e in await stream_events(own_client, TOPICS[0])] == [str(i) for i in range(1, 501)]
    stats = pub.stats
    assert stats["events_published"] == 501 and stats["dropped"] == 0 and stats["queue_depth"] == 0
    await pub.close()


async def test_overflow_during_a_real_outage_announces_the_exact_drop(
    own_redis: RedisServer, own_client: Redis
) -> None:
    pub = Publisher(own_client, stream_maxlen=10_000, max_queue=100, max_batch=50)
    pub.start()
    await own_redis.astop()
    for i in range(50):
        pub.publish(TOPICS[0], trade(i, TOPICS[0]))
    await wait_stats(pub, lambda s: s["inflight"] == 50 and s["redis_errors"] >= 1)  # 0..49 held in flight
    for i in range(50, 550):  # 500 more into a queue of 100: 50..449 are dropped
        pub.publish(TOPICS[0], trade(i, TOPICS[0]))
        pub.publish(TOPICS[1], trade(i, TOPICS[1]))  # interleaved second topic: its own count
    stats = pub.stats
    assert stats["queue_depth"] == 100 and stats["dropped"] == 900
    assert stats["dropped_by_topic"] == {TOPICS[0]: 450, TOPICS[1]: 450}
    await own_redis.astart()
    assert await pub.flush(15.0)
    t0 = await stream_events(own_client, TOPICS[0])
    assert [e["trade_id"] for e in t0[:50]] == [str(i) for i in range(50)]  # in flight: written first
    assert t0[50] == gap(TOPICS[0], 50, 499, 450)
    assert [e["trade_id"] for e in t0[51:]] == [str(i) for i in range(500, 550)]
    t1 = await stream_events(own_client, TOPICS[1])
    assert t1[0] == gap(TOPICS[1], 50, 499, 450)
    assert [e["trade_id"] for e in t1[1:]] == [str(i) for i in range(500, 550)]
    assert pub.stats["gaps_published"] == 2
    await pub.close()
