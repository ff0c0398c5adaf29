"""Side-by-side ingest benchmark: one Feedplane worker vs cryptofeed, the same trades, the same Redis work.

Not a test. Needs the optional ``bench`` extra (``pip install -e '.[bench]'``: cryptofeed from PyPI; never a
runtime dependency of Feedplane). Each run gets a fresh redis-server and one local fake exchange
(``scripts.benchkit.exchange``) that replays the recorded Binance USD-M BTCUSDT trades
(``hftbacktest/binance_usdm_btcusdt_20240808.gz``, read in place, looped to ``--frames``) as
``btcusdt@aggTrade`` combined-stream frames, the frames both subscribe to:

- Feedplane: one arq worker (``BINANCE_USDM_TRADE_STREAM=aggTrade``) writing, per event, XADD + PUBLISH + SET of
  the latest value in one Lua script per batch (``workers.publish_script``);
- cryptofeed: ``BinanceFutures`` with ``TRADES`` on ``BTC-USDT-PERP``, its endpoints pointed at the fake
  exchange, ``numeric_type=str`` (so prices and sizes stay the exchange's decimal strings), writing with its
  Redis Streams backend (``TradeStream``: XADD per trade, pipelined per batch) plus two bench-only callbacks
  built on cryptofeed's own backend classes so it does the same Redis work: ``TradePublish`` (PUBLISH of the
  trade as JSON, pipelined per batch) and ``TradeLatest`` (cryptofeed's ``RedisKeyCallback``: SET of the
  latest trade per batch).

Both run in one process each (measured: CPU seconds, peak RSS); with ``--pin`` that process has a CPU to itself
and everything else (Redis, exchange, pub/sub clock, Feedplane's idle control server) shares the other.
Repetitions are interleaved (Feedplane, cryptofeed, Feedplane, ...; every mode in turn); the summary gives the
median with min-max. Figures and checks: ``scripts.benchkit.run``.

Usage: ``.venv/bin/python -m scripts.bench_vs_cryptofeed [--mode max|5000|20000|all] [--frames N] [--repeat N]
[--pin] [--only feedplane|cryptofeed]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import redis

from scripts.benchkit.feedplane import Feedplane
from scripts.benchkit.frames import build
from scripts.benchkit.procs import spawn, stop
from scripts.benchkit.report import MODES, print_rows, summarize
from scripts.benchkit.run import ROOT, Stored, cpus, run_once, xrange_all

#: cryptofeed's names for the trades of BTCUSDT on its Binance USD-M feed.
CF_SYMBOL = "BTC-USDT-PERP"
CF_EXCHANGE = "BINANCE_FUTURES"
CF_STREAM = f"trades-{CF_EXCHANGE}-{CF_SYMBOL}"
CF_CHANNEL = f"trades-pub-{CF_EXCHANGE}-{CF_SYMBOL}"


def _cryptofeed_child(exchange_port: int, redis_port: int) -> None:
    """Run cryptofeed's BinanceFutures feed against the fake exchange until SIGTERM (cryptofeed's handler)."""
    from cryptofeed import FeedHandler, connection
    from cryptofeed.backends.backend import BackendCallback
    from cryptofeed.backends.redis import RedisCallback, RedisKeyCallback, TradeStream
    from cryptofeed.connection import RestEndpoint, Routes, WebsocketEndpoint
    from cryptofeed.defines import TRADES
    from cryptofeed.exchanges import BinanceFutures
    from redis import asyncio as aioredis
    from yapic import json

    class TradePublish(RedisCallback, BackendCallback):  # type: ignore[misc]
        """Bench-only: PUBLISH each trade as JSON, pipelined per batch like cryptofeed's ``RedisStreamCallback``."""

        default_key = "trades-pub"

        async def writer(self) -> None:
            conn = aioredis.from_url(self.redis)
            while self.running:
                async with self.read_queue() as updates, conn.pipeline(transaction=False) as pipe:
                    for update in updates:
                        pipe = pipe.publish(f"{self.key}-{update['exchange']}-{update['symbol']}", json.dumps(update))
                    await pipe.execute()
            await conn.aclose()

    class TradeLatest(RedisKeyCallback, BackendCallback):  # type: ignore[misc]
        """Bench-only: SET the latest trade (cryptofeed's key-value writer, one SET per batch)."""

        default_key = "trades-latest"

    # cryptofeed only accepts wss:// sockets; the fake exchange is plain ws:// on loopback for both systems (no
    # TLS on either side), so the address is checked as wss:// and then used as given.
    check_wss = connection.WSAsyncConn.__init__

    def plain_ws(self: Any, address: str, *args: Any, **kwargs: Any) -> None:
        check_wss(self, address.replace("ws://", "wss://", 1), *args, **kwargs)
        self.address = address

    connection.WSAsyncConn.__init__ = plain_ws
    base = f"127.0.0.1:{exchange_port}"
    BinanceFutures.websocket_endpoints = [WebsocketEndpoint(f"ws://{base}", options={"compression": None})]
    BinanceFutures.rest_endpoints = [RestEndpoint(f"http://{base}", routes=Routes("/fapi/v1/exchangeInfo"))]
    backend: dict[str, Any] = {"host": "127.0.0.1", "port": redis_port, "numeric_type": str}
    callbacks = {TRADES: [TradeStream(**backend), TradePublish(**backend), TradeLatest(**backend)]}
    handler = FeedHandler(config={"uvloop": True, "log": {"disabled": True}})  # sets uvloop's policy
    asyncio.set_event_loop(asyncio.new_event_loop())  # FeedHandler.run() gets the current loop
    handler.add_feed(BinanceFutures(symbols=[CF_SYMBOL], channels=[TRADES], callbacks=callbacks))
    handler.run()


class Cryptofeed:
    """cryptofeed as the system under test (``scripts.benchkit.run.Sut``): one process, started subscribed (its
    trades stream is in the URL it connects to), so ``start`` waits for the exchange's go in ``subscribe``."""

    name = "cryptofeed"
    channel = CF_CHANNEL
    id_field = "id"

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.args: list[str] = []
        self.cpu: int | None = None

    def start(self, redis_url: str, exchange_port: int, cpu: int | None, aux_cpu: int | None) -> int:
        """Start the cryptofeed process (it connects, and the replay starts, at once)."""
        port = redis_url.rsplit(":", 1)[1].split("/")[0]
        self.proc = spawn([sys.executable, "-m", "scripts.bench_vs_cryptofeed", "--cryptofeed-child",
                           "--exchange-port", str(exchange_port), "--redis-port", port],
                          cpu=cpu, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
        return self.proc.pid

    def alive(self) -> bool:
        """Whether its process still runs."""
        return self.proc is not None and self.proc.poll() is None

    def subscribe(self) -> None:
        """Nothing to do: cryptofeed subscribes by the URL it connects with."""

    def stop(self) -> None:
        """SIGTERM (cryptofeed stops its feeds and backends)."""
        if self.proc is not None:
            stop(self.proc)

    def announced(self, client: redis.Redis) -> dict[str, int]:
        """cryptofeed has no loss announcements."""
        return {}

    def stored(self, client: redis.Redis) -> list[Stored]:
        """The ``TradeStream`` entries (fields ``id``, ``price``, ``amount``: strings with ``numeric_type=str``)."""
        return [(int(f[b"id"]), f[b"price"].decode(), f[b"amount"].decode()) for _id, f in xrange_all(client, CF_STREAM)]


def _ratio_lines(rows: list[dict[str, Any]]) -> None:
    by = {(r["sut"], r["mode"]): r for r in rows}
    for mode in ("max", "5,000/s", "20,000/s"):
        fp, cf = by.get(("feedplane", mode)), by.get(("cryptofeed", mode))
        if fp and cf:
            print(f"{mode}: Feedplane/cryptofeed events/s {fp['events_per_s'][0] / cf['events_per_s'][0]:.2f}x, "
                  f"events per CPU-second {fp['events_per_cpu_s'][0] / cf['events_per_cpu_s'][0]:.2f}x")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Parse arguments; run the interleaved repetitions; print each run, the medians and the ratios."""
    parser = argparse.ArgumentParser(description="Feedplane vs cryptofeed ingest benchmark.")
    parser.add_argument("--mode", default="all", choices=sorted(MODES))
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--pin", action="store_true", help="system under test alone on one CPU")
    parser.add_argument("--only", choices=["feedplane", "cryptofeed"])
    parser.add_argument("--cryptofeed-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--exchange-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--redis-port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cryptofeed_child:
        _cryptofeed_child(args.exchange_port, args.redis_port)
        return 0
    try:
        import cryptofeed  # noqa: F401
    except ImportError:
        raise SystemExit("cryptofeed is not installed: .venv/bin/pip install -e '.[bench]'") from None
    trades = build(args.frames)
    sut_cpu, aux_cpu = cpus(args.pin)
    kinds = [k for k in ("feedplane", "cryptofeed") if args.only in (None, k)]
    runs = []
    with tempfile.TemporaryDirectory(prefix="fp-bench-") as tmp:
        for _ in range(args.repeat):
            for rate in MODES[args.mode]:
                for kind in kinds:
                    sut = Feedplane() if kind == "feedplane" else Cryptofeed()
                    run = run_once(sut, trades, rate, Path(tmp), sut_cpu=sut_cpu, aux_cpu=aux_cpu)
                    print_rows([run])
                    runs.append(run)
    print("\nsummary (median, min-max):")
    _ratio_lines(summarize(runs))
    return 0 if all(r["correct"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
