"""workers.lag_guard: the lag states, the lag-aware share, shedding (pure), and the publisher queue's ``shed`` and
``discard`` on real Redis (every shed event announced by a ``gap`` ``lag`` with its exact count: lost == announced,
nothing duplicated; a handed-over connection's queue dropped unwritten, the others' kept in order)."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

from redis.asyncio import Redis

from control import keys
from control.settings import Settings
from tests.loss import align
from tests.workers._publisher_world import stream_events, trade, wait_stats
from workers.lag_guard import COOLDOWN_HEARTBEATS, GAP_REASON_LAG, SUSTAIN, LagGuard, share, strained
from workers.publisher import Publisher
from workers.rebalance import Rebalancer

MAX = 2000


def stats(write_lag_ms: int = 0, errors: int = 0) -> dict[str, Any]:
    return {"oldest_queued_age_ms": write_lag_ms, "redis_errors": errors}


def tick(guard: LagGuard, lag: int, at: float, *, write: int | None = None, errors: int = 0, paused: bool = False
         ) -> int:  # fmt: skip
    records = {"a": {"lag_ms": 0}, "b": {"lag_ms": lag, "lag": {"read_rate_bps": 900}}}
    return guard.observe(records, stats(lag if write is None else write, errors), paused=paused, now=at)


# -- share ------------------------------------------------------------------------------------------------------------


def test_share_without_strained_workers_is_the_fair_share() -> None:
    assert share(4, 2, 0, held=2, lagging=False, cooling=False) == 2
    assert share(5, 2, 0, held=0, lagging=False, cooling=False) == 3


def test_a_lagging_worker_gives_one_away_even_below_its_fair_share_and_healthy_ones_take_it() -> None:
    # 4 connections, 2 workers, one lagging: the lagging one aims one below what it holds, the healthy one takes all
    assert share(4, 2, 1, held=2, lagging=True, cooling=False) == 1
    assert share(4, 2, 1, held=1, lagging=True, cooling=False) == 0
    assert share(4, 2, 1, held=2, lagging=False, cooling=False) == 4
    # three workers, one lagging: the two healthy ones share everything
    assert share(6, 3, 1, held=2, lagging=False, cooling=False) == 3


def test_a_cooling_worker_keeps_what_it_holds_and_takes_nothing_back() -> None:
    assert share(4, 2, 1, held=0, lagging=False, cooling=True) == 0
    assert share(4, 2, 1, held=1, lagging=False, cooling=True) == 1
    assert share(4, 2, 1, held=3, lagging=False, cooling=True) == 2  # above the fair share: the ordinary rule


def test_no_healthy_worker_no_spreading() -> None:
    assert share(4, 1, 1, held=4, lagging=True, cooling=False) == 4  # alone
    assert share(4, 2, 2, held=2, lagging=True, cooling=False) == 2  # every worker strained


def test_strained_reads_worker_records() -> None:
    assert strained({"lag": {"lagging": True, "cooling": False}})
    assert strained({"lag": {"lagging": False, "cooling": True}})
    assert not strained({"lag": {"lagging": False, "cooling": False}})
    assert not strained({})  # a worker of an older version


# -- states -----------------------------------------------------------------------------------------------------------


def test_one_spike_is_not_lagging_a_sustained_lag_is() -> None:
    guard = LagGuard(MAX, heartbeat_interval_s=1.0)
    tick(guard, 1500, 0.0)
    tick(guard, 100, 1.0)
    tick(guard, 1500, 2.0)
    assert not guard.lagging
    for i in range(SUSTAIN - 1):
        tick(guard, 1500, 3.0 + i)
    assert guard.lagging and guard.may_offer()
    assert guard.record(5.0)["lagging"] is True
    assert guard.rates == {"a": 0, "b": 900}


def test_lagging_ends_below_a_quarter_then_cools_down() -> None:
    guard = LagGuard(MAX, heartbeat_interval_s=0.5)
    for i in range(SUSTAIN + 1):
        tick(guard, 1500, i / 2)
    tick(guard, 800, 2.0)  # between a quarter and a half: still lagging (hysteresis)
    assert guard.lagging
    for i in range(SUSTAIN):
        tick(guard, 100, 2.5 + i / 2)
    assert not guard.lagging
    ended = 2.5 + (SUSTAIN - 1) / 2
    assert guard.cooling(ended + 1) and guard.record(ended + 1)["cooling"] is True
    assert not guard.cooling(ended + COOLDOWN_HEARTBEATS * 0.5 + 0.01)


def test_the_next_offer_needs_fresh_evidence() -> None:
    guard = LagGuard(MAX, heartbeat_interval_s=1.0)
    for i in range(SUSTAIN + 1):
        tick(guard, 1500, float(i))
    assert guard.may_offer()
    guard.offered()
    assert guard.lagging and not guard.may_offer()
    for i in range(SUSTAIN + 1):  # above half the bound but draining fast (its backlog is written): no new offer
        tick(guard, 1900 - 400 * i, 3.0 + i / 2)
    assert guard.lagging and not guard.may_offer()
    for i in range(SUSTAIN + 1):  # a saw-tooth that grows overall: offer
        tick(guard, [1200, 1100, 1400][i], 4.5 + i / 2)
    assert guard.may_offer() and guard.spread == 1


def test_off_when_lag_max_is_zero() -> None:
    guard = LagGuard(0, heartbeat_interval_s=1.0)
    for i in range(5):
        assert tick(guard, 60_000, float(i)) == 0
    assert not guard.lagging and not guard.enabled


# -- shedding ---------------------------------------------------------------------------------------------------------


def test_sheds_when_the_write_lag_stays_above_the_bound_and_grows() -> None:
    guard = LagGuard(MAX, heartbeat_interval_s=1.0)
    assert tick(guard, 2100, 0.0) == 0  # first tick: no error count to compare with yet
    assert tick(guard, 2500, 1.0) == 0  # one critical tick
    assert tick(guard, 2600, 2.0) == MAX // 2  # sustained: shed what waited longer than half the bound
    guard.shed_done(40)
    assert (guard.sheds, guard.shed) == (1, 40)
    assert guard.record(3.0)["shed"] == 40


def test_never_sheds_an_outage_backlog() -> None:
    guard = LagGuard(MAX, heartbeat_interval_s=1.0)
    tick(guard, 100, 0.0)
    # Redis errors while the backlog grows (an outage): not shed
    assert [tick(guard, 3000 + i * 1000, 1.0 + i, errors=1 + i) for i in range(4)] == [0, 0, 0, 0]
    # paused writes (a suspended connection): not shed
    assert [tick(guard, 9000 + i * 1000, 10.0 + i, errors=4, paused=True) for i in range(3)] == [0, 0, 0]
    # Redis is back: the backlog shrinks fast while it is written in order: not shed
    assert [tick(guard, 8000 - i * 3000, 20.0 + i, errors=4) for i in range(3)] == [0, 0, 0]


def test_never_sheds_the_backlog_of_a_stall() -> None:
    # CLIENT PAUSE WRITE: every write hangs, the ticks too; nothing fails. Afterwards the backlog is written fast.
    guard = LagGuard(MAX, heartbeat_interval_s=1.0)
    tick(guard, 10, 0.0)
    tick(guard, 10, 1.0)
    assert tick(guard, 30_000, 31.0) == 0  # the first tick after the stall
    assert tick(guard, 30_500, 31.5) == 0  # the backlog is still being written: one sample after the stall
    assert tick(guard, 2_000, 32.0) == 0  # drained fast
    assert not guard.lagging  # and the stall did not count as lagging either


def test_not_judged_until_redis_was_calm_for_a_while() -> None:
    # a failover: the publisher's write failed once, then it sleeps in its retry backoff (no new error) while the
    # backlog grows; ticks run on. Neither lagging nor shed until calm_s (LAG_MAX_MS + 2 heartbeats) has passed.
    guard = LagGuard(MAX, heartbeat_interval_s=0.5)
    tick(guard, 10, 0.0)
    tick(guard, 10, 0.5, errors=1)
    assert [tick(guard, 2500 + i * 500, 1.0 + i / 2, errors=1) for i in range(5)] == [0] * 5
    assert not guard.lagging
    # calm from 3.5 on: two calm ticks above the bound and growing, then shed (once)
    assert [tick(guard, 5000 + i * 500, 3.5 + i / 2, errors=1) for i in range(3)] == [0, MAX // 2, 0]


def test_read_lag_alone_is_not_shed() -> None:
    guard = LagGuard(MAX, heartbeat_interval_s=1.0)
    assert [tick(guard, 5000, float(i), write=0) for i in range(4)] == [0, 0, 0, 0]
    assert guard.lagging  # but the worker spreads


# -- the rebalancer's share -------------------------------------------------------------------------------------------


async def test_rebalancer_share_counts_strained_peers(make_settings: Any) -> None:
    settings: Settings = make_settings(LAG_MAX_MS="2000")
    guard = LagGuard(settings.lag_max_ms, heartbeat_interval_s=settings.heartbeat_interval_s)
    launcher = SimpleNamespace(held={"a": None, "b": None}, leases=None, handovers=None, store=None)
    peers: dict[str, dict[str, Any]] = {"me": {}, "other": {"lag": {"lagging": True, "cooling": False}}}
    rb = Rebalancer(settings, worker_id="me", redis=None, launcher=launcher, suspender=None,  # type: ignore[arg-type]
                    plan=lambda: None, stopping=lambda: False, now_ms=lambda: 0, guard=guard,
                    peers=lambda: peers)  # fmt: skip
    assert rb.share(4, 2) == 4  # the other lags: this healthy worker may take everything
    peers["other"] = {"lag": {"lagging": False, "cooling": False}}
    assert rb.share(4, 2) == 2
    now = asyncio.get_running_loop().time()
    for i in range(SUSTAIN + 1):
        tick(guard, 1500, now + i * settings.heartbeat_interval_s)
    assert rb.share(4, 2) == 1  # this one lags: one less than it holds
    guard.offered()
    assert rb.share(4, 2) == 2  # until fresh evidence: keeps what it holds
    off = Rebalancer(settings, worker_id="me", redis=None, launcher=launcher, suspender=None,  # type: ignore[arg-type]
                     plan=lambda: None, stopping=lambda: False, now_ms=lambda: 0)  # fmt: skip
    assert off.share(4, 2) == 2


# -- Publisher.shed on real Redis -------------------------------------------------------------------------------------


async def test_publisher_shed_announces_every_dropped_event(raw: Redis) -> None:
    topic = "bitmart:trade:BTCUSDT"
    pub = Publisher(raw, stream_maxlen=10_000)
    pub.start()
    pub.publish(topic, trade(0, topic))
    assert await pub.flush(5.0)
    pub.pause_writes()  # Redis "slow": one batch in flight, the events behind it wait in the queue
    pub.publish(topic, trade(1, topic))
    await wait_stats(pub, lambda s: s["inflight"] == 1)
    for i in range(2, 32):
        pub.publish(topic, trade(i, topic))
    await asyncio.sleep(0.25)  # let them age (the bound is about age, not an event to wait for)
    started = time.monotonic()
    for i in range(32, 42):
        pub.publish(topic, trade(i, topic))
    assert pub.stats["oldest_queued_age_ms"] >= 250
    dropped = pub.queue.shed(time.monotonic() - started + 0.1, GAP_REASON_LAG)
    assert dropped == 30  # not the batch in flight, not the young ones
    pub.resume_writes()
    assert await pub.flush(5.0)
    stored = await stream_events(raw, topic)
    gaps = [e for e in stored if e["type"] == "gap"]
    assert gaps == [{"type": "gap", "topic": topic, "reason": GAP_REASON_LAG, "since": trade(2, topic)["ts_received"],
                     "until": trade(31, topic)["ts_received"], "dropped": 30}]  # fmt: skip
    loss = align(list(range(42)), stored)
    assert (loss.lost, loss.announced, loss.duplicates, loss.unknown, loss.stored) == (30, 30, 0, 0, 12)
    assert pub.stats["dropped_by_reason"] == {GAP_REASON_LAG: 30}
    assert pub.stats["gaps_by_reason"] == {GAP_REASON_LAG: 1}
    await pub.close()


async def test_publisher_discard_drops_a_handed_over_connections_queue(raw: Redis) -> None:
    moved, kept = "bitmart:trade:BTCUSDT", "binanceusdm:trade:BTCUSDT"
    await raw.set(keys.lease("conn.a"), "w1")
    await raw.set(keys.lease("conn.b"), "w1")
    pub = Publisher(raw, stream_maxlen=10_000, worker_id="w1")
    pub.start()
    pub.pause_writes()
    pub.publish(moved, trade(0, moved), "conn.a")
    await wait_stats(pub, lambda s: s["inflight"] == 1)
    for i in range(1, 11):
        pub.publish(moved, trade(i, moved), "conn.a")
        pub.publish(kept, trade(i, kept), "conn.b")
    pub.queue.discard("conn.a")  # its lease moved on: what it queued would be fenced
    pub.publish(moved, trade(11, moved), "conn.a")  # queued after the discard: written
    pub.resume_writes()
    assert await pub.flush(5.0)
    assert [e["trade_id"] for e in await stream_events(raw, moved)] == ["0", "11"]
    assert [e["trade_id"] for e in await stream_events(raw, kept)] == [str(i) for i in range(1, 11)]
    assert pub.stats["fenced"] == 10 and pub.stats["dropped"] == 0
    await pub.close()
