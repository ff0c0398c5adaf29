"""A deep backlog drains in bigger batches (``workers.publish_queue.EventQueue.take``), with nothing lost or doubled.

The fault: Redis stalls writes (``CLIENT PAUSE WRITE`` on a private redis-server: the batch in flight hangs,
nothing errors) while events keep coming, so a backlog of many batches builds up. Once Redis takes writes
again the writer takes up to ``DEEP_BATCH_FACTOR x max_batch`` events per script call until the backlog is
shallow, then ``max_batch`` again; every event reaches its stream once, in order.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from control.redis_client import make_redis
from tests.e2e.harness import redis_server
from tests.workers._publisher_world import TOPICS, stream_events, trade, wait_stats
from workers.publish_queue import DEEP_BATCH_FACTOR
from workers.publisher import Publisher

pytestmark = pytest.mark.timeout(60)


async def test_a_backlog_after_a_stall_drains_in_bigger_batches_exactly_once(tmp_path: Path) -> None:
    with redis_server(tmp_path) as server:
        client = make_redis(server.url(), decode=False)
        admin = make_redis(server.url())
        pub = Publisher(client, stream_maxlen=100_000, max_batch=50, high_water=1000, max_queue=100_000)
        pub.start()
        try:
            for i in range(100):  # flowing: batches of at most max_batch
                pub.publish(TOPICS[0], trade(i, TOPICS[0]))
            assert await pub.flush(5.0)
            shallow = pub.stats["max_batch_seen"]
            assert shallow <= 50

            await admin.execute_command("CLIENT", "PAUSE", 700, "WRITE")
            for i in range(100, 3100):  # 3,000 events queue up behind the hanging batch
                pub.publish(TOPICS[i % 3], trade(i, TOPICS[i % 3]))
                if i % 500 == 0:
                    await asyncio.sleep(0.01)
            await wait_stats(pub, lambda s: s["queue_depth"] >= 2500, 5.0)
            assert await pub.flush(15.0)
            stats = pub.stats
        finally:
            await pub.close()
            await admin.execute_command("CLIENT", "UNPAUSE")
            await admin.aclose()
            check = make_redis(server.url(), decode=False)
            stored = {t: await stream_events(check, t) for t in TOPICS}
            await check.aclose()
            await client.aclose()
    assert stats["max_batch_seen"] == 50 * DEEP_BATCH_FACTOR  # the backlog went out in deep batches
    assert stats["events_published"] == 3100 and stats["dropped"] == 0 and stats["resends_skipped"] == 0
    for topic, events in stored.items():
        ids = [int(e["trade_id"]) for e in events]
        expected = list(range(100)) if topic == TOPICS[0] else []
        expected = sorted(expected + [i for i in range(100, 3100) if TOPICS[i % 3] == topic])
        assert ids == expected, f"{topic}: stored out of order, lost or doubled"
