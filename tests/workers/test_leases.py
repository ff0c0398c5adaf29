"""Leases on the real Redis: exclusivity, owner-only renew/release, expiry."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from control import keys
from workers.leases import Leases


async def test_acquire_is_exclusive(redis: Redis) -> None:
    leases = Leases(redis)

    results = await asyncio.gather(*(leases.acquire("c.1", f"w{i}", 5000) for i in range(5)))

    assert sum(results) == 1
    winner = f"w{results.index(True)}"
    assert await leases.owners(["c.1", "c.2"]) == {"c.1": winner, "c.2": None}
    assert 0 < await redis.pttl(keys.lease("c.1")) <= 5000


async def test_only_the_owner_renews(redis: Redis) -> None:
    leases = Leases(redis)
    assert await leases.acquire("c.1", "a", 1000)
    assert await leases.acquire("c.2", "b", 1000)

    assert await leases.renew_many(["c.1", "c.2", "c.3"], "a", 60_000) == {"c.1"}
    assert await redis.pttl(keys.lease("c.1")) > 1000
    assert await redis.pttl(keys.lease("c.2")) <= 1000
    assert await leases.renew_many([], "a", 60_000) == set()


async def test_only_the_owner_releases(redis: Redis) -> None:
    leases = Leases(redis)
    await leases.acquire("c.1", "a", 5000)
    await leases.acquire("c.2", "b", 5000)

    assert await leases.release(["c.1", "c.2"], "a") == {"c.1"}
    assert await leases.owners(["c.1", "c.2"]) == {"c.1": None, "c.2": "b"}
    assert await leases.acquire("c.1", "b", 5000)


async def test_an_expired_lease_is_free_and_cannot_be_renewed(redis: Redis) -> None:
    leases = Leases(redis)
    assert await leases.acquire("c.1", "a", 30)
    # bounded poll: Redis has no notification for one key expiring without keyspace events
    deadline = asyncio.get_running_loop().time() + 2
    while await redis.exists(keys.lease("c.1")) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.005)

    assert await leases.renew_many(["c.1"], "a", 1000) == set()
    assert await leases.acquire("c.1", "b", 1000)
    assert await leases.renew_many(["c.1"], "a", 1000) == set()
    assert await leases.owners(["c.1"]) == {"c.1": "b"}


async def test_bytes_client_works_too(redis_url: str, redis: Redis) -> None:
    from control.redis_client import make_redis

    raw = make_redis(redis_url, decode=False)
    try:
        leases = Leases(raw)
        assert await leases.acquire("c.1", "a", 1000)
        assert await leases.renew_many(["c.1"], "a", 1000) == {"c.1"}
        assert await leases.owners(["c.1"]) == {"c.1": "a"}
        assert await leases.release(["c.1"], "a") == {"c.1"}
    finally:
        await raw.aclose()


async def test_owner_ttl_and_held_in_one_round_trip(redis: Redis) -> None:
    leases = Leases(redis)
    assert await leases.acquire("c.1", "a", 5000)
    assert await leases.acquire("c.2", "b", 5000)

    found = await leases.owner_ttl_ms(["c.1", "c.2", "c.3"])

    assert found["c.1"][0] == "a" and 0 < (found["c.1"][1] or 0) <= 5000
    assert found["c.2"][0] == "b"
    assert found["c.3"] == (None, None)
    assert await leases.owner_ttl_ms([]) == {}
    assert await leases.held(["c.1", "c.2", "c.3"], "a") == {"c.1"}
