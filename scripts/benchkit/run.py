"""One benchmark run of a system under test (a ``Sut``): fresh Redis, fake exchange, pub/sub clock, figures.

Layout of a run (``--pin``: the system under test alone on ``sut_cpu``, everything else on ``aux_cpu``)::

    fake exchange --aggTrade frames--> system under test --XADD/PUBLISH/SET--> fresh redis-server
                                                                                  | PUBLISH
                                                                  pub/sub clock (raw hiredis) stamps arrivals

Figures (``run_once``'s dict): ``events`` arrived on pub/sub, ``events_per_s`` = events / (last arrival - first
frame sent), ``p50_ms``/``p99_ms``/``max_ms`` send -> pub/sub arrival per event (matched by trade id),
``cpu_s_per_100k`` and ``redis_cpu_s_per_100k`` (CPU seconds of the system under test and of Redis in that
window, per 100,000 events), ``sut_core_pct`` (the share of one core the system under test used in that window:
near 100 at saturation means it is CPU-bound; far below, something else limits it), ``events_per_cpu_s`` (events
per CPU-second of the system under test: the rate it sustains on a core of its own, the figure a loaded machine
distorts least), ``rss_mb`` (peak RSS of the system under test), and the correctness checks of what
its Redis Stream holds: ``stored`` entries, ``duplicates``, ``missing`` ids, ``in_order``, ``exact`` (every
price and size string byte-identical to the recorded one), and ``announced`` (losses the stream announces with gap
events, per reason: Feedplane's delivery promise; ``correct`` needs every event stored, none announced).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from array import array
from pathlib import Path
from typing import Any, Protocol, cast

import orjson
import redis

from scripts.benchkit.frames import Trades
from scripts.benchkit.procs import CpuSampler, RedisServer, free_port, pct, peak_rss_mb, spawn, stop

ROOT = Path(__file__).resolve().parent.parent.parent
#: Stored entry: (trade id, price string, size string), in stream order.
Stored = tuple[int, str, str]


class Sut(Protocol):
    """A system under test: started against a Redis and the fake exchange, measured by one process id."""

    name: str
    channel: str  # the pub/sub channel its events are PUBLISHed on
    id_field: str  # the trade id's key in the published JSON

    def start(self, redis_url: str, exchange_port: int, cpu: int | None, aux_cpu: int | None) -> int:
        """Start; return the pid to measure (CPU, RSS). Must not subscribe the trades yet."""
        ...

    def subscribe(self) -> None:
        """Make it subscribe the trades (the exchange starts the replay on that subscription)."""
        ...

    def alive(self) -> bool:
        """Whether the measured process still runs."""
        ...

    def stop(self) -> None:
        """Stop every process it started."""
        ...

    def stored(self, client: redis.Redis) -> list[Stored]:
        """What its Redis Stream holds for the trades, in stream order."""
        ...

    def announced(self, client: redis.Redis) -> dict[str, int]:
        """Events its Redis Stream announces as lost: gap reason -> events (Feedplane's ``gap`` events)."""
        ...


def xrange_all(client: redis.Redis, key: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """Every entry of stream ``key``, oldest first (read 10,000 at a time)."""
    out: list[tuple[bytes, dict[bytes, bytes]]] = []
    start = "-"
    while True:
        entries = cast(list[tuple[bytes, dict[bytes, bytes]]], client.xrange(key, min=start, count=10_000))
        if start != "-":
            entries = entries[1:]
        if not entries:
            return out
        out.extend(entries)
        start = entries[-1][0].decode()


def _readline(proc: subprocess.Popen[bytes], what: str) -> bytes:
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line:
        raise RuntimeError(f"{what} ended before it was ready (exit {proc.poll()})")
    return line


def run_once(sut: Sut, trades: Trades, rate: float | None, tmp: Path, *, sut_cpu: int | None,
             aux_cpu: int | None, events: tuple[int, bool] | None = None) -> dict[str, Any]:  # fmt: skip
    """One run (see the module docstring); ``rate`` None = as fast as it goes. ``events``: the system under test
    writes its events to another Redis (Feedplane's ``EVENTS_REDIS_URL``, set by the caller, emptied before the
    run): ``(port of the node serving the topic, sharded pub/sub)``; the clock and the checks read that node."""
    n = len(trades.frames)
    py = sys.executable
    stamps_file, arrivals_file = tmp / "sent.bin", tmp / "arrivals.bin"
    with RedisServer(free_port(), aux_cpu) as rs:
        ex_port = free_port()
        ex = spawn([py, "-m", "scripts.benchkit.exchange", "--port", str(ex_port), "--frames", str(n),
                    "--stamps", str(stamps_file)] + (["--rate", str(rate)] if rate else []),
                   cpu=aux_cpu, cwd=ROOT, stdout=subprocess.PIPE)  # fmt: skip
        events_port = rs.port if events is None else events[0]
        sub = spawn([py, "-m", "scripts.benchkit.subscriber", "--port", str(events_port), "--channel", sut.channel,
                     "--count", str(n), "--id-field", sut.id_field, "--out", str(arrivals_file)]
                    + (["--sharded"] if events is not None and events[1] else []),
                    cpu=aux_cpu, cwd=ROOT, stdout=subprocess.PIPE)  # fmt: skip
        try:
            _readline(ex, "fake exchange")
            _readline(sub, "pub/sub clock")
            pid = sut.start(rs.url, ex_port, sut_cpu, aux_cpu)
            budget = 90 + n / (rate or 5_000)
            with CpuSampler([pid, rs.proc.pid]) as sampler:
                sut.subscribe()
                deadline = time.monotonic() + budget
                while sub.poll() is None and sut.alive() and time.monotonic() < deadline:
                    time.sleep(0.05)
                if not sut.alive():
                    print(f"{sut.name}: the process under test ended during the run", file=sys.stderr)
                rss = peak_rss_mb(pid)
            time.sleep(0.3)  # the last batch's other writes (SET latest) land after its PUBLISH
            client = redis.Redis(port=events_port)
            stored = sut.stored(client)
            announced = sut.announced(client)
            client.close()
        finally:
            sut.stop()
            stop(sub)
            stop(ex)
        report = orjson.loads(_readline(ex, "fake exchange report"))
    sent = array("q")
    sent.frombytes(stamps_file.read_bytes())
    both = array("q")
    both.frombytes(arrivals_file.read_bytes())
    half = len(both) // 2
    ids, arrived = both[:half], both[half:]
    delays = []
    for trade_id, t in zip(ids, arrived, strict=True):
        i = trades.index_of(trade_id)
        if i >= 0 and sent[i]:
            delays.append((t - sent[i]) / 1e6)
    last = max(arrived) if arrived else sent[0]
    elapsed_s = max(1e-9, (last - sent[0]) / 1e9)
    sut_cpu_s, redis_cpu_s = sampler.between(sent[0], last)
    per_100k = 100_000 / max(1, len(arrived))
    return {
        "sut": sut.name,
        "mode": f"{rate:,.0f}/s" if rate else "max",
        "events": len(arrived),
        "events_per_s": len(arrived) / elapsed_s,
        "p50_ms": statistics.median(delays) if delays else float("nan"),
        "p99_ms": pct(delays, 99),
        "max_ms": max(delays, default=float("nan")),
        "cpu_s_per_100k": sut_cpu_s * per_100k,
        "redis_cpu_s_per_100k": redis_cpu_s * per_100k,
        "sut_core_pct": 100 * sut_cpu_s / elapsed_s,
        "events_per_cpu_s": len(arrived) / max(sut_cpu_s, 1e-9),
        "rss_mb": rss,
        "exchange": report,
        "announced": announced,
        **check(stored, trades),
    }


def check(stored: list[Stored], trades: Trades) -> dict[str, Any]:
    """The correctness checks of the stream's entries against the frames sent (see the module docstring)."""
    seen: set[int] = set()
    duplicates = 0
    exact = True
    previous = -1
    in_order = True
    for trade_id, price, size in stored:
        if trade_id in seen:
            duplicates += 1
        seen.add(trade_id)
        in_order = in_order and trade_id > previous
        previous = trade_id
        i = trades.index_of(trade_id)
        if i < 0 or trades.prices[i] != price or trades.sizes[i] != size:
            exact = False
    n = len(trades.frames)
    return {"stored": len(stored), "duplicates": duplicates, "missing": n - len(seen), "in_order": in_order,
            "exact": exact, "correct": len(stored) == n and not duplicates and in_order and exact}  # fmt: skip


def cpus(pin: bool) -> tuple[int | None, int | None]:
    """(cpu of the system under test, cpu of everything else) when pinning, else (None, None)."""
    if not pin:
        return None, None
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        raise SystemExit("--pin needs two CPUs")
    return available[-1], available[0]
