"""Split mode's replica confirmation (``EVENTS_MIN_REPLICAS``, ``WAIT``), with real redis-servers.

The events Redis is a master with one replica behind a TCP forwarder (the "address" of the events Redis). The
replica is cut off from the master, the master keeps acknowledging writes, then dies, and the replica is promoted
and the forwarder pointed at it: what the master took after the cut is gone. With ``min_replicas=1`` none of it
counted as written, so it is resent to the promoted replica: every event stored exactly once. With the check off
(``min_replicas=0``, the one-Redis behaviour) the same failover loses events silently. A master that has no replica
at all (the promoted one, here) holds its batches for ``confirm_within_s``, then writes them unconfirmed and counts them (``unreplicated``) until
it lists a replica again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from control.events_redis import make_events_redis
from control.redis_client import make_redis
from tests.e2e import redis_roles
from tests.e2e.harness import RedisServer, free_port, redis_server, wait_until
from tests.loss import Loss, align
from tests.workers._publisher_world import TOPICS, stream_events, trade
from tests.workers.tcp_proxy import TcpProxy
from workers.publisher import Publisher

pytestmark = pytest.mark.integration


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[redis_roles.ReplicaPair]:
    with redis_roles.replica_pair(tmp_path) as servers:
        yield servers


@pytest.fixture
def control(redis_bytes: Redis) -> Redis:
    """The control Redis: the session's test database (flushed), bytes; the events Redis is another server."""
    return redis_bytes


async def failover_run(pair: redis_roles.ReplicaPair, control: Redis, min_replicas: int) -> tuple[Loss, dict]:
    """Events flow; the replica is cut off; the master dies; the replica is promoted and takes the address."""
    proxy = TcpProxy(pair.master.port)
    await proxy.start()
    pub = Publisher(control, stream_maxlen=100_000, max_batch=20,
                    events=make_events_redis(proxy.url(), decode=False), min_replicas=min_replicas)  # fmt: skip
    assert pub.split is not None
    pub.split.confirm_within_s = 2.0  # > the 0.3 s from the cut to the failover; then the lone new master is accepted
    pub.start()
    sent: list[int] = []
    try:
        for i in range(400):
            pub.publish(TOPICS[0], trade(i, TOPICS[0]))
            sent.append(i)
            if i == 150:  # the replica stops following (it keeps what it has)
                with redis_roles.client(pair.replica) as r:
                    r.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))
            if i == 250:  # the master dies with what only it had; the replica takes over its address
                pair.master.kill()
                redis_roles.promote(pair.replica)
                await proxy.cut()
                proxy.target_port = pair.replica.port
                await proxy.restore()
            await asyncio.sleep(0.003)
        assert await pub.flush(15.0)
        stats = pub.stats
    finally:
        await pub.close(timeout_s=1.0)
        await proxy.close()
    reader = make_redis(pair.replica.url(), decode=False)
    loss = align(sent, await stream_events(reader, TOPICS[0]))
    await reader.aclose()
    return loss, stats


async def test_wait_confirmed_writes_survive_a_failover_exactly_once(pair: redis_roles.ReplicaPair,
                                                                     control: Redis) -> None:  # fmt: skip
    loss, stats = await failover_run(pair, control, min_replicas=1)
    print(f"\nfailover with WAIT 1: {loss.line()}; unconfirmed WAITs {stats['unconfirmed']}, unreplicated "
          f"{stats['unreplicated']}, redis errors {stats['redis_errors']}")  # fmt: skip
    assert (loss.stored, loss.lost, loss.announced, loss.duplicates, loss.unknown) == (400, 0, 0, 0, 0)
    # the promoted replica has no replica of its own: after confirm_within_s its writes are accepted, counted
    assert stats["unconfirmed"] >= 1 and 0 < stats["unreplicated"] <= 400 - 150


async def test_without_wait_the_same_failover_loses_events_silently(pair: redis_roles.ReplicaPair,
                                                                    control: Redis) -> None:  # fmt: skip
    """The control experiment: what the check prevents (the one-Redis publisher's behaviour on a failover)."""
    loss, _ = await failover_run(pair, control, min_replicas=0)
    print(f"\nfailover without WAIT: {loss.line()}")
    assert loss.lost > 0 and loss.announced == 0


async def test_a_master_without_replica_is_accepted_after_the_bound_and_waits_again_once_one_attaches(
    own_redis: RedisServer, control: Redis, tmp_path: Path
) -> None:
    """No replica: held for ``confirm_within_s``, then accepted and counted, with no further hold however long it
    lasts (each batch asks ROLE, not WAIT); once a replica attaches, writes wait for its confirmation again."""
    pub = Publisher(control, stream_maxlen=1000, events=make_events_redis(own_redis.url(), decode=False),
                    min_replicas=1)  # fmt: skip
    assert pub.split is not None
    pub.split.confirm_within_s, pub.split.wait_timeout_ms = 0.5, 50
    pub.start()
    try:
        for i in range(10):
            pub.publish(TOPICS[1], trade(i, TOPICS[1]))
        assert await pub.flush(5.0)
        held = pub.stats["unconfirmed"]
        for i in range(10, 20):  # degraded: written at once, counted, no WAIT asked
            pub.publish(TOPICS[1], trade(i, TOPICS[1]))
            assert await pub.flush(1.0)
        stats = pub.stats
        assert stats["unconfirmed"] == held and stats["unreplicated"] == 20
        with redis_server(tmp_path / "replica") as replica:  # a replica attaches and syncs
            with redis_roles.client(replica) as r:
                r.execute_command("REPLICAOF", "127.0.0.1", str(own_redis.port))
            with redis_roles.client(own_redis) as m:  # the master lists a replica (ROLE) once it is online there
                wait_until(lambda: len(m.execute_command("ROLE")[2]) == 1, 10, "replica online at the master")
            pub.publish(TOPICS[1], trade(20, TOPICS[1]))  # this batch's ROLE lists the replica (once it is linked)
            assert await pub.flush(5.0)
            for i in range(21, 31):
                pub.publish(TOPICS[1], trade(i, TOPICS[1]))
                assert await pub.flush(5.0)
            after = pub.stats
    finally:
        await pub.close()
    reader = make_redis(own_redis.url(), decode=False)
    stored = [int(e["trade_id"]) for e in await stream_events(reader, TOPICS[1])]
    await reader.aclose()
    assert stored == list(range(31))
    # confirmation resumed: at most the batches sent before the replica was listed count as unreplicated
    assert after["unreplicated"] < 31 and after["unreplicated"] - stats["unreplicated"] <= 11
    assert pub.split._degraded == set()
