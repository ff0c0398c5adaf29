"""Fixtures of the connection tests: the simulator, a recording publisher, settings and connections."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable

import pytest
from redis.asyncio import Redis

from control.settings import Settings
from control.topics import Topic
from scripts.simulator import ExchangeSimulator
from tests.workers._recording import ConnFactory, RecordingPublisher
from tests.workers.connection._world import FAST
from workers.connection import ExchangeConnection
from workers.exchanges.base import ExchangeAdapter


@pytest.fixture
async def sim() -> AsyncIterator[ExchangeSimulator]:
    async with ExchangeSimulator(rate=50.0, loop=True) as s:
        yield s


@pytest.fixture
async def pub(redis_bytes: Redis) -> AsyncIterator[RecordingPublisher]:
    p = RecordingPublisher(redis_bytes, stream_maxlen=10_000)
    p.start()
    yield p
    await p.close()


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(**FAST)


@pytest.fixture
async def make_conn(
    settings: Settings, pub: RecordingPublisher
) -> AsyncIterator[Callable[..., tuple[ExchangeConnection, asyncio.Task[None]]]]:
    """Factory: start a connection's run() for ``topics``; every one is stopped at teardown."""
    conns = ConnFactory(settings, pub, seed=42)

    def factory(
        adapter: ExchangeAdapter, url: str, topics: Iterable[Topic], settings: Settings = settings
    ) -> tuple[ExchangeConnection, asyncio.Task[None]]:
        return conns.start(adapter, url, topics, settings=settings)

    yield factory
    await conns.close()

