"""Connection leases in Redis: a connection id runs on at most one live worker at a time.

A lease is the string key ``fp:lease:{conn}`` holding the owning worker id, with a PX expiry of
``LEASE_TTL_S``. A worker takes a free lease with ``SET NX PX``, renews the ones it holds on every
heartbeat (one Lua call for the whole batch: "pexpire only if the value is still me") and
releases them with compare-and-delete, so it can never extend or delete a lease another worker
has taken after its own expired. A worker that dies simply stops renewing; its leases expire
and other workers pick the connections up.

Renewal happens at ``HEARTBEAT_INTERVAL_S`` and ``Settings`` enforces
``LEASE_TTL_S >= 2 * HEARTBEAT_INTERVAL_S``, so one slow heartbeat does not lose a lease.

Fencing of writes: the event publisher (``workers.publisher``) reads each connection's lease inside
its write script and skips the events of connections whose lease is not its worker's at that
instant, so a worker that lost a lease cannot write after the new owner started. ``held`` answers
the same question outside a script (one MGET), e.g. before a side effect that is not a Redis write.

Split mode (``EVENTS_REDIS_URL``, ``workers.fence``): the events nodes cannot read the leases, so ``acquire``, once it
took a lease, pushes this worker's fence token for it to every events node (best effort: a failed push is logged;
the worker's first batch raises the token on the nodes it writes to anyway). A worker that lost the lease and
still has a batch in flight is then fenced there, as the one-Redis script fences it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from redis.asyncio import Redis
from redis.exceptions import RedisError

from control import keys
from control.store import lease_owners

if TYPE_CHECKING:
    from workers.fence import Fence

log = logging.getLogger(__name__)

_RENEW_LUA = """
local held = {}
for i, key in ipairs(KEYS) do
    if redis.call('get', key) == ARGV[1] then
        redis.call('pexpire', key, ARGV[2])
        held[#held + 1] = i
    end
end
return held
"""

_RELEASE_LUA = """
local released = {}
for i, key in ipairs(KEYS) do
    if redis.call('get', key) == ARGV[1] then
        redis.call('del', key)
        released[#released + 1] = i
    end
end
return released
"""


class Leases:
    """Acquire, renew, release and inspect connection leases.

    ``redis`` may be a decoding or a bytes client (worker ids are compared inside Lua). All calls
    raise ``redis.exceptions.RedisError`` on connection trouble. ``ttl_ms`` is in milliseconds.
    """

    def __init__(self, redis: Redis, fence: Fence | None = None) -> None:
        self.redis = redis
        self.fence = fence  # split mode: fence tokens pushed on acquisition
        self._renew = redis.register_script(_RENEW_LUA)
        self._release = redis.register_script(_RELEASE_LUA)

    async def acquire(self, conn_id: str, worker_id: str, ttl_ms: int) -> bool:
        """Take the lease of ``conn_id`` for ``worker_id`` if nobody holds it; True when taken (split mode: then
        pushes the fence token, see the module docstring)."""
        taken = bool(await self.redis.set(keys.lease(conn_id), worker_id, nx=True, px=ttl_ms))
        if taken and self.fence is not None:
            try:
                await self.fence.push(conn_id, worker_id)
            except RedisError as exc:
                log.warning("lease of %s taken, fence token not pushed to the events nodes: %s", conn_id, exc)
        return taken

    async def renew_many(self, conn_ids: Iterable[str], worker_id: str, ttl_ms: int) -> set[str]:
        """Extend the leases ``worker_id`` still holds among ``conn_ids``; returns those ids.

        Ids missing from the result were lost (expired, or taken by another worker).
        """
        ids = list(conn_ids)
        if not ids:
            return set()
        held = await self._renew(keys=[keys.lease(c) for c in ids], args=[worker_id, ttl_ms])
        return {ids[int(i) - 1] for i in held}

    async def release(self, conn_ids: Iterable[str], worker_id: str) -> set[str]:
        """Delete the leases of ``conn_ids`` that ``worker_id`` still holds; returns the released ids."""
        ids = list(conn_ids)
        if not ids:
            return set()
        released = await self._release(keys=[keys.lease(c) for c in ids], args=[worker_id])
        return {ids[int(i) - 1] for i in released}

    async def held(self, conn_ids: Iterable[str], worker_id: str) -> set[str]:
        """The ids among ``conn_ids`` whose lease ``worker_id`` holds right now (one MGET)."""
        ids = list(conn_ids)
        owners = await self.owners(ids)
        return {c for c, owner in owners.items() if owner == worker_id}

    async def owner_ttl_ms(self, conn_ids: Sequence[str]) -> dict[str, tuple[str | None, int | None]]:
        """``conn id -> (owner, remaining ms)`` in one round trip; see ``control.store.lease_owners``."""
        return await lease_owners(self.redis, conn_ids)

    async def owners(self, conn_ids: Sequence[str]) -> dict[str, str | None]:
        """``conn id -> owning worker id`` (None when the lease is free), in one MGET."""
        if not conn_ids:
            return {}
        values = await self.redis.mget([keys.lease(c) for c in conn_ids])
        return {c: (v.decode() if isinstance(v, bytes) else v) for c, v in zip(conn_ids, values, strict=True)}
