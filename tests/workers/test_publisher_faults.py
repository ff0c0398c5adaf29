"""Publisher under Redis faults that are not a lost connection, each caused by a real ``redis-server`` condition.

Redis refusing writes for a while (a demoted master answering READONLY, a stale replica answering MASTERDOWN, a
restart answering LOADING) must be ridden out like an outage: the batch is resent, nothing lost, nothing twice.
Deterministic errors (a stream key of the wrong type, a user without the right to run scripts) lose events, and
every lost event must be announced by a ``gap`` event on its topic with its exact count and time range, overflow
gaps included. Each test counts, over the trade ids it sent: lost unannounced, announced, duplicated.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from redis.asyncio import Redis

from control import keys
from control.redis_client import make_redis
from tests.e2e import redis_roles
from tests.e2e.harness import RedisServer
from tests.workers._publisher_world import TOPICS, stream_events, trade, wait_stats
from workers.publisher import GAP_REASON_ERROR, GAP_REASON_OVERFLOW, Publisher


@dataclass
class Count:
    """What a topic's stream holds, against the trade numbers sent to it."""

    lost: int  # sent, not stored, not covered by a gap's ``dropped``
    announced: int  # sum of the gaps' ``dropped``
    duplicated: int  # stored more than once


def count(sent: list[int], events: list[dict[str, Any]]) -> Count:
    stored = [int(e["trade_id"]) for e in events if e["type"] == "trade"]
    announced = sum(e["dropped"] for e in events if e["type"] == "gap")
    missing = len(set(sent) - set(stored))
    return Count(lost=missing - announced, announced=announced, duplicated=len(stored) - len(set(stored)))


def gap(topic: str, reason: str, first: int, last: int, dropped: int) -> dict[str, Any]:
    return {"type": "gap", "topic": topic, "reason": reason, "since": trade(first, topic)["ts_received"],
            "until": trade(last, topic)["ts_received"], "dropped": dropped}  # fmt: skip


class Producer:
    """Publishes trades of one topic at about 1 per ms (a feed) until stopped; ``sent`` holds their numbers."""

    def __init__(self, pub: Publisher, topic: str) -> None:
        self.pub = pub
        self.topic = topic
        self.sent: list[int] = []
        self._stop = False
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        i = 0
        while not self._stop:
            self.pub.publish(self.topic, trade(i, self.topic))
            self.sent.append(i)
            i += 1
            await asyncio.sleep(0.001)

    async def more(self, n: int, timeout_s: float = 20.0) -> None:
        """Return once ``n`` more events were published (the fault lasts while events flow)."""
        target = len(self.sent) + n
        async with asyncio.timeout(timeout_s):
            while len(self.sent) < target:
                await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self._stop = True
        await self._task


@contextlib.asynccontextmanager
async def running(client: Redis) -> AsyncIterator[Publisher]:
    """A started publisher, closed afterwards whatever happened (its writer must not outlive the test's loop)."""
    pub = Publisher(client, stream_maxlen=100_000, max_batch=50)
    pub.start()
    try:
        yield pub
    finally:
        await pub.close(timeout_s=1.0)


# -- Redis refusing writes for a while: retried like an outage ----------------------------------------------


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[redis_roles.ReplicaPair]:
    with redis_roles.replica_pair(tmp_path) as servers:
        yield servers


async def test_demoted_master_readonly_is_retried_not_dropped(pair: redis_roles.ReplicaPair) -> None:
    """The master is demoted (REPLICAOF) while trades flow, then promoted back: 0 lost, 0 duplicated."""
    client = make_redis(pair.master.url(), decode=False)
    try:
        async with running(client) as pub:
            feed = Producer(pub, TOPICS[0])
            try:
                await wait_stats(pub, lambda s: s["events_published"] >= 100)
                await asyncio.to_thread(pair.demote)
                await feed.more(500)  # about half a second of trades against a replica
                demoted = pub.stats
                await asyncio.to_thread(pair.promote_back)
                await feed.more(200)
            finally:
                await feed.stop()
            assert await pub.flush(15.0)
            result = count(feed.sent, await stream_events(client, TOPICS[0]))
            print(f"\nreadonly demotion: sent {len(feed.sent)}, {result}, while demoted {demoted}")
            assert "read only replica" in (demoted["last_error"] or ""), demoted
            assert result == Count(lost=0, announced=0, duplicated=0)
            assert pub.stats["dropped"] == 0
    finally:
        await client.aclose()


async def test_stale_replica_masterdown_is_retried_not_dropped(own_redis: RedisServer, own_client: Redis) -> None:
    """The server becomes a replica that lost its master and refuses stale data (MASTERDOWN), then a master again."""
    async with running(own_client) as pub:
        feed = Producer(pub, TOPICS[0])
        try:
            await wait_stats(pub, lambda s: s["events_published"] >= 100)
            await asyncio.to_thread(redis_roles.stale_replica, own_redis)
            await feed.more(300)
            stale = pub.stats
            await asyncio.to_thread(redis_roles.promote, own_redis)
            await feed.more(200)
        finally:
            await feed.stop()
        assert await pub.flush(15.0)
        result = count(feed.sent, await stream_events(own_client, TOPICS[0]))
        print(f"\nmasterdown: sent {len(feed.sent)}, {result}, while stale {stale}")
        assert "MASTERDOWN" in (stale["last_error"] or ""), stale
        assert result == Count(lost=0, announced=0, duplicated=0)


@pytest.mark.integration  # its own redis-server
async def test_events_published_while_redis_is_loading_arrive_after(tmp_path: Path) -> None:
    """Redis restarts with a data set it takes seconds to load (LOADING); what was published meanwhile arrives."""
    server = RedisServer(tmp_path / "redis", persistent=True)
    await server.astart()
    client = make_redis(server.url(), decode=False)
    try:
        await asyncio.to_thread(redis_roles.fill, server, 20_000)
        async with running(client) as pub:
            pub.publish(TOPICS[0], trade(0, TOPICS[0]))
            assert await pub.flush(5.0)
            await server.astop()
            redis_roles.slow_loading(server, 100)  # about 2-4 s of LOADING
            starting = asyncio.create_task(asyncio.to_thread(server.start, 120.0))  # returns once loaded
            async with asyncio.timeout(30):
                while not await asyncio.to_thread(redis_roles.loading, server):
                    await asyncio.sleep(0.02)
            for i in range(1, 301):
                pub.publish(TOPICS[0], trade(i, TOPICS[0]))
                if i % 50 == 0:
                    await asyncio.sleep(0.01)
            await wait_stats(pub, lambda s: "loading" in (s["last_error"] or "").lower(), 30)
            assert await asyncio.to_thread(redis_roles.loading, server), "loading ended before the test published"
            await starting
            assert await pub.flush(30.0)
            result = count(list(range(301)), await stream_events(client, TOPICS[0]))
            print(f"\nloading: {result}, {pub.stats}")
            assert [e["trade_id"] for e in await stream_events(client, TOPICS[0])] == [str(i) for i in range(301)]
            assert result == Count(lost=0, announced=0, duplicated=0)
    finally:
        await client.aclose()
        server.kill()


async def test_batch_resent_after_a_lost_reply_is_written_once(own_client: Redis, own_redis: RedisServer) -> None:
    """Redis executed the batch but the connection broke before its reply came back: the resend must not write
    the events a second time (and must report what the first run did: 2 events fenced)."""
    cutter = redis_roles.ReplyCutter(own_redis.port)
    await cutter.start()
    client = make_redis(f"redis://127.0.0.1:{cutter.port}/0", decode=False)
    try:
        await own_client.set(keys.lease("c1"), b"w1")
        pub = Publisher(client, stream_maxlen=1000, worker_id="w1")
        pub.start()
        pub.publish(TOPICS[2], trade(0, TOPICS[2]), "c1")
        assert await pub.flush(5.0)  # the script is loaded: the cut reply will be a batch's
        cutter.arm(b"EVALSHA")
        for i in range(20):
            pub.publish(TOPICS[0], trade(i, TOPICS[0]), "c1")
        pub.publish(TOPICS[1], trade(20, TOPICS[1]), "c2")  # not our lease: fenced
        pub.publish(TOPICS[1], trade(21, TOPICS[1]), "c2")
        assert await pub.flush(10.0)
        events = await stream_events(own_client, TOPICS[0])
        print(f"\nlost reply: {count(list(range(20)), events)}, cuts {cutter.cuts}, {pub.stats}")
        assert cutter.cuts == 1  # (redis-py's own retry resent it: the publisher saw no error)
        assert count(list(range(20)), events) == Count(lost=0, announced=0, duplicated=0)
        assert [e["trade_id"] for e in events] == [str(i) for i in range(20)]
        assert (pub.stats["events_published"], pub.stats["fenced"]) == (21, 2)
        await pub.close()
    finally:
        await client.aclose()
        await cutter.stop()


# -- deterministic errors: every lost event announced -------------------------------------------------------


async def test_wrongtype_loss_is_announced_and_overflow_gaps_in_the_batch_survive(redis_bytes: Redis) -> None:
    """One topic's stream key is a string (WRONGTYPE): its events are lost and announced once the key is fixed;
    the overflow gaps that travelled in the same batch are written (or, for that topic, kept until they can be)."""
    raw = redis_bytes
    bad, good = TOPICS[1], TOPICS[0]
    await raw.set(keys.event_stream(bad), b"not a stream")
    pub = Publisher(raw, stream_maxlen=1000, max_queue=10)
    for i in range(5):
        pub.publish(bad, trade(i, bad))  # dropped on overflow: gap on the broken key
    for i in range(5, 10):
        pub.publish(good, trade(i, good))  # dropped on overflow: gap on a healthy key
    for i in range(10, 20):
        pub.publish(bad, trade(i, bad))  # the batch: all fail with WRONGTYPE
    pub.start()
    await wait_stats(pub, lambda s: s["redis_errors"] >= 1)
    assert not await pub.flush(0.3)  # the announcements of ``bad`` cannot be written yet
    await raw.delete(keys.event_stream(bad))  # an operator repairs the key
    for i in range(20, 25):
        pub.publish(bad, trade(i, bad))
    assert await pub.flush(10.0)
    bad_events, good_events = await stream_events(raw, bad), await stream_events(raw, good)
    print(f"\nwrongtype: {count([*range(5), *range(10, 25)], bad_events)}, {pub.stats}")
    assert good_events == [gap(good, GAP_REASON_OVERFLOW, 5, 9, 5)]
    assert bad_events == [
        gap(bad, GAP_REASON_OVERFLOW, 0, 4, 5),
        gap(bad, GAP_REASON_ERROR, 10, 19, 10),
        *(trade(i, bad) for i in range(20, 25)),
    ]
    assert count([*range(5), *range(10, 25)], bad_events) == Count(lost=0, announced=15, duplicated=0)
    assert pub.stats["dropped"] == 20
    await pub.close()


async def test_failed_batch_is_announced_with_the_overflow_gap_it_carried(
    own_redis: RedisServer, own_client: Redis
) -> None:
    """The publisher's user may not run scripts for a while (NOPERM on the whole batch, an ACL change): the batch's
    events are announced as lost, and the overflow gap it carried is not lost with it."""
    admin = redis_roles.client(own_redis)
    admin.execute_command("ACL", "SETUSER", "pub", "on", ">pw", "~*", "&*", "+@all")
    client = make_redis(f"redis://pub:pw@127.0.0.1:{own_redis.port}/0", decode=False)
    topic = TOPICS[0]
    try:
        pub = Publisher(client, stream_maxlen=1000, max_queue=10)
        for i in range(25):
            pub.publish(topic, trade(i, topic))  # 0..14 dropped on overflow, 15..24 queued
        admin.execute_command("ACL", "SETUSER", "pub", "-eval", "-evalsha")
        pub.start()
        await wait_stats(pub, lambda s: s["redis_errors"] >= 1)
        assert "NoPermissionError" in pub.stats["last_error"]
        assert not await pub.flush(0.3)  # nothing announced yet: the gaps wait for Redis to take them
        admin.execute_command("ACL", "SETUSER", "pub", "+eval", "+evalsha")
        for i in range(25, 30):
            pub.publish(topic, trade(i, topic))
        assert await pub.flush(10.0)
        events = await stream_events(own_client, topic)
        print(f"\nnoperm: {count(list(range(30)), events)}, {pub.stats}")
        assert events == [
            gap(topic, GAP_REASON_OVERFLOW, 0, 14, 15),
            gap(topic, GAP_REASON_ERROR, 15, 24, 10),
            *(trade(i, topic) for i in range(25, 30)),
        ]
        assert count(list(range(30)), events) == Count(lost=0, announced=25, duplicated=0)
        await pub.close()
    finally:
        admin.close()
        await client.aclose()


async def test_script_runs_on_the_embedded_fakeredis_fallback() -> None:
    """scripts/run's last resort is fakeredis (its Lua hands errors over differently): same writes, same gaps."""
    fake = fakeredis.FakeAsyncRedis(version=(7, 4))
    bad, good = TOPICS[1], TOPICS[0]
    await fake.set(keys.event_stream(bad), b"not a stream")
    pub = Publisher(fake, stream_maxlen=1000)
    pub.start()
    pub.publish(bad, trade(0, bad))
    pub.publish(good, trade(1, good))
    await wait_stats(pub, lambda s: s["redis_errors"] >= 1)
    assert "WRONGTYPE" in pub.stats["last_error"]
    await fake.delete(keys.event_stream(bad))
    assert await pub.flush(10.0)
    assert await stream_events(fake, good) == [trade(1, good)]
    assert await stream_events(fake, bad) == [gap(bad, GAP_REASON_ERROR, 0, 0, 1)]
    await pub.close()
    await fake.aclose()
