"""Who may open ``/ws`` and read which topics: tokens, scopes and the connection limits.

A WebSocket handshake does not pass ``app.auth.AuthMiddleware`` (HTTP only), so ``admit`` applies the same rules:

* open mode (no token configured): everyone, no limits (as for HTTP; CTRL_ADDR is then loopback).
* secured mode: the token comes from ``?token=`` (alias ``?access_token=``, a browser's ``WebSocket`` cannot set
  headers) or ``Authorization: Bearer``; the query value is cut from the scope at once, so no log or later code
  sees it. Missing or unknown: charged to the client address's auth-failure counter, ``UNAUTHORIZED``.
  A valid token is charged to the address's ``ws`` counter (``WS_NEW_PER_MIN`` new connections per minute per
  client address, ``app.ratelimit``) and may hold ``WS_CONNECTIONS_PER_TOKEN`` open connections in this process.
* per topic (``Access.refusal``): public topics need the ``read`` scope (``control`` implies it); an account's
  private topics need a control token or a token listing that account; ``ensure`` needs ``control``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sse_starlette.sse import AppStatus
from starlette.datastructures import Headers
from starlette.types import Scope

from app.auth import Authenticator, scrub_access_token
from app.forwarded import IPNetwork, client_address
from app.ratelimit import WS, RateLimiter
from app.ws import protocol as p
from control.accounts import CONTROL, READ
from control.credentials import TokenGrant
from control.topics import is_private

logger = logging.getLogger(__name__)


class Refused(Exception):
    """A connection or request refused with a spec error ``code`` and a ``message``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Access:
    """One connection's rights: ``grant`` None in open mode; ``address`` of the client."""

    grant: TokenGrant | None
    address: str

    @property
    def token_id(self) -> str | None:
        """The grant's id (``env:read``, ``file:0``), None in open mode."""
        return None if self.grant is None else self.grant.id

    def refusal(self, topics: list[str], ensure: bool) -> str | None:
        """None when this token may read ``topics`` (and, with ``ensure``, change the desired state); else why not."""
        grant = self.grant
        if grant is None:
            return None
        if ensure and not grant.has(CONTROL):
            return "ensure: true needs a token with the control scope"
        for topic in topics:
            if is_private(topic):
                exchange, _, account = topic.split(":", 2)
                if not grant.can_read_account(exchange, account):
                    return f"this token may not read the private streams of {exchange}:{account}"
            elif not grant.has(READ):
                return f"this token lacks the read scope needed for {topic}"
        return None


#: How often the shutdown watcher looks at ``AppStatus.should_exit`` (set by ``app.serve`` on SIGTERM), seconds.
SHUTDOWN_POLL_S = 0.25


class Registry:
    """Open ``/ws`` connections of this process, counted per token (``WS_CONNECTIONS_PER_TOKEN``).

    While any is open, a watcher polls ``AppStatus.should_exit`` (the flag ``app.serve`` sets on SIGTERM, which
    also ends the SSE streams): on shutdown every connection gets ``CONNECTION_LOST`` (reason ``shutdown``, with
    its cursors) and close code 1001 instead of being cut at the end of the drain timeout.
    """

    def __init__(self, per_token: int) -> None:
        self.per_token = per_token
        self.open = 0
        #: Each open connection's ``shutdown()`` callback.
        self.connections: dict[int, Callable[[], None]] = {}
        self._watcher: asyncio.Task[None] | None = None
        #: Connections closed by the server, per reason (``slow client``, ``idle``, ``heartbeat missed``).
        self.closes: Counter[str] = Counter()
        self._by_token: Counter[str] = Counter()
        self._closed = asyncio.Event()

    def note_close(self, reason: str) -> None:
        """Count a server-side close (``Connection.on_close``)."""
        self.closes[reason] += 1
        event, self._closed = self._closed, asyncio.Event()
        event.set()

    async def wait_closes(self, reason: str, count: int) -> None:
        """Until ``count`` connections were closed for ``reason`` (tests, benchmarks)."""
        while self.closes[reason] < count:
            await self._closed.wait()

    def watch(self, key: int, shutdown: Callable[[], None]) -> None:
        """Call ``shutdown`` when the server stops (until ``unwatch(key)``)."""
        self.connections[key] = shutdown
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(self._watch_shutdown())

    def unwatch(self, key: int) -> None:
        """Forget a closed connection's callback."""
        self.connections.pop(key, None)

    async def _watch_shutdown(self) -> None:
        while self.connections:
            if AppStatus.should_exit:
                for shutdown in list(self.connections.values()):
                    shutdown()
                return
            await asyncio.sleep(SHUTDOWN_POLL_S)

    def add(self, access: Access) -> None:
        """Count a new connection; raises Refused (RATE_LIMITED) when its token already holds the maximum."""
        token = access.token_id
        if token is not None and self.per_token and self._by_token[token] >= self.per_token:
            raise Refused(p.RATE_LIMITED, f"this token already holds {self.per_token} open /ws connections")
        if token is not None:
            self._by_token[token] += 1
        self.open += 1

    def remove(self, access: Access) -> None:
        """Forget a closed connection (once per ``add``)."""
        token = access.token_id
        if token is not None:
            self._by_token[token] -= 1
            if self._by_token[token] <= 0:
                del self._by_token[token]
        self.open -= 1


async def admit(
    scope: Scope, authenticator: Authenticator, limiter: RateLimiter, trusted: tuple[IPNetwork, ...] = ()
) -> Access:
    """Authenticate a ``/ws`` handshake (module docstring); the token is scrubbed from ``scope`` first. The client
    address is the peer's, or ``X-Forwarded-For``'s when the peer is one of ``trusted`` (TRUSTED_PROXIES,
    ``app.forwarded``), so clients behind a load balancer each get their own allowance.

    Raises Refused (UNAUTHORIZED, RATE_LIMITED; CONNECTION_LOST when Redis cannot be reached for the limits).
    """
    query_tokens, in_query = scrub_access_token(scope)
    address = client_address(scope, trusted)
    if authenticator.open:
        return Access(None, address)
    header = Headers(scope=scope).get("authorization")
    if in_query and (header is not None or len(query_tokens) != 1):
        raise Refused(p.UNAUTHORIZED, "give the token once: either Authorization: Bearer <token> or one ?token=")
    token = query_tokens[0] if in_query else _bearer(header)
    grant = authenticator.verify(token) if token else None
    redis = scope["app"].state.store.redis
    try:
        if grant is None:
            decision = await limiter.fail(redis, address)
        else:
            decision = await limiter.hit(redis, WS, address, address)
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        logger.warning("ws: redis unavailable for the rate limit of %s: %s", address, type(exc).__name__)
        raise Refused(p.CONNECTION_LOST, "Redis is unreachable; connect again shortly") from None
    if not decision.allowed:
        what = "new /ws connections" if decision.kind == WS else "attempts without a valid token"
        raise Refused(p.RATE_LIMITED, f"too many {what} from this address ({decision.limit} per minute); "
                                      f"retry in {decision.retry_after_s} s")  # fmt: skip
    if grant is None:
        if token:
            logger.info("ws: rejected invalid token from %s", address)
        raise Refused(p.UNAUTHORIZED, "invalid token" if token else "authentication required: ?token=<token> or "
                                                                    "Authorization: Bearer <token>")  # fmt: skip
    return Access(grant, address)


def _bearer(header: str | None) -> str:
    if not header:
        return ""
    scheme, _, value = header.strip().partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""
