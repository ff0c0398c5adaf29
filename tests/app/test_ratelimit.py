"""Rate limits: 429 + Retry-After, per token vs per address, shared by two app instances, SSE connections,
the window, 0 = unlimited, and Redis down -> 503."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

import pytest
from redis.asyncio import Redis
from starlette.testclient import TestClient

from app.forwarded import client_address, parse_networks
from app.main import create_app
from app.ratelimit import WINDOW_MS, RateLimiter
from control import keys
from control.settings import Settings, SettingsError

CONTROL = "control-token-0123456789abcdef"
READ = "read-token-0123456789abcdef"
WRONG = "wrong-token-0123456789abcdef"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def limited(make_settings: Callable[..., Settings]) -> Callable[..., Settings]:
    """Secured settings with small limits (override any with RATE_LIMIT_*_PER_MIN=...)."""

    def factory(**env: str) -> Settings:
        base = {"CONTROL_TOKEN": CONTROL, "READ_TOKEN": READ, "RATE_LIMIT_CONTROL_PER_MIN": "3",
                "RATE_LIMIT_READ_PER_MIN": "4", "RATE_LIMIT_SSE_PER_MIN": "2",
                "RATE_LIMIT_AUTH_FAIL_PER_MIN": "3"}  # fmt: skip
        return make_settings(**{**base, **env})

    return factory


def assert_429(resp: Any, limit: int, counter: str) -> int:
    assert resp.status_code == 429, resp.text
    err = resp.json()["error"]
    assert err["code"] == "rate_limited" and set(err) == {"code", "message", "details", "timestamp"}
    retry = int(resp.headers["retry-after"])
    assert 1 <= retry <= WINDOW_MS // 1000
    assert err["details"] == {"retry_after_s": retry, "limit_per_min": limit, "counter": counter}
    assert f"retry in {retry} s" in err["message"]
    return retry


async def test_429_with_retry_after_after_the_limit(limited: Callable[..., Settings], redis: Redis) -> None:
    with TestClient(create_app(limited())) as client:
        for _ in range(3):
            assert client.post("/start", headers=bearer(CONTROL)).status_code == 200
        assert_429(client.post("/start", headers=bearer(CONTROL)), 3, "control")
        assert_429(client.post("/stop", headers=bearer(CONTROL)), 3, "control")  # per token, not per route
        assert client.get("/status", headers=bearer(CONTROL)).status_code == 200  # read counter is separate
    ttl = await redis.pttl(keys.rate_limit("control", "env:control"))
    assert 0 < ttl <= WINDOW_MS
    assert int(await redis.get(keys.rate_limit("control", "env:control"))) == 5  # refused requests count too


async def test_window_end_lets_requests_through_again(limited: Callable[..., Settings], redis: Redis) -> None:
    with TestClient(create_app(limited(RATE_LIMIT_READ_PER_MIN="1"))) as client:
        assert client.get("/status", headers=bearer(READ)).status_code == 200
        assert_429(client.get("/status", headers=bearer(READ)), 1, "read")
        await redis.pexpire(keys.rate_limit("read", "env:read"), 30)  # fast-forward to the window's end
        await asyncio.sleep(0.1)
        assert client.get("/status", headers=bearer(READ)).status_code == 200


def test_limits_are_per_token(limited: Callable[..., Settings], redis: Redis) -> None:
    with TestClient(create_app(limited())) as client:
        for _ in range(4):
            assert client.get("/status", headers=bearer(READ)).status_code == 200
        assert_429(client.get("/help", headers=bearer(READ)), 4, "read")
        for _ in range(4):  # same address, another token: its own counter
            assert client.get("/status", headers=bearer(CONTROL)).status_code == 200
        assert_429(client.get("/status", headers=bearer(CONTROL)), 4, "read")


def test_failed_auth_is_limited_per_address(limited: Callable[..., Settings], redis: Redis) -> None:
    settings = limited()
    with (
        TestClient(create_app(settings), client=("10.0.0.1", 5000)) as guesser,
        TestClient(create_app(settings), client=("10.0.0.2", 5000)) as other,
    ):
        for headers in (bearer(WRONG), {}, bearer("another-wrong-token-0123")):  # missing tokens count too
            assert guesser.get("/status", headers=headers).status_code == 401
        assert_429(guesser.get("/status", headers=bearer(WRONG)), 3, "authfail")
        # locked out: even the right token gets 429, so a guesser cannot tell a hit from a miss
        resp = guesser.get("/status", headers=bearer(READ))
        assert_429(resp, 3, "authfail")
        assert "without a valid token from this address" in resp.json()["error"]["message"]
        assert_429(guesser.get(f"/sse/trades/BTCUSDT?access_token={READ}"), 3, "authfail")
        # another address is not affected
        assert other.get("/status", headers=bearer(READ)).status_code == 200
        assert other.get("/status", headers=bearer(WRONG)).status_code == 401


async def test_limits_hold_across_two_app_instances(limited: Callable[..., Settings], redis: Redis) -> None:
    settings = limited(RATE_LIMIT_CONTROL_PER_MIN="4")
    with TestClient(create_app(settings)) as first, TestClient(create_app(settings)) as second:
        assert first.app is not second.app
        for client in (first, second, first, second):
            assert client.post("/start", headers=bearer(CONTROL)).status_code == 200
        assert_429(first.post("/start", headers=bearer(CONTROL)), 4, "control")
        assert_429(second.post("/start", headers=bearer(CONTROL)), 4, "control")
    assert int(await redis.get(keys.rate_limit("control", "env:control"))) == 6


def test_new_sse_connections_are_limited(limited: Callable[..., Settings], redis: Redis) -> None:
    with TestClient(create_app(limited())) as client:
        for _ in range(2):
            with client.stream("GET", "/sse/trades/BTCUSDT", headers=bearer(READ)) as resp:
                assert resp.status_code == 200
        with client.stream("GET", f"/sse/trades/BTCUSDT?access_token={READ}") as resp:
            assert resp.status_code == 429  # before reading: a wrongly accepted stream would never end
            resp.read()
            assert_429(resp, 2, "sse")
            assert "new SSE connections" in resp.json()["error"]["message"]
        assert client.get("/status", headers=bearer(READ)).status_code == 200  # plain reads still pass
        with client.stream("GET", "/sse/trades/BTCUSDT", headers=bearer(CONTROL)) as resp:
            assert resp.status_code == 200  # another token


async def test_zero_means_unlimited(limited: Callable[..., Settings], redis: Redis) -> None:
    settings = limited(RATE_LIMIT_READ_PER_MIN="0", RATE_LIMIT_AUTH_FAIL_PER_MIN="0")
    with TestClient(create_app(settings)) as client:
        for _ in range(10):
            assert client.get("/status", headers=bearer(READ)).status_code == 200
            assert client.get("/status", headers=bearer(WRONG)).status_code == 401
    assert await redis.keys("fp:rl:*") == []


async def test_script_is_reloaded_after_a_script_flush(redis: Redis) -> None:
    limiter = RateLimiter(control=2, read=2, sse=2, auth_fail=2)
    await redis.script_flush()
    assert (await limiter.hit(redis, "read", "t1", "1.2.3.4")).allowed
    assert (await limiter.hit(redis, "read", "t1", "1.2.3.4")).allowed
    refused = await limiter.hit(redis, "read", "t1", "1.2.3.4")
    assert not refused.allowed and refused.kind == "read" and refused.limit == 2 and 1 <= refused.retry_after_s <= 60
    assert (await limiter.fail(redis, "1.2.3.4")).allowed and (await limiter.fail(redis, "1.2.3.4")).allowed
    locked = await limiter.hit(redis, "control", "t2", "1.2.3.4")
    assert not locked.allowed and locked.kind == "authfail"


def test_redis_down_answers_503(limited: Callable[..., Settings]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with TestClient(create_app(limited(REDIS_URL=f"redis://127.0.0.1:{port}/15"))) as client:
        for headers in (bearer(READ), bearer(WRONG), {}):
            resp = client.get("/status", headers=headers)
            assert resp.status_code == 503 and resp.json()["error"]["code"] == "redis_unavailable"


@pytest.mark.parametrize(
    ("peer", "xff", "trusted", "expected"),
    [
        ("10.0.0.5", None, ("10.0.0.0/8",), "10.0.0.5"),  # no header: the peer
        ("203.0.113.9", "1.2.3.4", (), "203.0.113.9"),  # nothing trusted: the header is ignored
        ("203.0.113.9", "1.2.3.4", ("10.0.0.0/8",), "203.0.113.9"),  # an untrusted peer cannot forge it
        ("10.0.0.5", "1.2.3.4", ("10.0.0.0/8",), "1.2.3.4"),
        ("10.0.0.5", "6.6.6.6, 1.2.3.4, 10.0.0.7", ("10.0.0.0/8",), "1.2.3.4"),  # rightmost untrusted hop
        ("10.0.0.5", "not-an-ip, 10.0.0.7", ("10.0.0.0/8",), "10.0.0.7"),  # stops at the last trusted hop
        ("::1", "2001:db8::1", ("::1",), "2001:db8::1"),
    ],
)
def test_client_address_trusts_forwarded_for_only_from_trusted_proxies(
    peer: str, xff: str | None, trusted: tuple[str, ...], expected: str
) -> None:
    headers = [(b"x-forwarded-for", xff.encode())] if xff else []
    scope = {"type": "http", "client": (peer, 1234), "headers": headers}
    assert client_address(scope, parse_networks(trusted)) == expected


def test_behind_a_trusted_proxy_sse_limits_are_per_client(limited: Callable[..., Settings], redis: Redis) -> None:
    """1,000 browsers behind one load balancer share its address: limits must follow X-Forwarded-For, and only
    when the peer is a configured proxy."""
    proxy = ("10.9.0.1", 4000)
    with TestClient(create_app(limited(TRUSTED_PROXIES="10.9.0.0/16")), client=proxy) as client:
        for n in range(1, 6):  # five browsers, one token, two new streams each (the limit): all allowed
            for _ in range(2):
                with client.stream("GET", "/sse/trades/BTCUSDT", headers={**bearer(READ),
                                   "X-Forwarded-For": f"198.51.100.{n}"}) as resp:  # fmt: skip
                    assert resp.status_code == 200
        with client.stream("GET", "/sse/trades/BTCUSDT", headers={**bearer(READ),
                           "X-Forwarded-For": "198.51.100.1"}) as resp:  # fmt: skip
            assert resp.status_code == 429  # the third stream of one browser
            resp.read()
            assert_429(resp, 2, "sse")
    with TestClient(create_app(limited()), client=proxy) as untrusted:  # no TRUSTED_PROXIES: the peer counts
        for n in range(2):
            with untrusted.stream("GET", "/sse/trades/BTCUSDT", headers={**bearer(CONTROL),
                                  "X-Forwarded-For": f"198.51.100.{n}"}) as resp:  # fmt: skip
                assert resp.status_code == 200
        with untrusted.stream("GET", "/sse/trades/BTCUSDT", headers={**bearer(CONTROL),
                              "X-Forwarded-For": "198.51.100.99"}) as resp:  # fmt: skip
            assert resp.status_code == 429  # a forged header from an untrusted peer changes nothing
            resp.read()


def test_trusted_proxies_setting_takes_addresses_and_networks_only() -> None:
    assert Settings.from_env({"TRUSTED_PROXIES": "10.0.0.0/8, 127.0.0.1,::1"}).trusted_proxies == (
        "10.0.0.0/8", "127.0.0.1/32", "::1/128")  # fmt: skip
    assert Settings.from_env({}).trusted_proxies == ()
    with pytest.raises(SettingsError, match="TRUSTED_PROXIES"):
        Settings.from_env({"TRUSTED_PROXIES": "10.0.0.0/8,haproxy.local"})
