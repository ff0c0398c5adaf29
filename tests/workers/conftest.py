"""Fixtures shared by the worker tests."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis


@pytest.fixture
def raw(redis_bytes: Redis) -> Redis:
    """A bytes client on the (flushed) test database."""
    return redis_bytes
