"""Chaos: the WHOLE system rides out a long Redis outage (``OUTAGE_S``: 15 s, or the acceptance length 60 s with
``FEEDPLANE_CHAOS_OUTAGE_S=60``) at high rate with DEFAULT lease and heartbeat settings
(issue 10, defect 2 acceptance: "a 60 s Redis outage under 20k frames/s with default settings gives 0 exchange
reconnects, and every loss is announced with reason ``backpressure`` or ``redis_unavailable``").

``redis-outage-system``: Feedplane under supervisord (``supervisord.conf``) with 3 workers and the defaults
that matter here, set explicitly because the e2e harness shortens them: ``LEASE_TTL_S=4``,
``HEARTBEAT_INTERVAL_S=1`` (keepalive, stall timer and publisher bounds are left at their defaults too). Two trade
topics (BitMart, Binance USD-M aggTrade), so two exchange connections and one idle worker (the one that would grab a
connection when Redis comes back if the previous owners were not preferred). The simulator runs in its own process
at ``RATE_PER_STREAM`` frames/s per stream, looping its tapes; a private ``redis-server`` (append-only file, so it
comes back with its data, as a production restart) is stopped (SIGTERM: connections refused) for ``OUTAGE_S``.

Printed: ``chaos redis-outage-<N>s-system: events lost N (announced A), duplicated D, false reconnects F`` and the rate
reached, the recovery time, the gap reasons, each connection's suspension counters and the workers' restarts.

Counting: the simulator child records the trade id of every data frame it sends, per stream, in send order (one
socket per stream all along when nothing reconnects). ``align_stream`` walks each topic's Redis stream against it:
a gap's ``dropped`` count accounts for exactly that many trades; any other skip is lost (announced only after a gap
without a count). *duplicated*: a trade published from two receptions (two sockets); it breaks the order, so it
shows as ``unknown`` or as an unannounced loss. An identical entry written twice (same trade, same ``ts_received``)
is the publisher's at-least-once retry of the batch it was writing when Redis shut down (``workers.publisher``):
printed as *resent*, at most one batch per worker, and only before the outage's gap (never from the resume).
*false reconnects*: sockets the simulator opened after the system settled, plus the reconnects the workers count
(``/status``), while the simulator answered every ping.
"""

from __future__ import annotations

import array
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from redis.asyncio import Redis

from control import keys
from control.redis_client import make_redis
from scripts.simulator import ExchangeSimulator
from tests.chaos.harness import OUTAGE_S
from tests.e2e.harness import ROOT, Feedplane, RedisServer, free_port, get_json, poll, post_json, workers_alive
from tests.loss import Loss, align_stream

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(600)]

#: Frames/s per stream: two streams, 20,000 frames/s in all (the acceptance rate), if the machine keeps up.
RATE_PER_STREAM = 10_000.0
WORKERS = 3
#: The defaults (``control.settings.Settings``): the harness would otherwise run with LEASE_TTL_S=3, HEARTBEAT 0.5.
ENV = {"WORKERS": str(WORKERS), "LEASE_TTL_S": "4", "HEARTBEAT_INTERVAL_S": "1", "LOG_LEVEL": "INFO",
       "STREAM_MAXLEN": "10000000"}  # every stored trade stays for the count (the default trims at 100,000)
#: topic -> the simulator's native stream.
TOPICS = {"bitmart:trade:BTCUSDT": "futures/trade:BTCUSDT", "binanceusdm:trade:BTCUSDT": "btcusdt@aggTrade"}
SUBSCRIBE = [("/trades/subscribe", {"exchange": "bitmart", "symbol": "BTCUSDT"}),
             ("/trades/subscribe", {"exchange": "binanceusdm", "symbol": "BTCUSDT"})]  # fmt: skip
#: Reasons a loss caused by an absent Redis may be announced with.
REDIS_REASONS = {"backpressure", "redis_unavailable"}
#: ``workers.publisher.Publisher`` max_batch: the most one worker can resend after an outage.
MAX_BATCH = 500
OBSERVE_S = 5.0

_CHILD = """
import array, asyncio, json, signal, sys
import orjson
from scripts.simulator import ExchangeSimulator

def trade_ids(raw):
    obj = orjson.loads(raw)
    data = obj.get("data", obj)
    if isinstance(data, dict):  # Binance: aggTrade id ``a`` (the default stream), raw trade id ``t``
        return [int(data["a"] if data.get("e") == "aggTrade" else data["t"])]
    return [int(t["trade_id"]) for t in data]  # BitMart: a batch of trades

async def main(port, rate, out):
    ids, cache = {}, {}

    def on_send(native, raw, _ns):  # loop=True repeats frames verbatim: parse each distinct frame once
        got = cache.get(raw)
        if got is None:
            try:
                got = trade_ids(raw)
            except Exception:
                got = []
            cache[raw] = got
        ids.setdefault(native, array.array("q")).extend(got)

    sim = ExchangeSimulator(port=port, rate=rate, loop=True, record_sent=False)
    sim.on_send = on_send
    await sim.preload()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await sim.start()
    print("ready", flush=True)
    await stop.wait()
    stats = dict(sim.stats)
    await sim.stop()
    files = {}
    for i, (native, arr) in enumerate(sorted(ids.items())):
        path = f"{out}/sent-{i}.bin"
        with open(path, "wb") as f:
            arr.tofile(f)
        files[native] = path
    print(json.dumps({"stats": stats, "files": files}), flush=True)

asyncio.run(main(int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]))
"""


class SimChild:
    """The simulator in its own process (see ``_CHILD``); ``status()`` is its ``/_sim/status``."""

    def __init__(self, tmp: Path, rate: float) -> None:
        self.port = free_port()
        self.tmp = tmp
        self.proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(self.port), str(rate), str(tmp)], cwd=ROOT,
                                     stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
        #: Only for its URLs (the harness reads them); never started.
        self.urls = ExchangeSimulator(port=self.port)

    async def ready(self) -> None:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), 60)
        assert line.strip() == b"ready", line

    async def status(self, http: aiohttp.ClientSession) -> dict[str, Any]:
        code, body = await get_json(http, f"http://127.0.0.1:{self.port}/_sim/status")
        assert code == 200, body
        return body

    async def stop(self) -> tuple[dict[str, Any], dict[str, array.array[int]]]:
        """SIGTERM; returns its counters and the trade ids it sent per stream."""
        self.proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.to_thread(self.proc.communicate, timeout=60)
        result = json.loads([ln for ln in out.decode().splitlines() if ln.startswith("{")][-1])
        sent: dict[str, array.array[int]] = {}
        for native, path in result["files"].items():
            arr: array.array[int] = array.array("q")
            arr.frombytes(Path(path).read_bytes())
            sent[native] = arr
        return result["stats"], sent

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


async def stream_entries(r: Redis, topic: str) -> AsyncIterator[dict[str, Any]]:
    """The topic's stream, oldest first, read in chunks (a million entries do not fit in memory as dicts at once)."""
    field = keys.STREAM_FIELD.encode()
    start = "-"
    while True:
        entries = await r.xrange(keys.event_stream(topic), min=start, count=20_000)
        for _, fields in entries:
            yield orjson.loads(fields[field])
        if len(entries) < 20_000:
            return
        start = "(" + entries[-1][0].decode()


async def _status(http: aiohttp.ClientSession, fp: Feedplane) -> dict[str, Any]:
    code, body = await get_json(http, f"{fp.base}/status")
    assert code == 200, body
    return body


async def _settled(http: aiohttp.ClientSession, fp: Feedplane, sim: SimChild) -> bool:
    """Every topic active, each stream on exactly one simulator socket, no worker above its share or handing over."""
    code, body = await get_json(http, f"{fp.base}/status")
    if code != 200:
        return False
    states = {s["topic"]: s["state"] for s in body["subscriptions"]}
    if any(states.get(t) != "active" for t in TOPICS):
        return False
    if any(len(w["connections"]) > 1 or w.get("taking") or w.get("offered") for w in body["workers"]):
        return False
    sockets = [c for c in (await sim.status(http))["connections"] if c["subscribed"]]
    return sorted(n for c in sockets for n in c["subscribed"]) == sorted(TOPICS.values()) and len(sockets) == 2


async def _fresh(r: Redis, since_ms: int) -> bool:
    """Both trade streams hold a trade received after ``since_ms`` (epoch ms)."""
    for topic in TOPICS:
        raw = await r.xrevrange(keys.event_stream(topic), count=1)
        if not raw or orjson.loads(raw[0][1][keys.STREAM_FIELD.encode()]).get("ts_received", 0) <= since_ms:
            return False
    return True


async def _backlogs(http: aiohttp.ClientSession, fp: Feedplane) -> int:
    body = await _status(http, fp)
    return sum(int((w.get("publisher") or {}).get("queue_depth") or 0) for w in body["workers"])


@pytest.mark.timeout(600)
async def test_redis_outage_whole_system_default_settings(tmp_path: Path) -> None:
    redis_server = RedisServer(tmp_path / "redis", persistent=True)
    await redis_server.astart()
    sim = SimChild(tmp_path, RATE_PER_STREAM)
    fp = Feedplane(tmp_path, sim.urls, redis_url=redis_server.url(), workers=WORKERS, env=ENV)
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30, sock_connect=5))
    r = make_redis(redis_server.url(), decode=False)
    samples: list[str] = []
    try:
        await sim.ready()
        fp.start()
        await poll(lambda: workers_alive(http, fp, WORKERS), 60, f"control server and {WORKERS} workers")
        for path, body in SUBSCRIBE:
            code, answer = await post_json(http, f"{fp.base}{path}", body)
            assert code == 202, answer
        await poll(lambda: _settled(http, fp, sim), 60, "both trade streams on one socket each, one per worker")
        await asyncio.sleep(5.0)  # steady flow before the outage (also the rate measurement's first part)
        before = await _status(http, fp)
        pids = {w["id"]: w["pid"] for w in before["workers"]}
        owners = {c["id"]: c["worker"] for c in before["connections"]}
        reconnects0 = sum(int(c.get("reconnects") or 0) for c in before["connections"])
        sim0 = await sim.status(http)
        opened0 = sim0["counters"].get("connections_opened", 0)
        sent0, t_sent0 = sim0["counters"].get("data_frames_sent", 0), time.monotonic()

        def sample(label: str, st: dict[str, Any]) -> None:
            sockets = [c for c in st["connections"] if c["subscribed"]]
            samples.append(f"{label}: sockets {len(sockets)} (ages {[c['age_s'] for c in sockets]}), opened "
                           f"{st['counters'].get('connections_opened', 0) - opened0}, frames sent "
                           f"{st['counters'].get('data_frames_sent', 0) - sent0:,}")  # fmt: skip

        t0 = time.monotonic()
        await redis_server.astop()
        while (elapsed := time.monotonic() - t0) < OUTAGE_S:  # the outage itself, sampled every 10 s
            await asyncio.sleep(min(10.0, OUTAGE_S - elapsed))
            sample(f"outage {time.monotonic() - t0:.0f} s", await sim.status(http))
        await redis_server.astart()
        t_back = time.monotonic()
        back_ms = int(time.time() * 1000)
        await poll(lambda: _fresh(r, back_ms + 2000), 120, "new trades in both streams after Redis returned")
        await poll(lambda: _caught_up(http, fp), 120, "the publishers' backlogs written")
        recovered_s = time.monotonic() - t_back
        await asyncio.sleep(OBSERVE_S)  # observation window under load

        after = await _status(http, fp)
        sim1 = await sim.status(http)
        sample("after", sim1)
        rate = (sim1["counters"].get("data_frames_sent", 0) - sent0) / (time.monotonic() - t_sent0)
        opened = sim1["counters"].get("connections_opened", 0) - opened0
        reconnects = sum(int(c.get("reconnects") or 0) for c in after["connections"]) - reconnects0
        false_reconnects = max(opened, reconnects)
        restarted = sorted(w["id"] for w in after["workers"] if pids.get(w["id"]) != w["pid"])
        moved = {c["id"]: c["worker"] for c in after["connections"] if owners.get(c["id"]) != c["worker"]}
        suspension = {c["id"]: c.get("suspension") for c in after["connections"]}
        reasons = {c["id"]: c.get("reasons") for c in after["connections"]}

        _, sent = await sim.stop()  # the sockets close now: counted above, before this
        await poll(lambda: _stable(r), 60, "the streams no longer growing")
        loss, resent_late = Loss(), 0
        for topic, native in TOPICS.items():
            part, late = await align_stream(sent.get(native, array.array("q")), stream_entries(r, topic))
            samples.append(f"{topic}: sent {len(sent.get(native, ())):,}, {part.line()} (identical entries after the "
                           f"gap: {late})")  # fmt: skip
            loss, resent_late = loss + part, resent_late + late
        print(f"\nchaos redis-outage-{OUTAGE_S:.0f}s-system: events lost {loss.lost} (announced {loss.announced}), duplicated "
              f"{loss.unknown}, false reconnects {false_reconnects}; resent {loss.duplicates} (the batches in flight "
              f"when Redis shut down); {rate:,.0f} frames/s sent (target "
              f"{2 * RATE_PER_STREAM:,.0f}); recovered {recovered_s:.1f} s after Redis returned; gap reasons "
              f"{sorted(set(loss.reasons))}; sockets opened {opened}, worker reconnects {reconnects} {reasons}; "
              f"workers restarted {restarted}; connections moved {moved}; suspension {suspension}")  # fmt: skip
        print("  " + "\n  ".join(samples))
        assert restarted == [], f"workers {restarted} exited during the outage"
        assert false_reconnects == 0, reasons
        assert moved == {}, moved
        assert loss.unknown == 0, loss
        assert loss.duplicates <= MAX_BATCH * WORKERS and resent_late == 0, loss
        assert loss.lost == loss.announced, f"{loss.lost - loss.announced} events lost unannounced"
        assert loss.lost > 0 and set(loss.reasons) <= REDIS_REASONS, loss.reasons
    finally:
        if fp.proc is not None and fp.proc.poll() is None:
            await fp.stop()
        sim.kill()
        await http.close()
        await r.aclose()
        redis_server.kill()
        print(fp.tail(4000))


async def _caught_up(http: aiohttp.ClientSession, fp: Feedplane) -> bool:
    try:
        return await _backlogs(http, fp) < 1000
    except (aiohttp.ClientError, AssertionError):
        return False


_last_lengths: dict[int, tuple[int, ...]] = {}


async def _stable(r: Redis) -> bool:
    """The trade streams' lengths did not change since the previous call (about 0.25 s apart with ``poll``)."""
    lengths = tuple([int(await r.xlen(keys.event_stream(t))) for t in TOPICS])
    previous = _last_lengths.get(id(r))
    _last_lengths[id(r)] = lengths
    return previous == lengths
