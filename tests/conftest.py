"""Shared fixtures (real Redis flushed per test, settings built from a mapping) and the suite's markers.

Redis: the first test of a session that asks for Redis starts a private ``redis-server`` on a free loopback
port (one per session, so one per ``pytest-xdist`` worker); it is stopped when the session ends. The
machine's Redis (6379) is never touched. ``FEEDPLANE_TEST_REDIS_URL`` points the suite at a given database
instead (flushed before and after every test, so only one session may use it at a time).

Markers, applied in ``pytest_collection_modifyitems`` from where a test lives and what it uses:
``chaos`` (tests/chaos), ``e2e`` (tests/e2e), ``integration`` (a real Redis, a server, the simulator or a
subprocess: any fixture in ``INTEGRATION_FIXTURES``, or marked by hand) and ``unit`` for every other test
(no Redis, no sockets: ``scripts/test -m unit`` runs in seconds).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from control.redis_client import make_redis
from control.settings import Settings
from tests.cluster import LocalCluster, local_cluster
from tests.e2e.harness import RedisServer, redis_server

#: A given Redis database for the whole suite (e.g. CI's own); unset: a private redis-server per session.
REDIS_URL_OVERRIDE = os.environ.get("FEEDPLANE_TEST_REDIS_URL", "")

#: Fixtures that do real IO (Redis, sockets, servers, the simulator, subprocesses): their users are ``integration``.
#: ``redis_url`` covers ``redis``, ``redis_bytes``, ``make_settings`` and everything built on them. A test that does
#: IO on its own (a subprocess, a private redis-server) carries ``@pytest.mark.integration`` itself.
INTEGRATION_FIXTURES = frozenset({"redis_url", "sim", "live", "session", "own_redis", "pair", "servers", "server"})

_SUITES = {"chaos": "chaos", "e2e": "e2e"}  # tests/<dir> -> marker


def pytest_configure(config: pytest.Config) -> None:
    """Refuse ``-n N`` with ``FEEDPLANE_TEST_REDIS_URL``: every test flushes that one database."""
    workers = getattr(config.option, "numprocesses", None)  # pytest-xdist's -n, already a number here
    if REDIS_URL_OVERRIDE and workers and workers > 1:
        raise pytest.UsageError(
            f"FEEDPLANE_TEST_REDIS_URL names one database, which {workers} xdist workers would flush under each "
            "other: unset it (each worker then starts its own redis-server) or run without -n"
        )


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects by these markers
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give every test exactly one of unit / integration / e2e / chaos (see the module docstring)."""
    root = Path(__file__).parent
    for item in items:
        rel = item.path.relative_to(root).parts if item.path.is_relative_to(root) else ()
        suite = _SUITES.get(rel[0]) if len(rel) > 1 else None
        if suite is not None:
            if item.get_closest_marker(suite) is None:
                item.add_marker(suite)
            continue
        if item.get_closest_marker("integration") is not None:
            continue
        if INTEGRATION_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker("integration")
        else:
            item.add_marker("unit")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of the test database: ``FEEDPLANE_TEST_REDIS_URL``, or db 0 of this session's own redis-server."""
    if REDIS_URL_OVERRIDE:
        yield REDIS_URL_OVERRIDE
        return
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server.url()
    finally:
        server.stop()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    """A decode_responses client on the real Redis test database, flushed before and after the test."""
    client = make_redis(redis_url)
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


@pytest.fixture
async def redis_bytes(redis_url: str, redis: Redis) -> AsyncIterator[Redis]:
    """A bytes (decode_responses=False) client on the same flushed test database as ``redis``."""
    client = make_redis(redis_url, decode=False)
    yield client
    await client.aclose()


@pytest.fixture
def make_settings(redis_url: str) -> Callable[..., Settings]:
    """Factory: ``make_settings(SUBSCRIBE_DELAY_MS="10", ...)`` -> Settings from a mapping (env names)."""

    def factory(**env: str) -> Settings:
        base = {"REDIS_URL": redis_url, "WORKER_ID": "test-worker"}
        base.update(env)
        return Settings.from_env(base)

    return factory


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A private, non-persistent redis-server that the test may stop and start (a restart comes back empty)."""
    with redis_server(tmp_path / "redis") as server:
        yield server


@pytest.fixture
async def own_client(own_redis: RedisServer) -> AsyncIterator[Redis]:
    """A bytes client of ``own_redis``."""
    client = make_redis(own_redis.url(), decode=False)
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
def cluster_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """One real Redis Cluster (3 masters, 1 replica each, loopback) per test session (per xdist worker), started
    on first use (~6 s). Tests take it through ``redis_cluster``; a test that fails nodes uses ``own_cluster``."""
    with local_cluster(tmp_path_factory.mktemp("cluster")) as cluster:
        yield cluster


@pytest.fixture
def redis_cluster(cluster_session: LocalCluster) -> LocalCluster:
    """The session's Redis Cluster, emptied (FLUSHALL on every master) for this test."""
    cluster_session.flush()
    return cluster_session


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """A private Redis Cluster (3 masters, 1 replica each) the test may fail nodes of (``fail_master``)."""
    with local_cluster(tmp_path / "cluster") as cluster:
        yield cluster
