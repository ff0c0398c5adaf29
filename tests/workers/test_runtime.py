"""WorkerRuntime end to end in one process: real Redis, real simulator, real aiohttp, real arq Worker.

Waiting: the conditions checked here live in Redis hashes and streams written by other tasks
(publisher, planner, runtimes) and in the simulator's socket table. Redis sends no notification
for hash or stream writes without keyspace events (off by default, and not ours to turn on), so
``wait_until`` re-checks every 20 ms up to a deadline instead. It is a bounded wait for a
condition, never a sleep standing in for one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import orjson
import pytest
from arq.connections import RedisSettings, create_pool
from arq.worker import Worker, func
from redis.asyncio import Redis

from control import keys
from control.jobs import RECONCILE, reconcile_job_id
from control.settings import Settings, SettingsError
from control.store import ControlStore
from control.topics import Topic
from scripts.simulator import ExchangeSimulator
from workers.connection import ExchangeConnection
from workers.exchanges.binanceusdm.wire import stream_name
from workers.exchanges.bitmart.wire import native_topic
from workers.jobs import reconcile
from workers.leases import Leases
from workers.planner import read_plan
from workers.runtime import WorkerRuntime
from workers.settings import WorkerSettings

pytestmark = pytest.mark.timeout(60)

BITMART = [f"bitmart:kline:{s}:{tf}" for s in ("BTCUSDT", "ETHUSDT") for tf in ("1m", "5m")] + [
    "bitmart:trade:BTCUSDT",
    "bitmart:trade:ETHUSDT",
]
#: Klines and trades (aggTrade by default) share the /market route; best bid/ask is a /public stream (§2).
BINANCE = ["binanceusdm:kline:BTCUSDT:1m", "binanceusdm:trade:BTCUSDT", "binanceusdm:bookticker:BTCUSDT"]
UNKNOWN = "bitmart:kline:NOPEUSDT:1m"
LOGGERS = ("workers", "control")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: Topics whose recorded tapes the simulator replays, so events must reach their streams.
WITH_TAPES = ["bitmart:trade:BTCUSDT", "bitmart:kline:BTCUSDT:1m", "binanceusdm:trade:BTCUSDT",
              "binanceusdm:kline:BTCUSDT:1m"]


async def wait_until(check: Callable[[], Awaitable[Any]], timeout: float = 10.0, what: str = "condition") -> Any:
    """Re-evaluate ``await check()`` every 20 ms until truthy; returns it. See the module docstring."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s (last: {value!r})")
        await asyncio.sleep(0.02)


def native(topic: str) -> str:
    parsed = Topic.parse(topic)
    return native_topic(parsed) if parsed.exchange == "bitmart" else stream_name(parsed)


def sim_counts(sim: ExchangeSimulator) -> Counter[str]:
    """Native topic -> number of live simulator sockets subscribed to it."""
    return Counter(n for conn in sim.connections for n in conn.subscribed)


def unsubscribed(sim: ExchangeSimulator, native_name: str) -> int:
    """How many client frames asked the simulator to unsubscribe ``native_name``."""
    return sum(1 for f in sim.received if "unsubscribe" in f.text.lower() and native_name in f.text)


@pytest.fixture
async def sim() -> AsyncIterator[ExchangeSimulator]:
    async with ExchangeSimulator(rate=50.0, loop=True) as simulator:
        await simulator.preload()
        yield simulator


@pytest.fixture
def env(sim: ExchangeSimulator, redis_url: str) -> dict[str, str]:
    return {
        "REDIS_URL": redis_url,
        "BITMART_PUBLIC_WS_URI": sim.bitmart_public_url,
        "BINANCE_USDM_WS_URI": sim.binance_base_url,
        "HEARTBEAT_INTERVAL_S": "0.2",
        "LEASE_TTL_S": "1",
        "SUBSCRIBE_DELAY_MS": "20",
        "RECONNECT_DELAY_S": "0.05",
        "RECONNECT_MAX_DELAY_S": "0.5",
        "DRAIN_TIMEOUT_S": "2",
    }


@pytest.fixture
def settings(env: dict[str, str], make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(**env)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def runtimes(
    settings: Settings, redis: Redis, redis_bytes: Redis, session: aiohttp.ClientSession
) -> AsyncIterator[Callable[..., Awaitable[WorkerRuntime]]]:
    """Factory: ``await runtimes("w1")`` -> a started WorkerRuntime; all are stopped at teardown."""
    made: list[WorkerRuntime] = []

    async def factory(worker_id: str, *, start: bool = True) -> WorkerRuntime:
        runtime = WorkerRuntime(settings, worker_id=worker_id, redis=redis, redis_bytes=redis_bytes, session=session)
        made.append(runtime)
        if start:
            await runtime.start()
        return runtime

    yield factory
    await asyncio.gather(*(r.stop() for r in made))


class Unmet(str):
    """A falsy explanation of why a condition does not hold yet (shown when ``wait_until`` gives up)."""

    def __bool__(self) -> bool:
        return False


async def steady(redis: Redis, sim: ExchangeSimulator, live: list[WorkerRuntime], topics: list[str]) -> None:
    """Wait until the plan covers ``topics`` exactly once, every planned connection runs on exactly one of
    ``live`` (lease and runtime agree), and each valid native topic is on exactly one simulator socket."""
    expected = Counter(native(t) for t in topics if t != UNKNOWN)
    live_ids = {r.worker_id for r in live}

    async def check() -> bool | Unmet:
        current = await read_plan(redis)
        if set(current.assign) != set(topics) or set(current.assign.values()) != set(current.conns):
            return Unmet(f"plan {current.assign}")
        owners = await Leases(redis).owners(sorted(current.conns))
        held = Counter(c for r in live for c in r.held)
        if held != Counter(list(current.conns)) or set(owners.values()) - live_ids:
            return Unmet(f"held {held} owners {owners}")
        if any(owners[c] != r.worker_id for r in live for c in r.held):
            return Unmet(f"owners {owners} disagree with runtimes")
        if sim_counts(sim) != expected:
            return Unmet(f"simulator {dict(sim_counts(sim))}")
        return True

    await wait_until(check, what="steady state")


async def test_two_runtimes_split_connections_and_follow_desired_state(
    redis: Redis, sim: ExchangeSimulator, runtimes: Callable[..., Awaitable[WorkerRuntime]]
) -> None:
    store = ControlStore(redis)
    topics = [*BITMART, *BINANCE, UNKNOWN]
    await store.add_desired(topics, now_ms=1)
    a, b = await runtimes("w-a"), await runtimes("w-b")

    await steady(redis, sim, [a, b], topics)
    assert set(a.held).isdisjoint(b.held)
    current = await read_plan(redis)
    assert sorted((d["exchange"], d["route"]) for d in current.conns.values()) == [
        ("binanceusdm", "market"), ("binanceusdm", "public"), ("bitmart", "public")]

    async def events_everywhere() -> bool:
        return all([await redis.xlen(keys.event_stream(t)) > 0 for t in WITH_TAPES])

    await wait_until(events_everywhere, what="events in every stream with a tape")
    entry = (await redis.xrange(keys.event_stream("binanceusdm:trade:BTCUSDT"), count=1))[0][1]
    assert orjson.loads(entry[keys.STREAM_FIELD])["symbol"] == "BTCUSDT"

    async def unknown_failed() -> dict[str, Any] | None:
        record = {s["topic"]: s for s in await store.subscriptions()}[UNKNOWN]
        return record if record["state"] == "failed" else None

    failed = await wait_until(unknown_failed, what="unknown symbol failed")
    assert failed["error"] == "Invalid channel: not found futures/klineBin1m:NOPEUSDT"  # the simulator's wire text
    assert failed["conn"] in current.conns

    async def statuses() -> list[dict[str, Any]]:
        records = await store.connections()
        return records if {r["id"] for r in records} == set(current.conns) else []

    for record in await wait_until(statuses, what="connection status records"):
        assert record["worker"] in ("w-a", "w-b") and record["lease_expires_at"] > 0
    workers = {w["id"]: w for w in await store.workers()}
    assert sorted(workers["w-a"]["connections"] + workers["w-b"]["connections"]) == sorted(current.conns)

    # removing a topic unsubscribes it on the socket that carried it; the others stay put
    await store.remove_desired(["bitmart:trade:ETHUSDT"])
    await store.notify("plan")
    topics.remove("bitmart:trade:ETHUSDT")
    await steady(redis, sim, [a, b], topics)
    assert (await read_plan(redis)).conns == current.conns
    assert unsubscribed(sim, "futures/trade:ETHUSDT") == 1 and sim.stats["connections_opened"] == 3

    # pause closes every socket (after unsubscribing); resume brings everything back
    await store.set_paused(True)
    await store.notify("state")
    await sim.wait_for(lambda: not sim.connections, timeout=10)
    assert not a.held and not b.held
    assert unsubscribed(sim, "futures/trade:BTCUSDT") == 1  # drained, not just dropped
    await store.set_paused(False)
    await store.notify("state")
    await steady(redis, sim, [a, b], topics)


async def test_survivor_takes_over_after_lease_expiry_and_graceful_handoff(
    redis: Redis, sim: ExchangeSimulator, runtimes: Callable[..., Awaitable[WorkerRuntime]]
) -> None:
    store = ControlStore(redis)
    topics = [*BITMART, *BINANCE]
    await store.add_desired(topics, now_ms=1)
    a, b = await runtimes("w-a"), await runtimes("w-b")
    await steady(redis, sim, [a, b], topics)
    victim, survivor = (a, b) if a.held else (b, a)
    taken = victim.held

    # a crash: sockets drop, leases and the worker record stay until they expire
    loop = asyncio.get_running_loop()
    died_at = loop.time()
    await victim.abort()
    assert await Leases(redis).owners(taken) == {c: victim.worker_id for c in taken}
    await steady(redis, sim, [survivor], topics)
    assert loop.time() - died_at >= 0.5  # not before the lease (1 s) ran out
    assert set(taken) <= set(survivor.held)

    # a clean stop releases at once; a newcomer takes everything over
    newcomer = await runtimes("w-c")
    await survivor.stop()
    await steady(redis, sim, [newcomer], topics)
    assert survivor.worker_id not in {w["id"] for w in await store.workers()}


async def test_reconcile_job_runs_on_a_burst_arq_worker(
    redis: Redis, redis_url: str, runtimes: Callable[..., Awaitable[WorkerRuntime]]
) -> None:
    store = ControlStore(redis)
    await store.add_desired([*BINANCE, "bitmart:trade:BTCUSDT"], now_ms=1)
    version = await store.version()
    runtime = await runtimes("w-job", start=False)  # no loop: only the job may plan
    pool = await create_pool(RedisSettings.from_dsn(redis_url))
    worker = Worker(
        functions=[func(reconcile, name=RECONCILE, keep_result=0, max_tries=3)],
        redis_pool=pool,
        queue_name=keys.ARQ_QUEUE,
        burst=True,
        poll_delay=0,
        max_burst_jobs=1,
        handle_signals=False,
        keep_result=0,
        ctx={"runtime": runtime},
    )
    try:
        job = await pool.enqueue_job(RECONCILE, version, _job_id=reconcile_job_id(version), _queue_name=keys.ARQ_QUEUE)
        duplicate = await pool.enqueue_job(
            RECONCILE, version, _job_id=reconcile_job_id(version), _queue_name=keys.ARQ_QUEUE
        )
        assert job is not None and duplicate is None

        assert await worker.run_check() == 1
    finally:
        await worker.close()

    current = await read_plan(redis)
    assert current.version == version and current.topics == 4 and current.connections == 3
    assert await reconcile({"runtime": runtime}, version) == {"version": version, "connections": 3, "topics": 4}


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """``on_startup`` configures the ``workers``/``control`` loggers; undo it for the other tests."""
    saved = {name: (logging.getLogger(name).level, list(logging.getLogger(name).handlers)) for name in LOGGERS}
    yield
    for name, (level, handlers) in saved.items():
        logging.getLogger(name).setLevel(level)
        logging.getLogger(name).handlers[:] = handlers


def _worker_kwargs(**overrides: Any) -> dict[str, Any]:
    kwargs = {k: v for k, v in vars(WorkerSettings).items() if not k.startswith("_")}
    kwargs.update(overrides)
    return kwargs


async def test_worker_settings_start_and_stop_a_runtime(
    redis: Redis, redis_url: str, sim: ExchangeSimulator, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {**env, "WORKER_ID": "arq-w1"}.items():
        monkeypatch.setenv(name, value)
    store = ControlStore(redis)
    topics = ["bitmart:trade:BTCUSDT", "binanceusdm:trade:BTCUSDT"]
    await store.add_desired(topics, now_ms=1)
    pool = await create_pool(RedisSettings.from_dsn(redis_url))
    await pool.enqueue_job(RECONCILE, 1, _job_id=reconcile_job_id(1), _queue_name=keys.ARQ_QUEUE)
    worker = Worker(**_worker_kwargs(redis_pool=pool, burst=True, poll_delay=0, max_burst_jobs=1, handle_signals=False))
    try:
        assert await worker.run_check() == 1
        runtime: WorkerRuntime = worker.ctx["runtime"]
        assert runtime.worker_id == "arq-w1"
        await steady(redis, sim, [runtime], topics)
    finally:
        await worker.close()  # on_shutdown: drain, release, close clients

    assert "runtime" not in worker.ctx and not sim.connections
    assert await redis.hget(keys.WORKERS, "arq-w1") is None
    assert set((await Leases(redis).owners(sorted((await read_plan(redis)).conns))).values()) == {None}


async def test_invalid_settings_fail_the_worker_start(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("LEASE_TTL_S", "soon")
    pool = await create_pool(RedisSettings.from_dsn(redis_url))
    worker = Worker(**_worker_kwargs(redis_pool=pool, burst=True, poll_delay=0, handle_signals=False))
    try:
        with pytest.raises(SettingsError, match=r"^LEASE_TTL_S: "):
            await worker.run_check()
    finally:
        await worker.close()  # on_shutdown copes with a startup that never built anything


@pytest.mark.integration  # a subprocess
def test_worker_settings_import_without_redis() -> None:
    env = {**os.environ, "REDIS_URL": "redis://127.0.0.1:1/0"}  # nothing listens on port 1
    code = "from workers.settings import WorkerSettings as W; print(W.redis_settings.port, W.queue_name)"
    done = subprocess.run(
        [sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True, timeout=30, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", keys.ARQ_QUEUE]



async def test_a_depth_topic_added_to_a_running_connection_gets_its_options_first(
    redis: Redis, redis_bytes: Redis, settings: Settings, session: aiohttp.ClientSession
) -> None:
    """The planned topics reach a running socket only after their options: its book may sync (and publish a
    ``depth`` event) as soon as it subscribes, before the tick has finished."""
    calls: list[tuple[str, frozenset[str]]] = []

    class Recording(ExchangeConnection):
        def set_options(self, options: dict[str, dict[str, Any]]) -> None:
            calls.append(("options", frozenset(options)))
            super().set_options(options)

        def set_topics(self, topics: Any) -> None:
            topics = list(topics)
            calls.append(("topics", frozenset(str(t) for t in topics)))
            super().set_topics(topics)

    trade, depth = "bitmart:trade:BTCUSDT", "bitmart:depth:BTCUSDT"
    store = ControlStore(redis)
    await store.add_desired([trade], now_ms=1)
    runtime = WorkerRuntime(settings, worker_id="w-opt", redis=redis, redis_bytes=redis_bytes, session=session,
                            connection_factory=Recording)  # fmt: skip
    await runtime.start()
    try:
        async def running() -> bool:
            return bool(runtime.held)

        async def depth_planned() -> bool:
            return any(depth in t for k, t in calls if k == "topics")

        await wait_until(running, what="the connection running")
        await store.set_options({depth: {"levels": 5}})
        await store.add_desired([depth], now_ms=2)
        runtime.wake()
        await wait_until(depth_planned, what="the depth topic planned on the running connection")
    finally:
        await runtime.stop()
    first = next(i for i, (k, t) in enumerate(calls) if k == "topics" and depth in t)
    assert any(k == "options" and depth in t for k, t in calls[:first]), calls
