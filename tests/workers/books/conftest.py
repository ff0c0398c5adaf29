"""Fixtures of the order-book tests: the simulator, a recording publisher, settings, a session, connections."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from control.settings import Settings
from scripts import tapes
from scripts.simulator import ExchangeSimulator
from tests.workers._recording import ConnFactory, RecordingPublisher
from tests.workers.books._world import FAST
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
    conns = ConnFactory(settings, pub, session)

    def factory(adapter: ExchangeAdapter, url: str, topics: Iterable[str], rest_base_url: str,
                options: dict[str, dict[str, Any]] | None = None) -> ExchangeConnection:
        return conns.start(adapter, url, topics, options=options, rest_base_url=rest_base_url)[0]

    yield factory
    await conns.close()
