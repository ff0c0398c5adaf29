"""Fixtures of the simulator tests: one aiohttp client session, one simulator at replay speed 0."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from scripts.simulator import ExchangeSimulator


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def sim() -> AsyncIterator[ExchangeSimulator]:
    async with ExchangeSimulator(speed=0) as s:
        yield s
