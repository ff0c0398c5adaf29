"""Processes of a benchmark run: a fresh redis-server, CPU pinning, CPU time and peak RSS from ``/proc``.

Linux only (``/proc``, ``sched_setaffinity``). CPU times are in seconds (utime + stime, ``SC_CLK_TCK`` ticks).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, Self

import redis

_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned(cpu: int | None) -> Any:
    """A ``preexec_fn`` that pins the child to ``cpu`` before it runs anything (None: no pinning)."""
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def spawn(cmd: Sequence[str], *, cpu: int | None, env: dict[str, str] | None = None, cwd: Path | None = None,
          stdout: int | IO[Any] | None = None) -> subprocess.Popen[bytes]:  # fmt: skip
    """Start ``cmd`` pinned to ``cpu`` (None: anywhere)."""
    return subprocess.Popen(list(cmd), env=env, cwd=cwd, stdout=stdout, preexec_fn=pinned(cpu))  # noqa: PLW1509


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    """SIGTERM, wait, SIGKILL if it does not end in time."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * _TICK_S


def peak_rss_mb(pid: int) -> float:
    """Peak resident set size (VmHWM) of ``pid`` in MB (MiB)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except FileNotFoundError:
        return float("nan")
    for line in lines:
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class CpuSampler:
    """Samples the CPU seconds of some processes every ``every_s`` in a thread, so the CPU spent inside any
    window ``[t0_ns, t1_ns]`` (wall clock, ``time.time_ns``) can be read afterwards (``between``)."""

    def __init__(self, pids: Sequence[int], every_s: float = 0.02) -> None:
        self.pids = list(pids)
        self.every_s = every_s
        self.times = array("q")
        self.cpu: list[list[float]] = [[] for _ in self.pids]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            self._sample()
            if self._stop.wait(self.every_s):
                self._sample()
                return

    def _sample(self) -> None:
        try:
            values = [cpu_s(pid) for pid in self.pids]
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return
        self.times.append(time.time_ns())
        for series, value in zip(self.cpu, values, strict=True):
            series.append(value)

    def between(self, t0_ns: int, t1_ns: int) -> list[float]:
        """CPU seconds each process used from the last sample at or before ``t0_ns`` to the first at or after
        ``t1_ns`` (the window widened to whole samples)."""
        times = self.times
        i0 = max([i for i, t in enumerate(times) if t <= t0_ns], default=0)
        i1 = min([i for i, t in enumerate(times) if t >= t1_ns], default=len(times) - 1)
        return [series[i1] - series[i0] for series in self.cpu]


class RedisServer:
    """A fresh ``redis-server`` on loopback for one run (no persistence), optionally pinned; a context manager."""

    def __init__(self, port: int, cpu: int | None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not found on PATH")
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.proc = spawn([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                           "--loglevel", "warning"], cpu=cpu, stdout=subprocess.DEVNULL)  # fmt: skip
        client = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server on port {port} did not start") from None
                time.sleep(0.05)
        client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        stop(self.proc)


def pct(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100) of ``values`` (nearest rank); NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]
