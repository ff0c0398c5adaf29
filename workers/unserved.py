"""A private connection whose account is not configured (issue #3): ``UnservedConnection``.

``workers.conn_launch`` runs one in place of an ``ExchangeConnection`` for a route ``private:<account>`` whose account
``control.accounts.load_accounts`` does not know: its topics are ``failed`` with ``unknown account`` until the account
appears (``workers.accounts_reload`` then starts a real connection with a ``workers.private.PrivateSession``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any

from control.store import FAILED
from control.topics import Topic
from workers.publisher import Publisher


class UnservedConnection:
    """A private connection that cannot run (its account is not configured): every topic is ``failed`` with
    ``error``. Same surface as ``ExchangeConnection`` for the runtime (``workers.conn_protocol.Connection``); having
    no socket, it is never rolled, handed over or suspended, and has nothing to announce."""

    socket_age_s = 0.0
    buffer_overflow = 0

    def __init__(self, *, conn_id: str, exchange: str, url: str, publisher: Publisher, worker_id: str, error: str,
                 clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        self.conn_id, self.exchange, self.url, self.publisher = conn_id, exchange, url, publisher
        self.worker_id, self.error, self.clock = worker_id, error, clock
        self._topics: list[str] = []
        self._stopped = asyncio.Event()

    def set_topics(self, topics: Iterable[Topic]) -> None:
        """Fail every topic with the error."""
        self._topics = [str(t) for t in topics]
        now = int(self.clock() * 1000)
        for name in self._topics:
            self.publisher.set_state(name, {"state": FAILED, "error": self.error, "since": now, "conn": self.conn_id})

    def set_options(self, options: dict[str, dict[str, Any]]) -> None:
        """No order book to size."""

    def announce_gaps(self, reason: str, since: dict[str, int | None]) -> None:
        """Nothing is published here, so nothing to announce."""

    async def wait_ready(self, timeout_s: float) -> bool:
        """Never ready: a private connection is never run in standby."""
        return False

    def promote(self, markers: dict[str, dict[str, Any] | None], gaps: dict[str, tuple[str, int | None]] | None = None,
                *, successor_of: UnservedConnection | None = None) -> None:  # fmt: skip
        """Nothing buffered to publish."""

    def freeze(self) -> tuple[dict[str, dict[str, Any] | None], dict[str, tuple[str, int | None]]]:
        """Nothing to stop: no markers, no pending gaps."""
        return {}, {}

    async def run(self) -> None:
        """Wait for ``stop()``."""
        await self._stopped.wait()

    async def stop(self, *, unsubscribe: bool = True, timeout_s: float = 5.0, forget: bool = False) -> None:
        """End ``run()``."""
        self._stopped.set()

    def status(self) -> dict[str, Any]:
        """Connection record (``fp:conn:status``): state ``failed`` and the error."""
        return {"exchange": self.exchange, "url": self.url, "state": "failed", "worker": self.worker_id,
                "connected_since": None, "reconnects": 0, "last_message_at": None, "messages_received": 0,
                "events": 0, "malformed_frames": 0, "unknown_frames": 0, "topics": len(self._topics),
                "last_error": self.error, "next_retry_at": None}  # fmt: skip
