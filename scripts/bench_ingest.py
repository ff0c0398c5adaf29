"""Ingest benchmark: recorded Binance trades -> fake exchange -> ONE Feedplane worker -> Redis -> pub/sub clock.

Not a test. Light enough to run pinned (``--pin``: the worker alone on one CPU; Redis, the fake exchange, the
control server and the clock on the other), because nothing but the worker does real work:

- the fake exchange (``scripts.benchkit.exchange``) writes pre-encoded ``btcusdt@aggTrade`` frames (the recorded
  BTCUSDT trades of ``hftbacktest/binance_usdm_btcusdt_20240808.gz``, looped to ``--frames``) in batches;
- the clock (``scripts.benchkit.subscriber``) is one raw socket with hiredis, stamping pub/sub arrivals;
- a fresh redis-server per run.

Figures per mode (``scripts.benchkit.run``): events/s (events / (last arrival - first frame sent)), send ->
Redis p50/p99/max (arrival on pub/sub, matched by trade id), worker CPU-seconds per 100k events, Redis
CPU-seconds per 100k, worker peak RSS, and the correctness checks on the stream (exact count, no duplicates,
in order, byte-identical decimal strings). With ``--repeat N`` the modes are interleaved and each figure is the
median with min-max.

``--events-redis-url URL``: the worker writes its events to that Redis or Redis Cluster (``EVENTS_REDIS_URL``,
split mode; started by you, emptied before every run; put it on the auxiliary CPU when pinning); control state
stays on the fresh redis-server. The clock subscribes on the node serving the topic (SSUBSCRIBE on a cluster).

Usage: ``.venv/bin/python -m scripts.bench_ingest [--mode max|5000|20000|all] [--frames N] [--repeat N] [--pin]
[--events-redis-url redis+cluster://127.0.0.1:7000]``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import redis
from redis.cluster import ClusterNode, RedisCluster

from control import keys
from control.events_redis import parse_cluster_url
from scripts.benchkit.feedplane import TOPIC, WORKER_ENTRIES, Feedplane
from scripts.benchkit.frames import build
from scripts.benchkit.report import MODES, print_rows, summarize
from scripts.benchkit.run import cpus, run_once


def events_node(url: str) -> tuple[int, bool]:
    """Empty the events Redis at ``url`` (every master) and name the node serving the benchmark's topic:
    ``(port, is a cluster)``."""
    target = parse_cluster_url(url)
    if target is None:
        plain = redis.Redis.from_url(url)
        plain.flushall()
        port = int(plain.connection_pool.connection_kwargs.get("port", 6379))
        plain.close()
        return port, False
    cluster = RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in target.nodes])
    cluster.flushall(target_nodes=RedisCluster.PRIMARIES)
    port = int(cluster.get_node_from_key(keys.event_stream(TOPIC)).port)
    cluster.close()
    return port, True


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the chosen modes (interleaved repetitions), print the runs and the summary."""
    parser = argparse.ArgumentParser(description="Feedplane ingest benchmark (recorded Binance trades).")
    parser.add_argument("--mode", default="all", choices=sorted(MODES))
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--pin", action="store_true", help="worker alone on one CPU, everything else on another")
    parser.add_argument("--worker-entry", default="workers", choices=sorted(WORKER_ENTRIES),
                        help="workers: python -m workers (uvloop); arq: python -m arq (asyncio loop), to compare")
    parser.add_argument("--events-redis-url", default="", help="split mode: EVENTS_REDIS_URL of the worker")
    args = parser.parse_args(argv)
    trades = build(args.frames)
    sut_cpu, aux_cpu = cpus(args.pin)
    runs = []
    with tempfile.TemporaryDirectory(prefix="fp-bench-") as tmp:
        for _ in range(args.repeat):
            for rate in MODES[args.mode]:
                extra, events = {}, None
                if args.events_redis_url:
                    extra, events = {"EVENTS_REDIS_URL": args.events_redis_url}, events_node(args.events_redis_url)
                run = run_once(Feedplane(extra, entry=args.worker_entry), trades, rate, Path(tmp), sut_cpu=sut_cpu,
                               aux_cpu=aux_cpu, events=events)  # fmt: skip
                print_rows([run])
                runs.append(run)
    print("\nsummary (median, min-max):")
    summarize(runs)
    return 0 if all(r["correct"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
