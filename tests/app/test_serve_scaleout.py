"""Scale-out of the consumer side: two ``python -m app.serve`` processes behind one SO_REUSEPORT listener
(``CTRL_REUSE_PORT=1``, as supervisord ``numprocs`` runs them). Both serve SSE clients; when one stops, its clients
get ``bye`` and resume by cursor on the other through the same address, losing nothing and getting nothing twice."""

from __future__ import annotations

import asyncio
import signal
import sys

import aiohttp
import orjson
import pytest
from redis.asyncio import Redis

from tests.app._sse import TRADE, SSEClient, connect, xadd_many
from tests.app.test_serve import REPO, _env, _free_port

pytestmark = pytest.mark.integration  # app.serve in subprocesses


async def _start(port: int, redis_url: str) -> asyncio.subprocess.Process:
    env = _env(CTRL_ADDR=f"127.0.0.1:{port}", REDIS_URL=redis_url, CTRL_REUSE_PORT="1")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app.serve", cwd=REPO, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    async with asyncio.timeout(20):  # hypercorn's "Running on" line: lifespan done, socket listening
        while b"Running on" not in (line := await proc.stderr.readline()):
            assert line, "server exited before listening"
    return proc


async def _bye(client: SSEClient) -> dict[str, str] | None:
    """The ``bye`` of a client whose process stops, None for a client of the other process (nothing comes)."""
    try:
        event = await client.next(timeout_s=2)
    except TimeoutError:
        return None
    assert event is not None and event["event"] == "bye", event
    return event


async def _trade_ids(client: SSEClient, until: int) -> tuple[list[int], dict[str, str] | None]:
    """Trade ids read until ``until`` arrives, or up to a ``bye`` (returned as the second item)."""
    seen: list[int] = []
    while not seen or seen[-1] != until:
        event = await client.next(timeout_s=10)
        assert event is not None, "stream ended without bye"
        if event["event"] == "bye":
            return seen, event
        seen.append(int(orjson.loads(event["data"])["trade_id"]))
    return seen, None


async def test_two_processes_share_one_address_and_hand_clients_over_by_cursor(redis_url: str, redis: Redis) -> None:
    port = _free_port()
    procs = [await _start(port, redis_url), await _start(port, redis_url)]
    base = f"http://127.0.0.1:{port}/sse?topic={TRADE}"
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            clients = [await connect(session, base) for _ in range(16)]
            for client in clients:
                await client.until("ready")
            readers = [c for c in await redis.client_list() if c.get("cmd") == "xread"]
            assert len(readers) == 2, "each process has clients, and one Redis reader for all of them"
            await xadd_many(redis, [(TRADE, i) for i in range(50)])
            for client in clients:
                assert (await _trade_ids(client, 49))[0] == list(range(50))

            procs[0].send_signal(signal.SIGTERM)  # one process goes away (deploy, crash, scale-in)
            byes = await asyncio.gather(*(_bye(c) for c in clients))
            moved = [c for c, bye in zip(clients, byes) if bye is not None]
            await xadd_many(redis, [(TRADE, i) for i in range(50, 100)])  # while its clients are away
            for client, bye in zip(clients, byes):
                if bye is None:
                    assert (await _trade_ids(client, 99))[0] == list(range(50, 100))
                    continue
                assert orjson.loads(bye["data"])["reason"] == "shutdown"
                again = await connect(session, base, last_event_id=bye["id"])  # same address: the other process
                _, caught_up = await again.until("ready")
                assert [int(orjson.loads(e["data"])["trade_id"]) for e in caught_up] == list(range(50, 100))
                await again.close()
            assert 0 < len(moved) < len(clients)
            for client in clients:
                await client.close()
        assert await asyncio.wait_for(procs[0].wait(), 10) == 0
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), 10)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
