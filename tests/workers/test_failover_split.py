"""Real worker runtimes in split mode (``EVENTS_REDIS_URL`` = a real 3-master Redis Cluster): events on the
cluster, control state on the test Redis; a worker joining takes one connection over make-before-break (its fence
token pushed to every master before it reads the markers from the cluster), and the moved trade topic's stream
holds every trade once, in tape order, with no gap across the switch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from control import keys
from control.events_redis import make_events_redis
from control.settings import Settings
from control.store import ControlStore
from scripts.simulator import ExchangeSimulator
from tests.cluster import LocalCluster
from workers.planner import read_plan

from . import _failover_world as fw
from ._failover_world import BM_TRADE, BN_TRADE, assert_contiguous, sim_env, tape_trade_ids
from .test_runtime import BINANCE, BITMART, native, steady, wait_until

pytestmark = [pytest.mark.timeout(90), pytest.mark.integration]

sim, session, make_runtimes, runtimes = fw.sim, fw.session, fw.make_runtimes, fw.runtimes


async def test_join_hands_a_connection_over_in_split_mode_without_gap_or_duplicate(
    redis: Redis, redis_url: str, sim: ExchangeSimulator, make_settings: Callable[..., Settings], runtimes: Any,
    redis_cluster: LocalCluster,
) -> None:  # fmt: skip
    settings = make_settings(**sim_env(sim, redis_url, HEARTBEAT_INTERVAL_S="0.2", LEASE_TTL_S="1",
                                       EVENTS_REDIS_URL=redis_cluster.url))  # fmt: skip
    assert settings.events_split
    events = make_events_redis(redis_cluster.url, decode=False)
    try:
        topics = [*BITMART, *BINANCE]
        await ControlStore(redis).add_desired(topics, now_ms=1)
        a = await runtimes(settings, "w-a")
        assert a.publisher.split is not None and a.publisher.split.min_replicas == 1  # -1: 1 on a cluster
        await steady(redis, sim, [a], topics)
        current = await read_plan(redis)

        async def trades_flowing() -> bool:
            return await events.xlen(keys.event_stream(BM_TRADE)) > 20 and await events.xlen(
                keys.event_stream(BN_TRADE)) > 5

        await wait_until(trades_flowing, what="trades on the cluster")
        assert not await redis.exists(keys.event_stream(BM_TRADE))  # nothing of the event data on control
        b = await runtimes(settings, "w-b")  # fair share ceil(3 / 2) = 2: w-a hands ONE connection over

        async def rebalanced() -> bool:
            return len(a.held) == 2 and len(b.held) == 1 and not b._taking

        await wait_until(rebalanced, timeout=30, what="one connection handed over")
        [moved] = b.held
        await steady(redis, sim, [a, b], topics)
        fence = a.publisher.split.fence
        seen = await fence.seen(moved)
        assert len(seen) == 3 and len(set(seen.values())) == 1 and min(seen.values()) > 0  # pushed to every master
        topic = BM_TRADE if current.assign[BM_TRADE] == moved else BN_TRADE
        switch_len = await events.xlen(keys.event_stream(topic))

        async def past_switch() -> bool:
            return await events.xlen(keys.event_stream(topic)) > switch_len + 5

        await wait_until(past_switch, timeout=30, what="trades after the switch")
        stored = [orjson.loads(f[keys.STREAM_FIELD.encode()]) for _, f in await events.xrange(keys.event_stream(topic))]
        gaps = [e for e in stored if e.get("type") == "gap"]
        ids = [int(e["trade_id"]) for e in stored if e.get("type") == "trade"]
        print(f"\nsplit-mode handover of {moved} ({topic}): {len(ids)} trades, {len(ids) - len(set(ids))} duplicated, "
              f"{len(gaps)} gaps, claim to switch {b.handovers_done[0] * 1000:.0f} ms, fence tokens {seen}")  # fmt: skip
        assert not gaps
        assert_contiguous(ids, tape_trade_ids(topic.split(":")[0], native(topic)))
        record = {c["id"]: c for c in await ControlStore(redis).connections()}[moved]
        assert record["worker"] == "w-b" and record["gaps"] == {}
    finally:
        await events.aclose()
