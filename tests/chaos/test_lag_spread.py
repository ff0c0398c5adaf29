"""Chaos: a worker that cannot keep up (issue 15, "bounded lag"): it hands its busiest connection to a healthy worker
before its lag passes ``LAG_MAX_MS`` (make-before-break: nothing lost, nothing written twice), and, alone, sheds what
waited longer than the bound, announced by ``gap`` events (``reason: "lag"``).

The system: a private redis-server, the simulator (``RATE`` frames/s per stream, the 7 topics of the chaos suite on
3 connections), the control server and one worker under supervisord (``H``: ``<host>-00``), and one more real arq
worker started by the test (``python -m workers``, id ``lagger``) whose Redis link goes through a TCP proxy the test
throttles (``tests.workers.tcp_proxy``): its publisher then writes slower than its sockets read, so its *write lag*
(``oldest_queued_age_ms``, part of ``lag_ms``) grows while its control commands, small, still pass.

- ``spread``: ``lagger`` alone takes the 3 connections; ``H`` joins and takes one by the ordinary fair share. The
  link of ``lagger`` is measured, then throttled to 3/4 of what it sent (its lag grows by about 0.3 s a second).
  Expected: ``lagger`` turns *lagging* and hands its busiest connection (Binance ``market``: aggTrade + klines) to
  ``H`` although it holds no more than its fair share; ``H`` keeps it (``lagger`` is cooling); no event is shed.
- ``shed``: ``lagger`` alone (``H`` stopped), throttled to 1/4: nobody to spread to, so once its write lag stays
  above ``LAG_MAX_MS`` it sheds, and each loss is announced with its exact count.

Counted over both trade topics against the simulator's tapes (``tests.chaos.test_chaos_handover.tape_loss``: the
tapes do not loop within a run): *lost* trades and how many of them a gap announces, and trades stored twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from control.redis_client import make_redis
from scripts.simulator import ExchangeSimulator
from tests.chaos.harness import ENV, NATIVES, SUBSCRIBE, TRADE_TOPICS, DuplicateWatch, System, stream_events
from tests.chaos.test_chaos_handover import duplicated, tape_loss
from tests.e2e.harness import ROOT, Feedplane, RedisServer, poll, post_json, workers_alive
from tests.workers.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(150)]

RATE = 200.0
LAG_MAX_MS = 4000
#: The shedding scenario's bound: reached before 5,000 events queue (where the publisher's deeper batches would
#: let it catch up).
SHED_LAG_MAX_MS = 2000
#: Upstream delay of the lagger's publisher link: one batch (<= 500 events) per round trip, so it writes about
#: 500 / delay events/s of the ~600-800 it is sent (the kline tapes pause for part of each loop).
SPREAD_DELAY_S = 0.85
SHED_DELAY_S = 2.0
LAGGER = "lagger"
H_PROGRAM = "worker:worker_00"
#: The Binance connection carrying the aggTrade and kline topics: the busiest one ``lagger`` keeps.
MARKET = "binanceusdm.market"


@dataclass
class Lab:
    system: System
    proxy: TcpProxy
    lagger: subprocess.Popen[bytes]
    log: Path

    async def worker(self, suffix: str) -> dict[str, Any] | None:
        body = await self.system.status()
        return next((w for w in body["workers"] if w["id"].endswith(suffix) and w.get("alive")), None)

    async def conns(self, suffix: str) -> list[str]:
        worker = await self.worker(suffix)
        return [] if worker is None else list(worker["connections"])

    async def slow_publisher(self, delay_s: float, seconds: float = 2.0) -> str:
        """Delay the upstream bytes of ``lagger``'s busiest Redis connection (its publisher's: one batch of at most
        500 events per round trip) by ``delay_s``. Returns a note with the rates measured before."""
        before, started = dict(self.proxy.sent_by_conn), time.monotonic()
        published = int((await self.worker(LAGGER) or {})["publisher"]["events_published"])
        await asyncio.sleep(seconds)  # a measurement window, not a synchronization
        elapsed = time.monotonic() - started
        rate = (int((await self.worker(LAGGER) or {})["publisher"]["events_published"]) - published) / elapsed
        sent = {k: n - before.get(k, 0) for k, n in self.proxy.sent_by_conn.items()}
        busiest = max(sent, key=lambda k: sent[k])
        self.proxy.delay(busiest, delay_s)
        return f"{rate:.0f} events/s, {sent[busiest] / elapsed / 1000:.0f} kB/s; publisher link delayed {delay_s} s"

    async def stored(self) -> dict[str, list[dict[str, Any]]]:
        return {t: [e for _, e in await stream_events(self.system.r, t)] for t in NATIVES}


@contextlib.asynccontextmanager
async def lab(tmp_path: Path, base_port: int, *, with_h: bool, lag_max_ms: int) -> AsyncIterator[Lab]:
    """The system of the module docstring; ``lagger`` holds the 3 connections on entry (``H`` is started after the
    subscriptions when ``with_h``, else stays stopped). Ports ``base_port`` .. ``base_port + 3``."""
    async with contextlib.AsyncExitStack() as stack:  # every started piece is stopped, in reverse order
        redis_server = RedisServer(tmp_path / "redis", port=base_port)
        stack.callback(redis_server.kill)
        await redis_server.astart()
        r = make_redis(redis_server.url(), decode=False)
        stack.push_async_callback(r.aclose)
        assert await r.dbsize() == 0, f"port {base_port}: not a fresh redis-server (a stale one?)"
        sim = ExchangeSimulator(port=base_port + 1, rate=RATE, loop=True)
        await sim.preload()
        await sim.start()
        stack.push_async_callback(sim.stop)
        proxy = TcpProxy(redis_server.port)
        proxy.port = base_port + 2
        await proxy.start()
        stack.push_async_callback(proxy.close)
        env = {**ENV, "WORKERS": "1", "LAG_MAX_MS": str(lag_max_ms)}
        fp = Feedplane(tmp_path, sim, redis_url=redis_server.url(), workers=1, env=env)
        fp.port = base_port + 3
        fp.base = f"http://127.0.0.1:{fp.port}"
        fp.env["CTRL_ADDR"] = f"127.0.0.1:{fp.port}"
        http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30, sock_connect=5))
        stack.push_async_callback(http.close)
        system = System(redis_server, sim, fp, http, r, DuplicateWatch(sim))
        log = tmp_path / "lagger.log"
        stack.callback(lambda: print(fp.tail(2000), "== lagger.log\n" + _tail(log)))
        fp.start()
        stack.push_async_callback(_stop_feedplane, fp)
        await poll(lambda: workers_alive(http, fp, 1), 60, "control server and worker_00")
        await fp.ctl("stop", H_PROGRAM)
        await poll(lambda: workers_alive(http, fp, 0), 30, f"{H_PROGRAM} stopped")
        lagger = _start_worker({**fp.env, "WORKER_ID": LAGGER, "PROCESS_NUM": "1", "REDIS_URL": proxy.url()}, log)
        stack.push_async_callback(_stop_worker, lagger)
        await poll(lambda: workers_alive(http, fp, 1), 60, "the lagger worker")
        for path, body in SUBSCRIBE:
            code, answer = await post_json(http, f"{fp.base}{path}", body)
            assert code == 202, answer
        here = Lab(system, proxy, lagger, log)
        await poll(lambda: _holds(here, LAGGER, 3), 30, "lagger holding the 3 connections")
        if with_h:
            await fp.ctl("start", H_PROGRAM)
            await poll(lambda: _settled(here), 30, "worker_00 taking its share, the lagger keeping the market one")
        await poll(system.all_active, 30, "every subscription active")
        system.watch.start()
        stack.push_async_callback(system.watch.stop)
        yield here


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-4000:] if log.exists() else ""


async def _stop_feedplane(fp: Feedplane) -> None:
    if fp.proc is not None and fp.proc.poll() is None:
        await fp.stop()


async def _stop_worker(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(proc.wait, 30)
        if proc.poll() is None:
            proc.kill()


async def _settled(lab: Lab) -> bool:
    """Both workers hold connections, the lagger the Binance ``market`` one, and no handover is under way."""
    lagger, h = await lab.worker(LAGGER), await lab.worker("-00")
    if lagger is None or h is None or not h["connections"]:
        return False
    idle = not (lagger["taking"] or lagger["offered"] or h["taking"] or h["offered"])
    return idle and any(c.startswith(MARKET) for c in lagger["connections"])


def _start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """One real arq worker (``python -m workers``) logging to ``log``."""
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([sys.executable, "-m", "workers"], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                env=env)  # fmt: skip


async def _holds(lab: Lab, suffix: str, n: int) -> bool:
    worker = await lab.worker(suffix)
    return worker is not None and len(worker["connections"]) == n and not worker["taking"] and not worker["offered"]


def figure(name: str, lost: int, announced: int, duplicates: int, lag: dict[str, Any], extra: str) -> str:
    line = (f"chaos {name}: events lost {lost} (announced {announced}), duplicated {duplicates}, lagger lag "
            f"{lag.get('lag_ms')} ms, spread {lag.get('spread')}, shed {lag.get('shed')} ({lag.get('sheds')} times)"
            f"; {extra}")  # fmt: skip
    print(f"\n{line}")
    return line


async def test_a_lagging_worker_hands_its_busiest_connection_to_a_healthy_one(tmp_path: Path) -> None:
    async with lab(tmp_path, 31010, with_h=True, lag_max_ms=LAG_MAX_MS) as lab_:
        kept = await lab_.conns(LAGGER)
        assert any(c.startswith(MARKET) for c in kept), kept
        note = await lab_.slow_publisher(SPREAD_DELAY_S)
        t0 = time.monotonic()
        seen: dict[str, Any] = {}
        trace: list[str] = []

        async def spread() -> bool:
            lagger, h = await lab_.worker(LAGGER), await lab_.worker("-00")
            if lagger is None or h is None:
                return False
            lag = lagger.get("lag") or {}
            if lag.get("lagging"):
                seen.setdefault("lagging", dict(lag))
            if lag.get("spread") and "offered" not in seen:
                seen["offered"] = dict(lag)
            trace.append(f"{time.monotonic() - t0:.1f}s {lag} {lagger['connections']} {h['connections']}")
            return any(c.startswith(MARKET) for c in h["connections"]) and not h["taking"]

        try:
            await poll(spread, 60, "the market connection handed to worker_00")
        except AssertionError:
            print("\n".join(trace[::5]))  # lagger's lag record every ~0.5 s, its connections, worker_00's
            raise
        spread_s = time.monotonic() - t0
        lab_.proxy.delays.clear()
        await poll(lambda: _drained(lab_), 30, "the lagger's backlog written")
        await lab_.system.sim.wait_for(lambda: all(n == 1 for n in _sockets(lab_).values()), timeout=10)
        lag = (await lab_.worker(LAGGER) or {}).get("lag", {})
        kept_after = await lab_.conns(LAGGER)
        stored = await lab_.stored()
        lost, announced = tape_loss(stored)
        dup_trades, dup_klines = duplicated(stored)
        line = figure("lag-spread", lost, announced, dup_trades + dup_klines, lag,
                      f"handed over {spread_s:.1f} s after the link slowed ({note}); seen "
                      f"lagging at {seen.get('lagging', {}).get('lag_ms')} ms, first offer at "
                      f"{seen.get('offered', {}).get('lag_ms')} ms; lagger keeps {kept_after}")  # fmt: skip
        for topic in TRADE_TOPICS:  # where duplicates are, if any (trade id: count, first stream positions)
            ids = [e.get("trade_id") for e in stored[topic]]
            twice = {i: [k for k, j in enumerate(ids) if j == i][:3] for i in set(ids) if ids.count(i) > 1}
            if twice:
                print(topic, len(ids), sorted(twice.items())[:5])
        assert seen.get("lagging"), line  # it was lagging, and said so in its record
        assert lag["spread"] >= 1, line  # and offered because of it (not the ordinary fair share: it held 2 of 3)
        assert (dup_trades, dup_klines) == (0, 0), line
        assert lost == announced, line  # the handover lost nothing; whatever was shed meanwhile is announced
        assert seen["offered"]["shed"] == 0, line  # spreading came first (shedding: only if the lag kept growing)
        assert lag["lag_ms"] < LAG_MAX_MS, line
        assert any(c.startswith(MARKET) for c in await lab_.conns("-00")), line  # kept: the lagger is cooling
        assert lag["spread"] == 1 and kept_after == [c for c in kept if not c.startswith(MARKET)], line  # no more


async def test_a_lagging_worker_alone_sheds_and_announces_every_loss(tmp_path: Path) -> None:
    async with lab(tmp_path, 31020, with_h=False, lag_max_ms=SHED_LAG_MAX_MS) as lab_:
        note = await lab_.slow_publisher(SHED_DELAY_S)

        async def shed() -> bool:
            lagger = await lab_.worker(LAGGER)
            return lagger is not None and (lagger.get("lag") or {}).get("shed", 0) > 0

        await poll(shed, 60, "the lagger shedding")
        lab_.proxy.delays.clear()
        await poll(lambda: _drained(lab_), 30, "the lagger's backlog written")
        lagger = await lab_.worker(LAGGER)
        assert lagger is not None
        lag, publisher = lagger["lag"], lagger["publisher"]
        stored = await lab_.stored()
        lost, announced = tape_loss(stored)
        dup_trades, dup_klines = duplicated(stored)
        reasons = sorted({e["reason"] for events in stored.values() for e in events if e.get("type") == "gap"})
        line = figure("lag-shed", lost, announced, dup_trades + dup_klines, lag,
                      f"{note}; gap reasons {reasons}; dropped_by_reason {publisher.get('dropped_by_reason')}")
        assert lagger["connections"] and len(lagger["connections"]) == 3, line  # nobody to spread to
        assert reasons == ["lag"], line
        assert publisher["dropped_by_reason"] == {"lag": lag["shed"]}, line
        assert publisher["gaps_by_reason"].get("lag", 0) >= 1, line
        assert 0 < lost == announced, line
        assert (dup_trades, dup_klines) == (0, 0), line
        gap_total = sum(e.get("dropped", 0) for t in TRADE_TOPICS for e in stored[t] if e.get("type") == "gap")
        assert gap_total == announced, line


async def _drained(lab: Lab) -> bool:
    lagger = await lab.worker(LAGGER)
    if lagger is None:
        return False
    return int((lagger.get("lag") or {}).get("write_lag_ms", 0)) < 200


def _sockets(lab: Lab) -> dict[str, int]:
    counts: dict[str, int] = {}
    for conn in lab.system.sim.connections:
        for native in conn.subscribed:
            counts[native] = counts.get(native, 0) + 1
    return counts
