"""Health probes: live never touches Redis, ready needs Redis within its bound and a fresh worker heartbeat; no
token for either, and they disclose nothing else; /health is the summary behind a read token."""

from __future__ import annotations

from collections.abc import Callable

from redis.asyncio import Redis
from starlette.testclient import TestClient

from app.errors import now_ms
from app.main import create_app
from control.settings import Settings
from control.store import ControlStore
from tests.app._auth import READ
from tests.cluster import LocalCluster
from tests.e2e.harness import RedisServer


def _probe(client: TestClient, path: str) -> tuple[int, dict[str, object]]:
    resp = client.get(path)
    return resp.status_code, resp.json()


async def test_ready_needs_a_fresh_worker_heartbeat(secured: TestClient, redis: Redis) -> None:
    status, body = _probe(secured, "/health/ready")  # no token: not a 401
    assert status == 503 and body["error"]["code"] == "no_live_worker"  # type: ignore[index]
    store = ControlStore(redis)
    await store.put_worker("w-old", {"heartbeat_at": now_ms() - 60_000, "connections": []})
    assert _probe(secured, "/health/ready")[0] == 503  # a stale heartbeat is not a live worker
    await store.put_worker("w1", {"heartbeat_at": now_ms(), "connections": []})
    assert _probe(secured, "/health/ready") == (200, {"status": "ready"})  # nothing else disclosed
    assert _probe(secured, "/health/live") == (200, {"status": "ok"})
    summary = secured.get("/health", headers={"Authorization": f"Bearer {READ}"}).json()
    assert summary["ready"] is True and summary["workers"] == {"total": 2, "alive": 1}
    assert summary["redis"]["ok"] is True and summary["redis"]["latency_ms"] >= 0
    assert secured.get("/health").status_code == 401  # the summary needs a token


def test_live_never_touches_redis_ready_reports_it(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(REDIS_URL="redis://127.0.0.1:1/0", CONTROL_TOKEN="c" * 32)  # nothing listens
    with TestClient(create_app(settings)) as client:
        assert _probe(client, "/health/live") == (200, {"status": "ok"})
        status, body = _probe(client, "/health/ready")
        assert status == 503 and body["error"]["code"] == "redis_unavailable"  # type: ignore[index]
        summary = client.get("/health", headers={"Authorization": "Bearer " + "c" * 32})
        assert summary.status_code == 503  # the token check itself needs Redis (rate limits)


async def test_ready_needs_the_events_redis_when_it_is_its_own(
    make_settings: Callable[..., Settings], redis: Redis, own_redis: RedisServer
) -> None:
    settings = make_settings(EVENTS_REDIS_URL=own_redis.url())
    await ControlStore(redis).put_worker("w1", {"heartbeat_at": now_ms(), "connections": []})
    with TestClient(create_app(settings)) as client:
        assert _probe(client, "/health/ready") == (200, {"status": "ready"})
        own_redis.kill()  # the events Redis goes away; the control Redis still answers
        status, body = _probe(client, "/health/ready")
        assert status == 503 and body["error"]["code"] == "events_redis_unavailable"  # type: ignore[index]
        assert _probe(client, "/health/live") == (200, {"status": "ok"})


async def test_ready_pings_every_master_of_an_events_cluster(
    make_settings: Callable[..., Settings], redis: Redis, redis_cluster: LocalCluster
) -> None:
    settings = make_settings(EVENTS_REDIS_URL=redis_cluster.url)
    await ControlStore(redis).put_worker("w1", {"heartbeat_at": now_ms(), "connections": []})
    with TestClient(create_app(settings)) as client:
        assert _probe(client, "/health/ready") == (200, {"status": "ready"})
