"""Shared fixtures: real Redis (flushed per test), settings built from a mapping."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis

from control.redis_client import make_redis
from control.settings import Settings

#: Tests use their own database so a developer's running Feedplane (db 0) is left alone.
TEST_REDIS_URL = os.environ.get("FEEDPLANE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture
def redis_url() -> str:
    """URL of the real Redis test database."""
    return TEST_REDIS_URL


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
