"""What the connection, order-book and fidelity tests share: a recording publisher and a connection factory.

Waits are event-driven: ``RecordingPublisher.wait_for`` re-checks its predicate on every publish and state write.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import aiohttp
from redis.asyncio import Redis

from control.settings import Settings
from control.topics import Topic
from workers.connection import ExchangeConnection
from workers.exchanges.base import ExchangeAdapter
from workers.publisher import Publisher


class RecordingPublisher(Publisher):
    """The real Publisher (Redis), also keeping what went through it: ``events`` as ``(topic, event)``, ``times``
    (``time.monotonic()`` read just before each publish, as close as it gets to a throttle's own clock read),
    ``counts`` per topic and ``states`` (the last record per topic)."""

    def __init__(self, redis: Redis, **kw: Any) -> None:
        super().__init__(redis, **kw)
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.times: list[float] = []
        self.counts: Counter[str] = Counter()
        self.states: dict[str, dict[str, Any]] = {}
        self._poke = asyncio.Event()

    def publish(self, topic: str, event: dict[str, Any], conn_id: str | None = None) -> None:
        now = time.monotonic()
        super().publish(topic, event, conn_id)
        self.events.append((topic, event))
        self.times.append(now)
        self.counts[topic] += 1
        self._poke.set()

    def set_state(self, topic: str, record: dict[str, Any], conn_id: str | None = None) -> None:
        super().set_state(topic, record, conn_id)
        self.states[topic] = record
        self._poke.set()

    def of(self, kind: str, topic: str | None = None) -> list[dict[str, Any]]:
        """The published events of type ``kind`` (of ``topic`` only, when given), in order."""
        return [e for t, e in self.events if e["type"] == kind and (topic is None or t == topic)]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Until ``predicate()`` holds; TimeoutError after ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self._poke.clear()
                await self._poke.wait()


class ConnFactory:
    """Starts real ``ExchangeConnection`` s (worker ``w1``, ids ``c1``, ``c2`` …, seeded jitter) on one aiohttp
    session and one publisher; ``close()`` stops them all (and the session when the factory opened it)."""

    def __init__(self, settings: Settings, publisher: Publisher, session: aiohttp.ClientSession | None = None,
                 *, seed: int = 7) -> None:  # fmt: skip
        self.settings, self.publisher, self.seed = settings, publisher, seed
        self._own_session = session is None
        self.session = session or aiohttp.ClientSession()
        self.started: list[tuple[ExchangeConnection, asyncio.Task[None]]] = []

    def start(
        self, adapter: ExchangeAdapter, url: str, topics: Iterable[Topic | str], *, settings: Settings | None = None,
        options: dict[str, dict[str, Any]] | None = None, rest_base_url: str | None = None,
    ) -> tuple[ExchangeConnection, asyncio.Task[None]]:  # fmt: skip
        """A running connection for ``topics`` (Topic or topic text) with per-topic ``options``."""
        conn = ExchangeConnection(
            conn_id=f"c{len(self.started) + 1}", adapter=adapter, url=url, settings=settings or self.settings,
            session=self.session, publisher=self.publisher, worker_id="w1", rng=random.Random(self.seed),
            rest_base_url=rest_base_url,
        )  # fmt: skip
        conn.set_options(options or {})
        conn.set_topics([t if isinstance(t, Topic) else Topic.parse(t) for t in topics])
        task = asyncio.create_task(conn.run())
        self.started.append((conn, task))
        return conn, task

    async def close(self) -> None:
        """Stop every started connection (2 s each at most), then close the session if it is the factory's."""
        for conn, task in self.started:
            await conn.stop(timeout_s=2.0)
            await task
        if self._own_session:
            await self.session.close()
