"""The contract of one simulated exchange (a *venue*): what it serves, where, and its delivery quirks.

Adding an exchange to the simulator: write ``scripts/sim/<exchange>.py`` with a ``Venue`` subclass (its
routes and frame handlers, plus a ``PrivateVenue`` from ``scripts.sim.private`` if it has a private side),
give it tapes in ``scripts.sim.tapes``, and add the class to ``scripts.sim.registry.VENUES``. The engine
(``scripts.sim.core``), replay, faults, status and the CLI pick it up from there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from aiohttp import web

from scripts.sim.conn import SimConnection

if TYPE_CHECKING:
    from scripts.sim.core import SimCore
    from scripts.sim.private import PrivateVenue

__all__ = ["OrderApi", "Venue"]


class OrderApi(Protocol):
    """A venue's order API on the matching engine (``scripts.sim.gate_orders``, ``binance_orders``)."""

    def push_frames(self, api_key: str, kind: str, obj: Any, extra: dict[str, Any]) -> list[tuple[str, str]]:
        """``(channel, frame text)`` pairs announcing one engine change on the account's private sockets."""
        ...


class Venue:
    """Base of every simulated exchange; one instance per simulator.

    Class data: ``name`` (the exchange id, as in ``control``), ``label`` (for the status banner),
    ``wraps_frames`` (replayed payloads go through ``wrap``). Instance data: ``keepalive_s`` =
    ``(ping interval, pong timeout)`` in seconds when the server pings (None: the client pings), and
    ``private`` (accounts, private sockets and signed REST; None when the venue has no private side) and
    ``orders`` (its order API on the matching engine; None when it has none).
    Constructor options are keyword floats (``ExchangeSimulator`` passes its per-exchange arguments).
    """

    name: ClassVar[str]
    label: ClassVar[str]
    wraps_frames: ClassVar[bool] = False

    def __init__(self, sim: SimCore, **options: float) -> None:
        if options:
            raise TypeError(f"{type(self).__name__} takes no options: {', '.join(sorted(options))}")
        self.sim = sim
        self.keepalive_s: tuple[float, float] | None = None
        self.private: PrivateVenue | None = None
        self.orders: OrderApi | None = None

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Register this venue's WebSocket and REST endpoints (private ones via ``self.private``)."""
        raise NotImplementedError

    def urls(self) -> dict[str, str]:
        """Settings name -> URL a Feedplane worker is pointed at (``BITMART_PUBLIC_WS_URI`` ...), in print order."""
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        """This venue's constructor settings, for ``status()``."""
        return {}

    def on_open(self, conn: SimConnection) -> None:
        """Called once a socket is registered, before its first frame is read (URL-named streams, user data)."""

    def deliverable(self, conn: SimConnection, native: str) -> bool:
        """Whether a subscribed ``native`` is actually delivered on ``conn`` (acked but silent otherwise)."""
        return True

    def wrap(self, conn: SimConnection, native: str, payload: str) -> str:
        """The wire text of one replayed tape frame (only called when ``wraps_frames``)."""
        return payload
