"""Fixtures of the order-book tests: the simulator, a recording publisher, settings, a session, connections."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from control.settings import Settings
from control.topics import Topic
from scripts import tapes
from scripts.simulator import ExchangeSimulator
from tests.workers.books._world import FAST, RecordingPublisher
from workers.connection import ExchangeConnection
from workers.exchanges.base import ExchangeAdapter


@pytest.fixture
async def sim() -> AsyncIterator[ExchangeSimulator]:
    try:
        tapes.samples_dir().resolve(strict=True)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    async with ExchangeSimulator(speed=0) as s:  # as fast as the socket drains
        yield s


@pytest.fixture
async def pub(redis_bytes: Redis) -> AsyncIterator[RecordingPublisher]:
    p = RecordingPublisher(redis_bytes, stream_maxlen=100_000)
    p.start()
    yield p
    await p.close()


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(**FAST)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def make_conn(
    settings: Settings, pub: RecordingPublisher, session: aiohttp.ClientSession
) -> AsyncIterator[Callable[..., ExchangeConnection]]:
    """Factory: run a connection for ``topics``; stopped at teardown."""
    started: list[tuple[ExchangeConnection, asyncio.Task[None]]] = []

    def factory(adapter: ExchangeAdapter, url: str, topics: Iterable[str], rest_base_url: str,
                options: dict[str, dict[str, Any]] | None = None) -> ExchangeConnection:
        conn = ExchangeConnection(
            conn_id=f"c{len(started) + 1}", adapter=adapter, url=url, settings=settings, session=session,
            publisher=pub, worker_id="w1", rng=random.Random(7), rest_base_url=rest_base_url,
        )
        conn.set_options(options or {})
        conn.set_topics([Topic.parse(t) for t in topics])
        started.append((conn, asyncio.create_task(conn.run())))
        return conn

    yield factory
    for conn, task in started:
        await conn.stop(timeout_s=2.0)
        await task
