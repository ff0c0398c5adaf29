"""Ingest benchmark: recorded Binance trades -> simulator -> one arq worker -> Redis -> SSE.

Not a test. Replays the 2024 Binance USD-M BTCUSDT trades (hftbacktest recording) through ONE worker
process, looped until ``--frames`` frames were sent (default 93,954 = the recording's line count): with
``--trade-stream aggTrade`` (the default, as ``BINANCE_USDM_TRADE_STREAM``) the simulator's
``btcusdt@aggTrade`` tape (10,447 aggregates derived from the 21,313 recorded trades), with ``trade`` the
recorded ``btcusdt@trade`` frames. One frame is one event either way. Measures:

- events/s: events published / (last event seen on pub/sub - first frame sent);
- latency simulator-send -> Redis (time the event reached a pub/sub subscriber) and
  -> an SSE client of the control server, p50/p99, matched by sequence (one stream, in order);
- worker peak RSS (VmHWM);
- worker CPU time per event (user + system, from subscribe to the last event; the figure other processes on a
  shared machine disturb least).

Runs three modes by default: as fast as possible, paced at 5,000 and at 20,000 frames/s.
The simulator runs in its own process; the two measuring clients run in this one.
Usage: ``.venv/bin/python -m scripts.bench_ingest [--mode max|5000|20000|all] [--frames N] [--trade-stream S]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from array import array
from pathlib import Path
from typing import Any

import aiohttp

from control import keys
from control.redis_client import make_redis

ROOT = Path(__file__).resolve().parent.parent
TOPIC = "binanceusdm:trade:BTCUSDT"
#: ``BINANCE_USDM_TRADE_STREAM`` -> the simulator stream the worker subscribes for ``TOPIC``.
NATIVES = {"aggTrade": "btcusdt@aggTrade", "trade": "btcusdt@trade"}


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- simulator child process -------------------------------------------------------------------


async def _sim_child(port: int, rate: float | None, frames: int, send_log: Path, stream: str) -> None:
    """Run the simulator, stamping each sent trade frame of ``NATIVES[stream]``; write the stamps when stopped."""
    from scripts.simulator import ExchangeSimulator

    stamps = array("q")
    wanted = NATIVES[stream]

    def on_send(native: str, _raw: str, send_ns: int) -> None:
        if native == wanted and len(stamps) < frames:
            stamps.append(send_ns)
            if len(stamps) == frames:  # this frame still goes out; the replay pauses after it
                sim.set_silent(True)

    sim = ExchangeSimulator(port=port, speed=0.0, rate=rate, loop=True, record_sent=False)
    sim.on_send = on_send
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await sim.start()
    print("ready", flush=True)
    await stop.wait()
    await sim.stop()
    send_log.write_bytes(stamps.tobytes())


# -- measurement -------------------------------------------------------------------------------


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (0-100) of ``values`` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


async def _pubsub_clock(redis_url: str, frames: int, out: array, ready: asyncio.Event, done: asyncio.Event) -> None:
    client = make_redis(redis_url, decode=False)
    pubsub = client.pubsub()
    await pubsub.subscribe(keys.event_channel(TOPIC))
    ready.set()
    try:
        while len(out) < frames:
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if msg is not None and msg["type"] == "message":
                out.append(time.time_ns())
    finally:
        done.set()
        await pubsub.aclose()
        await client.aclose()


async def _sse_clock(base: str, frames: int, out: array, ready: asyncio.Event) -> None:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as http,
        http.get(f"{base}/sse", params={"topic": TOPIC}) as resp,
    ):
        assert resp.status == 200, await resp.text()
        ready.set()
        async for line in resp.content:
            if line.startswith(b"event: trade"):
                out.append(time.time_ns())
                if len(out) >= frames:
                    return


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _wait_http(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(url) as resp:
                    body = await resp.json()
                    if resp.status == 200 and body.get("workers"):
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not come up")
            await asyncio.sleep(0.2)


async def run_mode(rate: float | None, frames: int, redis_url: str, tmp: Path, stream: str) -> dict[str, Any]:
    """One benchmark run; returns the figures."""
    flush = make_redis(redis_url)
    await flush.flushdb()
    await flush.aclose()
    sim_port, ctrl_port = free_port(), free_port()
    send_log = tmp / f"send-{rate or 'max'}.bin"
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "CTRL_ADDR": f"127.0.0.1:{ctrl_port}",
        "BINANCE_USDM_WS_URI": f"ws://127.0.0.1:{sim_port}",
        "BINANCE_USDM_TRADE_STREAM": stream,
        "WORKER_ID": "bench-worker",
        "SUBSCRIBE_DELAY_MS": "0",
        "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }
    py = sys.executable
    sim_cmd = [py, "-m", "scripts.bench_ingest", "--sim-child", "--port", str(sim_port), "--frames", str(frames),
               "--send-log", str(send_log), "--trade-stream", stream] + (["--rate", str(rate)] if rate else [])
    # Blocking Popen on purpose: the children start before the measured window and nothing else runs yet.
    sim = subprocess.Popen(sim_cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE)  # noqa: ASYNC220
    assert sim.stdout is not None and sim.stdout.readline().strip() == b"ready"
    api = subprocess.Popen([py, "-m", "app.serve"], cwd=ROOT, env=env)  # noqa: ASYNC220
    worker = subprocess.Popen([py, "-m", "arq", "workers.settings.WorkerSettings"], cwd=ROOT, env=env)  # noqa: ASYNC220
    base = f"http://127.0.0.1:{ctrl_port}"
    redis_times, sse_times = array("q"), array("q")
    try:
        await _wait_http(f"{base}/status", 30)
        ps_ready, sse_ready, done = asyncio.Event(), asyncio.Event(), asyncio.Event()
        ps_task = asyncio.create_task(_pubsub_clock(redis_url, frames, redis_times, ps_ready, done))
        sse_task = asyncio.create_task(_sse_clock(base, frames, sse_times, sse_ready))
        await asyncio.wait_for(asyncio.gather(ps_ready.wait(), sse_ready.wait()), 10)
        cpu_start = _cpu_s(worker.pid)
        body = {"symbol": "BTCUSDT", "exchange": "binanceusdm"}
        async with aiohttp.ClientSession() as http, http.post(f"{base}/trades/subscribe", json=body) as r:
            assert r.status == 202, await r.text()
        budget = 60 + frames / (rate or 20_000)
        await asyncio.wait_for(asyncio.gather(ps_task, sse_task), budget)
        rss_mb = _peak_rss_mb(worker.pid)
        cpu_s = _cpu_s(worker.pid) - cpu_start
    finally:
        for proc in (worker, api, sim):
            proc.send_signal(signal.SIGTERM)
        for proc in (worker, api, sim):
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    sent = array("q")
    sent.frombytes(send_log.read_bytes())
    n = min(len(sent), len(redis_times), len(sse_times))
    to_redis = [(redis_times[i] - sent[i]) / 1e6 for i in range(n)]
    to_sse = [(sse_times[i] - sent[i]) / 1e6 for i in range(n)]
    elapsed_s = (redis_times[n - 1] - sent[0]) / 1e9
    return {
        "mode": f"paced {rate:,.0f}/s" if rate else "max",
        "events": n,
        "events_per_s": n / elapsed_s,
        "redis_p50_ms": statistics.median(to_redis),
        "redis_p99_ms": pct(to_redis, 99),
        "sse_p50_ms": statistics.median(to_sse),
        "sse_p99_ms": pct(to_sse, 99),
        "worker_peak_rss_mb": rss_mb,
        "worker_cpu_us_per_event": cpu_s / n * 1e6,
    }


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the chosen modes, print one line per mode."""
    parser = argparse.ArgumentParser(description="Feedplane ingest benchmark (recorded Binance trades).")
    parser.add_argument("--mode", default="all", choices=["max", "5000", "20000", "all"])
    parser.add_argument("--frames", type=int, default=93_954)
    parser.add_argument("--trade-stream", default="aggTrade", choices=sorted(NATIVES))
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13"))
    parser.add_argument("--sim-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--send-log", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.sim_child:
        asyncio.run(_sim_child(args.port, args.rate, args.frames, args.send_log, args.trade_stream))
        return 0
    modes: dict[str, list[float | None]] = {
        "max": [None], "5000": [5000.0], "20000": [20000.0], "all": [None, 5000.0, 20000.0]
    }
    rates = modes[args.mode]
    tmp = ROOT / "run" / "bench"
    tmp.mkdir(parents=True, exist_ok=True)
    print(f"{'mode':<16}{'events':>8}{'events/s':>11}{'redis p50':>11}{'p99':>8}{'sse p50':>10}{'p99':>8}{'RSS MB':>8}"
          f"{'CPU us/ev':>10}")
    for rate in rates:
        r = asyncio.run(run_mode(rate, args.frames, args.redis_url, tmp, args.trade_stream))
        print(f"{r['mode']:<16}{r['events']:>8}{r['events_per_s']:>11,.0f}{r['redis_p50_ms']:>10.1f}m"
              f"{r['redis_p99_ms']:>7.1f}m{r['sse_p50_ms']:>9.1f}m{r['sse_p99_ms']:>7.1f}m{r['worker_peak_rss_mb']:>8.0f}"
              f"{r['worker_cpu_us_per_event']:>10.1f}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
