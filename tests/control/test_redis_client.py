"""Redis client policies against a private redis-server that the test stops and starts again."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from control.redis_client import RETRY_ON_ERROR, make_redis, outage_retry
from tests.e2e.harness import redis_server

pytestmark = pytest.mark.integration  # a private redis-server


async def test_outage_retry_rides_out_a_restart_and_make_redis_fails_fast(tmp_path: Path) -> None:
    with redis_server(tmp_path / "redis") as server:
        patient = Redis.from_url(server.url(), retry=outage_retry(10.0), retry_on_error=list(RETRY_ON_ERROR))
        quick = make_redis(server.url())
        try:
            assert await patient.ping() and await quick.ping()
            await server.astop()

            t0 = time.perf_counter()
            try:
                await quick.ping()
                raise AssertionError("make_redis answered with Redis down")
            except RedisConnectionError:
                pass
            assert time.perf_counter() - t0 < 1.0  # a request can answer 503 at once

            waiting = asyncio.create_task(patient.set("k", "v"))  # an arq poll during the outage
            await asyncio.sleep(1.0)  # the outage
            assert not waiting.done()
            await server.astart()
            assert await asyncio.wait_for(waiting, 5.0)
            assert await quick.get("k") == "v"
        finally:
            await patient.aclose()
            await quick.aclose()
