"""Idempotency under a crash: the worker process executing an order is killed (SIGKILL) after the exchange took the
order and before it answered; the client's retry with the same client order id finds the order at the exchange and
never places it twice."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest
from redis.asyncio import Redis

from control import keys
from control.settings import Settings
from tests.orders._fake_gate import FakeGate
from tests.orders.conftest import Api, running_executor

REPO = Path(__file__).resolve().parents[2]
BODY = {"exchange": "gateio", "symbol": "BTC_USDT", "type": "market", "side": "buy", "size": "2",
        "client_order_id": "crash-1", "take_profit": {"price": "65000"}}  # fmt: skip


@pytest.mark.integration  # a worker subprocess
async def test_killed_between_send_and_answer(api: Api, order_settings: Settings, order_env: dict[str, str],
                                              gate: FakeGate, redis: Redis) -> None:  # fmt: skip
    env = {**os.environ, **order_env, "REDIS_URL": order_settings.redis_url, "WORKER_ID": "crash-w1",
           "GATEIO_WS_URI": "ws://127.0.0.1:9", "LOG_LEVEL": "WARNING"}  # fmt: skip
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "arq", "workers.settings.WorkerSettings", cwd=REPO, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)  # fmt: skip
    try:
        async with asyncio.timeout(20):
            while not await redis.hexists(keys.WORKERS, "crash-w1"):  # the worker is up (its first heartbeat)
                await asyncio.sleep(0.05)
        gate.hold_place = True  # the exchange takes the order and never answers
        first = asyncio.create_task(api.post("/orders", json=BODY))
        async with asyncio.timeout(10):
            await gate.placed.wait()
        worker.send_signal(signal.SIGKILL)
        await worker.wait()
        lost = await first
    finally:
        if worker.returncode is None:
            worker.kill()
            await worker.wait()
    assert lost.status_code == 504, lost.text
    assert lost.json()["error"]["code"] == "order_timeout"
    assert lost.json()["error"]["details"]["client_order_id"] == "crash-1"
    [order_id] = list(gate.orders)
    async with running_executor(order_settings, redis):
        for _ in range(40):  # the dead attempt's lock lapses 1 s after its deadline: 409 until then
            retry = await api.post("/orders", json=BODY)
            if retry.status_code != 409:
                break
            await asyncio.sleep(0.1)
    assert retry.status_code == 201, retry.text
    body = retry.json()
    assert body["recovered"] is True and body["order"]["order_id"] == str(order_id)
    assert [s for s in body["steps"] if s["step"] == "entry"] == [{"step": "entry", "status": "recovered",
                                                                    "order_id": str(order_id)}]  # fmt: skip
    assert sum(1 for m, t in gate.calls if (m, t) == ("POST", "orders")) == 1  # placed once
    assert len(gate.triggers) == 1 and body["take_profit"]["order_id"] in {str(i) for i in gate.triggers}
