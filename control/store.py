"""The one place that reads and writes control state in Redis (key names: ``control.keys``).

Desired subscriptions are the truth: the control server writes them, workers reconcile towards
them. Values are compact JSON. The client passed in must use ``decode_responses=True``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from redis.asyncio import Redis

from control import keys

PENDING, ACTIVE, FAILED = "pending", "active", "failed"


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


async def lease_owners(redis: Redis, conn_ids: Sequence[str]) -> dict[str, tuple[str | None, int | None]]:
    """``conn id -> (owning worker id, ms left)`` for ``fp:lease:{conn}``, in one round trip (GET + PTTL per id in
    one MULTI). Shared by ``/status`` and the workers' takeover scan.

    A free lease is ``(None, None)``; a lease without expiry (never set by Feedplane) has ``None`` ms.
    Works with and without ``decode_responses``.
    """
    if not conn_ids:
        return {}
    async with redis.pipeline(transaction=True) as pipe:
        for conn_id in conn_ids:
            key = keys.lease(conn_id)
            pipe.get(key)
            pipe.pttl(key)
        replies = await pipe.execute()
    out: dict[str, tuple[str | None, int | None]] = {}
    for i, conn_id in enumerate(conn_ids):
        owner, ttl = replies[2 * i], int(replies[2 * i + 1])
        if owner is None:
            out[conn_id] = (None, None)
        else:
            out[conn_id] = (owner.decode() if isinstance(owner, bytes) else owner, ttl if ttl >= 0 else None)
    return out


class ControlStore:
    """Desired state, subscription state, workers and connection records.

    All times are epoch milliseconds. Subscription state records are
    ``{"state": "pending"|"active"|"failed", "error": str|None, "since": ms, "conn": str|None}``.
    """

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    # -- desired state (written by the control server) --------------------------------------------

    async def add_desired(self, topics: Sequence[str], now_ms: int) -> list[str]:
        """Add ``topics`` to the desired set; returns those that were not already desired.

        New topics get a ``pending`` state. Bumps ``fp:desired:version`` when anything changed.
        """
        async with self.redis.pipeline(transaction=True) as pipe:
            for topic in topics:
                pipe.hsetnx(keys.DESIRED, topic, _dumps({"since": now_ms}))
            added_flags = await pipe.execute()
        added = [t for t, flag in zip(topics, added_flags) if flag]
        if added:
            pending = _dumps({"state": PENDING, "error": None, "since": now_ms, "conn": None})
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(keys.SUB_STATE, mapping={t: pending for t in added})
                pipe.incr(keys.DESIRED_VERSION)
                await pipe.execute()
        return added

    async def set_options(self, options: dict[str, dict[str, Any]]) -> bool:
        """Store per-topic options (depth: ``{"levels": N}``) in ``fp:topic:options``; True when any changed.

        Workers read them when a book (re)starts; a change bumps the desired-state version so they look.
        """
        if not options:
            return False
        encoded = {t: _dumps(o) for t, o in options.items()}
        current = await self.redis.hmget(keys.TOPIC_OPTIONS, list(encoded))  # type: ignore[misc]
        changed = {t: v for (t, v), old in zip(encoded.items(), current) if old != v}
        if not changed:
            return False
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.TOPIC_OPTIONS, mapping=changed)
            pipe.incr(keys.DESIRED_VERSION)
            await pipe.execute()
        return True

    async def options(self) -> dict[str, dict[str, Any]]:
        """All per-topic options: topic -> dict."""
        raw = await self.redis.hgetall(keys.TOPIC_OPTIONS)  # type: ignore[misc]
        return {topic: orjson.loads(value) for topic, value in raw.items()}

    async def remove_desired(self, topics: Sequence[str]) -> list[str]:
        """Remove ``topics`` from the desired set; returns those that were desired."""
        async with self.redis.pipeline(transaction=True) as pipe:
            for topic in topics:
                pipe.hdel(keys.DESIRED, topic)
            removed_flags = await pipe.execute()
        removed = [t for t, flag in zip(topics, removed_flags) if flag]
        if removed:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hdel(keys.SUB_STATE, *removed)
                pipe.hdel(keys.TOPIC_LAST_EVENT, *removed)
                pipe.hdel(keys.TOPIC_OPTIONS, *removed)
                pipe.incr(keys.DESIRED_VERSION)
                await pipe.execute()
        return removed

    async def clear_desired(self) -> int:
        """Forget every desired subscription; returns how many there were."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hlen(keys.DESIRED)
            pipe.delete(keys.DESIRED, keys.SUB_STATE, keys.TOPIC_LAST_EVENT, keys.TOPIC_OPTIONS)
            pipe.incr(keys.DESIRED_VERSION)
            count, _, _ = await pipe.execute()
        return int(count)

    async def desired(self) -> dict[str, int]:
        """Desired topics -> the ms they were first asked for."""
        raw = await self.redis.hgetall(keys.DESIRED)  # type: ignore[misc]
        return {topic: orjson.loads(value)["since"] for topic, value in raw.items()}

    async def set_paused(self, paused: bool) -> None:
        """Pause (``POST /stop``) or resume (``POST /start``) streaming; desired state is kept."""
        async with self.redis.pipeline(transaction=True) as pipe:
            if paused:
                pipe.set(keys.PAUSED, "1")
            else:
                pipe.delete(keys.PAUSED)
            pipe.incr(keys.DESIRED_VERSION)
            await pipe.execute()

    async def is_paused(self) -> bool:
        """True while streaming is paused."""
        return bool(await self.redis.exists(keys.PAUSED))

    async def version(self) -> int:
        """Current desired-state version (0 when never changed)."""
        return int(await self.redis.get(keys.DESIRED_VERSION) or 0)

    async def notify(self, message: str) -> None:
        """Nudge every worker and control server (``plan``, ``state``) on ``fp:ctl``."""
        await self.redis.publish(keys.CONTROL_CHANNEL, message)

    # -- subscription state (written by workers) --------------------------------------------------

    async def set_states(self, states: dict[str, dict[str, Any]]) -> None:
        """Write subscription state records (see class docstring) in one round trip."""
        if states:
            mapping = {t: _dumps(s) for t, s in states.items()}
            await self.redis.hset(keys.SUB_STATE, mapping=mapping)  # type: ignore[misc]

    async def subscriptions(self, topics: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """One record per desired topic: ``topic, state, error, since, conn, last_event_at``.

        States left behind for topics no longer desired are ignored. ``topics`` limits the result.
        """
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.DESIRED)
            pipe.hgetall(keys.SUB_STATE)
            pipe.hgetall(keys.TOPIC_LAST_EVENT)
            desired, states, last = await pipe.execute()
        wanted = set(topics) if topics is not None else None
        out = []
        for topic in sorted(desired):
            if wanted is not None and topic not in wanted:
                continue
            record = orjson.loads(states[topic]) if topic in states else {"state": PENDING, "error": None}
            since = record.get("since") or orjson.loads(desired[topic])["since"]
            out.append(
                {
                    "topic": topic,
                    "state": record.get("state", PENDING),
                    "error": record.get("error"),
                    "since": since,
                    "conn": record.get("conn"),
                    "last_event_at": int(last[topic]) if topic in last else None,
                }
            )
        return out

    # -- workers and connections (written by workers, read by /status) ----------------------------

    async def put_worker(self, worker_id: str, record: dict[str, Any]) -> None:
        """Write a worker's heartbeat record."""
        await self.redis.hset(keys.WORKERS, worker_id, _dumps(record))  # type: ignore[misc]

    async def remove_worker(self, worker_id: str) -> None:
        """Drop a worker's record (clean exit)."""
        await self.redis.hdel(keys.WORKERS, worker_id)  # type: ignore[misc]

    async def workers(self) -> list[dict[str, Any]]:
        """All worker records, each with its ``id``."""
        raw = await self.redis.hgetall(keys.WORKERS)  # type: ignore[misc]
        return [{"id": wid, **orjson.loads(v)} for wid, v in sorted(raw.items())]

    async def put_connections(self, records: dict[str, dict[str, Any]]) -> None:
        """Write connection status records keyed by connection id."""
        if records:
            mapping = {c: _dumps(r) for c, r in records.items()}
            await self.redis.hset(keys.CONN_STATUS, mapping=mapping)  # type: ignore[misc]

    async def remove_connections(self, conn_ids: Sequence[str]) -> None:
        """Drop status records of connections that no longer exist."""
        if conn_ids:
            await self.redis.hdel(keys.CONN_STATUS, *conn_ids)  # type: ignore[misc]

    async def connections(self) -> list[dict[str, Any]]:
        """All connection status records, each with its ``id``."""
        raw = await self.redis.hgetall(keys.CONN_STATUS)  # type: ignore[misc]
        return [{"id": cid, **orjson.loads(v)} for cid, v in sorted(raw.items())]
