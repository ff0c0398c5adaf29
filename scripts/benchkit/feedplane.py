"""Feedplane as the system under test: one arq worker process (measured; ``python -m workers``) plus the control server (for the one
``POST /trades/subscribe``; idle while measuring, on the auxiliary CPU when pinning).

The worker subscribes ``btcusdt@aggTrade`` (``BINANCE_USDM_TRADE_STREAM=aggTrade``) on the fake exchange's
``/market/stream`` and writes each trade with its publisher: XADD to the topic's stream, PUBLISH on its channel,
SET of its latest value (``workers.publish_script``). ``STREAM_MAXLEN`` is raised so the count check sees every
entry.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import orjson
import redis

from control import keys
from scripts.benchkit.procs import free_port, spawn, stop
from scripts.benchkit.run import ROOT, Stored, xrange_all

TOPIC = "binanceusdm:trade:BTCUSDT"
#: ``entry`` -> how the worker is started: ``workers`` (uvloop, what supervisord runs) or ``arq`` (arq's own CLI,
#: asyncio's default loop; kept to compare).
WORKER_ENTRIES = {"workers": ["workers"], "arq": ["arq", "workers.settings.WorkerSettings"]}


class Feedplane:
    """See the module docstring; ``extra_env`` overrides settings of both processes."""

    name = "feedplane"
    channel = keys.event_channel(TOPIC)
    id_field = "trade_id"

    def __init__(self, extra_env: dict[str, str] | None = None, entry: str = "workers") -> None:
        self.extra_env = extra_env or {}
        self.entry = entry
        self.procs: list[subprocess.Popen[bytes]] = []
        self.base = ""

    def start(self, redis_url: str, exchange_port: int, cpu: int | None, aux_cpu: int | None) -> int:
        """Start the control server and one worker; wait until the worker is registered."""
        ctrl_port = free_port()
        env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "CTRL_ADDR": f"127.0.0.1:{ctrl_port}",
            "BINANCE_USDM_WS_URI": f"ws://127.0.0.1:{exchange_port}",
            "BINANCE_USDM_TRADE_STREAM": "aggTrade",
            "WORKER_ID": "bench-worker",
            "SUBSCRIBE_DELAY_MS": "0",
            "STREAM_MAXLEN": "100000000",
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }
        self.base = f"http://127.0.0.1:{ctrl_port}"
        py = sys.executable
        self.procs.append(spawn([py, "-m", "app.serve"], cpu=aux_cpu, env=env, cwd=ROOT, stdout=subprocess.DEVNULL))
        worker = spawn([py, "-m", *WORKER_ENTRIES[self.entry]], cpu=cpu, env=env, cwd=ROOT)
        self.procs.append(worker)
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{self.base}/status", timeout=2) as resp:
                    if orjson.loads(resp.read()).get("workers"):
                        return worker.pid
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline or worker.poll() is not None:
                raise RuntimeError("the Feedplane worker did not come up")
            time.sleep(0.2)

    def alive(self) -> bool:
        """Whether the worker still runs."""
        return len(self.procs) == 2 and self.procs[1].poll() is None

    def subscribe(self) -> None:
        """``POST /trades/subscribe`` BTCUSDT on binanceusdm."""
        body = orjson.dumps({"symbol": "BTCUSDT", "exchange": "binanceusdm"})
        request = urllib.request.Request(f"{self.base}/trades/subscribe", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                if resp.status != 202:
                    raise RuntimeError(f"subscribe failed: HTTP {resp.status}")
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"subscribe failed: HTTP {exc.code} {exc.read()!r}") from exc

    def stop(self) -> None:
        """Stop the worker, then the control server."""
        for proc in reversed(self.procs):
            stop(proc)
        self.procs.clear()

    def announced(self, client: redis.Redis) -> dict[str, int]:
        """Gap events in the topic's stream: reason -> events they announce as lost."""
        out: dict[str, int] = {}
        for _id, fields in xrange_all(client, keys.event_stream(TOPIC)):
            event = orjson.loads(fields[keys.STREAM_FIELD.encode()])
            if event.get("type") == "gap":
                out[event["reason"]] = out.get(event["reason"], 0) + int(event.get("dropped") or 0)
        return out

    def stored(self, client: redis.Redis) -> list[Stored]:
        """The topic stream's trade events (gap events would count as missing ids)."""
        out: list[Stored] = []
        for _id, fields in xrange_all(client, keys.event_stream(TOPIC)):
            event = orjson.loads(fields[keys.STREAM_FIELD.encode()])
            if event.get("type") == "trade":
                out.append((int(event["trade_id"]), event["price"], event["size"]))
        return out
