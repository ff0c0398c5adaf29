"""Chaos with the event data on a real Redis Cluster (``EVENTS_REDIS_URL=redis+cluster://...``, 3 masters with one
replica each, started by the test): the same system and figures as ``test_chaos.py`` (see its docstring), with
control state on its own redis-server.

- ``kill-9-events-cluster``: kill -9 the busiest worker; its connections are taken over while the events go to
  the cluster (lease fencing across the two Redis roles runs on fence tokens).
- ``events-master-failover``: SIGKILL the cluster master holding the busiest trade topic while 7 topics stream; its
  replica is promoted (``cluster-node-timeout`` 1 s). Every event is in its stream exactly once or announced as
  lost, no SSE client misses an event, and no exchange socket is cut for it (a healthy socket is never cut).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from control import keys
from tests.chaos.harness import SSE_TOPIC, WORKERS, chaos_system, figure, observe, trade_loss
from tests.chaos.test_chaos import kill_9_scenario
from tests.e2e.harness import SSEReader, workers_alive

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(180)]


async def test_kill_9_worker_events_on_cluster(tmp_path: Path) -> None:
    """kill -9 a worker holding connections while the event data is on a Redis Cluster (supervisord restarts it)."""
    await kill_9_scenario(tmp_path, "kill-9-events-cluster", restarted=True, events_cluster=True)


async def test_events_master_failover_under_load(tmp_path: Path) -> None:
    async with chaos_system(tmp_path, events_cluster=True) as s:
        assert s.cluster is not None
        sse = SSEReader(s.http, f"{s.fp.base}/sse?topic={SSE_TOPIC}")
        sse.start()
        baseline = await trade_loss(s)
        assert baseline.lost == 0, baseline
        reconnects = {c["id"]: c["reconnects"] for c in (await s.status())["connections"]}
        victim = await asyncio.to_thread(s.cluster.master_of, keys.event_stream(SSE_TOPIC))

        t0 = time.monotonic()
        failover_s = await asyncio.to_thread(s.cluster.fail_master, victim)
        await s.recovered(timeout_s=30)
        recovered_s = time.monotonic() - t0
        duplicates, loss, lost_sse = await observe(s, sse)
        after = {c["id"]: c["reconnects"] for c in (await s.status())["connections"]}
        cut = sum(after.get(c, 0) - n for c, n in reconnects.items())
        figure("events-master-failover", recovered_s, duplicates, loss, lost_sse)
        print(f"  killed master :{victim.port} (slot of {SSE_TOPIC}); cluster ok again after {failover_s:.2f} s; "
              f"exchange reconnects {cut}; {loss.line()}")  # fmt: skip
        await sse.stop()

        assert duplicates == 0
        assert cut == 0, "an exchange socket was cut for a Redis failover"
        assert loss.unknown == 0 and loss.duplicates == 0, loss.line()
        assert loss.lost <= loss.announced, f"{loss.lost - loss.announced} events lost unannounced in the failover"
        assert lost_sse == 0
        assert await workers_alive(s.http, s.fp, WORKERS)
