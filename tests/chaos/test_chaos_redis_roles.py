"""Chaos scenarios: Redis that is up but cannot take writes for a while (issue #10), under the chaos suite's load.

Same system as ``test_chaos.py`` (its ``chaos_system``: 3 workers under supervisord, the simulator at 200 frames/s
per stream, 6 topics), REDIS_URL pointing straight at one server:

- *replica-demotion*: a replica is attached, then the master is demoted (roles swapped as a Sentinel would, no
  write lost: ``tests.e2e.redis_roles.ReplicaPair``) for 1.5 s while trades flow, so every write Feedplane sends it
  answers ``READONLY``; then it is promoted back (``REPLICAOF NO ONE``).
- *loading*: Redis holds a large data set (filler keys, AOF compacted) and is restarted loading it slowly
  (``key-load-delay``), so for a while it answers ``LOADING`` to everything.

Each prints one line::

    chaos <name>: recovered in X.XX s, events lost N (announced A), duplicated D, false reconnects R, sse lost S

*events lost / announced / duplicated*: over both trade topics, as in ``test_chaos.py`` (``trade_loss``: sent trade
ids aligned with the Redis streams; a duplicate is an entry stored twice). *false reconnects*: exchange sockets the
simulator saw opened after the fault began (the exchange was healthy throughout, so every one is false). All must
be 0 except announced losses.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.chaos.harness import (
    OBSERVE_S,
    SSE_TOPIC,
    Loss,
    System,
    _async,
    _caught_up,
    assert_rode_out,
    chaos_system,
    sse_lost,
    trade_loss,
)
from tests.e2e import redis_roles
from tests.e2e.harness import SSEReader, poll

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(180)]

#: How long the master stays demoted, and the LOADING scenario's data set (filler keys loaded at KEY_LOAD_DELAY_US
#: each: about 1 s of LOADING on an idle machine). Both faults stay well inside LEASE_TTL_S (3 s; leases are renewed
#: every 0.5 s): longer, and the leases expire while Redis cannot take their renewals, so the connections move to
#: another worker (a takeover, announced with ``reason: "takeover"``): the runtime's business, not this test's.
DEMOTED_S = 1.5
FILLER_KEYS = 6_000
KEY_LOAD_DELAY_US = 100


def role_figure(name: str, recovered_s: float, loss: Loss, reconnects: int, sse: int) -> str:
    line = (f"chaos {name}: recovered in {recovered_s:.2f} s, events lost {loss.lost} (announced {loss.announced}), "
            f"duplicated {loss.duplicates}, false reconnects {reconnects}, sse lost {sse}")  # fmt: skip
    print(f"\n{line}")
    return line


def sockets_opened(s: System) -> int:
    return int(s.sim.stats.get("connections_opened", 0))


async def worker_pids(s: System) -> dict[str, int]:
    return {w["id"]: w["pid"] for w in (await s.status())["workers"]}


@dataclass
class Watch:
    """A running system with an SSE client and the figures taken before the fault."""

    s: System
    sse: SSEReader
    pids: dict[str, int]
    opened: int

    @classmethod
    async def start(cls, s: System) -> Watch:
        sse = SSEReader(s.http, f"{s.fp.base}/sse?topic={SSE_TOPIC}")
        sse.start()
        await poll(_async(lambda: len(sse.events) > 10), 10, "SSE events")
        pids = await worker_pids(s)
        baseline = await trade_loss(s)
        assert baseline.lost == 0, baseline
        return cls(s, sse, pids, sockets_opened(s))

    async def ride_out(self, name: str, t0: float, what: str, note: str) -> None:
        """After the fault ended at ``t0``: recovered, caught up, observed; print the figure (and ``note``) and
        assert nothing was lost, duplicated or reconnected."""
        s, sse = self.s, self.sse
        await s.recovered(timeout_s=30)
        await poll(lambda: _caught_up(s), 30, f"events held during {what} written to Redis")
        recovered_s = time.monotonic() - t0
        await asyncio.sleep(OBSERVE_S)
        await poll(_async(lambda: sse.connected), 10, "the SSE client connected")
        after = await s.status()
        loss = await trade_loss(s)
        reconnects = sockets_opened(s) - self.opened
        lost_sse = await sse_lost(s, sse)
        restarted = sorted(w["id"] for w in after["workers"] if self.pids.get(w["id"]) != w["pid"])
        role_figure(name, recovered_s, loss, reconnects, lost_sse)
        print(f"  {note}; workers restarted {restarted}; {loss}; "
              f"publishers {[w['publisher'] for w in after['workers']]}")  # fmt: skip
        await sse.stop()
        await assert_rode_out(s, s.watch.extra_after(t0), loss, lost_sse, restarted, what)
        assert (loss.lost, loss.duplicates, reconnects) == (0, 0, 0), loss


async def test_replica_demotion_under_load(tmp_path: Path) -> None:
    """The master answers READONLY for 1.5 s (demoted, then promoted back): nothing lost, nothing twice."""
    async with chaos_system(tmp_path) as s:
        pair = await asyncio.to_thread(redis_roles.ReplicaPair.start_replica_of, s.redis, tmp_path / "replica")
        try:
            watch = await Watch.start(s)
            await asyncio.to_thread(pair.demote)
            t_demoted = time.monotonic()
            assert await asyncio.to_thread(pair.role) == "slave"
            await asyncio.sleep(DEMOTED_S)  # the fault: writes answer READONLY while trades flow
            await asyncio.to_thread(pair.promote_back)
            t0 = time.monotonic()
            await watch.ride_out("replica-demotion", t0, "the demotion", f"demoted for {t0 - t_demoted:.2f} s")
        finally:
            pair.replica.kill()


async def test_loading_after_restart_under_load(tmp_path: Path) -> None:
    """Redis restarts with a data set it loads for a while (LOADING): what the workers got meanwhile arrives after."""
    async with chaos_system(tmp_path) as s:
        await asyncio.to_thread(redis_roles.fill, s.redis, FILLER_KEYS, "chaos:filler")
        await asyncio.to_thread(redis_roles.rewrite_aof, s.redis)
        watch = await Watch.start(s)

        t_down = time.monotonic()
        await s.redis.astop()
        redis_roles.slow_loading(s.redis, KEY_LOAD_DELAY_US)
        starting = asyncio.create_task(asyncio.to_thread(s.redis.start, 60.0))  # returns once the data is loaded
        loading_seen = False
        while not starting.done():
            if await asyncio.to_thread(redis_roles.loading, s.redis):
                loading_seen = True
            await asyncio.sleep(0.05)
        await starting
        t0 = time.monotonic()
        assert loading_seen, "Redis never answered LOADING: the data set loaded too fast"
        await watch.ride_out("loading", t0, "the LOADING restart",
                             f"Redis unavailable {t0 - t_down:.2f} s (LOADING seen: {loading_seen})")  # fmt: skip
