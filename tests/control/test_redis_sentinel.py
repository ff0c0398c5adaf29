"""Redis Sentinel support: the ``redis+sentinel://`` URL, and clients that follow a real failover.

The integration test runs a private master, its replica and one sentinel (redis-server processes on free
loopback ports), kills the master and checks that every kind of client Feedplane
builds (control/event clients, the control server's arq pool, the worker's arq pool) writes to the promoted
master once the old one has crashed; the worker's pool (``outage_retry``) rides out the failover in one call.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis

from app.dispatch import open_arq_pool
from control.redis_client import SentinelURL, display_url, make_redis, parse_sentinel_url
from control.settings import Settings, SettingsError
from tests.e2e.harness import RedisServer, SentinelServer, poll, wait_until
from workers import settings as worker_settings  # imported with the suite's REDIS_URL, not the sentinel one


def test_parse_sentinel_url_forms() -> None:
    assert parse_sentinel_url("redis://127.0.0.1:6379/0") is None
    assert parse_sentinel_url("redis+sentinel://s1:26380,s2,[::1]:26381/feedplane/3") == SentinelURL(
        sentinels=(("s1", 26380), ("s2", 26379), ("::1", 26381)), service_name="feedplane", db=3
    )
    target = parse_sentinel_url("redis+sentinel://app:p%40ss@s1/feedplane")
    assert target is not None
    assert (target.username, target.password, target.db) == ("app", "p@ss", 0)
    assert "p@ss" not in repr(target) and "p%40ss" not in repr(target)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+sentinel:///feedplane", "at least one sentinel host"),
        ("redis+sentinel://s1,/feedplane", "at least one sentinel host"),
        ("redis+sentinel://s1:0/feedplane", "bad port"),
        ("redis+sentinel://s1:x/feedplane", "bad port"),
        ("redis+sentinel://s1", "needs the service name"),
        ("redis+sentinel://s1/feedplane/zero", "only the database number"),
        ("redis+sentinel://s1/feedplane/0/extra", "only the database number"),
    ],
)
def test_malformed_sentinel_url_fails_at_start_without_the_password(url: str, message: str) -> None:
    url = url.replace("://", "://:hunter22@", 1)
    with pytest.raises(SettingsError) as err:
        Settings.from_env({"REDIS_URL": url})
    assert str(err.value).startswith("REDIS_URL: ") and message in str(err.value)
    assert "hunter22" not in str(err.value)


def test_display_url_hides_the_password() -> None:
    assert (
        display_url("redis+sentinel://app:hunter22@s1,s2/feedplane/0") == "redis+sentinel://app:***@s1,s2/feedplane/0"
    )
    assert display_url("redis://:hunter22@h:6379/0") == "redis://:***@h:6379/0"
    assert display_url("redis://h:6379/0") == "redis://h:6379/0"


@pytest.mark.integration  # its own redis-servers and sentinel
async def test_clients_follow_a_sentinel_failover(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    primary = RedisServer(tmp_path / "primary")
    primary.start()
    replica = RedisServer(tmp_path / "replica", args=["--replicaof", "127.0.0.1", str(primary.port)])
    replica.start()
    sentinel = SentinelServer(tmp_path / "sentinel", service="feedplane", master_port=primary.port)
    clients: list[redis.asyncio.Redis] = []
    try:
        sentinel.start()
        url = f"redis+sentinel://127.0.0.1:{sentinel.port}/feedplane/2"
        monkeypatch.setenv("REDIS_URL", url)
        worker_pool = worker_settings._sentinel_pool_from_env()  # what WorkerSettings.redis_pool holds
        assert worker_pool is not None
        events = make_redis(url, decode=False)
        control = make_redis(url)
        app_pool = await open_arq_pool(url)
        clients += [worker_pool, events, control, app_pool]

        assert await control.set("before", "1")
        assert await worker_pool.set("poll-before", "1")
        assert await app_pool.enqueue_job("reconcile", 1, _job_id="before") is not None
        with redis.Redis(port=primary.port, db=2) as direct:
            assert direct.get("before") == b"1"  # written to the master the sentinel named

        # The replica must be linked and known to the sentinel before it can be promoted.
        await asyncio.to_thread(wait_until, sentinel.replicas_ready, 20, "the sentinel to see the replica")
        primary.kill()  # the master crashes; the sentinel sees it down after 1 s and promotes the replica
        polling = asyncio.create_task(worker_pool.set("poll-during", "1"))  # an arq poll during the failover

        async def promoted() -> bool:
            return await asyncio.to_thread(sentinel.master_port) == replica.port

        await poll(promoted, 20, "the sentinel to promote the replica")
        assert await asyncio.wait_for(polling, 10)  # the worker's pool rode out the failover
        # The quick-failing clients reconnect through the sentinel to the promoted master.
        assert await control.set("after", "2")
        await events.xadd("fp:test", {"e": "1"})
        assert await app_pool.enqueue_job("reconcile", 2, _job_id="after") is not None
        with redis.Redis(port=replica.port, db=2) as direct:
            assert direct.get("before") == b"1"  # replicated before the crash
            assert direct.get("after") == b"2"
            assert direct.get("poll-during") == b"1"
            assert direct.xlen("fp:test") == 1
            assert direct.exists("arq:job:after")
    finally:
        for client in clients:
            await client.aclose()
        sentinel.kill()
        replica.kill()
        primary.kill()
