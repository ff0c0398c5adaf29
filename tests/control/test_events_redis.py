"""control.events_redis: URL parsing, slot tags, and a client of a real 3-master Redis Cluster."""

from __future__ import annotations

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from control import keys
from control.events_redis import make_events_redis, master_tags, parse_cluster_url, slot_tag, topic_slot
from control.settings import Settings, SettingsError
from tests.cluster import LocalCluster


def test_cluster_url_is_parsed_and_never_shows_its_password() -> None:
    url = parse_cluster_url("redis+cluster://app:s3cret@10.0.0.1:7000,10.0.0.2:7001/")
    assert url is not None
    assert url.nodes == (("10.0.0.1", 7000), ("10.0.0.2", 7001))
    assert (url.username, url.password, url.tls) == ("app", "s3cret", False)
    assert "s3cret" not in repr(url)
    assert parse_cluster_url("redis://127.0.0.1:6379/0") is None


@pytest.mark.parametrize("bad", ["redis+cluster://", "redis+cluster://host", "redis+cluster://h:99999",
                                 "redis+cluster://h:7000/3"])  # fmt: skip
def test_malformed_cluster_urls_are_refused_with_the_reason(bad: str) -> None:
    with pytest.raises(SettingsError, match="EVENTS_REDIS_URL"):
        Settings.from_env({"EVENTS_REDIS_URL": bad})


def test_events_url_defaults_to_the_control_redis() -> None:
    plain = Settings.from_env({"REDIS_URL": "redis://127.0.0.1:6379/2"})
    assert (plain.events_url, plain.events_split) == ("redis://127.0.0.1:6379/2", False)
    split = Settings.from_env({"EVENTS_REDIS_URL": "redis+cluster://127.0.0.1:7000"})
    assert (split.events_url, split.events_split) == ("redis+cluster://127.0.0.1:7000", True)


def test_a_topics_keys_share_its_slot_and_slot_tags_hit_their_slot() -> None:
    topic = "binance:trade:BTCUSDT"
    slots = {key_slot(k.encode()) for k in (keys.event_stream(topic), keys.event_channel(topic), keys.latest(topic))}
    assert slots == {topic_slot(topic)}
    assert keys.topic_of_stream(keys.event_stream(topic)) == topic
    for slot in (0, 1, 5000, 16383):
        assert key_slot(("fp:batch:{" + slot_tag(slot) + "}:w1").encode()) == slot


async def test_a_cluster_client_writes_each_topic_to_its_node(redis_cluster: LocalCluster) -> None:
    client = make_events_redis(redis_cluster.url, decode=False)
    assert isinstance(client, RedisCluster)
    try:
        await client.initialize()
        primaries = client.get_primaries()
        assert len(primaries) == 3
        tags = master_tags(client)
        assert set(tags) == {node.name for node in primaries}
        for node in primaries:  # the tag of a node maps to a slot that node serves
            assert client.get_node_from_key("{" + tags[node.name] + "}").name == node.name
        topics = [f"bitmart:trade:S{i}" for i in range(30)]
        for topic in topics:
            await client.xadd(keys.event_stream(topic), {keys.STREAM_FIELD: topic})
        nodes = {client.get_node_from_key(keys.event_stream(t)).name for t in topics}
        assert len(nodes) == 3  # 30 topics spread over the three masters
        assert [await client.xlen(keys.event_stream(t)) for t in topics] == [1] * 30
    finally:
        await client.aclose()
