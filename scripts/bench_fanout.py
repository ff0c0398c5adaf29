"""Fan-out benchmark: N SSE clients of one control server on one busy topic; events injected into Redis.

Not a test. No exchange and no worker: this script XADDs trade events (``ts_received`` = the injection time,
ms) straight into the topic's Stream in bursts, the way trade flow arrives (``--rate`` events/s in bursts of
``--burst`` entries, one pipeline per burst), and measures the control server's fan-out only:

- ``ready``: seconds from "all clients connect at once" to each client's ``ready`` event (p50/max);
- delay ``ts_received`` -> client receipt (ms, p50/p99/max) stamped on every ``--sample``-th client;
- ``lost``: events injected minus events received, summed over clients that were not cut, counted on every
  client ``--grace`` seconds after the last burst; ``cut``: clients whose stream ended (a slow-client cut);
- ``min rate``: the slowest client's received events / injected (1.0 = it got the full source rate in time);
- control server CPU (% of one core over the injection window) and RSS (MB, at the end / peak).

The clients are light on purpose (raw asyncio sockets, uvloop, ``--client-procs`` processes, no HTTP or SSE
library): a client counts ``event: trade`` lines with ``bytes.count`` on whole lines, and only the sampled ones
parse ``ts_received``. ``--protocol`` selects the wire: ``sse`` today; a ``ws`` mode is added with the
WebSocket endpoint (the client class is the only protocol-specific part).

It starts its own redis-server and ``python -m app.serve`` (``--server-procs 2``: two processes behind one
SO_REUSEPORT listener, ``CTRL_REUSE_PORT=1``), on ``--port-base`` .. +1.
Usage: ``.venv/bin/python -m scripts.bench_fanout --clients 1000 --rate 200 --burst 50 --seconds 20``
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson

from control import keys
from control.events_redis import is_cluster, make_events_redis
from control.redis_client import make_redis

ROOT = Path(__file__).resolve().parent.parent
TOPIC = "binanceusdm:trade:BENCHUSDT"
_TS = re.compile(rb'"ts_received":(\d+)')
_TRADE = b"event: trade\n"
_READY = b"event: ready\n"
_SPREAD = ("ready_max_s", "p50_ms", "p99_ms", "max_ms", "min_rate", "cpu_pct", "rss_mb")


class SSEClient(asyncio.Protocol):
    """One raw-socket SSE client: counts trade events; when ``sample``, stamps each event's delay (ms)."""

    def __init__(self, request: bytes, sample: bool, delays: list[float], started: float) -> None:
        self.request, self.sample, self.delays, self.started = request, sample, delays, started
        self.count = 0
        self.ready_s: float | None = None
        self.closed = False
        self.rest = b""

    def connection_made(self, transport: Any) -> None:
        """Send the request line."""
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        """Count events on whole lines; the partial last line waits for the next read."""
        buf = self.rest + data if self.rest else data
        cut = buf.rfind(b"\n") + 1
        if cut < len(buf):
            self.rest, buf = buf[cut:], buf[:cut]
        else:
            self.rest = b""
        self.count += buf.count(_TRADE)
        if self.ready_s is None and _READY in buf:
            self.ready_s = time.monotonic() - self.started
        if self.sample:
            now_ms = time.time() * 1000
            self.delays.extend(now_ms - int(m) for m in _TS.findall(buf))

    def connection_lost(self, exc: BaseException | None) -> None:
        """A stream that ends before the report is a cut client."""
        self.closed = True


async def _open(loop: asyncio.AbstractEventLoop, proto: SSEClient, port: int) -> None:
    await loop.create_connection(lambda: proto, "127.0.0.1", port)


async def _client_main(conn: Connection, port: int, clients: int, sample_every: int, offset: int) -> None:
    loop = asyncio.get_running_loop()
    request = (f"GET /sse?topic={TOPIC} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
               "Accept: text/event-stream\r\n\r\n").encode()  # fmt: skip
    delays: list[float] = []
    assert await asyncio.to_thread(conn.recv) == "connect"
    started = time.monotonic()
    protos = [SSEClient(request, (offset + i) % sample_every == 0, delays, started) for i in range(clients)]
    results = await asyncio.gather(*(_open(loop, p, port) for p in protos), return_exceptions=True)
    failed = sum(isinstance(r, BaseException) for r in results)
    while any(p.ready_s is None and not p.closed for p in protos) and time.monotonic() - started < 120:
        await asyncio.sleep(0.05)
    conn.send({"ready": [p.ready_s for p in protos if p.ready_s is not None], "failed": failed})
    assert await asyncio.to_thread(conn.recv) == "start"
    delays.clear()
    base = [p.count for p in protos]
    cpu0, wall0 = time.process_time(), time.monotonic()
    assert await asyncio.to_thread(conn.recv) == "report"
    counts = [p.count - b for p, b in zip(protos, base)]
    cpu = (time.process_time() - cpu0) / (time.monotonic() - wall0) * 100
    conn.send({"counts": counts, "closed": [p.closed for p in protos], "delays": delays, "cpu_pct": cpu})


def _client_proc(conn: Connection, port: int, clients: int, sample_every: int, offset: int, nice: int) -> None:
    os.setpriority(os.PRIO_PROCESS, 0, nice)
    try:
        import uvloop

        uvloop.run(_client_main(conn, port, clients, sample_every, offset))
    except ImportError:  # pragma: no cover
        asyncio.run(_client_main(conn, port, clients, sample_every, offset))


def _trade(i: int) -> bytes:
    return orjson.dumps({"type": "trade", "exchange": "binanceusdm", "symbol": "BENCHUSDT", "trade_id": str(i),
                         "price": f"{97000 + i % 100}.10", "size": "0.002", "side": "buy" if i % 2 else "sell",
                         "ts_exchange": int(time.time() * 1000), "ts_received": int(time.time() * 1000)})  # fmt: skip


async def _inject(redis_url: str, rate: float, burst: int, seconds: float) -> int:
    """XADD ``burst`` trades every ``burst / rate`` s for ``seconds``; returns the number injected. On a cluster
    (``redis+cluster://``) each event is also SPUBLISHed on the topic's shard channel, as the publisher does."""
    redis = make_events_redis(redis_url, decode=False)
    stream, interval, sent = keys.event_stream(TOPIC), burst / rate, 0
    node: Any = None
    if is_cluster(redis):
        await redis.initialize()
        owner: Any = redis.get_node_from_key(stream)  # type: ignore[union-attr]
        node = make_redis(f"redis://{owner.host}:{owner.port}/0", decode=False)
    start = time.monotonic()
    try:
        while time.monotonic() - start < seconds:
            async with redis.pipeline(transaction=False) as pipe:
                for _ in range(burst):
                    pipe.xadd(stream, {keys.STREAM_FIELD: _trade(sent)}, maxlen=100_000, approximate=True)
                    sent += 1
                await pipe.execute()
            if node is not None:
                async with node.pipeline(transaction=False) as pub:
                    for i in range(sent - burst, sent):
                        pub.execute_command("SPUBLISH", keys.event_channel(TOPIC), _trade(i))
                    await pub.execute()
            await asyncio.sleep(max(0.0, start + interval * (sent // burst) - time.monotonic()))
    finally:
        await redis.aclose()
        if node is not None:
            await node.aclose()
    return sent


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _mem_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(values: list[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank) of ``values``; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


async def run_once(args: argparse.Namespace, redis_url: str, port: int) -> dict[str, Any]:
    """Start the control server(s), connect the clients, inject, collect; returns one result row."""
    flush = make_redis(redis_url)
    await flush.flushdb()
    await flush.aclose()
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "EVENTS_REDIS_URL": args.events_url or "",
        "CTRL_ADDR": f"127.0.0.1:{port}",
        "LOG_LEVEL": "WARNING",
        "CTRL_REUSE_PORT": "1" if args.server_procs > 1 else "0",
        **dict(kv.split("=", 1) for kv in args.env),
    }
    serve = [sys.executable, "-m", "app.serve"]
    if args.server_cpu is not None:  # the server alone on these CPUs (clients, Redis and the injector elsewhere)
        serve = ["taskset", "-c", args.server_cpu, *serve]
    servers = [subprocess.Popen(serve, cwd=args.server_root, env=env,  # noqa: ASYNC220
                                stdout=subprocess.DEVNULL) for _ in range(args.server_procs)]  # fmt: skip
    for server in servers:
        os.setpriority(os.PRIO_PROCESS, server.pid, args.nice)
    profiler = None
    pipes, procs = [], []
    try:
        await _wait_port(port, 30)
        share = [args.clients // args.client_procs + (i < args.clients % args.client_procs)
                 for i in range(args.client_procs)]  # fmt: skip
        offset = 0
        for n in share:
            parent, child = multiprocessing.Pipe()
            proc = multiprocessing.Process(target=_client_proc, args=(child, port, n, args.sample, offset, args.nice),
                                           daemon=True)  # fmt: skip
            proc.start()
            pipes.append(parent)
            procs.append(proc)
            offset += n
        for pipe in pipes:
            pipe.send("connect")
        hello = [await asyncio.to_thread(pipe.recv) for pipe in pipes]
        ready = [s for h in hello for s in h["ready"]]
        if args.profile:
            profiler = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "-o", args.profile, "-f", "speedscope", "-r", "50",  # noqa: ASYNC220
                                         "-d", str(int(args.seconds)), "-p", str(servers[0].pid)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        for pipe in pipes:
            pipe.send("start")
        cpu0, t0 = [_cpu_s(s.pid) for s in servers], time.monotonic()
        injected = await _inject(args.events_url or redis_url, args.rate, args.burst, args.seconds)
        window = time.monotonic() - t0
        cpu = sum(_cpu_s(s.pid) - c for s, c in zip(servers, cpu0)) / window * 100
        rss = sum(_mem_mb(s.pid, "VmRSS") for s in servers)
        await asyncio.sleep(args.grace)
        for pipe in pipes:
            pipe.send("report")
        reports = [await asyncio.to_thread(pipe.recv) for pipe in pipes]
        peak = sum(_mem_mb(s.pid, "VmHWM") for s in servers)
    finally:
        if profiler is not None:
            profiler.wait(60)
        for proc in procs:
            proc.kill()
        for s in servers:
            s.send_signal(signal.SIGTERM)
        for s in servers:
            try:
                s.wait(30)
            except subprocess.TimeoutExpired:
                s.kill()
    counts = [c for r in reports for c in r["counts"]]
    closed = [c for r in reports for c in r["closed"]]
    delays = [d for r in reports for d in r["delays"]]
    kept = [c for c, cut in zip(counts, closed) if not cut]
    return {
        "clients": args.clients, "connected": len(ready), "failed": sum(h["failed"] for h in hello),
        "events_per_s": injected / window, "injected": injected,
        "ready_p50_s": pct(ready, 50), "ready_max_s": max(ready, default=float("nan")),
        "p50_ms": pct(delays, 50), "p99_ms": pct(delays, 99), "max_ms": max(delays, default=float("nan")),
        "lost": sum(max(0, injected - c) for c in kept), "dup": sum(max(0, c - injected) for c in counts),
        "cut": sum(closed), "min_rate": min(counts, default=0) / injected if injected else float("nan"),
        "cpu_pct": cpu, "rss_mb": rss, "peak_rss_mb": peak, "client_cpu_pct": max(r["cpu_pct"] for r in reports),
    }  # fmt: skip


async def _wait_port(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def _redis(port: int, tmp: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no",
                             "--dir", tmp, "--maxclients", "20000"], stdout=subprocess.DEVNULL)  # fmt: skip


def _row(r: dict[str, Any]) -> str:
    return (f"clients {r['clients']:>6} (connected {r['connected']}, failed {r['failed']}) | "
            f"{r['events_per_s']:.0f} ev/s | ready p50 {r['ready_p50_s']:.2f} s max {r['ready_max_s']:.2f} s | "
            f"delay p50 {r['p50_ms']:.1f} / p99 {r['p99_ms']:.1f} / max {r['max_ms']:.1f} ms | undelivered {r['lost']} "
            f"dup {r['dup']} cut {r['cut']} | min rate {r['min_rate']:.3f} | CPU {r['cpu_pct']:.0f}% | "
            f"RSS {r['rss_mb']:.0f} MB (peak {r['peak_rss_mb']:.0f}) | busiest client process CPU {r['client_cpu_pct']:.0f}%")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run ``--repeat`` passes, print one line per pass and the medians."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=200.0, help="source events/s")
    parser.add_argument("--burst", type=int, default=50, help="entries per XADD burst")
    parser.add_argument("--seconds", type=float, default=15.0, help="injection window")
    parser.add_argument("--grace", type=float, default=2.0, help="seconds after the last burst before counting")
    parser.add_argument("--sample", type=int, default=20, help="stamp delays on every N-th client")
    parser.add_argument("--client-procs", type=int, default=2)
    parser.add_argument("--server-procs", type=int, default=1)
    parser.add_argument("--protocol", choices=["sse"], default="sse")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--port-base", type=int, default=27100, help="redis on this port, control server +1")
    parser.add_argument("--redis-url", help="use this Redis instead of starting one")
    parser.add_argument("--events-url", help="EVENTS_REDIS_URL of the server (e.g. redis+cluster://h:p,..): events "
                        "are injected there (XADD, and SPUBLISH on a cluster)")  # fmt: skip
    parser.add_argument("--profile", help="py-spy speedscope output file for the (first) server process")
    parser.add_argument("--env", action="append", default=[], help="extra KEY=VALUE for the server")
    parser.add_argument("--server-root", default=str(ROOT), help="checkout whose app.serve runs (before/after)")
    parser.add_argument("--server-cpu", default=None, help="taskset CPU list for the control server(s), e.g. 1")
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="scheduling priority of server and clients (negative: ahead of other load; needs root)",
    )
    args = parser.parse_args(argv)
    if args.profile and not (Path(sys.executable).parent / "py-spy").exists():
        parser.error("--profile needs py-spy in this virtualenv: .venv/bin/pip install py-spy")
    with tempfile.TemporaryDirectory() as tmp:
        redis = None if args.redis_url else _redis(args.port_base, tmp)
        url = args.redis_url or f"redis://127.0.0.1:{args.port_base}/0"
        try:
            if redis is not None:
                asyncio.run(_wait_port(args.port_base, 10))
            rows = []
            for _ in range(args.repeat):
                rows.append(asyncio.run(run_once(args, url, args.port_base + 1)))
                print(_row(rows[-1]), flush=True)
            if len(rows) > 1:
                med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
                print("median:", _row(med))
                spread = {k: (min(r[k] for r in rows), max(r[k] for r in rows)) for k in _SPREAD}
                print("min-max:", " | ".join(f"{k} {lo:.1f}-{hi:.1f}" for k, (lo, hi) in spread.items()))
        finally:
            if redis is not None:
                redis.terminate()
                redis.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
