"""Private (user-data) side of the simulator, the shared part: accounts, the clock, fixture playback, pushes.

``SimCore`` owns one ``PrivateSide``; each venue with a private side has a ``PrivateVenue`` (``bitmart_private``,
``binance_private``, ``gate_private``) for its logins, user streams, signing recipe and signed REST snapshots.
``ExchangeSimulator.add_account``, ``push_private`` and ``set_clock`` delegate here; the control endpoints are
in ``scripts.sim.control``.

Data: the private fixture frames of ``scripts.sim.tapes.private_frames`` (JKorf BitMart/Gate, nautilus
Binance), played once per subscription (never looped), and REST bodies built from the same fixtures.
``push_private`` injects any frame to one account's live sockets.

Secrets (API secrets, memos, listen keys) live in memory only: never logged, never in ``status()``,
``rest_requests`` or connection paths (keys show as ``mask_key``). Every timestamp check uses the
simulator clock (``set_clock``), so the references' fixed test vectors (ts 1700000000000) can be replayed.
Facts marked UNVERIFIED are choices where the references say nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from scripts.sim.conn import SimConnection, json_response

if TYPE_CHECKING:
    from scripts.sim.core import SimCore
    from scripts.sim.venue import Venue

__all__ = ["PrivateConn", "PrivateSide", "PrivateVenue", "SimAccount", "mask_key", "mask_listen_key", "safe_path",
    "same_signature"]

log = logging.getLogger(__name__)


def mask_key(api_key: str) -> str:
    """Non-secret display of an API key: first 4 characters, ``…``, 8 hex of its sha256 (as ``control.accounts``)."""
    return f"{api_key[:4]}…{hashlib.sha256(api_key.encode()).hexdigest()[:8]}"


def mask_listen_key(listen_key: str) -> str:
    """Non-secret display of a Binance listen key: its first 4 characters and ``…``."""
    return f"{listen_key[:4]}…"


def same_signature(given: str, expected: str) -> bool:
    """Constant-time compare of a hex signature; case-insensitive (whether exchanges accept upper case is UNVERIFIED)."""
    return hmac.compare_digest(given.lower().encode(), expected.encode())


def safe_path(request: web.Request) -> str:
    """``path?query`` for the request log, with a Binance ``signature`` value replaced by ``***``."""
    raw = request.rel_url.raw_query_string
    if not raw:
        return request.path
    parts = ["signature=***" if p.startswith("signature=") else p for p in raw.split("&")]
    return f"{request.path}?{'&'.join(parts)}"


@dataclass(eq=False)
class SimAccount:
    """One account the simulator knows. ``repr`` shows the exchange and the masked key only."""

    exchange: str
    api_key: str = field(repr=False)
    api_secret: str = field(repr=False)
    memo: str = field(default="", repr=False)  # BitMart API memo; Gate uid
    masked: str = ""
    listen_key: str | None = field(default=None, repr=False)  # Binance: the active key
    listen_key_deadline: float = field(default=0.0, repr=False)  # time.monotonic() when it lapses
    _ttl_handle: asyncio.TimerHandle | None = field(default=None, repr=False)


@dataclass(eq=False)
class PrivateConn:
    """Private state of one socket (``SimConnection._private``).

    ``account``: BitMart logged-in account / Binance listen-key owner. ``listen_key``: the key the Binance
    socket was opened with (None: bogus or absent). ``stream_closed``: Binance key expired or deleted —
    the socket stays open and silent. ``events``: Binance ``events=`` filter. ``gate``: Gate native ->
    account whose ``auth`` subscribed it.
    """

    account: SimAccount | None = None
    listen_key: str | None = None
    stream_closed: bool = False
    events: frozenset[str] | None = None
    gate: dict[str, SimAccount] = field(default_factory=dict)


class PrivateVenue:
    """One venue's private side (see the module docstring); subclasses live next to their venue."""

    def __init__(self, venue: Venue) -> None:
        self.venue = venue
        self.sim: SimCore = venue.sim
        self.side: PrivateSide = venue.sim._private

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Register the private sockets and signed REST endpoints."""
        raise NotImplementedError

    def push_targets(self, acct: SimAccount, channel: str, text: str) -> list[tuple[SimConnection, str]]:
        """``(socket, native)`` pairs that ``push_private(…, channel, text)`` for ``acct`` reaches."""
        raise NotImplementedError

    def on_account_removed(self, acct: SimAccount) -> None:
        """Drop what the venue holds for ``acct`` (sessions, keys)."""

    def close(self) -> None:
        """Cancel timers (the simulator is stopping)."""

    def status(self) -> dict[str, Any]:
        """Extra non-secret fields for ``status()["private"]``."""
        return {}

    def rest_start(self, name: str) -> None:
        """Count one signed REST call (``rest_requests`` and ``rest_<name>``)."""
        self.sim.stats["rest_requests"] += 1
        self.sim.stats[f"rest_{name}"] += 1

    def auth_failed(self, request: web.Request, body: Any, status: int) -> web.Response:
        """Answer a failed signed REST call (counted in ``rest_auth_failures``; the logged path hides signatures)."""
        self.sim.stats["rest_auth_failures"] += 1
        return self.sim._rest_done(request, self.venue.name, json_response(body, status), path_qs=safe_path(request))


class PrivateSide:
    """Accounts, the clock and private pushes for one simulator (see the module docstring)."""

    def __init__(self, sim: SimCore) -> None:
        self._sim = sim
        self._accounts: dict[tuple[str, str], SimAccount] = {}
        self._clock_offset_ms = 0

    def _venue(self, exchange: str) -> PrivateVenue | None:
        venue = self._sim.venues.get(exchange)
        return venue.private if venue is not None else None

    # ------------------------------------------------------------------ accounts, clock, status

    def add_account(self, exchange: str, api_key: str, api_secret: str, memo: str = "") -> SimAccount:
        """Register (or update in place) an account; ``memo`` is the BitMart memo or the Gate uid.

        Raises ValueError for an exchange without a private side or an empty key/secret, TypeError for non-strings.
        """
        if self._venue(exchange) is None:
            names = [name for name, venue in self._sim.venues.items() if venue.private is not None]
            raise ValueError(f"exchange must be one of {', '.join(names)}")
        if not isinstance(api_key, str) or not isinstance(api_secret, str) or not isinstance(memo, str):
            raise TypeError("api_key, api_secret and memo must be strings")
        if not api_key or not api_secret:
            raise ValueError("api_key and api_secret must not be empty")
        acct = self._accounts.get((exchange, api_key))
        if acct is None:
            acct = self._accounts[(exchange, api_key)] = SimAccount(exchange, api_key, api_secret, memo)
            acct.masked = mask_key(api_key)
        else:
            acct.api_secret, acct.memo = api_secret, memo
        log.info("account added: %s key=%s", exchange, acct.masked)
        self._sim._notify()
        return acct

    def remove_account(self, exchange: str, api_key: str) -> bool:
        """Forget an account (its listen key goes too: those sockets fall silent); False if unknown.

        Sockets already logged in or subscribed with it keep what they have (whether an exchange cuts
        them on key revocation is UNVERIFIED); ``push_private`` can no longer reach them.
        """
        acct = self._accounts.pop((exchange, api_key), None)
        if acct is None:
            return False
        venue = self._venue(exchange)
        if venue is not None:
            venue.on_account_removed(acct)
        log.info("account removed: %s key=%s", exchange, acct.masked)
        self._sim._notify()
        return True

    def account(self, exchange: str, api_key: object) -> SimAccount | None:
        """The account with that key, or None (also for a non-string key)."""
        return self._accounts.get((exchange, api_key)) if isinstance(api_key, str) else None

    def require(self, exchange: str, api_key: str) -> SimAccount:
        """The account with that key; KeyError (key masked) when unknown."""
        acct = self.account(exchange, api_key)
        if acct is None:
            raise KeyError(f"no {exchange} account with key {mask_key(api_key)}")
        return acct

    def set_clock(self, epoch_ms: int | None) -> None:
        """Make the simulator clock read ``epoch_ms`` now and run on from there; None: the real clock."""
        self._clock_offset_ms = 0 if epoch_ms is None else epoch_ms - time.time_ns() // 1_000_000

    def now_ms(self) -> int:
        """The simulator clock in epoch milliseconds."""
        return time.time_ns() // 1_000_000 + self._clock_offset_ms

    @property
    def clock_offset_ms(self) -> int:
        return self._clock_offset_ms

    def status(self) -> dict[str, Any]:
        """Accounts (masked), listen-key state, venue extras and the clock offset; no secrets."""
        now = time.monotonic()
        out: dict[str, Any] = {
            "accounts": [
                {
                    "exchange": a.exchange,
                    "key": a.masked,
                    "memo_set": bool(a.memo),
                    "listen_key": mask_listen_key(a.listen_key) if a.listen_key else None,
                    "listen_key_ttl_left_s": round(a.listen_key_deadline - now, 3) if a.listen_key else None,
                }
                for a in self._accounts.values()
            ],
        }
        for venue in self._sim.venues.values():
            if venue.private is not None:
                out |= venue.private.status()
        out["clock_offset_ms"] = self._clock_offset_ms
        return out

    def close(self) -> None:
        """Cancel the venues' timers (the simulator is stopping)."""
        for venue in self._sim.venues.values():
            if venue.private is not None:
                venue.private.close()

    @staticmethod
    def state(conn: SimConnection) -> PrivateConn:
        """The socket's private state, created on first use."""
        if conn._private is None:
            conn._private = PrivateConn()
        state: PrivateConn = conn._private
        return state

    def conns(self, exchange: str) -> Iterator[tuple[SimConnection, PrivateConn]]:
        """Live sockets of ``exchange`` that have private state, oldest first."""
        for conn in self._sim.connections:
            state = conn._private
            if conn.exchange == exchange and isinstance(state, PrivateConn):
                yield conn, state

    # ------------------------------------------------------------------ pushes

    def start_play(self, conn: SimConnection, native: str, frames: Sequence[str]) -> None:
        """Play fixture ``frames`` once to ``conn`` as ``native`` (no-op when empty or already playing)."""
        if frames and native not in conn._tasks:
            self._sim._spawn(conn, native, self._play(conn, native, frames))

    async def _play(self, conn: SimConnection, native: str, frames: Sequence[str]) -> None:
        """Send fixture frames once, in order; paused while dead or silent (never looped)."""
        sim, state = self._sim, self.state(conn)
        for frame in frames:
            while not sim._data_open.is_set():
                await sim._data_open.wait()
            if state.stream_closed:
                return
            if not await sim._send_data(conn, native, frame) or conn._tasks.get(native) is not asyncio.current_task():
                return

    async def push(self, exchange: str, api_key: str, channel: str, frame: str | dict[str, Any] | list[Any]) -> int:
        """Send ``frame`` (text or JSON-able) to the live sockets of one account; returns how many got it.

        BitMart: sockets logged in with the key and subscribed to topic ``channel``
        (``futures/order``, ``futures/asset:USDT``…). Gate: sockets where the account subscribed
        ``channel`` (``futures.orders``…). Binance: the account's user-data sockets whose key is still
        live (``channel`` is informational; a socket's ``events=`` filter applies to the frame's ``e``).
        While dead or silent nothing is sent (counted in ``private_pushes_withheld``). Unknown account:
        KeyError.
        """
        acct = self.require(exchange, api_key)
        venue = self._venue(exchange)
        assert venue is not None  # an account exists only for a venue with a private side
        sim = self._sim
        text = frame if isinstance(frame, str) else orjson.dumps(frame).decode()
        targets = venue.push_targets(acct, channel, text)
        if not sim._data_open.is_set():
            sim.stats["private_pushes_withheld"] += len(targets)
            return 0
        sent = 0
        for conn, native in targets:
            if await sim._send_data(conn, native, text):
                sent += 1
        sim.stats["private_pushes"] += sent
        return sent
