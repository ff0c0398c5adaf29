"""One-command runner behind ``scripts/run``: Redis (found or started), optional simulator, supervisord.

Order of preference for Redis: the server at ``REDIS_URL`` when it answers; else a local
``redis-server`` started on that URL's loopback port (nothing on disk); else the embedded
fakeredis server with a warning. ``--replay`` also starts the local exchange simulator and
points both exchanges' URLs at it, so the whole pipeline runs offline. Everything this script
started is stopped when it gets Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import redis
from redis.sentinel import Sentinel

from control.redis_client import display_url, parse_sentinel_url
from control.settings import Settings, SettingsError
from scripts.logfollow import LogFollower

ROOT = Path(__file__).resolve().parent.parent


def log(message: str) -> None:
    """Runner messages go to stderr, prefixed, so they stand out from supervisord's stdout."""
    print(f"[feedplane] {message}", file=sys.stderr, flush=True)


def redis_answers(url: str) -> bool:
    """True when a Redis server answers PING at ``url`` within 1 s (for a sentinel URL: the current master)."""
    try:
        target = parse_sentinel_url(url)
        if target is None:
            client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        else:
            timeouts = {"socket_connect_timeout": 1, "socket_timeout": 1}
            client = Sentinel(list(target.sentinels), sentinel_kwargs=timeouts).master_for(
                target.service_name, db=target.db, username=target.username, password=target.password, **timeouts
            )
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError):
        return False


def wait_until(check: object, timeout_s: float, what: str) -> None:
    """Poll ``check()`` (a start-up probe of another process) until true; SystemExit on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise SystemExit(f"[feedplane] {what} did not come up within {timeout_s:.0f} s")


def port_open(host: str, port: int) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


class Runner:
    """Starts and stops the processes of one ``scripts/run`` session."""

    def __init__(self, args: argparse.Namespace, settings: Settings) -> None:
        self.args = args
        self.settings = settings
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.env = dict(os.environ)

    def spawn(self, name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        """Start a child in its own process group (so Ctrl-C reaches it only through us)."""
        proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, start_new_session=True)
        self.children.append((name, proc))
        return proc

    def ensure_redis(self) -> None:
        """Use the Redis at REDIS_URL, or start redis-server / the embedded fallback there."""
        url = self.settings.redis_url
        shown = display_url(url)
        if redis_answers(url):
            log(f"using Redis at {shown}")
            return
        if parse_sentinel_url(url) is not None:
            raise SystemExit(f"[feedplane] no sentinel at {shown} names a master that answers; fix REDIS_URL")
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 6379
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise SystemExit(f"[feedplane] no Redis answers at {shown} and it is not local; start it or fix REDIS_URL")
        server = shutil.which("redis-server")
        if server:
            log(f"no Redis at {shown}: starting redis-server on {host}:{port} (in memory, nothing on disk)")
            self.spawn("redis", [server, "--bind", host, "--port", str(port), "--save", "", "--appendonly", "no"])
        else:
            log("WARNING: no Redis and no redis-server installed: starting the EMBEDDED fakeredis server. "
                "It is slow and in-memory only; install redis-server for real use.")
            self.spawn("redis", [sys.executable, "-m", "scripts.embedded_redis", "--host", host, "--port", str(port)])
            self.env["FEEDPLANE_REDIS_EMBEDDED"] = "1"
        wait_until(lambda: redis_answers(url), 15, "Redis")

    def start_simulator(self) -> None:
        """Start the local exchange simulator and point every exchange (WebSocket and REST) at it."""
        port = self.args.sim_port
        cmd = [sys.executable, "-m", "scripts.simulator", "--port", str(port), "--speed", str(self.args.speed), "--loop"]
        if self.args.sim_accounts is not None:  # the API keys the simulated order APIs accept (secrets stay in the file)
            cmd += ["--accounts-file", str(self.args.sim_accounts)]
        log(f"--replay: starting the exchange simulator on 127.0.0.1:{port} (recorded frames, speed x{self.args.speed})")
        self.spawn("simulator", cmd)
        wait_until(lambda: port_open("127.0.0.1", port), 60, "the simulator")
        self.env["BITMART_PUBLIC_WS_URI"] = f"ws://127.0.0.1:{port}/api?protocol=1.1"
        self.env["BITMART_PRIVATE_WS_URI"] = f"ws://127.0.0.1:{port}/user?protocol=1.1"
        self.env["BINANCE_USDM_WS_URI"] = f"ws://127.0.0.1:{port}"
        self.env["BINANCE_USDM_REST_URI"] = f"http://127.0.0.1:{port}"
        self.env["GATEIO_WS_URI"] = f"ws://127.0.0.1:{port}/v4/ws/usdt"
        self.env["GATEIO_REST_URI"] = f"http://127.0.0.1:{port}"

    def run(self) -> int:
        """Run until supervisord exits or we are told to stop; returns supervisord's exit code."""
        run_dir = ROOT / "run"
        run_dir.mkdir(exist_ok=True)
        self.env.update(
            WORKERS=str(self.args.workers or self.settings.workers),
            FEEDPLANE_PYTHON=sys.executable,
            FEEDPLANE_RUN_DIR=str(run_dir),
            PYTHONUNBUFFERED="1",
        )
        stopping = False

        def on_signal(signum: int, _frame: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        try:
            self.ensure_redis()
            if self.args.replay:
                self.start_simulator()
            supervisord = self.spawn("supervisord", [sys.executable, "-m", "supervisor.supervisord", "-c", "supervisord.conf"])
            log(f"control server on http://{self.settings.ctrl_addr} with {self.env['WORKERS']} workers; "
                f"try: curl -s http://{self.settings.ctrl_addr}/help   (Ctrl-C stops everything)")
            follower = LogFollower(run_dir, sys.stdout.buffer)  # each program logs to run/<name>.log
            while supervisord.poll() is None and not stopping:
                follower.poll()
                time.sleep(0.2)
            follower.poll()
            return supervisord.returncode or 0
        finally:
            self.stop_all()

    def stop_all(self) -> None:
        """SIGTERM every child in reverse start order, wait for each, SIGKILL stragglers."""
        for name, proc in reversed(self.children):
            if proc.poll() is None:
                log(f"stopping {name}")
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30 if name == "supervisord" else 10)
                except subprocess.TimeoutExpired:
                    log(f"{name} did not stop in time; killing it")
                    proc.kill()
                    proc.wait()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``scripts/run``; see ``scripts/run --help``."""
    parser = argparse.ArgumentParser(prog="scripts/run", description="Run Feedplane: control server + workers.")
    parser.add_argument("--replay", action="store_true", help="also start the local exchange simulator (offline)")
    parser.add_argument("--speed", type=float, default=1.0, help="replay speed factor with --replay (0 = max)")
    parser.add_argument("--sim-port", type=int, default=9100, help="simulator port with --replay")
    parser.add_argument("--workers", type=int, default=0, help="number of workers (default: $WORKERS or 2)")
    parser.add_argument("--sim-accounts", type=Path, default=None,
                        help='with --replay: JSON list of {"exchange","api_key","api_secret","memo"} the simulator '
                             "accepts (its order and private APIs)")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"feedplane: {exc}", file=sys.stderr)
        return 2
    return Runner(args, settings).run()


if __name__ == "__main__":
    sys.exit(main())
