"""What the workers' metrics cost per event: the publisher with and without its per-batch accounting (A/B).

Not a test. Publishes ``--events`` trade events through ``workers.publisher.Publisher`` into the Redis at
``--redis-url`` (its database is flushed), once with ``IngestStats`` (events by exchange and channel, the
ts_received -> Redis latency histogram) and once with a no-op in its place, alternating the order, ``--rounds``
times. Reports wall-clock events/s and the publisher process's CPU time per event (``time.process_time``: the
figure that other processes on a shared machine disturb least), medians with min-max.
Usage: ``.venv/bin/python -m scripts.bench_metrics_cost [--rounds 16] [--events 200000] [--redis-url URL]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from typing import Any

from control.redis_client import make_redis
from workers.publisher import Publisher

TOPIC = "binanceusdm:trade:BTCUSDT"
EVENT = {"type": "trade", "exchange": "binanceusdm", "symbol": "BTCUSDT", "trade_id": "0", "price": "61800.30",
         "size": "0.006", "side": "buy", "ts_exchange": 1723161256322, "ts_received": 0}  # fmt: skip


class _NoAccounting:
    """Stands in for ``IngestStats``: the publisher without metrics."""

    def written(self, batch: Any, now_ms: int) -> None:
        return None


async def run_once(redis_url: str, events: int, metrics: bool) -> tuple[float, float]:
    """One run: ``(events per second, publisher CPU microseconds per event)``."""
    redis = make_redis(redis_url, decode=False)
    await redis.flushdb()
    publisher = Publisher(redis, stream_maxlen=100_000, worker_id="")
    if not metrics:
        publisher.ingest = _NoAccounting()  # type: ignore[assignment]
    publisher.start()
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(events):
        publisher.publish(TOPIC, {**EVENT, "trade_id": str(i), "ts_received": time.time_ns() // 1_000_000})
        if i % 500 == 499:
            await asyncio.sleep(0)  # the writer runs between frames, as behind a socket reader
    await publisher.flush(120)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    await publisher.close()
    await redis.flushdb()
    await redis.aclose()
    return events / wall, cpu / events * 1e6


async def main_async(args: argparse.Namespace) -> None:
    results: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    for r in range(args.rounds):
        for metrics in (True, False) if r % 2 else (False, True):
            results[metrics].append(await run_once(args.redis_url, args.events, metrics))
    for metrics in (False, True):
        rates, cpus = [x[0] for x in results[metrics]], [x[1] for x in results[metrics]]
        print(f"metrics {'on ' if metrics else 'off'}: {statistics.median(rates):>9,.0f} events/s "
              f"({min(rates):,.0f}-{max(rates):,.0f}); CPU {statistics.median(cpus):.2f} us/event "
              f"({min(cpus):.2f}-{max(cpus):.2f}); n={len(rates)}")
    cpu_on, cpu_off = (statistics.median([x[1] for x in results[m]]) for m in (True, False))
    print(f"CPU per event, on/off: {cpu_on / cpu_off:.3f}")


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run the A/B."""
    parser = argparse.ArgumentParser(description="Cost of the workers' metrics per event (publisher A/B).")
    parser.add_argument("--rounds", type=int, default=16)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13"))
    asyncio.run(main_async(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
