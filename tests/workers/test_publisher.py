"""Publisher against the real Redis test database: order, latest, pub/sub, batching, drops, outages.

Fencing and real Redis restarts are in ``test_publisher_lease.py``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from control import keys
from tests.workers._publisher_world import TOPICS, gap, stream_events, trade, wait_stats
from workers.publisher import Publisher


async def test_events_arrive_in_order_with_latest_and_last_event(raw: Redis) -> None:
    pub = Publisher(raw, stream_maxlen=10_000)
    pub.start()
    sent: dict[str, list[dict[str, Any]]] = {t: [] for t in TOPICS}
    for i in range(300):
        topic = TOPICS[i % 3]
        event = trade(i, topic)
        sent[topic].append(event)
        pub.publish(topic, event)
        if i % 50 == 0:
            await asyncio.sleep(0)  # let the writer take several batches
    assert await pub.flush(5.0)
    for topic in TOPICS:
        assert await stream_events(raw, topic) == sent[topic]
        assert orjson.loads(await raw.get(keys.latest(topic))) == sent[topic][-1]
    last = await raw.hgetall(keys.TOPIC_LAST_EVENT)
    assert {k.decode(): int(v) for k, v in last.items()} == {t: sent[t][-1]["ts_received"] for t in TOPICS}
    assert pub.stats["events_published"] == 300
    assert pub.stats["queue_depth"] == 0
    await pub.close()


async def test_pubsub_receives_events(raw: Redis) -> None:
    ps = raw.pubsub()
    await ps.subscribe(*(keys.event_channel(t) for t in TOPICS))
    for _ in TOPICS:  # subscribe confirmations
        assert (await ps.get_message(timeout=2.0))["type"] == "subscribe"
    pub = Publisher(raw, stream_maxlen=1000)
    pub.start()
    expected = []
    for i in range(30):
        topic = TOPICS[i % 3]
        pub.publish(topic, trade(i, topic))
        expected.append((keys.event_channel(topic), trade(i, topic)))
    got = []
    while len(got) < len(expected):
        msg = await ps.get_message(ignore_subscribe_messages=True, timeout=2.0)
        assert msg is not None, f"only {len(got)} messages"
        got.append((msg["channel"].decode(), orjson.loads(msg["data"])))
    assert got == expected
    await pub.close()
    await ps.aclose()


async def test_batches_many_events_per_script_call(raw: Redis) -> None:
    pub = Publisher(raw, stream_maxlen=10_000)
    pub.start()
    for i in range(5000):
        pub.publish(TOPICS[i % 3], trade(i, TOPICS[i % 3]))
    assert await pub.flush(10.0)
    stats = pub.stats
    assert stats["events_published"] == 5000
    assert stats["batches"] < 100
    assert 1 < stats["max_batch_seen"] <= 2000
    assert sum([await raw.xlen(keys.event_stream(t)) for t in TOPICS]) == 5000
    await pub.close()


async def test_set_state_is_coalesced_and_written(raw: Redis) -> None:
    pub = Publisher(raw, stream_maxlen=1000)
    pub.start()
    pub.set_state(TOPICS[0], {"state": "pending", "error": None, "since": 1, "conn": "c1"})
    pub.set_state(TOPICS[0], {"state": "active", "error": None, "since": 2, "conn": "c1"})
    pub.set_state(TOPICS[1], {"state": "failed", "error": "Invalid channel: not found x", "since": 3, "conn": "c1"})
    assert await pub.flush(5.0)
    states = {k.decode(): orjson.loads(v) for k, v in (await raw.hgetall(keys.SUB_STATE)).items()}
    assert states == {
        TOPICS[0]: {"state": "active", "error": None, "since": 2, "conn": "c1"},
        TOPICS[1]: {"state": "failed", "error": "Invalid channel: not found x", "since": 3, "conn": "c1"},
    }
    await pub.close()


async def test_bounded_queue_drops_oldest_and_announces_the_gap_first(raw: Redis) -> None:
    pub = Publisher(raw, stream_maxlen=1000, max_queue=10)
    for i in range(25):
        pub.publish(TOPICS[0], trade(i, TOPICS[0]))
    stats = pub.stats
    assert stats["queue_depth"] == 10 and stats["dropped"] == 15
    assert stats["dropped_by_topic"] == {TOPICS[0]: 15}
    assert not await pub.flush(0.05)  # writer not started
    pub.start()
    assert await pub.flush(5.0)
    events = await stream_events(raw, TOPICS[0])
    assert events[0] == gap(TOPICS[0], 0, 14, 15)
    assert [e["trade_id"] for e in events[1:]] == [str(i) for i in range(15, 25)]
    assert pub.stats["gaps_published"] == 1 and pub.stats["events_published"] == 11
    await pub.close()


async def test_gap_per_topic_with_exact_counts_and_bounds(raw: Redis) -> None:
    pub = Publisher(raw, stream_maxlen=1000, max_queue=6)
    for i in range(20):  # T0 gets the even numbers, T1 the odd ones; 0..13 are dropped
        pub.publish(TOPICS[i % 2], trade(i, TOPICS[i % 2]))
    assert pub.stats["dropped_by_topic"] == {TOPICS[0]: 7, TOPICS[1]: 7}
    pub.start()
    assert await pub.flush(5.0)
    t0, t1 = await stream_events(raw, TOPICS[0]), await stream_events(raw, TOPICS[1])
    assert t0 == [gap(TOPICS[0], 0, 12, 7), *(trade(i, TOPICS[0]) for i in (14, 16, 18))]
    assert t1 == [gap(TOPICS[1], 1, 13, 7), *(trade(i, TOPICS[1]) for i in (15, 17, 19))]
    # The latest-event time reflects real events only.
    last = await raw.hget(keys.TOPIC_LAST_EVENT, TOPICS[0])
    assert int(last) == trade(18, TOPICS[0])["ts_received"]
    await pub.close()


async def test_backpressure_when_the_writer_falls_behind(raw: Redis) -> None:
    pub = Publisher(raw, stream_maxlen=1000, max_batch=10, high_water=40)
    for i in range(39):
        pub.publish(TOPICS[0], trade(i, TOPICS[0]))
    assert not pub.congested
    pub.publish(TOPICS[0], trade(39, TOPICS[0]))
    assert pub.congested  # a reader would now await room()
    room = asyncio.ensure_future(pub.room())
    await asyncio.sleep(0)
    assert not room.done()
    pub.start()
    await asyncio.wait_for(room, 5.0)  # released once the writer drained below high_water // 2
    assert pub.stats["queue_depth"] <= 20 and pub.stats["dropped"] == 0
    assert await pub.flush(5.0)
    await pub.close()


class FlakyRedis:
    """Wraps a real client; the first ``failures`` batch writes (script calls) raise ConnectionError."""

    def __init__(self, real: Redis, failures: int) -> None:
        self.real = real
        self.failures = failures
        self.executions = 0

    def register_script(self, source: str) -> Any:
        script = self.real.register_script(source)

        async def call(keys: Any = None, args: Any = None) -> Any:
            self.executions += 1
            if self.failures > 0:
                self.failures -= 1
                raise RedisConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
            return await script(keys=keys, args=args)

        return call


async def test_redis_outage_retries_the_batch_in_order(raw: Redis) -> None:
    flaky = FlakyRedis(raw, failures=2)
    pub = Publisher(flaky, stream_maxlen=1000)  # type: ignore[arg-type]
    pub.start()
    for i in range(20):
        pub.publish(TOPICS[0], trade(i, TOPICS[0]))
    await asyncio.sleep(0)  # the writer takes the first batch and fails on it
    for i in range(20, 40):  # queued during the outage
        pub.publish(TOPICS[0], trade(i, TOPICS[0]))
    assert await pub.flush(5.0)
    assert [e["trade_id"] for e in await stream_events(raw, TOPICS[0])] == [str(i) for i in range(40)]
    stats = pub.stats
    assert stats["redis_errors"] == 2
    assert "Connection refused" in stats["last_error"]
    assert stats["events_published"] == 40
    assert flaky.executions >= 3
    await pub.close()


async def test_command_error_is_counted_not_retried(raw: Redis) -> None:
    await raw.set(keys.event_stream(TOPICS[1]), b"not a stream")  # XADD -> WRONGTYPE
    pub = Publisher(raw, stream_maxlen=1000)
    pub.start()
    pub.publish(TOPICS[1], trade(1, TOPICS[1]))
    pub.publish(TOPICS[0], trade(2, TOPICS[0]))
    await wait_stats(pub, lambda s: s["redis_errors"] >= 1)
    assert not await pub.flush(0.2)  # the loss is not announced yet: its gap event cannot be written either
    assert "WRONGTYPE" in pub.stats["last_error"]
    assert (pub.stats["dropped_by_reason"], pub.stats["gaps_pending"]) == ({"redis_error": 1}, 1)
    assert [e["trade_id"] for e in await stream_events(raw, TOPICS[0])] == ["2"]
    await raw.delete(keys.event_stream(TOPICS[1]))
    assert await pub.flush(10.0)
    assert await stream_events(raw, TOPICS[1]) == [{**gap(TOPICS[1], 1, 1, 1), "reason": "redis_error"}]
    await pub.close()


async def test_unserializable_event_is_dropped_and_announced(raw: Redis) -> None:
    pub = Publisher(raw, stream_maxlen=1000)
    pub.start()
    pub.publish(TOPICS[0], {"bad": object(), "ts_received": 7})
    pub.publish(TOPICS[0], trade(1, TOPICS[0]))
    assert await pub.flush(5.0)
    assert pub.stats["dropped"] == 1 and "unserializable" in pub.stats["last_error"]
    assert await stream_events(raw, TOPICS[0]) == [
        {"type": "gap", "topic": TOPICS[0], "reason": "unserializable", "since": 7, "until": 7, "dropped": 1},
        trade(1, TOPICS[0]),
    ]
    await pub.close()


async def test_close_with_redis_down_gives_up_after_the_timeout(raw: Redis) -> None:
    flaky = FlakyRedis(raw, failures=10_000)
    pub = Publisher(flaky, stream_maxlen=1000)  # type: ignore[arg-type]
    pub.start()
    pub.publish(TOPICS[0], trade(1, TOPICS[0]))
    t0 = time.perf_counter()
    await pub.close(timeout_s=0.3)
    assert time.perf_counter() - t0 < 1.0
    assert pub.stats["events_published"] == 0 and pub.stats["redis_errors"] >= 1


async def test_close_flushes_and_is_idempotent(raw: Redis) -> None:
    pub = Publisher(raw, stream_maxlen=1000)
    pub.start()
    for i in range(10):
        pub.publish(TOPICS[2], trade(i, TOPICS[2]))
    await pub.close()
    await pub.close()
    assert await raw.xlen(keys.event_stream(TOPICS[2])) == 10


async def test_throughput_100k(raw: Redis) -> None:
    """100k events into real Redis; the figure is printed (run with -s) and kept in the report."""
    topics = [f"binanceusdm:trade:SYM{i}USDT" for i in range(10)]
    events = [trade(i, topics[i % 10]) for i in range(100_000)]
    pub = Publisher(raw, stream_maxlen=100_000)
    pub.start()
    t0 = time.perf_counter()
    for i, event in enumerate(events):
        pub.publish(topics[i % 10], event)
        if i % 1000 == 999:
            await asyncio.sleep(0)  # a feed yields between frames; lets the writer overlap
    assert await pub.flush(60.0)
    elapsed = time.perf_counter() - t0
    rate = 100_000 / elapsed
    print(f"\npublisher: 100000 events in {elapsed:.2f} s = {rate:,.0f} events/s, stats={pub.stats}")
    assert pub.stats["events_published"] == 100_000
    assert rate > 5_000
    await pub.close()


# -- backlog during an outage ---------------------------------------------------------------------------


async def test_backlog_is_reported_while_redis_is_away(raw: Redis) -> None:
    flaky = FlakyRedis(raw, failures=10_000)
    pub = Publisher(flaky, stream_maxlen=1000)  # type: ignore[arg-type]
    pub.start()
    for i in range(20):
        pub.publish(TOPICS[0], trade(i, TOPICS[0]))
    await wait_stats(pub, lambda s: s["redis_errors"] >= 1)  # the writer holds the first batch, failing
    for i in range(20, 25):
        pub.publish(TOPICS[0], trade(i, TOPICS[0]))
    before = pub.stats
    assert before["inflight"] == 20 and before["queue_depth"] == 5
    await wait_stats(pub, lambda s: s["oldest_queued_age_ms"] >= 50)  # ages while nothing is written
    flaky.failures = 0  # Redis is back
    assert await pub.flush(5.0)
    after = pub.stats
    assert (after["inflight"], after["queue_depth"], after["oldest_queued_age_ms"]) == (0, 0, 0)
    assert [e["trade_id"] for e in await stream_events(raw, TOPICS[0])] == [str(i) for i in range(25)]
    await pub.close()
