"""A Redis Cluster master fails over while SSE and /ws clients read its topics (``app.sse_cluster_reader``).

Fault injection on a private real cluster (``own_cluster``): SIGKILL of a master, the cluster promotes its replica.
Counted: events lost (in the final streams but not received), duplicated (one stream id received twice),
announced (``gap`` events, reason ``redis_failover``), lost on the server (acknowledged, gone with the old master)
and the hub's re-homing (node reader reconnects, slot-map refreshes).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from app.sse_entries import READ_ERRORS, REDIS_FAILOVER
from control import keys
from tests.app._cluster import cluster_client, publish, topics_per_master, trade
from tests.app._sse import SSEClient, connect
from tests.app.ws._ws import desire, open_ws
from tests.cluster import LocalCluster
from tests.e2e.harness import poll

pytestmark = pytest.mark.integration
Start = Callable[..., Any]


class Reader:
    """Reads one SSE client to the end in the background: ``(topic, stream id, trade_id)`` per trade, gaps apart."""

    def __init__(self, client: SSEClient, topics: list[str]) -> None:
        self.client = client
        self.topics = sorted(topics)
        self.got: list[tuple[str, str, int]] = []
        self.gaps: list[dict[str, Any]] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while (event := await self.client.next(timeout_s=60)) is not None:
            data = orjson.loads(event["data"])
            if event.get("event") == "gap":
                self.gaps.append(data)
            elif data.get("type") == "trade":
                topic = f"bitmart:trade:{data['symbol']}"
                ids = event["id"].split(":")[1].split(",")
                self.got.append((topic, ids[self.topics.index(topic)], int(data["trade_id"])))

    def last_trade(self, topic: str) -> int:
        return max((n for t, _, n in self.got if t == topic), default=-1)


async def stream_ids(cluster: RedisCluster, topic: str) -> list[str]:
    return [sid.decode() for sid, _ in await cluster.xrange(keys.event_stream(topic))]


async def test_master_failover_while_clients_read_loses_and_repeats_nothing(
    start_server: Start, session: aiohttp.ClientSession, redis: Redis, own_cluster: LocalCluster
) -> None:
    cluster = await cluster_client(own_cluster.url)
    topics = topics_per_master(cluster)
    server = await start_server(EVENTS_REDIS_URL=own_cluster.url)
    query = "&".join(f"topic={t}" for t in topics)
    readers = [Reader(await connect(session, f"{server.url}/sse?topic={t}"), [t]) for t in topics for _ in range(2)]
    readers += [Reader(await connect(session, f"{server.url}/sse?{query}"), topics) for _ in range(2)]
    await server.hub.wait_for_subscribers(len(readers), timeout_s=5)
    written: dict[str, list[int]] = {t: [] for t in topics}
    retries = 0
    stop = asyncio.Event()

    async def write() -> None:
        nonlocal retries
        n = 0
        while not stop.is_set():
            topic = topics[n % 3]
            try:
                await publish(cluster, [(topic, n)])
            except READ_ERRORS:
                retries += 1  # the master is gone: the same event again once the cluster answers
                await asyncio.sleep(0.05)
                continue
            written[topic].append(n)
            n += 1
            await asyncio.sleep(0.002)

    writer = asyncio.create_task(write())
    await poll(lambda: _true(sum(map(len, written.values())) >= 150), 10, "events before the failover")
    failed = own_cluster.master_of(keys.event_stream(topics[0]))
    took = await asyncio.to_thread(own_cluster.fail_master, failed)
    after = {t: len(w) for t, w in written.items()}
    await poll(lambda: _true(all(len(written[t]) >= after[t] + 50 for t in topics)), 20, "events after the failover")
    stop.set()
    await writer
    for reader in readers:
        for topic in reader.topics:
            await poll(_reached(reader, topic, written[topic][-1]), 15, f"last event of {topic}")
    lost = duplicated = 0
    for reader in readers:
        for topic in reader.topics:
            got_ids = [sid for t, sid, _ in reader.got if t == topic]
            duplicated += len(got_ids) - len(set(got_ids))
            final = await stream_ids(cluster, topic)
            lost += len(set(final) - set(got_ids))
    acked = {t: set(w) for t, w in written.items()}
    on_server = {t: {int(orjson.loads(f[keys.STREAM_FIELD.encode()])["trade_id"]) for _, f in
                     await cluster.xrange(keys.event_stream(t))} for t in topics}  # fmt: skip
    lost_on_server = sum(len(acked[t] - on_server[t]) for t in topics)
    announced = sum(len(r.gaps) for r in readers)
    stats = server.hub.stats()
    print(f"failover {took:.1f} s: written {sum(map(len, written.values()))}, writer retries {retries}, "
          f"lost {lost}, duplicated {duplicated}, announced {announced}, lost on the server {lost_on_server}, "
          f"reconnects {stats['reconnects']}, refreshes {stats['refreshes']}, rewinds {stats['rewinds']}")  # fmt: skip
    assert lost == 0 and duplicated == 0
    assert announced == len([g for r in readers for g in r.gaps if g["reason"] == REDIS_FAILOVER])
    assert stats["reader_up"] and stats["readers"] == 3 and failed.port not in {int(n.split(":")[1])
                                                                               for n in stats["nodes"]}  # fmt: skip
    for reader in readers:
        await reader.client.close()
        reader.task.cancel()
    await cluster.aclose()


def _reached(reader: Reader, topic: str, n: int) -> Callable[[], Any]:
    async def check() -> bool:
        return reader.last_trade(topic) >= n

    return check


def _true(value: bool) -> Any:
    async def check() -> bool:
        return value

    return check()


#: XADD on the master only (``redis.set_repl(REPL_NONE)``: neither replicas nor AOF get it), the state of a
#: master that acknowledged a write and died before its replica had it.
UNREPLICATED_XADD = """
redis.set_repl(redis.REPL_NONE)
return redis.call('XADD', KEYS[1], '*', 'd', ARGV[1])
"""


async def test_entries_lost_with_the_old_master_are_announced_as_a_gap(
    start_server: Start, session: aiohttp.ClientSession, redis: Redis, own_cluster: LocalCluster
) -> None:
    """3 entries reach the master and the clients but not the replica, then the master is killed: the promoted
    replica's stream ends 3 entries earlier. SSE and /ws clients get one ``gap``
    (``redis_failover``) with the cursor moved back, then the entries written afterwards, none twice."""
    cluster = await cluster_client(own_cluster.url)
    topic = topics_per_master(cluster)[0]
    await desire(redis, topic, state="active")
    server = await start_server(EVENTS_REDIS_URL=own_cluster.url)
    sse = Reader(await connect(session, f"{server.url}/sse?topic={topic}"), [topic])
    ws = await open_ws(session, server)
    await ws.until("connected")
    await ws.send({"type": "subscribe", "topics": [topic]})
    await ws.until("subscribed")
    master = own_cluster.master_of(keys.event_stream(topic))
    direct = SyncRedis(port=master.port)
    kept = []
    for n in range(5):
        kept.append(direct.xadd(keys.event_stream(topic), {keys.STREAM_FIELD: trade(topic, n)}).decode())
        direct.execute_command("SPUBLISH", keys.event_channel(topic), b"x")
    assert direct.wait(1, 2000) == 1  # these 5 are on the replica
    for n in range(5, 8):  # these 3 are not: written with replication off, as if the master died before sending
        direct.eval(UNREPLICATED_XADD, 1, keys.event_stream(topic), trade(topic, n))
        direct.execute_command("SPUBLISH", keys.event_channel(topic), b"x")
    await poll(lambda: _true(sse.last_trade(topic) == 7), 5, "the 3 unreplicated entries read by the hub")
    ws_before = await ws.events(8)
    master.kill()
    direct.close()
    await asyncio.to_thread(own_cluster.wait_ok)
    await poll(lambda: _true(bool(sse.gaps)), 15, "the gap")
    assert [(g["reason"], g["since"]) for g in sse.gaps] == [(REDIS_FAILOVER, int(kept[-1].split("-")[0]))]
    assert await stream_ids(cluster, topic) == kept  # the promoted replica lost entries 5..7
    new = [sid for _, sid in await publish(cluster, [(topic, n) for n in range(100, 103)])]
    await poll(lambda: _true(sse.last_trade(topic) == 102), 10, "entries after the failover")
    assert [n for _, _, n in sse.got] == [0, 1, 2, 3, 4, 5, 6, 7, 100, 101, 102]
    assert [sid for _, sid, _ in sse.got][-3:] == new
    gap = await ws.next(10)
    assert gap["type"] == "gap" and gap["cursor"] == kept[-1] and gap["data"]["reason"] == REDIS_FAILOVER
    assert [m["data"]["trade_id"] for m in ws_before] == [str(n) for n in range(8)]
    assert [m["cursor"] for m in await ws.events(3)] == new
    assert server.hub.stats()["rewinds"] == 1
    await sse.client.close()
    sse.task.cancel()
    await ws.ws.close()
    await cluster.aclose()
