"""A rebalancing handover whose marker read fails (issue 10, defect 4): never republish, wait or announce.

The fault is real: the ``default`` Redis user is refused ``XREVRANGE`` (``tests.redis_acl``), the one command the
taker uses to read each topic's last stored event after the lease moved to it. Everything else works, so the old
owner is fenced, the lease is the taker's and its standby socket keeps buffering.

- a marker read that fails for a while (longer than the lease TTL): the taker keeps its lease and retries until
  the read succeeds, then continues each topic right after its marker: no duplicate, no loss;
- a marker read that never succeeds (until ``HANDOVER_TIMEOUT_S``): the taker gives the connection up without
  publishing its buffer, and the connection is served again from a fresh socket with a ``takeover`` gap event
  (announced loss, no duplicate). Tested against ``LiveExchange``, which broadcasts one live trade sequence to
  every socket like a real exchange (the simulator replays each socket's tape from its start, so any fresh
  socket repeats old trade ids there, whatever Feedplane does).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from control import keys
from control.settings import Settings
from control.store import ControlStore
from scripts.simulator import ExchangeSimulator
from tests.redis_acl import allow, denials, deny
from workers.connection import TAKEOVER
from workers.planner import read_plan
from workers.stitch import identity

from . import _failover_world as fw
from ._failover_world import FAST, RAW_TRADES, LiveExchange, gap_neighbours, sim_env, stream
from .test_runtime import BINANCE, BITMART, WITH_TAPES, steady, wait_until

pytestmark = pytest.mark.timeout(90)

# Fixtures of the failover tests, found by pytest under these names: runtimes(settings, worker_id), LiveExchange.
live, make_runtimes, runtimes, session = fw.live, fw.make_runtimes, fw.runtimes, fw.session

#: Marker reads the unmodified taker tried before promoting with no markers at all.
OLD_ATTEMPTS = 3


@pytest.fixture
async def sim() -> AsyncIterator[ExchangeSimulator]:
    """25 frames/s per stream: the shortest tape with data here (BitMart 1m klines, 585 frames) does not loop
    within a test, so every kline update of the tape is unique in what the simulator sends."""
    async with ExchangeSimulator(rate=25.0, loop=True) as simulator:
        await simulator.preload()
        yield simulator


def duplicates(events: list[dict[str, Any]]) -> tuple[int, int]:
    """(trade ids stored more than once, kline updates stored more than once) in one topic's stream. A kline
    update is the same bar with the same values (``identity``: all but the receive time)."""
    trades = Counter(e["trade_id"] for e in events if e.get("type") == "trade")
    klines = Counter(repr(sorted(identity(e).items())) for e in events if e.get("type") == "kline")
    return sum(n - 1 for n in trades.values() if n > 1), sum(n - 1 for n in klines.values() if n > 1)


async def test_handover_with_failing_marker_reads_waits_and_republishes_nothing(
    redis: Redis, redis_url: str, sim: ExchangeSimulator, make_settings: Callable[..., Settings], runtimes: Any
) -> None:
    settings = make_settings(**sim_env(sim, redis_url, HEARTBEAT_INTERVAL_S="0.2", LEASE_TTL_S="1"))
    topics = [*BITMART, *BINANCE]
    await ControlStore(redis).add_desired(topics, now_ms=1)
    a = await runtimes(settings, "w-a")
    await steady(redis, sim, [a], topics)
    current = await read_plan(redis)
    by_conn = current.by_conn()

    async def flowing() -> bool:
        return all([await redis.xlen(keys.event_stream(t)) > 20 for t in topics if t in WITH_TAPES])

    await wait_until(flowing, what="events of every topic with a tape")
    async with deny(redis, "xrevrange"):
        b = await runtimes(settings, "w-b")  # fair share ceil(3 / 2) = 2: w-a hands one connection over to w-b

        def per_read() -> int:  # one marker read asks for every topic of the connection (one XREVRANGE each)
            return len(by_conn[(b.held or [*b._taking])[0]])

        async def refused_long_enough() -> bool:  # twice as many reads as before, or the taker stopped asking
            if b.held and not b._taking:
                return True
            return bool(b._taking) and await denials(redis, "xrevrange") >= 2 * OLD_ATTEMPTS * per_read()

        await wait_until(refused_long_enough, timeout=20, what="the taker's marker reads refused")
        refused = await denials(redis, "xrevrange") // per_read()
        await allow(redis, "xrevrange")

    async def rebalanced() -> bool:
        return len(a.held) == 2 and len(b.held) == 1 and not b._taking

    await wait_until(rebalanced, timeout=20, what="one connection handed over")
    [moved] = b.held
    moved_topics = sorted(t for t, c in current.assign.items() if c == moved and t in WITH_TAPES)
    lengths = {t: await redis.xlen(keys.event_stream(t)) for t in moved_topics}

    async def past_switch() -> bool:
        return all([await redis.xlen(keys.event_stream(t)) > n + 10 for t, n in lengths.items()])

    await wait_until(past_switch, timeout=20, what="events after the switch")
    figures = {}
    for topic in moved_topics:
        events = await stream(redis, topic)
        figures[topic] = (*duplicates(events), sum(1 for e in events if e.get("type") == "gap"))
    print(f"\nhandover with {refused} refused marker reads , moved {moved}: "
          + ", ".join(f"{t}: duplicate trades {d[0]}, duplicate kline updates {d[1]}, gaps {d[2]}"
                      for t, d in figures.items()))  # fmt: skip
    assert all(d == (0, 0, 0) for d in figures.values()), figures
    assert refused > OLD_ATTEMPTS  # it kept trying, past the point where it used to give up


@pytest.mark.timing  # a 1 s lease renewed every 0.2 s: a starved event loop loses it
async def test_marker_reads_failing_until_the_handover_timeout_announce_a_gap_and_duplicate_nothing(
    redis: Redis, redis_url: str, live: LiveExchange, make_settings: Callable[..., Settings], runtimes: Any
) -> None:
    trade, quiet = "binanceusdm:trade:BTCUSDT", "binanceusdm:kline:BTCUSDT:1m"  # routes public and market
    settings = make_settings(REDIS_URL=redis_url, BINANCE_USDM_WS_URI=live.base_url, HEARTBEAT_INTERVAL_S="0.2",
                             LEASE_TTL_S="1", HANDOVER_TIMEOUT_S="2", STALL_TIMEOUT_S="120", **FAST, **RAW_TRADES)  # fmt: skip
    await ControlStore(redis).add_desired([trade, quiet], now_ms=1)
    a = await runtimes(settings, "w-a")

    async def started() -> bool:
        return len(a.held) == 2 and await redis.xlen(keys.event_stream(trade)) > 20

    await wait_until(started, what="w-a serving both connections, trades flowing")
    moved = (await read_plan(redis)).assign[trade]  # the newest-sorting id is offered first: public > market
    async with deny(redis, "xrevrange"):
        b = await runtimes(settings, "w-b")

        async def served_by_b() -> bool:
            return b.held == [moved] and not b._taking

        await wait_until(served_by_b, timeout=30, what="the connection served by w-b")
    handshakes = len(live.handshakes)
    await live.wait_for(lambda: live.subscribed() == 1 and len(live.handshakes) == handshakes, timeout=5)
    last_sent = live.sent[-1]

    async def caught_up() -> bool:
        events = await stream(redis, trade)
        return events[-1].get("type") == "trade" and int(events[-1]["trade_id"]) >= last_sent

    await wait_until(caught_up, what="the stream to reach the last trade broadcast")
    events = await stream(redis, trade)
    dup_trades, _ = duplicates(events)
    ids = [int(e["trade_id"]) for e in events if e["type"] == "trade"]
    gaps = gap_neighbours(events, TAKEOVER)
    lost = len(set(range(ids[0], ids[-1] + 1)) - set(ids))
    announced = sum(int(after["trade_id"]) - int(before["trade_id"]) - 1 for before, _, after in gaps if after)
    print(f"\nmarker reads refused until the handover timeout: duplicate trades {dup_trades}, lost {lost} "
          f"(announced {announced}), gap events {[g['reason'] for g in events if g['type'] == 'gap']}")
    assert dup_trades == 0
    assert lost == announced and len(gaps) == 1, gaps
    assert ids == sorted(ids)
