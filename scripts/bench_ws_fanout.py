"""WebSocket fan-out benchmark: N ``/ws`` clients on one busy topic of one control-server process.

Not a test. Starts its own ``redis-server`` and ``python -m app.serve`` (open mode, loopback; ``/ws`` limits
off), marks the topic as streamed, connects N clients (raw asyncio WebSocket clients in this one process: they
count the events of every frame on every client and parse only the sample clients' frames), subscribes them,
then a publisher process XADDs trade events to the topic's Stream at ``--rate`` events/s in bursts of
``--burst`` (each stamped with ``time.time_ns()``). Reports:

- delay publish -> client, p50/p99/max, over every event of the sample clients (``--sample`` of them);
- missing: events published that a client had not received ``--drain-s`` after the publisher stopped, summed over
  all clients (0 when every client got every event; a client cut as too slow counts here, see ``cut``), and
  per-client minimum/maximum received; duplicates/out-of-order on the sample clients;
- the control server's CPU (% of one core over the publish window, and CPU microseconds per event delivered
  to one client: the figure least sensitive to a loaded machine) and RSS (end, and peak VmHWM);
- this process's CPU, to show the measuring clients are not the bottleneck.

Usage: ``.venv/bin/python -m scripts.bench_ws_fanout --clients 100,1000 --rate 1000 --seconds 20 [--repeat 3]``
(ports from ``--port-base``: Redis on +379, the control server on +89).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from control import keys
from control.redis_client import make_redis
from control.store import ControlStore

ROOT = Path(__file__).resolve().parent.parent
TOPIC = "binanceusdm:trade:BTCUSDT"
TICK = os.sysconf("SC_CLK_TCK")


# -- publisher (child process) ----------------------------------------------------------------------------


async def publish(redis_url: str, rate: float, seconds: float, burst: int) -> None:
    """XADD ``rate`` events/s for ``seconds`` in bursts of ``burst``; prints the number published."""
    redis = make_redis(redis_url, decode=False)
    stream = keys.event_stream(TOPIC)
    total = int(rate * seconds)
    interval = burst / rate
    start = time.monotonic()
    seq = 0
    while seq < total:
        async with redis.pipeline(transaction=False) as pipe:
            for _ in range(min(burst, total - seq)):
                now_ns = time.time_ns()
                event = {"type": "trade", "exchange": "binanceusdm", "symbol": "BTCUSDT", "trade_id": str(seq),
                         "price": "97321.40", "size": "0.004", "side": "buy", "ts_exchange": now_ns // 1_000_000,
                         "ts_received": now_ns // 1_000_000, "seq": seq, "t_ns": now_ns}  # fmt: skip
                pipe.xadd(stream, {keys.STREAM_FIELD: orjson.dumps(event)}, maxlen=100_000, approximate=True)
                seq += 1
            await pipe.execute()
        delay = start + (seq / burst) * interval - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    await redis.aclose()
    print(seq, flush=True)


# -- light client -------------------------------------------------------------------------------------------


class Client(asyncio.Protocol):
    """A minimal WebSocket client: handshake, one subscribe, counts events per frame, answers pings."""

    def __init__(self, sample: bool, subscribed: asyncio.Future[None]) -> None:
        self.sample = sample
        self.subscribed = subscribed
        self.buf = bytearray()
        self.handshaken = False
        self.events = 0
        self.delays_ms: list[float] = []
        self.seqs: list[int] = []
        self.transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write((f"GET /ws HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())  # fmt: skip

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True

    def send(self, message: bytes) -> None:
        """One masked text frame."""
        assert self.transport is not None
        mask = os.urandom(4)
        n = len(message)
        head = bytes([0x81, 0x80 | n]) if n < 126 else bytes([0x81, 0xFE]) + n.to_bytes(2)
        self.transport.write(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(message)))

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.handshaken:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            del buf[: end + 4]
            self.handshaken = True
            self.send(orjson.dumps({"type": "subscribe", "topics": [TOPIC]}))
        while len(buf) >= 2:
            n = buf[1] & 0x7F
            head = 2
            if n == 126:
                if len(buf) < 4:
                    return
                n, head = int.from_bytes(buf[2:4]), 4
            elif n == 127:
                if len(buf) < 10:
                    return
                n, head = int.from_bytes(buf[2:10]), 10
            if len(buf) < head + n:
                return
            opcode = buf[0] & 0x0F
            payload = bytes(buf[head : head + n])
            del buf[: head + n]
            if opcode == 0x1:
                self.on_text(payload)
            elif opcode == 0x8:
                self.closed = True

    def on_text(self, payload: bytes) -> None:
        if payload.startswith(b'{"type":"ping"'):
            self.send(b'{"type":"pong"}')
            return
        if payload.startswith(b'{"type":"subscribed"'):
            if not self.subscribed.done():
                self.subscribed.set_result(None)
            return
        if payload.startswith((b'{"type":"connected"', b'{"type":"error"')):
            if payload.startswith(b'{"type":"error"'):
                print("client error:", payload[:200].decode(), file=sys.stderr)
            return
        count = payload.count(b'"cursor":')
        self.events += count
        if self.sample:
            now_ns = time.time_ns()
            value = orjson.loads(payload)
            for message in value if isinstance(value, list) else [value]:
                data = message["data"]
                self.delays_ms.append((now_ns - data["t_ns"]) / 1e6)
                self.seqs.append(data["seq"])


# -- orchestration ------------------------------------------------------------------------------------------


def cpu_s(pid: int) -> float:
    """utime + stime of ``pid`` in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def mem_mb(pid: int, name: str) -> float:
    """VmRSS / VmHWM of ``pid`` in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def pct(values: list[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))] if ordered else float("nan")


async def wait_port(host: str, port: int, timeout_s: float) -> None:
    """Until ``host:port`` accepts a connection."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            _, writer = await asyncio.open_connection(host, port)
            writer.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def run_once(n: int, args: argparse.Namespace, redis_url: str, ctrl_port: int) -> dict[str, Any]:
    """One measurement with ``n`` clients against a fresh control server."""
    redis = make_redis(redis_url)
    await redis.flushdb()
    await ControlStore(redis).add_desired([TOPIC], int(time.time() * 1000))
    env = {**os.environ, "REDIS_URL": redis_url, "CTRL_ADDR": f"127.0.0.1:{ctrl_port}", "LOG_LEVEL": "WARNING",
           "WS_HEARTBEAT_S": "30", "WS_NEW_PER_MIN": "0", "WS_CONNECTIONS_PER_TOKEN": "0"}  # fmt: skip
    cmd = [sys.executable, *(["-m", "cProfile", "-o", args.profile] if args.profile else []), "-m", "app.serve"]
    if args.server_cpu is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", args.server_cpu, *cmd]
    server = await asyncio.create_subprocess_exec(*cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                                  stderr=subprocess.DEVNULL if args.quiet else None)  # fmt: skip
    loop = asyncio.get_running_loop()
    clients: list[Client] = []
    try:
        await wait_port("127.0.0.1", ctrl_port, 15)
        sample_every = max(1, n // args.sample)
        for start in range(0, n, 50):
            batch = []
            for i in range(start, min(n, start + 50)):
                fut: asyncio.Future[None] = loop.create_future()
                client = Client(i % sample_every == 0, fut)
                await loop.create_connection(lambda c=client: c, "127.0.0.1", ctrl_port)  # type: ignore[misc]
                clients.append(client)
                batch.append(fut)
            await asyncio.wait_for(asyncio.gather(*batch), 30)
        cpu0, wall0, self0 = cpu_s(server.pid), time.monotonic(), time.process_time()
        pub = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "scripts.bench_ws_fanout", "--publish", "--redis-url", redis_url, "--rate",
            str(args.rate), "--seconds", str(args.seconds), "--burst", str(args.burst), cwd=ROOT,
            stdout=subprocess.PIPE,
        )  # fmt: skip
        out, _ = await pub.communicate()
        published = int(out.decode().split()[-1])
        wall_pub = time.monotonic() - wall0
        cpu_pub = cpu_s(server.pid) - cpu0
        deadline = time.monotonic() + args.drain_s
        while time.monotonic() < deadline and any(c.events < published and not c.closed for c in clients):
            await asyncio.sleep(0.05)
        received = [c.events for c in clients]
        delays = [d for c in clients if c.sample for d in c.delays_ms]
        disorder = sum(1 for c in clients if c.sample and c.seqs != sorted(set(c.seqs)))
        return {
            "clients": n, "rate": args.rate, "published": published, "publish_s": round(wall_pub, 2),
            "p50_ms": round(pct(delays, 50), 1), "p99_ms": round(pct(delays, 99), 1),
            "max_ms": round(max(delays, default=float("nan")), 1),
            "missing": sum(max(0, published - r) for r in received), "min_received": min(received),
            "max_received": max(received), "cut": sum(c.closed for c in clients), "disordered": disorder,
            "server_cpu_pct": round(100 * cpu_pub / wall_pub, 1),
            "server_us_per_delivery": round(1e6 * cpu_pub / max(1, sum(received)), 2), "server_rss_mb": round(mem_mb(server.pid, "VmRSS")),
            "server_peak_mb": round(mem_mb(server.pid, "VmHWM")),
            "bench_cpu_pct": round(100 * (time.process_time() - self0) / (time.monotonic() - wall0), 1),
        }  # fmt: skip
    finally:
        for client in clients:
            if client.transport is not None:
                client.transport.close()
        server.terminate()
        try:
            await asyncio.wait_for(server.wait(), 10)
        except TimeoutError:
            server.kill()
        await redis.aclose()


async def bench(args: argparse.Namespace) -> None:
    """Start Redis, run every (clients, repetition), print one JSON line each and the medians."""
    base = args.port_base
    redis_port, ctrl_port = base + 379, base + 89
    redis_proc = await asyncio.create_subprocess_exec(
        "redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no", stdout=subprocess.DEVNULL
    )
    try:
        await wait_port("127.0.0.1", redis_port, 10)
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        for n in (int(x) for x in args.clients.split(",")):
            runs = []
            for _ in range(args.repeat):
                result = await run_once(n, args, redis_url, ctrl_port)
                print(orjson.dumps(result).decode(), flush=True)
                runs.append(result)
            keys_ = ("p50_ms", "p99_ms", "max_ms", "missing", "server_cpu_pct", "server_us_per_delivery", "server_rss_mb",
                     "server_peak_mb", "bench_cpu_pct")  # fmt: skip
            summary = {k: f"{statistics.median(r[k] for r in runs)} ({min(r[k] for r in runs)}-"
                          f"{max(r[k] for r in runs)})" for k in keys_}  # fmt: skip
            print(f"clients={n} rate={args.rate}/s median (min-max) of {args.repeat}:", orjson.dumps(summary).decode())
    finally:
        redis_proc.terminate()
        await redis_proc.wait()


def main(argv: list[str] | None = None) -> int:
    """Entry point (see module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="100,1000", help="comma list of client counts")
    parser.add_argument("--rate", type=float, default=1000.0, help="events per second")
    parser.add_argument("--burst", type=int, default=10, help="events per XADD pipeline")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--sample", type=int, default=50, help="clients whose delays are measured")
    parser.add_argument("--drain-s", type=float, default=10.0, help="wait for stragglers after publishing")
    parser.add_argument("--port-base", type=int, default=23000)
    parser.add_argument("--server-cpu", default=None, help="taskset CPU list for the control server, e.g. 1")
    parser.add_argument("--quiet", action="store_true", help="hide the control server's stderr")
    parser.add_argument("--profile", default="", help="write a cProfile of the control server to this file")
    parser.add_argument("--publish", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the server child inherits it
    if args.publish:
        asyncio.run(publish(args.redis_url, args.rate, args.seconds, args.burst))
        return 0
    asyncio.run(bench(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
