"""Request rate limits kept in Redis, so every control-server process shares them.

Design: a **fixed window** per counter, one Lua script, **one round trip per request**. A counter key
(``keys.rate_limit(kind, who)``) is INCRemented; the first hit of a window sets ``PEXPIRE 60000``, so a window
starts at its first request and the key vanishes when it ends. Over the limit means 429 with
``Retry-After`` = the key's remaining PTTL, rounded up to whole seconds. A fixed window lets through at most
twice the limit across a window boundary. That is acceptable here, and each check costs O(1) memory and time.
A sliding log would cost one ZSET entry per request.

Counters (``kind``/``who``)::

    control/<token id>   RATE_LIMIT_CONTROL_PER_MIN   control-scope endpoints
    read/<token id>      RATE_LIMIT_READ_PER_MIN      status, help, ... (everything else that is not SSE)
    sse/<token id>@<address> RATE_LIMIT_SSE_PER_MIN   new SSE connections per client (token and address)
    ws/<address>         WS_NEW_PER_MIN               new WebSocket connections per client address (``app.ws``)
    authfail/<address>   RATE_LIMIT_AUTH_FAIL_PER_MIN requests without a valid token (missing or unknown)

``<address>`` is the client's: behind a load balancer listed in TRUSTED_PROXIES it comes from
``X-Forwarded-For`` (``app.forwarded``), so 1,000 browsers sharing one read token behind one HAProxy each get
their own allowance of new SSE streams, and one token guesser does not lock the others out.

Token guessing: once an address is over its auth-failure limit, *every* request from it gets 429, valid token
or not, until the window ends. If a valid token were still let through, a guesser would learn which guess was
right, and the throttle would not slow the guessing at all. The same script call checks that counter
(read-only) and charges the token's counter. A limit of 0 disables that counter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from control import keys
from control.settings import Settings

WINDOW_MS = 60_000

# KEYS[1] counter to charge; KEYS[2] (optional) auth-failure counter to check, not charge.
# ARGV: limit for KEYS[1] (0 = unlimited), window ms, limit for KEYS[2] (0 = unlimited).
# Returns {allowed 0/1, retry-after ms, refused by: 1 = KEYS[1], 2 = KEYS[2]}.
_LUA = """
if KEYS[2] and tonumber(ARGV[3]) > 0 then
  local fails = tonumber(redis.call('GET', KEYS[2]) or '0')
  if fails >= tonumber(ARGV[3]) then
    return {0, redis.call('PTTL', KEYS[2]), 2}
  end
end
local limit = tonumber(ARGV[1])
if limit == 0 then return {1, 0, 1} end
local n = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  ttl = tonumber(ARGV[2])
end
if n > limit then return {0, ttl, 1} end
return {1, ttl, 1}
"""

CONTROL, READ, SSE, WS, AUTH_FAIL = "control", "read", "sse", "ws", "authfail"


@dataclass(frozen=True, slots=True)
class Decision:
    """Outcome of one check. When refused: ``retry_after_s`` (whole seconds, >= 1), the ``limit`` per minute
    and the ``kind`` of counter that refused (``authfail`` when the client address is locked out)."""

    allowed: bool
    retry_after_s: int = 0
    limit: int = 0
    kind: str = ""


class RateLimiter:
    """Checks and charges request counters (see module docstring). Raises redis errors (callers answer 503)."""

    def __init__(self, *, control: int, read: int, sse: int, auth_fail: int, ws: int = 0) -> None:
        self.limits = {CONTROL: control, READ: read, SSE: sse, WS: ws, AUTH_FAIL: auth_fail}
        self._script: AsyncScript | None = None  # registered on first use (needs a client for its encoder)

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimiter:
        """Limits from RATE_LIMIT_*_PER_MIN and WS_NEW_PER_MIN."""
        return cls(
            control=settings.rate_limit_control_per_min,
            read=settings.rate_limit_read_per_min,
            sse=settings.rate_limit_sse_per_min,
            auth_fail=settings.rate_limit_auth_fail_per_min,
            ws=settings.ws_new_per_min,
        )

    async def hit(self, redis: Redis, kind: str, token_id: str, address: str) -> Decision:
        """Charge ``kind`` for the token ``token_id``; refused too while ``address`` is over its auth-failure limit."""
        limit, fail_limit = self.limits[kind], self.limits[AUTH_FAIL]
        if limit == 0 and fail_limit == 0:
            return Decision(True)
        who = f"{token_id}@{address}" if kind == SSE else token_id  # streams: per client, not per shared token
        names = [keys.rate_limit(kind, who), keys.rate_limit(AUTH_FAIL, address)]
        allowed, ttl_ms, by = await self._run(redis, names, limit, fail_limit)
        if allowed:
            return Decision(True)
        if by == 2:
            return Decision(False, _seconds(ttl_ms), fail_limit, AUTH_FAIL)
        return Decision(False, _seconds(ttl_ms), limit, kind)

    async def fail(self, redis: Redis, address: str) -> Decision:
        """Charge one failed authentication (missing or unknown token) to ``address``."""
        limit = self.limits[AUTH_FAIL]
        if limit == 0:
            return Decision(True)
        allowed, ttl_ms, _ = await self._run(redis, [keys.rate_limit(AUTH_FAIL, address)], limit, 0)
        return Decision(True) if allowed else Decision(False, _seconds(ttl_ms), limit, AUTH_FAIL)

    async def _run(self, redis: Redis, names: list[str], limit: int, fail_limit: int) -> tuple[int, int, int]:
        if self._script is None:
            self._script = redis.register_script(_LUA)
        # EVALSHA; on NOSCRIPT (first use, SCRIPT FLUSH, a restarted Redis) redis-py loads the script and retries
        reply = await self._script(keys=names, args=[limit, WINDOW_MS, fail_limit], client=redis)
        allowed, ttl_ms, by = (int(x) for x in reply)
        return allowed, ttl_ms, by


def _seconds(ttl_ms: int) -> int:
    return max(1, math.ceil(max(ttl_ms, 0) / 1000))
