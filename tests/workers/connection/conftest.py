"""Fixtures of the connection tests: the simulator, a recording publisher, settings and connections."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Iterable

import aiohttp
import pytest
from redis.asyncio import Redis

from control.settings import Settings
from control.topics import Topic
from scripts.simulator import ExchangeSimulator
from tests.workers.connection._world import FAST, RecordingPublisher
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
    session = aiohttp.ClientSession()
    started: list[tuple[ExchangeConnection, asyncio.Task[None]]] = []

    def factory(
        adapter: ExchangeAdapter, url: str, topics: Iterable[Topic], settings: Settings = settings
    ) -> tuple[ExchangeConnection, asyncio.Task[None]]:
        conn = ExchangeConnection(
            conn_id=f"c{len(started) + 1}", adapter=adapter, url=url, settings=settings, session=session,
            publisher=pub, worker_id="w1", rng=random.Random(42),
        )
        conn.set_topics(topics)
        task = asyncio.create_task(conn.run())
        started.append((conn, task))
        return conn, task

    yield factory
    for conn, task in started:
        await conn.stop(timeout_s=2.0)
        await task
    await session.close()
