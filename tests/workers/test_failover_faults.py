"""Fault tolerance of one connection and one worker: exchange faults counted and announced as gaps, refused
handshakes and bans honouring Retry-After, a lost lease, a graceful stop (see ``test_failover`` for the two
exchanges and the waiting rules)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import Any

import aiohttp
import orjson
import pytest
from redis.asyncio import Redis

from control import keys
from control.settings import Settings
from control.store import ControlStore
from scripts.simulator import ExchangeSimulator
from tests.workers._recording import ConnFactory
from workers.connection import (
    BANNED_MIN_DELAY_S,
    CLOSED_BY_PEER,
    DEAD_PEER,
    HANDSHAKE_ERROR,
    REFUSED,
    SILENT_FEED,
    ExchangeConnection,
)
from workers.exchanges import configured_adapters, get_adapter
from workers.leases import Leases
from workers.planner import read_plan
from workers.publisher import Publisher

from . import _failover_world as fw
from ._failover_world import (
    BN_TRADE,
    FAST,
    RAW_TRADES,
    LiveExchange,
    gap_neighbours,
    sim_env,
    stream,
)
from .test_runtime import BINANCE, BITMART, native, steady, wait_until

pytestmark = pytest.mark.timeout(60)

sim, live, session, make_runtimes, runtimes = fw.sim, fw.live, fw.session, fw.make_runtimes, fw.runtimes


# -- exchange faults: counted, announced ----------------------------------------------------------------------


@pytest.fixture
async def pub(redis_bytes: Redis) -> AsyncIterator[Publisher]:
    p = Publisher(redis_bytes, stream_maxlen=10_000)
    p.start()
    yield p
    await p.close()


@pytest.fixture
async def connect(
    make_settings: Callable[..., Settings], pub: Publisher, session: aiohttp.ClientSession
) -> AsyncIterator[Callable[..., ExchangeConnection]]:
    conns = ConnFactory(make_settings(**FAST), pub, session)

    def factory(exchange: str, url: str, topic: str, **env: str) -> ExchangeConnection:
        settings = make_settings(**{"PING_INTERVAL_S": "0.2", "PONG_TIMEOUT_S": "0.3", "STALL_TIMEOUT_S": "0.5",
                                    **FAST, **env})
        return conns.start(configured_adapters(settings)[exchange], url, [topic], settings=settings)[0]

    yield factory
    await conns.close()


@pytest.mark.parametrize("fault", [DEAD_PEER, SILENT_FEED, CLOSED_BY_PEER])
async def test_exchange_fault_is_counted_and_announced(
    fault: str, redis: Redis, sim: ExchangeSimulator, connect: Any
) -> None:
    url = get_adapter("binanceusdm").ws_url(sim.binance_base_url, "market")  # aggTrade, the default
    conn = connect("binanceusdm", url, BN_TRADE)

    async def trades(n: int) -> bool:
        return await redis.xlen(keys.event_stream(BN_TRADE)) >= n

    await wait_until(lambda: trades(5), what="trades")
    if fault == DEAD_PEER:
        sim.set_dead(True)  # no data, no pongs: aiohttp's heartbeat (or our backstop) gives up
    elif fault == SILENT_FEED:
        sim.set_silent(True)  # pongs and acks flow, data does not
    else:
        assert await sim.drop_connections() == 1
    await sim.wait_for(lambda: conn.reasons[fault] >= 1, timeout=5)
    sim.set_dead(False)
    sim.set_silent(False)

    async def announced() -> bool:
        events = await stream(redis, BN_TRADE)
        return any(e.get("type") == "gap" for e in events) and events[-1].get("type") != "gap"

    await wait_until(announced, what="a gap event followed by trades")
    [(before, gap, after)] = gap_neighbours(await stream(redis, BN_TRADE), fault)
    assert gap == {"type": "gap", "topic": BN_TRADE, "reason": fault, "since": before["ts_received"],
                   "until": after["ts_received"]}  # fmt: skip
    assert before["type"] == after["type"] == "trade" and gap["since"] <= gap["until"]
    status = conn.status()
    assert status["reasons"][fault] >= 1 and status["gaps"] == {fault: 1}
    assert sum(status["reasons"].values()) == status["reconnects"]


async def test_refused_handshake_honours_retry_after_and_announces_the_gap(
    redis: Redis, live: LiveExchange, connect: Any
) -> None:
    conn = connect("binanceusdm", f"{live.base_url}/public/stream", BN_TRADE, RECONNECT_MAX_DELAY_S="0.2", **RAW_TRADES)

    async def trades(n: int) -> bool:
        return await redis.xlen(keys.event_stream(BN_TRADE)) >= n

    await wait_until(lambda: trades(5), what="trades")
    live.refuse = [(429, {"Retry-After": "1"}), (429, {"Retry-After": "1"}), (502, {})]
    before = len(live.handshakes)
    assert live.drop() == 1
    await live.wait_for(lambda: live.subscribed() == 1 and len(live.handshakes) == before + 4, timeout=10)
    attempts = live.handshakes[before:]
    waits = [b - a for a, b in itertools.pairwise(attempts)]
    assert waits[0] >= 0.95 and waits[1] >= 0.95, waits  # Retry-After: 1, although the backoff caps at 0.2 s
    assert waits[2] < 0.9, waits  # a 502 is no refusal: the plain backoff
    await wait_until(lambda: trades(1), what="trades")

    async def announced() -> bool:
        events = await stream(redis, BN_TRADE)
        return any(e.get("type") == "gap" for e in events) and events[-1].get("type") != "gap"

    await wait_until(announced, what="a gap event followed by trades")
    [(before_ev, gap, after)] = gap_neighbours(await stream(redis, BN_TRADE), CLOSED_BY_PEER)
    assert gap["since"] == before_ev["ts_received"] and after is not None and gap["until"] == after["ts_received"]
    lost = [i for i in live.sent if int(before_ev["trade_id"]) < i < int(after["trade_id"])]
    assert len(lost) >= 100  # the outage is > 2 s of trades at 100/s: the gap is real, and announced once
    reasons = conn.status()["reasons"]
    assert reasons == {CLOSED_BY_PEER: 1, REFUSED: 2, HANDSHAKE_ERROR: 1}, reasons


def test_a_ban_without_retry_after_waits_at_least_thirty_seconds() -> None:
    settings = Settings()
    sink = SimpleNamespace(publish=lambda *a, **k: None, set_state=lambda *a, **k: None)
    conn = ExchangeConnection(conn_id="c", adapter=get_adapter("binanceusdm"), url="ws://x", settings=settings,
                              session=None, publisher=sink)  # type: ignore[arg-type]  # fmt: skip
    ban = aiohttp.WSServerHandshakeError(None, (), status=418, message="banned", headers={})  # type: ignore[arg-type]
    assert conn._connect_failed(ban).kind == REFUSED
    assert conn._connect_failed(ban).retry_after_s == BANNED_MIN_DELAY_S
    told = aiohttp.WSServerHandshakeError(None, (), status=429, message="x", headers={"Retry-After": "7"})  # type: ignore[arg-type]
    assert conn._connect_failed(told).retry_after_s == 7.0
    other = aiohttp.WSServerHandshakeError(None, (), status=404, message="x", headers={})  # type: ignore[arg-type]
    assert conn._connect_failed(other).kind == HANDSHAKE_ERROR and conn._connect_failed(other).retry_after_s is None


# -- fencing and graceful stop --------------------------------------------------------------------------------


async def test_a_worker_that_loses_its_lease_stops_at_once_and_writes_nothing_more(
    redis: Redis, redis_url: str, sim: ExchangeSimulator, make_settings: Callable[..., Settings], runtimes: Any
) -> None:
    settings = make_settings(**sim_env(sim, redis_url, HEARTBEAT_INTERVAL_S="0.2", LEASE_TTL_S="1"))
    await ControlStore(redis).add_desired([BN_TRADE], now_ms=1)
    runtime = await runtimes(settings, "w-a")
    await steady(redis, sim, [runtime], [BN_TRADE])
    [conn_id] = runtime.held
    await wait_until(lambda: redis.xlen(keys.event_stream(BN_TRADE)), what="trades")
    old_socket = sim.connections[0]
    await redis.set(keys.lease(conn_id), "intruder", px=60_000)  # another owner now: this worker is fenced
    seconds, micros = await redis.time()
    stolen_ms = int(seconds) * 1000 + int(micros) // 1000
    await sim.wait_for(lambda: old_socket not in sim.connections, timeout=3)  # closed within a heartbeat
    assert not runtime.held
    assert not [f for f in sim.received if "UNSUBSCRIBE" in f.text]  # not ours to unsubscribe any more
    last = await redis.xrevrange(keys.event_stream(BN_TRADE), count=1)
    assert int(last[0][0].split("-")[0]) <= stolen_ms  # nothing written after the lease changed hands
    await wait_until(lambda: redis.hget(keys.WORKERS, "w-a"), what="worker record")
    record = orjson.loads(await redis.hget(keys.WORKERS, "w-a"))
    assert set(record["publisher"]) >= {"queue_depth", "oldest_queued_age_ms", "dropped", "fenced"}


async def test_graceful_stop_drains_flushes_and_leaves_no_lease_or_worker_record(
    redis: Redis, redis_url: str, sim: ExchangeSimulator, make_settings: Callable[..., Settings], runtimes: Any
) -> None:
    settings = make_settings(**sim_env(sim, redis_url, HEARTBEAT_INTERVAL_S="0.2", LEASE_TTL_S="1"))
    topics = [*BITMART, *BINANCE]
    await ControlStore(redis).add_desired(topics, now_ms=1)
    a, b = await runtimes(settings, "w-a"), await runtimes(settings, "w-b")
    await steady(redis, sim, [a, b], topics)
    await wait_until(lambda: redis.xlen(keys.event_stream(BN_TRADE)), what="trades")
    await asyncio.gather(a.stop(), b.stop())

    assert not sim.connections
    assert [k async for k in redis.scan_iter(match=keys.lease("*"))] == []
    assert await redis.hlen(keys.WORKERS) == 0
    current = await read_plan(redis)
    assert set((await Leases(redis).owners(sorted(current.conns))).values()) == {None}
    unsubscribed = {n for f in sim.received for n in (native(t) for t in topics if t.startswith(f.exchange))
                    if "unsubscribe" in f.text.lower() and n in f.text}  # fmt: skip
    assert unsubscribed == {native(t) for t in topics}  # drained: every stream unsubscribed before the close
    records = await ControlStore(redis).connections()
    stored = sum([await redis.xlen(keys.event_stream(t)) for t in topics])
    assert sum(r["events"] for r in records) == stored  # flushed before the leases went: nothing fenced
