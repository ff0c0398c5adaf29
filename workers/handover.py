"""Handing a connection from one live worker to another without a gap (rebalancing when a worker joins).

Redis protocol, one key per connection, ``fp:handover:{conn}`` (``control.keys.handover``), PX =
``HANDOVER_TIMEOUT_S``:

1. **offer** (the over-loaded owner): ``SET <from>`` only while its lease still names it and no offer exists.
2. **claim** (an under-loaded worker): ``<from>`` -> ``<from>><to>`` (compare-and-set), so one taker works on it.
3. The taker opens its own socket for the connection's topics in *standby* (subscribed, events buffered, nothing
   written: its lease is not its own, so the publisher would fence it anyway).
4. **transfer**, once every topic is acknowledged: one script sets the lease to the taker *only if it still names
   the offerer* (or is free: the offerer released it on a graceful stop), and deletes the offer. From that instant
   the publisher writes the taker's events and fences the offerer's.
5. The taker reads each topic's last stored event (``markers``) and switches its socket to publishing, continuing
   right after it (``workers.stitch``). The offerer's next lease renewal fails (it is woken by ``fp:ctl``): it
   closes its socket without unsubscribing.

A marker read that fails is never answered by publishing the standby buffer as it is (that repeats every event
the offerer already stored): ``read_markers`` retries with backoff, the standby socket buffering and the taker
renewing the lease it now holds, until the read succeeds or ``HANDOVER_TIMEOUT_S`` has passed since the transfer.
Then the taker gives the connection up unpublished (lease released, standby socket closed) and it is served again
like any free connection, from a fresh socket whose topics announce a ``takeover`` gap: a loss, announced, never
a duplicate. A lease that cannot be renewed meanwhile is left to expire (the same takeover follows).

Split mode (``EVENTS_REDIS_URL``, ``workers.fence``): the markers are read from the events Redis, and the taker
first pushes its fence token to every events node (retried with the marker read until both succeed), so the
offerer's batches still in flight are fenced from then on, as the lease check fences them with one Redis.

A claim that fails (timeout, lost race, connection gone from the plan) is ``withdraw``-n; an offer nobody takes
expires. Worker ids never contain ``>`` (``Settings``: letters, digits, ``-_.``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from control import keys
from workers.backoff import Backoff
from workers.fence import Fence

log = logging.getLogger(__name__)

_OFFER_LUA = """
if redis.call('get', KEYS[1]) ~= ARGV[1] or redis.call('exists', KEYS[2]) == 1 then
    return 0
end
redis.call('set', KEYS[2], ARGV[1], 'PX', ARGV[2])
return 1
"""

_CLAIM_LUA = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    redis.call('set', KEYS[1], ARGV[1] .. '>' .. ARGV[2], 'PX', ARGV[3])
    return 1
end
return 0
"""

_TRANSFER_LUA = """
local owner = redis.call('get', KEYS[1])
if owner == ARGV[1] or owner == false then
    redis.call('set', KEYS[1], ARGV[2], 'PX', ARGV[3])
    redis.call('del', KEYS[2])
    return 1
end
return 0
"""

_WITHDRAW_LUA = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""

#: Stream entries read per topic to find its last non-gap event.
MARKER_SCAN = 20
#: Delays between marker reads that failed (seconds: first, cap).
MARKER_RETRY_S = (0.05, 1.0)


@dataclass(frozen=True, slots=True)
class MarkerRead:
    """What ``read_markers`` got. ``markers``: topic -> last stored event (None: the stream has none), or None
    when the read never succeeded. ``lease_held``: the lease was still the taker's at the last renewal (so it
    must release it when giving up). ``lease_deadline``: loop time by which it must be renewed again."""

    markers: dict[str, dict[str, Any] | None] | None
    lease_held: bool
    lease_deadline: float


class Handovers:
    """Offers, claims and lease transfers (see the module docstring); ``redis`` decodes responses.

    Every call raises ``redis.exceptions.RedisError`` on connection trouble. Times are milliseconds.
    """

    def __init__(self, redis: Redis, fence: Fence | None = None) -> None:
        self.redis = redis
        #: Split mode: fence tokens, and the events Redis holding the streams (else ``redis``).
        self.fence = fence
        self.events: Any = redis if fence is None else fence.nodes.events
        self._unfenced: dict[str, str] = {}  # split mode: conn -> taker whose token is not on every node yet
        self._offer = redis.register_script(_OFFER_LUA)
        self._claim = redis.register_script(_CLAIM_LUA)
        self._transfer = redis.register_script(_TRANSFER_LUA)
        self._withdraw = redis.register_script(_WITHDRAW_LUA)

    async def offer(self, conn_id: str, owner: str, ttl_ms: int) -> bool:
        """Offer ``conn_id`` (leased by ``owner``) to an under-loaded worker; False if not leased to it or offered."""
        return bool(await self._offer(keys=[keys.lease(conn_id), keys.handover(conn_id)], args=[owner, ttl_ms]))

    async def offers(self, conn_ids: Sequence[str]) -> dict[str, tuple[str, str | None]]:
        """``conn id -> (from, to or None)`` for the connections among ``conn_ids`` with an offer (one MGET)."""
        if not conn_ids:
            return {}
        values = await self.redis.mget([keys.handover(c) for c in conn_ids])
        out: dict[str, tuple[str, str | None]] = {}
        for conn_id, value in zip(conn_ids, values, strict=True):
            if value:
                text = value.decode() if isinstance(value, bytes) else str(value)
                origin, _, taker = text.partition(">")
                out[conn_id] = (origin, taker or None)
        return out

    async def claim(self, conn_id: str, origin: str, taker: str, ttl_ms: int) -> bool:
        """Mark ``origin``'s offer of ``conn_id`` as being taken by ``taker``; False when it is gone or claimed."""
        return bool(await self._claim(keys=[keys.handover(conn_id)], args=[origin, taker, ttl_ms]))

    async def transfer(self, conn_id: str, origin: str, taker: str, lease_ttl_ms: int) -> bool:
        """Atomically move the lease of ``conn_id`` from ``origin`` (or from nobody) to ``taker``, dropping the offer."""
        moved = bool(
            await self._transfer(keys=[keys.lease(conn_id), keys.handover(conn_id)], args=[origin, taker, lease_ttl_ms])
        )
        if moved and self.fence is not None:
            self._unfenced[conn_id] = taker  # pushed by markers(), before it reads anything
        return moved

    async def withdraw(self, conn_id: str, origin: str, taker: str | None = None) -> bool:
        """Delete the offer of ``conn_id`` if it is still ``origin``'s (claimed by ``taker`` when given)."""
        value = origin if taker is None else f"{origin}>{taker}"
        return bool(await self._withdraw(keys=[keys.handover(conn_id)], args=[value]))

    async def markers(self, topics: Iterable[str]) -> dict[str, dict[str, Any] | None]:
        """Each topic's last stored event that is not a ``gap`` (None when the stream has none), one pipeline. In
        split mode the fence tokens of connections just transferred are pushed first (RedisError if not)."""
        if self.fence is not None:
            for conn_id, taker in list(self._unfenced.items()):
                await self.fence.push(conn_id, taker)
                del self._unfenced[conn_id]
        names = list(topics)
        if not names:
            return {}
        async with self.events.pipeline(transaction=False) as pipe:
            for topic in names:
                pipe.xrevrange(keys.event_stream(topic), count=MARKER_SCAN)
            replies = await pipe.execute()
        out: dict[str, dict[str, Any] | None] = {}
        for topic, entries in zip(names, replies, strict=True):
            out[topic] = None
            for _, fields in entries:
                raw = fields.get(keys.STREAM_FIELD) if isinstance(fields, dict) else None
                if raw is None:
                    raw = fields.get(keys.STREAM_FIELD.encode())
                try:
                    event = orjson.loads(raw)
                except (TypeError, orjson.JSONDecodeError):
                    continue
                if isinstance(event, dict) and event.get("type") != "gap":
                    out[topic] = event
                    break
        return out


async def read_markers(
    handovers: Handovers,
    topics: Sequence[str],
    *,
    renew: Callable[[], Awaitable[bool]],
    lease_ttl_s: float,
    lease_deadline: float,
    give_up_s: float,
    intact: Callable[[], bool] = lambda: True,
    label: str = "",
) -> MarkerRead:
    """Read the markers of ``topics`` right after a lease transfer, retrying until it succeeds (see the module
    docstring). ``renew()``: renews the lease just taken; True while it is still ours, raises RedisError when
    that cannot be told. ``lease_deadline``: loop time at which the lease runs out unless renewed (the transfer
    set ``lease_ttl_s``). ``give_up_s``: how long to keep trying (``HANDOVER_TIMEOUT_S``). ``intact()``: False once
    the standby socket's buffer overflowed (its oldest events are gone: the stitch could no longer be exact, so
    it gives up at once). Never raises RedisError.
    """
    loop = asyncio.get_running_loop()
    give_up_at = loop.time() + give_up_s
    backoff = Backoff(*MARKER_RETRY_S)
    while True:
        try:
            return MarkerRead(await handovers.markers(topics), True, lease_deadline)
        except RedisError as exc:
            failure = exc
        delay = min(backoff.next_delay(), lease_ttl_s / 4)  # several renewals per lease lifetime
        log.warning("%s: cannot read the markers (attempt %d, %s); the standby socket keeps buffering", label,
                    backoff.attempts, failure)  # fmt: skip
        renewed_at = loop.time()
        try:
            if not await renew():
                log.warning("%s: lease lost while reading the markers; handover abandoned", label)
                return MarkerRead(None, False, lease_deadline)
            lease_deadline = renewed_at + lease_ttl_s
        except RedisError as exc:
            log.warning("%s: cannot renew the lease while reading the markers: %s", label, exc)
        now = loop.time()
        if now + delay >= lease_deadline:  # not renewed: it may be gone before the next attempt; let it expire
            log.warning("%s: lease not renewable while the markers are unreadable; left to expire", label)
            return MarkerRead(None, False, lease_deadline)
        if now + delay >= give_up_at or not intact():
            log.warning("%s: markers unreadable for %.1f s%s; giving the connection up unpublished (a takeover gap "
                        "announces the loss)", label, now - (give_up_at - give_up_s),
                        "" if intact() else " and the standby buffer full")  # fmt: skip
            return MarkerRead(None, True, lease_deadline)
        await asyncio.sleep(delay)
