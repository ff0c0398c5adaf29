"""Fixtures of the order tests: a fake Gate.io REST server (``_fake_gate``), settings with orders on, the control
server (TestClient, called from a thread so the in-process order executor keeps running on the test's loop)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
import pytest
from cryptography.fernet import Fernet
from redis.asyncio import Redis
from starlette.testclient import TestClient

from app.main import create_app
from control.redis_client import make_redis
from control.settings import Settings
from tests.orders import _fake_binance
from tests.orders._fake_binance import FakeBinance
from tests.orders._fake_gate import KEY, SECRET, UID, FakeGate
from workers.orders import OrderExecutor


@pytest.fixture
async def gate() -> AsyncIterator[FakeGate]:
    fake = FakeGate()
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
async def binance() -> AsyncIterator[FakeBinance]:
    fake = FakeBinance()
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
def order_env(gate: FakeGate, binance: FakeBinance) -> dict[str, str]:
    """Environment of the ``default`` accounts of Gate.io and Binance USD-M on the fake exchanges, orders on."""
    return {"ORDERS_ENABLED": "1", "ORDERS_TIMEOUT_S": "3", "GATEIO_REST_URI": gate.url, "GATEIO_API_KEY": KEY,
            "GATEIO_API_SECRET": SECRET, "GATEIO_UID": UID, "BINANCE_USDM_REST_URI": binance.url,
            "BINANCE_API_KEY": _fake_binance.KEY, "BINANCE_API_SECRET": _fake_binance.SECRET,
            "CTRL_ADDR": "127.0.0.1:18089", "FEEDPLANE_SECRET_KEY": Fernet.generate_key().decode()}  # fmt: skip


@pytest.fixture
def order_settings(make_settings: Callable[..., Settings], order_env: dict[str, str]) -> Settings:
    return make_settings(**order_env)


@contextlib.asynccontextmanager
async def running_executor(settings: Settings, redis: Redis) -> AsyncIterator[OrderExecutor]:
    """An ``OrderExecutor`` serving the queue on this loop (as a worker process does)."""
    async with aiohttp.ClientSession() as session:
        blocking = make_redis(settings.redis_url, max_connections=1)
        ex = OrderExecutor(settings, redis=redis, blocking=blocking, session=session, worker_id="w-test")
        ex.start()
        try:
            yield ex
        finally:
            await ex.stop()
            await blocking.aclose()


@pytest.fixture
async def executor(order_settings: Settings, redis: Redis) -> AsyncIterator[OrderExecutor]:
    async with running_executor(order_settings, redis) as ex:
        yield ex


class Api:
    """The control server, called from a thread (``await api.post(...)``)."""

    def __init__(self, client: TestClient) -> None:
        self.client = client

    async def request(self, method: str, path: str, **kw: Any) -> Any:
        return await asyncio.to_thread(self.client.request, method, path, **kw)

    async def post(self, path: str, **kw: Any) -> Any:
        return await self.request("POST", path, **kw)

    async def get(self, path: str, **kw: Any) -> Any:
        return await self.request("GET", path, **kw)

    async def delete(self, path: str, **kw: Any) -> Any:
        return await self.request("DELETE", path, **kw)


@pytest.fixture
def api(order_settings: Settings, redis: Redis) -> Iterator[Api]:
    with TestClient(create_app(order_settings)) as client:
        yield Api(client)
