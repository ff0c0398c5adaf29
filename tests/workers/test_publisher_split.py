"""Split mode with two real redis-servers: control state on one (``REDIS_URL``), events on the other
(``EVENTS_REDIS_URL``). Events land on the events Redis only, state records and last-event times on the control
Redis; a worker that lost a lease is fenced on the events Redis by fence tokens (its in-flight batch too); an
events-Redis outage and a lost reply are ridden out: counted lost, announced, duplicated, reconnected."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from control import keys
from control.events_redis import make_events_redis
from control.redis_client import make_redis
from control.settings import Settings
from tests.e2e import redis_roles
from tests.e2e.harness import RedisServer, redis_server
from tests.loss import align
from tests.workers._publisher_world import TOPICS, stream_events, trade
from tests.workers.tcp_proxy import TcpProxy
from workers.handover import Handovers
from workers.leases import Leases
from workers.publisher import Publisher
from workers.publisher_setup import publisher_for

pytestmark = pytest.mark.integration


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer]]:
    with redis_server(tmp_path / "control") as control, redis_server(tmp_path / "events") as events:
        yield control, events


@pytest.fixture
async def control(servers: tuple[RedisServer, RedisServer]) -> AsyncIterator[Redis]:
    client = make_redis(servers[0].url(), decode=False)
    yield client
    await client.aclose()


@pytest.fixture
async def events(servers: tuple[RedisServer, RedisServer]) -> AsyncIterator[Redis]:
    client = make_redis(servers[1].url(), decode=False)
    yield client
    await client.aclose()


@contextlib.asynccontextmanager
async def split_publisher(control: Redis, events_url: str, worker_id: str = "w1", **kw: Any
                          ) -> AsyncIterator[Publisher]:  # fmt: skip
    pub = Publisher(control, stream_maxlen=100_000, worker_id=worker_id,
                    events=make_events_redis(events_url, decode=False), **kw)  # fmt: skip
    pub.start()
    try:
        yield pub
    finally:
        await pub.close(timeout_s=1.0)


def trades(events: list[dict[str, Any]]) -> list[int]:
    return [int(e["trade_id"]) for e in events if e["type"] == "trade"]


async def test_blank_events_url_keeps_the_one_redis_publisher(control: Redis) -> None:
    pub = publisher_for(Settings(), control, "w1")
    assert pub.split is None and "unreplicated" not in pub.stats


async def test_events_go_to_the_events_redis_and_control_state_to_the_control_redis(
    control: Redis, events: Redis, servers: tuple[RedisServer, RedisServer]
) -> None:
    settings = Settings.from_env({"REDIS_URL": servers[0].url(), "EVENTS_REDIS_URL": servers[1].url()})
    await control.set(keys.lease("c1"), b"w1")
    pub = publisher_for(settings, control, "w1")
    assert pub.split is not None and pub.split.min_replicas == 0  # -1 = auto: 0 on a plain Redis
    pub.start()
    try:
        for i in range(30):
            pub.publish(TOPICS[i % 3], trade(i, TOPICS[i % 3]), "c1")
        pub.set_state(TOPICS[0], {"state": "active", "error": None, "since": 1, "conn": "c1"}, "c1")
        pub.set_state(TOPICS[1], {"state": "active", "error": None, "since": 1, "conn": "c2"}, "c2")  # not ours
        assert await pub.flush(5.0)
    finally:
        await pub.close()
    for n, topic in enumerate(TOPICS):
        assert trades(await stream_events(events, topic)) == list(range(n, 30, 3))
        assert await events.get(keys.latest(topic)) is not None
        assert not await control.exists(keys.event_stream(topic), keys.latest(topic))
    assert set(await control.hkeys(keys.TOPIC_LAST_EVENT)) == {t.encode() for t in TOPICS}
    assert list(await control.hkeys(keys.SUB_STATE)) == [TOPICS[0].encode()]  # c2's record fenced
    assert pub.stats["events_published"] == 30 and pub.stats["fenced"] == 0


@pytest.mark.parametrize("how", ["handover", "takeover"])
async def test_a_fenced_old_owner_writes_nothing_after_the_handover(
    control: Redis, events: Redis, servers: tuple[RedisServer, RedisServer], how: str
) -> None:
    """The old owner's batch passed its lease check and is in flight when the lease moves to another worker (a
    handover: lease compare-and-set, then the marker read; a takeover: the lease expired and was taken with SET NX)
    and that worker pushes its fence token: the events Redis fences the old owner's batch (without tokens it would
    land after the markers, or after the takeover)."""
    await control.set(keys.lease("c1"), b"w1")
    text = make_redis(servers[0].url())
    async with split_publisher(control, servers[1].url(), "w1") as old, \
            split_publisher(control, servers[1].url(), "w2") as new:  # fmt: skip
        assert old.split is not None and new.split is not None
        old.publish(TOPICS[0], trade(0, TOPICS[0]), "c1")
        assert await old.flush(5.0)
        hold, sending = asyncio.Event(), asyncio.Event()
        send = old.split._send

        async def delayed(*args: Any) -> Any:  # the zombie's network: the write arrives late
            sending.set()
            await hold.wait()
            return await send(*args)

        old.split._send = delayed  # type: ignore[method-assign]
        for i in range(1, 6):
            old.publish(TOPICS[0], trade(i, TOPICS[0]), "c1")
        await asyncio.wait_for(sending.wait(), 5.0)  # tokens read: the lease was still w1's
        if how == "handover":
            handovers = Handovers(text, new.split.fence)
            await text.set(keys.handover("c1"), "w1>w2")
            assert await handovers.transfer("c1", "w1", "w2", 4000)
            markers = await handovers.markers([TOPICS[0]])  # pushes w2's token first
            assert markers[TOPICS[0]] is not None and markers[TOPICS[0]]["trade_id"] == "0"
        else:
            await text.delete(keys.lease("c1"))  # w1's lease expired
            assert await Leases(text, new.split.fence).acquire("c1", "w2", 4000)  # pushes w2's token
        hold.set()
        assert await old.flush(5.0)
        new.publish(TOPICS[0], trade(6, TOPICS[0]), "c1")
        assert await new.flush(5.0)
        stored = trades(await stream_events(events, TOPICS[0]))
        print(f"\nfenced old owner: stored {stored}, old {old.stats['fenced']} fenced, tokens "
              f"{await new.split.fence.seen('c1')}")  # fmt: skip
        assert stored == [0, 6]
        assert old.stats["fenced"] == 5 and old.fenced_batches["c1"] == 1
    await text.aclose()


async def test_events_redis_outage_holds_and_resends_without_loss_or_duplicates(
    control: Redis, events: Redis, servers: tuple[RedisServer, RedisServer]
) -> None:
    proxy = TcpProxy(servers[1].port)
    await proxy.start()
    sent: list[int] = []
    try:
        async with split_publisher(control, proxy.url(), "", max_batch=50) as pub:
            for i in range(300):
                pub.publish(TOPICS[0], trade(i, TOPICS[0]))
                sent.append(i)
                if i == 100:
                    await proxy.cut()  # events Redis unreachable: batches held
                if i == 200:
                    await proxy.restore()
                await asyncio.sleep(0.015 if 100 <= i < 200 else 0.002)  # 1.5 s without the events Redis
            assert await pub.flush(15.0)
            stats = pub.stats
        loss = align(sent, await stream_events(events, TOPICS[0]))
        print(f"\nevents Redis outage: {loss.line()}, cuts {proxy.cuts}, redis errors {stats['redis_errors']}")
        assert (loss.lost, loss.announced, loss.duplicates, loss.stored) == (0, 0, 0, 300)
        assert stats["redis_errors"] >= 1 and stats["dropped"] == 0
    finally:
        await proxy.close()


async def test_a_lost_reply_from_the_events_redis_is_not_written_twice(
    control: Redis, events: Redis, servers: tuple[RedisServer, RedisServer]
) -> None:
    cutter = redis_roles.ReplyCutter(servers[1].port)
    await cutter.start()
    try:
        async with split_publisher(control, f"redis://127.0.0.1:{cutter.port}/0", "") as pub:
            pub.publish(TOPICS[0], trade(0, TOPICS[0]))
            assert await pub.flush(5.0)  # the script is loaded: the cut reply is a batch's
            cutter.arm(b"EVALSHA")
            for i in range(1, 21):
                pub.publish(TOPICS[i % 2], trade(i, TOPICS[i % 2]))
            assert await pub.flush(10.0)
            stats = pub.stats
        stored = trades(await stream_events(events, TOPICS[0])) + trades(await stream_events(events, TOPICS[1]))
        print(f"\nlost reply (split): cuts {cutter.cuts}, stored {len(stored)}, resends skipped "
              f"{stats['resends_skipped']}")  # fmt: skip
        assert cutter.cuts == 1
        assert sorted(stored) == list(range(21))  # each once
        assert stats["events_published"] == 21
    finally:
        await cutter.stop()
