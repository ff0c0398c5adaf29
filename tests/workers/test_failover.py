"""Fault tolerance of the workers: takeover after a kill, make-before-break rebalancing and lifetime rolls,
exchange faults counted and announced as gaps, graceful stop. Real Redis, real sockets.

Two exchanges serve the sockets: the simulator (``scripts.simulator``; it replays each socket's tape from its
first frame) and ``LiveExchange`` below, a tiny Binance USD-M look-alike that broadcasts ONE live trade sequence
(consecutive trade ids) to every subscribed socket, as a real exchange does, and can refuse handshakes with
HTTP 429 + Retry-After. Make-before-break is only meaningful against such a shared stream, so the roll is tested
there; the handover runs against the simulator, whose per-socket replay the switch absorbs (``workers.stitch``).

Waiting: socket-side conditions with ``sim.wait_for`` / ``LiveExchange.wait_for`` (re-checked on every change);
state in Redis or in a runtime with the bounded ``wait_until`` poll of ``tests.workers.test_runtime``.
"""


from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from control import keys
from control.settings import Settings
from control.store import ControlStore
from scripts.simulator import ExchangeSimulator
from workers.connection import (
    LIFETIME,
    TAKEOVER,
)
from workers.planner import read_plan
from workers.stitch import CatchUp, order_key

from . import _failover_world as fw
from ._failover_world import (
    BM_TRADE,
    BN_TRADE,
    FAST,
    RAW_TRADES,
    LiveExchange,
    assert_contiguous,
    gap_neighbours,
    sim_env,
    stream,
    tape_trade_ids,
)
from .test_runtime import BINANCE, BITMART, native, sim_counts, steady, wait_until

pytestmark = pytest.mark.timeout(60)

sim, live, session, make_runtimes, runtimes = fw.sim, fw.live, fw.session, fw.make_runtimes, fw.runtimes


# -- pure: the switch filter ----------------------------------------------------------------------------------


def _trade(trade_id: int, ts: int = 0) -> dict[str, Any]:
    return {"type": "trade", "exchange": "x", "symbol": "S", "trade_id": str(trade_id), "price": "1", "size": "1",
            "side": "buy", "ts_exchange": 5, "ts_received": ts}  # fmt: skip


def test_catch_up_continues_after_the_marker_whatever_side_the_new_socket_is_on() -> None:
    ahead = CatchUp(_trade(10, ts=1))  # the new socket saw the marker too (ts_received differs): resume after it
    assert [ahead.admit(_trade(i, ts=2)) for i in (9, 10)] == [(False, False), (False, True)]
    behind = CatchUp(_trade(10))  # a socket replaying older trades: drop until past the marker
    assert [behind.admit(_trade(i)) for i in (3, 4)] == [(False, False), (False, False)]
    assert behind.admit(_trade(11)) == (True, True)
    gap = {"type": "gap", "topic": "t", "reason": "x", "since": 1, "until": 2}
    assert behind.admit(gap) == (False, False)  # the old socket covered that time
    bar = {"type": "kline", "open_time": 60_000, "close": "1", "ts_exchange": None, "ts_received": 0}
    kline = CatchUp(bar)
    assert kline.admit({**bar, "open_time": 0}) == (False, False)
    assert kline.admit({**bar, "close": "2"}) == (True, True)  # same bar, new values: not unique, published
    assert order_key({"type": "depth_delta", "last_update_id": "7"}) < order_key({"type": "depth", "update_id": "7"})
    assert order_key({"type": "order"}) is None


# -- takeover after a kill ------------------------------------------------------------------------------------


@pytest.mark.timing  # takeover <= 5 s with a 4 s lease
@pytest.mark.parametrize("victim_holds", ["more", "fewer"])  # fewer: the survivor is at its share when it fires
async def test_takeover_after_abort_within_five_seconds_with_default_ttl(
    victim_holds: str, redis: Redis, redis_url: str, sim: ExchangeSimulator,
    make_settings: Callable[..., Settings], runtimes: Any,
) -> None:
    settings = make_settings(**sim_env(sim, redis_url))
    assert (settings.lease_ttl_s, settings.heartbeat_interval_s) == (4.0, 1.0)  # the defaults under test
    topics = [*BITMART, *BINANCE]
    await ControlStore(redis).add_desired(topics, now_ms=1)
    a, b = await runtimes(settings, "w-a"), await runtimes(settings, "w-b")
    await steady(redis, sim, [a, b], topics)
    victim, survivor = (a, b) if (len(a.held) >= len(b.held)) == (victim_holds == "more") else (b, a)
    moved = victim.held
    current = await read_plan(redis)
    orphaned = {native(t) for t, c in current.assign.items() if c in moved}
    trades = [t for t in (BN_TRADE, BM_TRADE) if current.assign[t] in moved]

    async def flowing() -> bool:
        return all([await redis.xlen(keys.event_stream(t)) > 0 for t in trades])

    await wait_until(flowing, what="trades of the victim's connections in Redis")
    t0 = time.monotonic()
    await victim.abort()  # like kill -9: sockets gone, leases and worker record left to expire

    def served() -> bool:
        return all(any(c.opened_at > t0 and n in c.subscribed for c in sim.connections) for n in orphaned)

    await sim.wait_for(served, timeout=settings.lease_ttl_s + settings.heartbeat_interval_s + 2)
    takeover_s = time.monotonic() - t0
    print(f"\ntakeover after kill ({len(moved)} of 3 connections): {takeover_s:.2f} s (LEASE_TTL_S={settings.lease_ttl_s}, "
          f"HEARTBEAT_INTERVAL_S={settings.heartbeat_interval_s})")  # fmt: skip
    assert takeover_s <= 5.0
    assert takeover_s >= settings.lease_ttl_s - settings.heartbeat_interval_s - 0.5  # not before the lease ran out
    await steady(redis, sim, [survivor], topics)

    async def takeover_gaps() -> bool:
        return all([any(e.get("reason") == TAKEOVER for e in await stream(redis, t)) for t in trades])

    await wait_until(takeover_gaps, what="takeover gap events")
    for topic in trades:
        [(before, gap, after)] = gap_neighbours(await stream(redis, topic), TAKEOVER)
        assert gap["since"] == before["ts_received"] and after is not None and gap["until"] == after["ts_received"]


# -- rebalancing: make-before-break ---------------------------------------------------------------------------


async def test_join_rebalances_make_before_break_without_gap_or_duplicate(
    redis: Redis, redis_url: str, sim: ExchangeSimulator, make_settings: Callable[..., Settings], runtimes: Any
) -> None:
    settings = make_settings(**sim_env(sim, redis_url, HEARTBEAT_INTERVAL_S="0.2", LEASE_TTL_S="1"))
    topics = [*BITMART, *BINANCE]
    await ControlStore(redis).add_desired(topics, now_ms=1)
    a = await runtimes(settings, "w-a")
    await steady(redis, sim, [a], topics)
    assert len(a.held) == 3
    current = await read_plan(redis)
    by_native = {native(t): c for t, c in current.assign.items()}

    async def trades_flowing() -> bool:
        return await redis.xlen(keys.event_stream(BM_TRADE)) > 20

    await wait_until(trades_flowing, what="BitMart trades")

    peak: Counter[str] = Counter()
    watching = True

    def watch() -> bool:  # never true: re-evaluated on every socket change, records the most sockets per stream
        for n, k in sim_counts(sim).items():
            peak[n] = max(peak[n], k)
        return not watching

    watcher = asyncio.create_task(sim.wait_for(watch, timeout=50))
    joined = time.monotonic()
    b = await runtimes(settings, "w-b")  # fair share is now ceil(3 / 2) = 2: w-a hands ONE connection over

    async def rebalanced() -> bool:
        return len(a.held) == 2 and len(b.held) == 1 and not b._taking

    await wait_until(rebalanced, timeout=20, what="one connection handed over")
    [moved] = b.held
    moved_natives = {n for n, c in by_native.items() if c == moved}
    await sim.wait_for(lambda: all(sim_counts(sim)[n] == 1 for n in by_native)
                       and all(any(c.opened_at > joined and n in c.subscribed for c in sim.connections)
                               for n in moved_natives), timeout=10)  # fmt: skip
    settled = dict(sim_counts(sim))
    watching = False
    await watcher
    await steady(redis, sim, [a, b], topics)
    assert settled == {n: 1 for n in by_native}  # never two live sockets per stream once settled
    assert all(peak[n] == 2 for n in moved_natives), peak  # make-before-break: both ran at once
    assert all(peak[n] == 1 for n in by_native if n not in moved_natives), peak
    assert not any(f.text for f in sim.received if "unsubscribe" in f.text.lower())  # the old socket just closed
    print(f"\nhandover (claim to switch): {b.handovers_done[0] * 1000:.0f} ms")

    # The stream of a moved trade topic: every trade once, in tape order, no gap, across the switch; the new
    # socket (the simulator replays its tape from the start) is filtered until it passes the old one's last trade.
    topic = BM_TRADE if current.assign[BM_TRADE] == moved else BN_TRADE
    exchange, native_name = topic.split(":")[0], native(topic)
    switch_len = await redis.xlen(keys.event_stream(topic))

    async def past_switch() -> bool:
        return await redis.xlen(keys.event_stream(topic)) > switch_len + 20

    await wait_until(past_switch, timeout=20, what="trades after the switch")
    events = await stream(redis, topic)
    assert not [e for e in events if e.get("type") == "gap"]
    assert_contiguous([int(e["trade_id"]) for e in events], tape_trade_ids(exchange, native_name))
    record = {c["id"]: c for c in await ControlStore(redis).connections()}[moved]
    assert record["worker"] == "w-b" and record["gaps"] == {}


async def test_handover_of_order_books_keeps_update_ids_increasing_without_gap(
    redis: Redis, redis_url: str, sim: ExchangeSimulator, make_settings: Callable[..., Settings], runtimes: Any
) -> None:
    settings = make_settings(**sim_env(sim, redis_url, HEARTBEAT_INTERVAL_S="0.2", LEASE_TTL_S="1",
                                       BINANCE_USDM_REST_URI=sim.binance_rest_url, DEPTH_INTERVAL_MS="50"))  # fmt: skip
    books = ["bitmart:depth:BTCUSDT", "binanceusdm:depth:SUSHIUSDT"]
    await ControlStore(redis).add_desired([*books, BM_TRADE], now_ms=1)
    a = await runtimes(settings, "w-a")

    async def depth(topic: str, n: int) -> bool:
        return await redis.xlen(keys.event_stream(topic)) >= n

    for topic in books:
        await wait_until(lambda t=topic: depth(t, 30), what=f"{topic} events")
    b = await runtimes(settings, "w-b")  # two connections, two workers: one moves, its book syncs in standby

    async def rebalanced() -> bool:
        return len(a.held) == 1 and len(b.held) == 1 and not b._taking

    await wait_until(rebalanced, timeout=20, what="one connection handed over")
    moved = books[0] if b.held == [(await read_plan(redis)).assign[books[0]]] else books[1]
    n = await redis.xlen(keys.event_stream(moved))
    await wait_until(lambda: depth(moved, n + 60), timeout=30, what="book events after the switch")
    events = await stream(redis, moved)
    assert not [e for e in events if e["type"] == "gap"]
    deltas = [e for e in events if e["type"] == "depth_delta"]
    assert all(int(q["first_update_id"]) > int(p["last_update_id"]) for p, q in itertools.pairwise(deltas))


# -- 24 h limit: the lifetime roll ----------------------------------------------------------------------------


async def test_lifetime_roll_is_make_before_break_without_gap_or_duplicate(
    redis: Redis, redis_url: str, live: LiveExchange, make_settings: Callable[..., Settings], runtimes: Any
) -> None:
    settings = make_settings(REDIS_URL=redis_url, BINANCE_USDM_WS_URI=live.base_url, HEARTBEAT_INTERVAL_S="0.2",
                             LEASE_TTL_S="1", CONNECTION_MAX_AGE_S="1.0", **FAST, **RAW_TRADES)  # fmt: skip
    await ControlStore(redis).add_desired([BN_TRADE], now_ms=1)
    runtime = await runtimes(settings, "w-roll")

    def rolls() -> int:
        return sum(h.conn.reasons[LIFETIME] for h in runtime._held.values())

    await live.wait_for(lambda: live.subscribed() == 1 and len(live.sent) > 10)
    await live.wait_for(lambda: rolls() >= 3, timeout=20)
    await live.wait_for(lambda: live.subscribed() == 1)
    last_sent = live.sent[-1]

    async def caught_up() -> bool:
        events = await stream(redis, BN_TRADE)
        return bool(events) and int(events[-1]["trade_id"]) >= last_sent

    await wait_until(caught_up, what="the stream to reach the last trade broadcast")
    events = await stream(redis, BN_TRADE)
    ids = [int(e["trade_id"]) for e in events if e["type"] == "trade"]
    assert len(ids) == len(events)  # no gap event for a planned roll
    assert ids == list(range(ids[0], ids[-1] + 1))  # every trade once, across three socket switches
    assert live.max_sockets_per_stream == 2  # the new socket was subscribed before the old one closed
    [held] = runtime._held.values()
    status = held.conn.status()
    assert status["reasons"][LIFETIME] >= 3 and status["gaps"] == {} and status["reconnects"] >= 3
