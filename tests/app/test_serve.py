"""``python -m app.serve`` as a real subprocess: serves, drains SSE with ``bye`` on SIGTERM, exits 0; bad env -> 2."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import aiohttp
import pytest
from redis.asyncio import Redis

pytestmark = pytest.mark.integration  # app.serve in a subprocess

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CTRL_", "SSE_", "SUBSCRIBE_"))}
    env.update(PYTHONUNBUFFERED="1", LOG_LEVEL="INFO", **extra)
    return env


async def test_serve_answers_and_stops_gracefully_on_sigterm(redis_url: str, redis: Redis) -> None:
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app.serve", cwd=REPO, env=_env(CTRL_ADDR=f"127.0.0.1:{port}", REDIS_URL=redis_url),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    try:
        async with asyncio.timeout(20):  # wait for hypercorn's "Running on" line (lifespan done, socket bound)
            while b"Running on" not in (line := await proc.stderr.readline()):
                assert line, "server exited before listening"
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/status") as resp:
                assert resp.status == 200
                assert (await resp.json())["paused"] is False
            stream = await session.get(f"{base}/sse?topic=bitmart:trade:BTCUSDT")
            assert stream.status == 200
            async with asyncio.timeout(5):
                while b"event: ready" not in await stream.content.readline():
                    pass
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(10):
                rest = await stream.content.read()  # ends cleanly (no ClientPayloadError) after the farewell
            assert b"event: bye" in rest and b"retry: 2000" in rest
            stream.close()
        out, err = await asyncio.wait_for(proc.communicate(), 10)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    assert b"GET /status" in out  # access log on stdout


async def test_invalid_settings_exit_2_naming_the_variable() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app.serve", cwd=REPO, env=_env(SUBSCRIBE_BATCH="abc"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 2
    assert err.decode().startswith("feedplane: SUBSCRIBE_BATCH")
    assert out == b""
