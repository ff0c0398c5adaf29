"""Order-latency benchmark: HTTP request to the control server -> the exchange receiving the order request.

Not a test. Starts its own ``redis-server`` (in memory), the control server (``python -m app.serve``) and one arq
worker (``python -m arq workers.settings.WorkerSettings``) as child processes with ``ORDERS_ENABLED=1``, and, in this
process, a minimal Gate.io REST endpoint (``POST /api/v4/futures/usdt/orders`` answering a resting order at once, the
contract info and positions) plus the HTTP client. For each order it takes ``t0`` just before sending ``POST /orders``
and ``t1`` when the exchange handler starts; both are this process's clock, so ``t1 - t0`` is exactly the path
HTTP -> control server -> Redis list -> worker BRPOP -> signing -> exchange request. Also reported: the whole HTTP
round trip. Orders are sent one at a time (``--concurrency 1``) or N at a time.

Usage: ``.venv/bin/python -m scripts.bench_orders [--orders 1000] [--runs 3] [--concurrency 1] [--port-base 25400]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
KEY, SECRET, UID = "bench-key-0123456789", "bench-secret-0123456789", "424242"


class Exchange:
    """Stamps the arrival of every order request (by its ``text``) and answers like Gate (a resting order)."""

    def __init__(self) -> None:
        self.arrivals: dict[str, int] = {}
        self.next_id = 1

    async def orders(self, request: web.Request) -> web.Response:
        t1 = time.perf_counter_ns()
        body = await request.json()
        self.arrivals[body["text"]] = t1
        self.next_id += 1
        return web.json_response({"id": self.next_id, "contract": body["contract"], "size": body["size"],
                                  "left": body["size"], "price": body["price"], "tif": body["tif"], "text": body["text"],
                                  "status": "open", "finish_as": "", "create_time": time.time()}, status=201)  # fmt: skip

    async def contract(self, request: web.Request) -> web.Response:
        return web.json_response({"name": request.match_info["c"], "quanto_multiplier": "0.0001",
                                  "order_price_round": "0.1", "order_size_min": 1, "mark_price": "60000"})  # fmt: skip

    async def empty(self, request: web.Request) -> web.Response:
        return web.json_response([])

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/v4/futures/usdt/orders", self.orders)
        app.router.add_get("/api/v4/futures/usdt/contracts/{c}", self.contract)
        app.router.add_get("/api/v4/futures/usdt/orders", self.empty)
        app.router.add_get("/api/v4/futures/usdt/positions", self.empty)
        return app


def pct(values: list[float], p: float) -> float:
    """The ``p`` percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


async def _wait(check: Any, what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if await check():
                return
        except (aiohttp.ClientError, OSError):
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


async def run(args: argparse.Namespace) -> int:
    base = args.port_base
    redis_port, exchange_port, ctrl_port = base, base + 1, base + 2
    tmp = Path(tempfile.mkdtemp(prefix="bench-orders-"))
    redis_cmd = ["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no", "--dir", str(tmp)]
    redis = subprocess.Popen(redis_cmd, stdout=subprocess.DEVNULL)  # noqa: ASYNC220
    exchange = Exchange()
    runner = web.AppRunner(exchange.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", exchange_port).start()
    env = {**os.environ, "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0", "CTRL_ADDR": f"127.0.0.1:{ctrl_port}",
           "ORDERS_ENABLED": "1", "GATEIO_REST_URI": f"http://127.0.0.1:{exchange_port}",
           "GATEIO_WS_URI": f"ws://127.0.0.1:{exchange_port}/ws", "GATEIO_API_KEY": KEY, "GATEIO_API_SECRET": SECRET,
           "GATEIO_UID": UID, "LOG_LEVEL": "WARNING", "WORKER_ID": "bench-w1"}  # fmt: skip
    py = sys.executable
    api = subprocess.Popen([py, "-m", "app.serve"], cwd=ROOT, env=env)  # noqa: ASYNC220
    worker_cmd = [py, "-m", "arq", "workers.settings.WorkerSettings"]
    worker = subprocess.Popen(worker_cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)  # noqa: ASYNC220
    url = f"http://127.0.0.1:{ctrl_port}"
    results: list[dict[str, float]] = []
    try:
        async with aiohttp.ClientSession() as session:
            async def up() -> bool:
                async with session.get(f"{url}/status") as resp:
                    return resp.status == 200 and any(w for w in (await resp.json()).get("workers", []))

            await _wait(up, "the control server and the worker")

            async def one(tag: str) -> tuple[float, float]:
                body = {"exchange": "gateio", "symbol": "BTC_USDT", "type": "limit", "side": "buy", "size": "1",
                        "price": "50000", "client_order_id": tag}  # fmt: skip
                t0 = time.perf_counter_ns()
                async with session.post(f"{url}/orders", json=body) as resp:
                    await resp.read()
                    status = resp.status
                t2 = time.perf_counter_ns()
                if status != 201:
                    raise RuntimeError(f"order {tag}: HTTP {status}")
                return (exchange.arrivals[f"t-{tag}"] - t0) / 1e6, (t2 - t0) / 1e6

            for run_no in range(args.runs + 1):  # run 0 warms up (connections, contract rules) and is not counted
                count = 100 if run_no == 0 else args.orders
                tags = [f"b{run_no}x{i}" for i in range(count)]
                sem = asyncio.Semaphore(args.concurrency)

                async def limited(tag: str, sem: asyncio.Semaphore = sem) -> tuple[float, float]:
                    async with sem:
                        return await one(tag)

                pairs = await asyncio.gather(*(limited(t) for t in tags))
                if run_no == 0:
                    continue
                to_exchange = [p[0] for p in pairs]
                round_trip = [p[1] for p in pairs]
                figures = {"p50": pct(to_exchange, 50), "p99": pct(to_exchange, 99), "max": max(to_exchange),
                           "rt_p50": pct(round_trip, 50), "rt_p99": pct(round_trip, 99)}  # fmt: skip
                results.append(figures)
                print(f"run {run_no}: {count} orders, concurrency {args.concurrency}: HTTP->exchange p50 "
                      f"{figures['p50']:.2f} ms, p99 {figures['p99']:.2f} ms, max {figures['max']:.2f} ms; "
                      f"HTTP round trip p50 {figures['rt_p50']:.2f} ms, p99 {figures['rt_p99']:.2f} ms", flush=True)
    finally:
        for proc in (api, worker):
            proc.terminate()
        for proc in (api, worker):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        redis.terminate()
        redis.wait(timeout=10)
        await runner.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    if results:
        for name in ("p50", "p99", "rt_p50", "rt_p99"):
            values = [r[name] for r in results]
            print(f"{name}: median {statistics.median(values):.2f} ms (min {min(values):.2f}, max {max(values):.2f}) "
                  f"over {len(values)} runs")
    print(f"load: {os.getloadavg()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=1000, help="orders per run")
    parser.add_argument("--runs", type=int, default=3, help="measured runs (after one warm-up run)")
    parser.add_argument("--concurrency", type=int, default=1, help="orders in flight at once")
    parser.add_argument("--port-base", type=int, default=25400, help="redis, exchange, control server: base, +1, +2")
    return asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
