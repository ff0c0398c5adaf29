"""SSE and WebSocket fan-out with the events on a real 3-master Redis Cluster (``EVENTS_REDIS_URL=redis+cluster://``)
and on a second plain redis-server (split mode): ``app.sse_cluster_reader``. Control state stays on REDIS_URL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
import pytest
from redis.asyncio import Redis

from app.dashboard_feed import DashboardFeed
from control import keys
from control.redis_client import make_redis
from tests.app._cluster import cluster_client, publish, topics_per_master, trade
from tests.app._sse import connect, count_serializations, cursor_of
from tests.app.ws._ws import desire, open_ws
from tests.cluster import LocalCluster
from tests.e2e.harness import RedisServer

pytestmark = pytest.mark.integration
Start = Callable[..., Any]


def trade_ids(events: list[dict[str, str]]) -> list[tuple[str, int]]:
    """``(symbol, trade_id)`` of each trade event."""
    out = []
    for event in events:
        data = orjson.loads(event["data"])
        if data["type"] == "trade":
            out.append((data["symbol"], int(data["trade_id"])))
    return out


async def test_clients_of_topics_on_every_master_get_every_event_once_in_order(
    start_server: Start, session: aiohttp.ClientSession, redis: Redis, redis_cluster: LocalCluster,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    built = count_serializations(monkeypatch)
    cluster = await cluster_client(redis_cluster.url)
    topics = topics_per_master(cluster, per_master=2)  # 6 topics, 2 on each master
    server = await start_server(EVENTS_REDIS_URL=redis_cluster.url)
    query = "&".join(f"topic={t}" for t in topics)
    singles = {t: [await connect(session, f"{server.url}/sse?topic={t}") for _ in range(2)] for t in topics}
    alls = [await connect(session, f"{server.url}/sse?{query}") for _ in range(3)]
    for client in [c for cs in singles.values() for c in cs] + alls:
        await client.until("ready")
    stats = server.hub.stats()
    assert stats["readers"] == 3 and stats["topics"] == 6 and stats["reader_up"]
    built.clear()
    items = [(topics[n % 6], n) for n in range(600)]
    written: list[tuple[str, str]] = []
    for start in range(0, 600, 60):
        written += await publish(cluster, items[start : start + 60])
    for topic, clients in singles.items():
        want = [n for t, n in items if t == topic]
        for client in clients:
            got = trade_ids(await client.take(len(want)))
            assert got == [(topic.split(":")[2], n) for n in want]  # every event once, in order
    for client in alls:
        events = await client.take(600)
        got = trade_ids(events)
        assert sorted(n for _, n in got) == list(range(600))  # every event once
        for topic in topics:  # in order per topic
            symbol = topic.split(":")[2]
            assert [n for s, n in got if s == symbol] == [n for t, n in items if t == topic]
        last = {t: "0-0" for t in topics}
        for topic, sid in written:
            last[topic] = sid
        assert events[-1]["id"] == cursor_of(last)
    assert sorted(built) == sorted(sid for _, sid in written)  # each entry serialized once, not once per client
    stats = server.hub.stats()
    assert stats["entries_read"] == 600 and stats["wakeups"] > 0 and not await redis.keys("fp:stream:*")
    for client in [c for cs in singles.values() for c in cs] + alls:
        await client.close()
    await cluster.aclose()


async def test_last_event_id_resumes_exactly_on_a_cluster(
    start_server: Start, session: aiohttp.ClientSession, redis: Redis, redis_cluster: LocalCluster
) -> None:
    cluster = await cluster_client(redis_cluster.url)
    topics = topics_per_master(cluster)
    server = await start_server(EVENTS_REDIS_URL=redis_cluster.url)
    query = "&".join(f"topic={t}" for t in topics)
    first = await connect(session, f"{server.url}/sse?{query}")
    await first.until("ready")
    await publish(cluster, [(topics[n % 3], n) for n in range(30)])
    seen = await first.take(12)
    await first.close()
    await publish(cluster, [(topics[n % 3], n) for n in range(30, 45)])
    again = await connect(session, f"{server.url}/sse?{query}", last_event_id=seen[-1]["id"])
    _, caught_up = await again.until("ready")
    await publish(cluster, [(topics[n % 3], n) for n in range(45, 51)])
    live = await again.take(6)
    got = [n for _, n in trade_ids(seen + caught_up + live)]
    assert sorted(got) == list(range(51)) and len(got) == 51  # nothing lost, nothing twice
    await again.close()
    # a trimmed cursor is told (XINFO STREAM and XRANGE read through the cluster pipeline)
    stream = keys.event_stream(topics[0])
    await cluster.xtrim(stream, maxlen=2, approximate=False)
    one = seen[0]["id"].split(":")[1].split(",")[sorted(topics).index(topics[0])]
    trimmed = await connect(session, f"{server.url}/sse?topic={topics[0]}", last_event_id=one)
    gap, before = await trimmed.until("gap")
    assert orjson.loads(gap["data"])["reason"] == "retention" and not before
    await trimmed.close()
    await cluster.aclose()


async def test_websocket_fan_out_reads_every_master(
    start_server: Start, session: aiohttp.ClientSession, redis: Redis, redis_cluster: LocalCluster
) -> None:
    cluster = await cluster_client(redis_cluster.url)
    topics = topics_per_master(cluster)
    await desire(redis, *topics, state="active")  # control state: on REDIS_URL
    early = await publish(cluster, [(t, n) for n, t in enumerate(topics)], ids=True)
    server = await start_server(EVENTS_REDIS_URL=redis_cluster.url)
    ws = await open_ws(session, server)
    await ws.until("connected")
    await ws.send({"type": "subscribe", "id": "s", "topics": topics, "since": {topics[0]: "0-0"}})
    ack, _ = await ws.until("subscribed")
    assert [s["state"] for s in ack["subscriptions"]] == ["active"] * 3
    assert [m["cursor"] for m in await ws.events(1)] == [early[0][1]]  # since 0-0 replays topic 0's entry
    live = await publish(cluster, [(topics[n % 3], n) for n in range(10, 40)], ids=True)
    got = await ws.events(30)
    assert sorted((m["topic"], m["cursor"]) for m in got) == sorted(live)
    for topic in topics:
        assert [m["cursor"] for m in got if m["topic"] == topic] == [sid for t, sid in live if t == topic]
    await ws.ws.close()
    await cluster.aclose()


async def test_split_mode_reads_events_from_their_own_redis(
    start_server: Start, session: aiohttp.ClientSession, redis: Redis, own_redis: RedisServer
) -> None:
    events = make_redis(own_redis.url(), decode=False)
    topic = "bitmart:trade:SPLITUSDT"
    await desire(redis, topic, state="active")
    server = await start_server(EVENTS_REDIS_URL=own_redis.url())
    sse = await connect(session, f"{server.url}/sse?topic={topic}")
    await sse.until("ready")
    ws = await open_ws(session, server)
    await ws.until("connected")
    await ws.send({"type": "subscribe", "topics": [topic]})
    await ws.until("subscribed")
    ids = []
    for n in range(20):
        ids.append((await events.xadd(keys.event_stream(topic), {keys.STREAM_FIELD: trade(topic, n)})).decode())
        await events.publish(keys.event_channel(topic), trade(topic, n))
    got = await sse.take(20)
    assert [n for _, n in trade_ids(got)] == list(range(20))
    assert [m["cursor"] for m in await ws.events(20)] == ids
    resumed = await connect(session, f"{server.url}/sse?topic={topic}", last_event_id=got[9]["id"])
    _, caught_up = await resumed.until("ready")
    assert [n for _, n in trade_ids(caught_up)] == list(range(10, 20))
    assert not await redis.exists(keys.event_stream(topic))  # nothing of the events on the control Redis
    for client in (sse, resumed):
        await client.close()
    await ws.ws.close()
    await events.aclose()


async def test_a_slow_poll_still_delivers_without_wakeups(
    start_server: Start, session: aiohttp.ClientSession, redis: Redis, redis_cluster: LocalCluster
) -> None:
    """Entries written without SPUBLISH (a wakeup lost) reach clients through the safety poll."""
    cluster = await cluster_client(redis_cluster.url)
    topics = topics_per_master(cluster)
    server = await start_server(EVENTS_REDIS_URL=redis_cluster.url)
    client = await connect(session, f"{server.url}/sse?topic={topics[1]}")
    await client.until("ready")
    for n in range(5):
        await cluster.xadd(keys.event_stream(topics[1]), {keys.STREAM_FIELD: trade(topics[1], n)})
    assert [n for _, n in trade_ids(await client.take(5))] == list(range(5))
    assert server.hub.stats()["wakeups"] == 0
    await client.close()
    await cluster.aclose()


async def test_dashboard_rates_and_latency_read_through_a_cluster(redis_cluster: LocalCluster) -> None:
    cluster = await cluster_client(redis_cluster.url)
    topics = topics_per_master(cluster)
    feed = DashboardFeed(None, cluster)  # type: ignore[arg-type]
    await publish(cluster, [(t, n) for n, t in enumerate(topics)])
    first = await feed.measure([*topics, "bitmart:trade:NOSTREAMUSDT"])
    assert [first[t]["events"] for t in topics] == [1, 1, 1] and first["bitmart:trade:NOSTREAMUSDT"]["events"] == 0
    await publish(cluster, [(topics[0], 10), (topics[0], 11)])
    again = await feed.measure(topics)
    assert again[topics[0]]["events"] == 3 and again[topics[0]]["rate"] is not None
    await cluster.aclose()


async def test_join_waits_for_the_reader_of_the_topics_node(
    start_server: Start, session: aiohttp.ClientSession, redis: Redis, redis_cluster: LocalCluster
) -> None:
    """A new client joins at the hub's position only while the reader of its topics' node is up."""
    cluster = await cluster_client(redis_cluster.url)
    topics = topics_per_master(cluster)
    server = await start_server(EVENTS_REDIS_URL=redis_cluster.url)
    clients = [await connect(session, f"{server.url}/sse?topic={t}") for t in topics]
    for client in clients:
        await client.until("ready")
    hub = server.hub
    down = hub.readers[cluster.get_node_from_key(keys.event_stream(topics[0])).name]
    down.up = False  # as after a failed read
    assert hub.join([topics[0]]) is None and hub.join([topics[1], topics[0]]) is None
    joined = hub.join([topics[1]])
    assert joined is not None
    hub.unsubscribe(joined[0])
    down.up = True
    for client in clients:
        await client.close()
    await cluster.aclose()
