"""End to end, as an operator: the ``feedplane`` CLI, metrics, JSON logs and ``scripts/ctl`` against the running app.

supervisord + Hypercorn control server + 2 arq workers + the local exchange simulator replaying the recorded
Binance trades, ``LOG_FORMAT=json`` and worker metrics on ``METRICS_PORT + process number``. Every step goes through
a public surface: the CLI (its own process, over HTTP), ``GET /metrics`` and each worker's metrics port, the
programs' log files, supervisorctl through ``scripts/ctl``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from scripts.simulator import ExchangeSimulator
from tests.app.test_observe import samples
from tests.e2e.harness import ROOT, Feedplane, RedisServer, free_port, poll, workers_alive

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

TRADES = "binanceusdm:trade:BTCUSDT"
KLINES = "binanceusdm:kline:SUSHIUSDT:1m"


@contextlib.asynccontextmanager
async def operated_system(tmp_path: Path) -> AsyncIterator[tuple[Feedplane, int, aiohttp.ClientSession]]:
    """The system with JSON logs and worker metrics on ``metrics_port`` + 0 and + 1."""
    server = RedisServer(tmp_path / "redis")
    await server.astart()
    sim = ExchangeSimulator(speed=1.0, loop=True)
    await sim.start()
    metrics_port = free_port()
    while not port_free(metrics_port + 1):  # worker_01 listens on the next port
        metrics_port = free_port()
    fp = Feedplane(tmp_path, sim, redis_url=server.url(), workers=2,
                   env={"LOG_FORMAT": "json", "METRICS_PORT": str(metrics_port)})  # fmt: skip
    fp.start()
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
    try:
        yield fp, metrics_port, session
    finally:
        if fp.proc and fp.proc.poll() is None:
            await fp.stop()
        await session.close()
        await sim.stop()
        await server.astop()
        print(fp.tail())


def port_free(port: int) -> bool:
    """True when ``port`` can be bound on loopback now (not listening, not some connection's local port)."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


async def cli(fp: Feedplane, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """``feedplane ARGS`` in its own process against ``fp``: (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli", *args, cwd=ROOT, env=env or {**fp.env, "CTRL_ADDR": f"127.0.0.1:{fp.port}"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def scrape(session: aiohttp.ClientSession, url: str) -> dict[Any, float]:
    async with session.get(url) as resp:
        assert resp.status == 200, url
        return samples(await resp.text())


def total(got: dict[Any, float], name: str, **labels: str) -> float:
    """Sum of ``name``'s samples whose labels include ``labels``."""
    return sum(v for (n, ls), v in got.items() if n == name and set(labels.items()) <= set(ls))


def json_lines(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            out.append(orjson.loads(line))
    return out


async def test_operator_session(tmp_path: Path) -> None:
    async with operated_system(tmp_path) as (fp, metrics_port, session):
        await poll(lambda: workers_alive(session, fp, 2), 60, "two live workers")
        code, out, _ = await cli(fp, "health")
        assert code == 0 and "ready" in out and "workers" in out  # GET /health's summary (ops-api)

        # subscribe: the answer with each topic's state; the request id followed into the worker's log
        code, out, err = await cli(fp, "subscribe", "trades", "BTCUSDT", "--exchange", "binanceusdm", "--wait", "15")
        assert code == 0, out + err
        assert TRADES in out and "active" in out
        request_id = next(line.split()[-1] for line in out.splitlines() if line.startswith("request id "))
        code, out, err = await cli(fp, "subscribe", "klines", "SUSHIUSDT", "1m", "-e", "binanceusdm", "--wait", "15")
        assert code == 0 and KLINES in out, out + err
        code, out, err = await cli(fp, "subscribe", "klines", "BTCUSDT", "3m")
        assert code == 1 and "validation_error" in err and "unknown timeframe '3m'" in err and "request id" in err

        code, out, _ = await cli(fp, "status")
        assert code == 0 and "workers" in out and "connections" in out and TRADES in out and "active" in out
        code, out, _ = await cli(fp, "status", "--state", "active", "--exchange", "binanceusdm", "--json")
        assert {s["topic"] for s in orjson.loads(out)["subscriptions"]} == {TRADES, KLINES}

        # tail: JSON lines; across a control-server restart it resumes with Last-Event-ID, no loss, no repeat
        code, out, _ = await cli(fp, "tail", TRADES, "--count", "3")
        first = [orjson.loads(line) for line in out.splitlines()]
        assert code == 0 and len(first) == 3 and all(e["type"] == "trade" for e in first)
        tail = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cli", "tail", TRADES, "--count", "40", cwd=ROOT,
            env={**fp.env, "CTRL_ADDR": f"127.0.0.1:{fp.port}"}, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert tail.stdout is not None
        seen = [orjson.loads(await asyncio.wait_for(tail.stdout.readline(), 30)) for _ in range(5)]
        ctl_env = {k: v for k, v in fp.env.items() if k not in ("WORKERS", "FEEDPLANE_PYTHON")}
        restart = await asyncio.create_subprocess_exec("scripts/ctl", "restart", "api", cwd=ROOT, env=ctl_env,
                                                       stdout=asyncio.subprocess.PIPE)  # fmt: skip
        restarted, _ = await asyncio.wait_for(restart.communicate(), 60)
        assert b"api: started" in restarted
        rest, tail_err = await asyncio.wait_for(tail.communicate(), 120)
        seen += [orjson.loads(line) for line in rest.decode().splitlines()]
        ids = [int(e["trade_id"]) for e in seen]
        assert len(ids) == 40 and ids == list(range(ids[0], ids[0] + 40)), ids  # consecutive: no loss, no repeat
        assert b"reconnected" in tail_err

        # metrics: the control server's, and each worker's own port
        code, _, _ = await cli(fp, "status")  # the control server restarted: its counters started again
        api = await scrape(session, f"{fp.base}/metrics")
        assert code == 0 and total(api, "feedplane_http_requests_total", route="/status", status="200") >= 1
        assert total(api, "feedplane_http_request_duration_seconds_count", route="/status") >= 1
        assert total(api, "feedplane_sse_events_total") >= 1 and total(api, "feedplane_sse_clients") == 0  # after restart
        workers = [await scrape(session, f"http://127.0.0.1:{metrics_port + n}/metrics") for n in (0, 1)]
        both: dict[Any, float] = {}
        for got in workers:
            for key, value in got.items():
                both[key] = both.get(key, 0.0) + value
        assert total(both, "feedplane_worker_events_published_total", exchange="binanceusdm", channel="trade") >= 40
        assert total(both, "feedplane_worker_events_published_total", exchange="binanceusdm", channel="kline") >= 1
        count = total(both, "feedplane_worker_redis_write_latency_seconds_count")
        assert count >= 41 and total(both, "feedplane_worker_redis_write_latency_seconds_bucket", le="+Inf") == count
        assert 0 < total(both, "feedplane_worker_redis_write_latency_seconds_bucket", le="1.0") <= count
        assert total(both, "feedplane_worker_frames_received_total", exchange="binanceusdm") >= 40
        assert total(both, "feedplane_worker_connections", state="open") >= 1
        assert total(both, "feedplane_worker_subscriptions", state="active") == 2
        assert total(both, "feedplane_worker_leases_held") >= 1
        assert total(both, "feedplane_worker_frames_malformed_total") == 0

        # JSON logs: one object per line, role and worker id; the subscribe's request id in a worker's job line
        worker_lines = [r for p in sorted(fp.tmp.glob("worker_*.log")) for r in json_lines(p)]
        assert worker_lines and all(r["role"] == "worker" and r["worker_id"] for r in worker_lines if "role" in r)
        handled = [r for r in worker_lines if r.get("request_id") == request_id]
        assert any(r["logger"] == "workers.jobs" and "reconcile" in r["message"] for r in handled), handled
        api_lines = json_lines(fp.tmp / "api.log")
        assert any(r.get("request_id") == request_id and r["role"] == "api" for r in api_lines)

        # stop, start, unsubscribe; supervisorctl without the runner's variables
        code, out, _ = await cli(fp, "stop")
        assert code == 0 and "paused=True" in out
        code, out, _ = await cli(fp, "start")
        assert code == 0 and "2 topics" in out
        code, out, _ = await cli(fp, "unsubscribe", "trades", "BTCUSDT", "--exchange", "binanceusdm")
        assert code == 0 and TRADES in out.split("not subscribed")[0]
        status = await asyncio.create_subprocess_exec("scripts/ctl", "status", cwd=ROOT, env=ctl_env,
                                                      stdout=asyncio.subprocess.PIPE)  # fmt: skip
        listing = (await status.communicate())[0].decode()
        assert "api " in listing and "worker:worker_00" in listing and "RUNNING" in listing
        tail_log = await asyncio.create_subprocess_exec("scripts/ctl", "tail", "worker_01", cwd=ROOT, env=ctl_env,
                                                        stdout=asyncio.subprocess.PIPE)  # fmt: skip
        logged = (await tail_log.communicate())[0].decode()  # the end of the worker's own log file
        assert '"worker_id": "' in logged and "ERROR (no such process name)" not in logged, logged


async def test_cli_error_when_nothing_answers() -> None:
    """No server: exit 2 and a message naming the address (no traceback)."""
    env = {"PATH": os.environ.get("PATH", ""), "CTRL_ADDR": f"127.0.0.1:{free_port()}"}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "cli", "status", cwd=ROOT, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)  # fmt: skip
    _, err = await proc.communicate()
    assert proc.returncode == 2 and b"unreachable" in err and b"Traceback" not in err
