"""The connection surface the worker runtime drives (``workers.runtime`` and the rooms it delegates to).

``workers.connection.ExchangeConnection`` and ``workers.unserved.UnservedConnection`` satisfy ``Connection``; the
runtime builds connections through a ``ConnectionFactory`` (default: the ``ExchangeConnection`` class itself).

Suspension (``suspend``/``resume``/``suspension_marks``) is not part of this surface: ``workers.suspend`` checks for
it, because a private connection waiting for its account (``UnservedConnection``) cannot be suspended.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol, Self

if TYPE_CHECKING:
    import aiohttp

    from control.settings import Settings
    from control.topics import Topic
    from workers.exchanges.base import ExchangeAdapter
    from workers.private import PrivateSession
    from workers.publisher import Publisher

#: ``topic -> the last event in its stream`` (None: continue from the first buffered event).
Markers = dict[str, dict[str, Any] | None]
#: ``topic -> (gap reason, since ms)``: interruptions still to be announced by a successor.
PendingGaps = dict[str, tuple[str, int | None]]


class Connection(Protocol):
    """One planned connection as the runtime sees it (see ``ExchangeConnection`` for the semantics)."""

    @property
    def socket_age_s(self) -> float:
        """Seconds the current socket has been open (0.0 while there is none): lifetime rolls."""
        ...

    @property
    def buffer_overflow(self) -> int:
        """Events dropped from the full standby buffer (a handover cannot then continue every topic intact)."""
        ...

    def set_topics(self, topics: Iterable[Topic]) -> None:
        """Make ``topics`` the desired set (a live diff on an open socket)."""
        ...

    def set_options(self, options: dict[str, dict[str, Any]]) -> None:
        """Per-topic options, ``topic -> {"levels": N}`` for depth topics; replaces all."""
        ...

    def announce_gaps(self, reason: str, since: dict[str, int | None]) -> None:
        """Announce a ``reason`` gap on each topic (``topic -> ms of its last stored event``) once it flows."""
        ...

    async def wait_ready(self, timeout_s: float) -> bool:
        """A standby connection: True once every topic is acknowledged; False on timeout or stop."""
        ...

    def promote(self, markers: Markers, gaps: PendingGaps | None = None, *, successor_of: Self | None = None) -> None:
        """Leave standby: publish from now on, each topic continuing right after ``markers[topic]``."""
        ...

    def freeze(self) -> tuple[Markers, PendingGaps]:
        """Stop every output now; return ``(markers, gaps)`` for a successor's ``promote``."""
        ...

    async def run(self) -> None:
        """Serve until ``stop()``; never raises except CancelledError."""
        ...

    async def stop(self, *, unsubscribe: bool = True, timeout_s: float = 5.0, forget: bool = False) -> None:
        """Unsubscribe (when ``unsubscribe``), close and end ``run()``; ``forget``: close the account's listenKey."""
        ...

    def status(self) -> dict[str, Any]:
        """The connection record for ``fp:conn:status`` (times in epoch ms)."""
        ...


class ConnectionFactory(Protocol):
    """Builds a ``Connection`` (``WorkerRuntime(connection_factory=...)``; default ``ExchangeConnection``).

    ``private``: the account session of a private socket (``workers.private.PrivateSession``), None for public data.
    ``standby``: buffer instead of publishing until ``promote`` (make-before-break).
    """

    def __call__(
        self, *, conn_id: str, adapter: ExchangeAdapter, url: str, settings: Settings,
        session: aiohttp.ClientSession, publisher: Publisher, worker_id: str = ...,
        private: PrivateSession | None = ..., standby: bool = ...,
    ) -> Connection: ...
