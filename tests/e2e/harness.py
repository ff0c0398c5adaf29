"""Helpers shared by the end-to-end and chaos suites (and the Redis-fault unit tests).

- ``RedisServer``: a private ``redis-server`` on a free loopback port that a test may stop, kill and start
  again on the same port (the machine's shared Redis must never be restarted).
- ``SentinelServer``: a private Redis Sentinel monitoring such a server; it fails over when that server dies.
- ``Feedplane``: the system under test, started under supervisord from the repository's ``supervisord.conf``.
- ``poll``: bounded re-checking of another process's state. The processes under test (supervisord, workers,
  the control server, redis-server) run outside this event loop, so there is nothing to await: a bounded
  poll with a short interval is the only way to observe them. In-process state (the simulator) is awaited
  with ``ExchangeSimulator.wait_for`` instead.
- ``SSEReader``: an SSE client that keeps every event with its id and can resume with ``Last-Event-ID``;
  ``stream_ids`` reads the per-topic stream ids out of such an id (the cursor, ``app.sse_cursor``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp
import redis

if TYPE_CHECKING:
    from scripts.simulator import ExchangeSimulator

ROOT = Path(__file__).resolve().parents[2]
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"

T = TypeVar("T")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.02) -> None:
    """Blocking bounded poll of another process's state (used from threads and sync code)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


async def poll(check: Callable[[], Awaitable[T]], timeout: float, what: str, interval: float = 0.1) -> T:
    """Re-check another process's state (nothing to await there) until ``check()`` is truthy; returns it.

    Raises AssertionError naming ``what`` after ``timeout`` seconds.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)


class RedisServer:
    """A private redis-server on ``127.0.0.1:port`` (a free port by default), stoppable and restartable.

    ``persistent=True`` keeps an append-only file in ``directory`` so a stop/start keeps the data (a
    normal restart); otherwise nothing is written to disk and a restart comes back empty.
    """

    def __init__(
        self, directory: Path, *, port: int | None = None, persistent: bool = False, args: Sequence[str] = ()
    ) -> None:
        if not Path(REDIS_SERVER).exists():
            raise FileNotFoundError(f"redis-server not found ({REDIS_SERVER}); install it (CI does)")
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.persistent = persistent
        self.args = list(args)  # e.g. ["--replicaof", "127.0.0.1", "6379"]
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = directory / "redis.log"

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def ping(self) -> bool:
        """True when the server answers PING within 0.5 s (and is not loading its data set)."""
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            return bool(client.ping())
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()

    def start(self, timeout_s: float = 10.0) -> None:
        """Start the server and wait until it answers (blocking; see ``astart``)."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("redis-server already running")
        aof = ["--appendonly", "yes", "--appendfsync", "everysec"] if self.persistent else ["--appendonly", "no"]
        cmd = [REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", *aof,
               "--dir", str(self.directory), "--logfile", str(self.log), "--protected-mode", "no", *self.args]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        wait_until(lambda: self.ping() or self.proc is None or self.proc.poll() is not None, timeout_s, "redis-server")
        if self.proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (a clean shutdown: the append-only file is synced) and wait for the exit; idempotent."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """SIGKILL (a crash); idempotent."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    async def astart(self) -> None:
        await asyncio.to_thread(self.start)

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)


class SentinelServer:
    """A private Redis Sentinel on ``127.0.0.1:port`` monitoring ``service`` at ``master_port`` (quorum 1).

    Short timers so a test's failover takes about a second: down after 1 s, failover timeout 5 s.
    """

    def __init__(self, directory: Path, *, service: str, master_port: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.service = service
        self.config = directory / "sentinel.conf"
        self.config.write_text(  # sentinel rewrites its config file, so it must be its own and writable
            f"port {self.port}\nbind 127.0.0.1\nprotected-mode no\ndir {directory}\n"
            f"logfile {directory / 'sentinel.log'}\n"
            f"sentinel monitor {service} 127.0.0.1 {master_port} 1\n"
            f"sentinel down-after-milliseconds {service} 1000\n"
            f"sentinel failover-timeout {service} 5000\n"
            f"sentinel parallel-syncs {service} 1\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=1, socket_timeout=2,
                           decode_responses=True)  # fmt: skip

    def master_port(self) -> int | None:
        """The port the sentinel currently names as the master, or None when it does not answer."""
        try:
            with self.client() as client:
                addr = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
        except (redis.RedisError, OSError):
            return None
        return int(addr[1]) if addr else None

    def replicas_ready(self) -> bool:
        """True when the sentinel knows a replica it could promote (linked, not down)."""
        try:
            with self.client() as client:
                replicas = client.execute_command("SENTINEL", "REPLICAS", self.service)
        except (redis.RedisError, OSError):
            return False
        for raw in replicas:
            info = dict(zip(raw[::2], raw[1::2], strict=True)) if isinstance(raw, list) else raw
            if "down" not in info.get("flags", "") and info.get("master-link-status") == "ok":
                return True
        return False

    def start(self, timeout_s: float = 15.0) -> None:
        self.proc = subprocess.Popen([REDIS_SERVER, str(self.config), "--sentinel"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)  # fmt: skip
        wait_until(lambda: self.master_port() is not None, timeout_s, "redis sentinel")

    def kill(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def redis_server(directory: Path, *, persistent: bool = False) -> Any:
    """``with redis_server(tmp) as srv:`` a started ``RedisServer``, always stopped afterwards."""
    server = RedisServer(directory, persistent=persistent)
    server.start()
    try:
        yield server
    finally:
        server.kill()


class Feedplane:
    """The system under test, started under supervisord with the README's settings plus ``env`` overrides.

    ``log`` collects supervisord's stdout (every program logs there).
    """

    def __init__(
        self,
        tmp: Path,
        sim: ExchangeSimulator,
        *,
        redis_url: str,
        workers: int = 2,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self.env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "CTRL_ADDR": f"127.0.0.1:{self.port}",
            "WORKERS": str(workers),
            "FEEDPLANE_PYTHON": sys.executable,
            "FEEDPLANE_RUN_DIR": str(tmp),
            "BITMART_PUBLIC_WS_URI": sim.bitmart_public_url,
            "BINANCE_USDM_WS_URI": sim.binance_base_url,
            "BINANCE_USDM_REST_URI": sim.binance_rest_url,
            "GATEIO_WS_URI": sim.gate_ws_url,
            "GATEIO_REST_URI": sim.gate_rest_url,
            "DEPTH_INTERVAL_MS": "50",
            "SUBSCRIBE_DELAY_MS": "20",
            "RECONNECT_DELAY_S": "0.2",
            "RECONNECT_MAX_DELAY_S": "1",
            "HEARTBEAT_INTERVAL_S": "0.5",
            "LEASE_TTL_S": "3",
            "PYTHONUNBUFFERED": "1",
            "METRICS_PORT": "0",  # no worker metrics ports unless a test asks (parallel runs share the host)
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = tmp / "supervisord.out"

    def start(self) -> None:
        with self.log.open("ab") as out:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "supervisor.supervisord", "-c", str(ROOT / "supervisord.conf")],
                cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip

    async def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM supervisord (it stops every program, each within its stopwaitsecs) and return its exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return await asyncio.to_thread(self.proc.wait, timeout_s)

    async def ctl(self, *args: str) -> str:
        """Run ``supervisorctl -c supervisord.conf <args>``; returns its stdout (exit status ignored: it is
        non-zero whenever a program is not RUNNING)."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "supervisor.supervisorctl", "-c", str(ROOT / "supervisord.conf"), *args,
            cwd=ROOT, env=self.env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await proc.communicate()
        return out.decode(errors="replace")

    def tail(self, chars: int = 4000) -> str:
        """The end of supervisord's output and of each program's log file (``<tmp>/<program>.log``)."""
        logs = [self.log, *sorted(self.tmp.glob("*.log"))]
        return "".join(f"== {p.name}\n" + p.read_text(errors="replace")[-chars:] for p in logs if p.exists())


async def get_json(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.get(url) as resp:
        return resp.status, await resp.json()


async def post_json(session: aiohttp.ClientSession, url: str, body: Any = None) -> tuple[int, Any]:
    async with session.post(url, json=body) as resp:
        return resp.status, await resp.json()


async def status_or_none(session: aiohttp.ClientSession, fp: Feedplane) -> dict[str, Any] | None:
    """``GET /status`` body, or None while the control server or Redis is not answering."""
    try:
        code, body = await get_json(session, f"{fp.base}/status")
    except (aiohttp.ClientError, ValueError):
        return None
    return body if code == 200 else None


async def workers_alive(session: aiohttp.ClientSession, fp: Feedplane, n: int) -> bool:
    body = await status_or_none(session, fp)
    return body is not None and len([w for w in body["workers"] if w.get("alive", True)]) == n


async def sse_events(
    session: aiohttp.ClientSession, url: str, out: list[dict[str, Any]], headers: Mapping[str, str] | None = None
) -> None:
    """Append every SSE event (event, id, data) from ``url`` to ``out`` until cancelled or the stream ends."""
    async with session.get(url, headers=dict(headers or {})) as resp:
        assert resp.status == 200, await resp.text()
        event: dict[str, Any] = {}
        async for raw in resp.content:
            line = raw.decode().rstrip("\r\n")
            if not line:
                if "data" in event:
                    out.append(event)
                event = {}
            elif line.startswith(":"):
                continue
            else:
                name, _, value = line.partition(":")
                event[name] = value.removeprefix(" ")


def stream_ids(event_id: str) -> list[str]:
    """The stream ids (``ms-seq``) of an SSE cursor ``<fingerprint>:<id>,<id>..``, in sorted topic order."""
    return event_id.rpartition(":")[2].split(",")


class SSEReader:
    """Reads ``url`` in a background task into ``events``; ``reconnect()`` resumes with ``Last-Event-ID``.

    ``last_id`` is the id of the last event received; ``ends`` counts streams that ended (server side or
    error), ``refused`` the connection attempts that did not get a 200.
    """

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url
        self.events: list[dict[str, Any]] = []
        self.last_id: str | None = None
        self.ends = 0
        self.refused = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._read(), name="sse-reader")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def reconnect(self) -> None:
        """Drop the current stream and open a new one from ``last_id`` (what an EventSource does)."""
        await self.stop()
        self.start()

    @property
    def connected(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _read(self) -> None:
        headers = {"Last-Event-ID": self.last_id} if self.last_id else {}
        try:
            async with self.session.get(self.url, headers=headers) as resp:
                if resp.status != 200:
                    self.refused += 1
                    return
                event: dict[str, Any] = {}
                async for raw in resp.content:
                    line = raw.decode().rstrip("\r\n")
                    if not line:
                        if "data" in event:
                            self.events.append(event)
                            if "id" in event:
                                self.last_id = event["id"]
                        event = {}
                    elif not line.startswith(":"):
                        name, _, value = line.partition(":")
                        event[name] = value.removeprefix(" ")
        except aiohttp.ClientError:
            pass
        self.ends += 1
