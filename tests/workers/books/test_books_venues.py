"""BookKeeper on BitMart (socket snapshot, version resync) and Gate.io (REST snapshot), the keeper's throttling,
and the runtime reading ``fp:topic:options`` into depth levels.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
import pytest
from redis.asyncio import Redis

from control.settings import Settings
from control.store import ControlStore
from scripts.sim import tapes as sim_tapes
from scripts.simulator import ExchangeSimulator
from tests.workers._recording import RecordingPublisher
from tests.workers.books._world import (
    BN_DEPTH,
    FAST,
    DroppingAdapter,
    stream_events,
)
from workers.books import BookKeeper
from workers.connection import ExchangeConnection
from workers.exchanges import get_adapter
from workers.exchanges.base import BookUpdate
from workers.runtime import WorkerRuntime

pytestmark = pytest.mark.timeout(30)


BM_DEPTH = "bitmart:depth:BTCUSDT"
BM_NATIVE = "futures/depthIncrease50:BTCUSDT@100ms"


async def test_bitmart_socket_snapshot_then_updates_zero_gaps(
    sim: ExchangeSimulator, pub: RecordingPublisher, make_conn: Callable[..., ExchangeConnection],
) -> None:
    tape = await asyncio.to_thread(sim_tapes.get_tape, "bitmart", BM_NATIVE)
    assert tape is not None
    conn = make_conn(get_adapter("bitmart"), sim.bitmart_public_url, [BM_DEPTH], "")
    stats = conn.books.stats
    await pub.wait_for(lambda: stats["applied"] == len(tape) - 1)  # everything after the leading snapshot
    assert stats["gaps"] == 0 and stats["snapshots_fetched"] == 1 and stats["stale"] == 0
    assert sim.rest_requests == [] and not any('"request"' in f.text for f in sim.received)
    assert pub.of("depth")[0]["levels"] == 20 and conn.books.book(BM_DEPTH).synced  # type: ignore[union-attr]


async def test_bitmart_version_jump_sends_a_resync_request_and_recovers(
    sim: ExchangeSimulator, pub: RecordingPublisher, make_conn: Callable[..., ExchangeConnection],
) -> None:
    tape = await asyncio.to_thread(sim_tapes.get_tape, "bitmart", BM_NATIVE)
    assert tape is not None
    adapter = DroppingAdapter(get_adapter("bitmart"), drop_at=500)
    conn = make_conn(adapter, sim.bitmart_public_url, [BM_DEPTH], "")
    stats = conn.books.stats
    await sim.wait_for(lambda: any('"request"' in f.text for f in sim.received))
    request = next(orjson.loads(f.text) for f in sim.received if '"request"' in f.text)
    assert request == {"action": "request", "args": [BM_NATIVE]}
    await pub.wait_for(lambda: stats["snapshots_fetched"] == 2)  # the answer: a fresh snapshot push
    await sim.wait_for(lambda: len(sim.sent_data.get(BM_NATIVE, ())) == len(tape) + 1)  # tape + the snapshot
    await pub.wait_for(lambda: conn.books.book(BM_DEPTH).last_id == adapter.dropped[0].last_id + (  # type: ignore[union-attr]
        len(tape) - 500))
    assert [g["reason"] for g in pub.of("gap")] == ["sequence"] and stats["gaps"] == 1
    assert conn.books.book(BM_DEPTH).synced  # type: ignore[union-attr]


async def test_gate_rest_snapshot_bridges_the_recorded_contracts_zero_gaps(
    sim: ExchangeSimulator, pub: RecordingPublisher, make_conn: Callable[..., ExchangeConnection],
) -> None:
    """RDNT_USDT and OMG_USDT: 70 and 109 recorded pushes, of which 61 and 101 follow the snapshot id."""
    topics = ["gateio:depth:RDNT_USDT", "gateio:depth:OMG_USDT"]
    conn = make_conn(get_adapter("gateio"), sim.gate_ws_url, topics, sim.gate_rest_url)
    stats = conn.books.stats
    await pub.wait_for(lambda: stats["applied"] == 61 + 101)
    assert stats["gaps"] == 0 and stats["snapshots_fetched"] == 2
    assert sorted(r.path_qs for r in sim.rest_requests) == [
        f"/api/v4/futures/usdt/order_book?contract={c}&limit=100&with_id=true" for c in ("OMG_USDT", "RDNT_USDT")
    ]
    for topic in topics:
        sync = conn.books.book(topic)
        assert sync is not None and sync.synced and not sync.book.crossed()
    assert {e["symbol"] for e in pub.of("depth_delta")} == {"RDNT_USDT", "OMG_USDT"}


# -- the keeper alone (hand-made updates) -----------------------------------------------------------------


def bm_update(version: int, *, snapshot: bool = False, bids: list[tuple[str, str]] | None = None,
              asks: list[tuple[str, str]] | None = None) -> BookUpdate:
    return BookUpdate("bitmart:depth:BTCUSDT", "BTCUSDT", bids or [], asks or [], version, version,
                      snapshot=snapshot, ts_received=1_000 + version)


async def test_keeper_throttles_depth_and_always_sends_the_last_state(
    pub: RecordingPublisher, session: aiohttp.ClientSession,
) -> None:
    sent: list[str] = []

    async def send(frame: str) -> None:
        sent.append(frame)

    keeper = BookKeeper(conn_id="k", adapter=get_adapter("bitmart"), publisher=pub, session=session,
                        rest_base_url="", interval_ms=100, send_frame=send, levels_for=lambda t: 2)
    topic = "bitmart:depth:BTCUSDT"
    keeper.start(topic)
    keeper.on_update(bm_update(5))  # before the snapshot the subscribe brings: dropped
    keeper.on_update(bm_update(10, snapshot=True, bids=[("100", "1"), ("99", "1"), ("98", "1")], asks=[("101", "1")]))
    for v in range(11, 61):
        keeper.on_update(bm_update(v, bids=[("99", str(v))]))
    assert len(pub.of("depth")) == 1  # the snapshot's, at once; the rest within the interval
    assert len(pub.of("depth_delta")) == 50
    await pub.wait_for(lambda: len(pub.of("depth")) == 2, timeout=1.0)  # the trailing publish
    last = pub.of("depth")[-1]
    assert last["update_id"] == "60" and last["bids"] == [["100", "1"], ["99", "60"]] and last["levels"] == 2
    assert keeper.stats["applied"] == 50 and keeper.stats["stale"] == 1 and sent == []

    # A version jump: gap published, resync request sent on the socket, nothing applied until a snapshot.
    keeper.on_update(bm_update(62))
    await asyncio.sleep(0)
    assert [g["reason"] for g in pub.of("gap")] == ["sequence"]
    assert pub.of("gap")[0]["since"] == 1_060
    assert [orjson.loads(f) for f in sent] == [{"action": "request", "args": ["futures/depthIncrease50:BTCUSDT@100ms"]}]
    keeper.on_update(bm_update(63))
    keeper.on_update(bm_update(70, snapshot=True, bids=[("100", "2")], asks=[("101", "2")]))
    keeper.on_update(bm_update(71, asks=[("102", "1")]))
    assert keeper.stats["applied"] == 51 and keeper.stats["gaps"] == 1 and keeper.stats["snapshots_fetched"] == 2
    assert pub.of("depth")[-1]["update_id"] == "70"

    keeper.reset("reconnect")
    assert [g["reason"] for g in pub.of("gap")] == ["sequence", "reconnect"]
    keeper.stop(topic)
    keeper.on_update(bm_update(1, snapshot=True))  # not kept any more: ignored
    assert keeper.status()["books"] == 0
    await keeper.close()


# -- the runtime hands fp:topic:options to its connections ---------------------------------------------------


async def wait_until(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Re-evaluate ``await check()`` every 20 ms until truthy (Redis sends no notice for stream writes)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (value := await check()):
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.02)
    return value


async def test_runtime_reads_topic_options_into_depth_levels(
    redis: Redis, redis_bytes: Redis, session: aiohttp.ClientSession, make_settings: Callable[..., Settings],
) -> None:
    async with ExchangeSimulator(rate=300.0) as paced:
        settings = make_settings(**FAST, BINANCE_USDM_WS_URI=paced.binance_base_url,
                                 BINANCE_USDM_REST_URI=paced.binance_rest_url, HEARTBEAT_INTERVAL_S="0.1",
                                 LEASE_TTL_S="1", DRAIN_TIMEOUT_S="1")
        store = ControlStore(redis)
        await store.add_desired([BN_DEPTH], now_ms=1)
        await store.set_options({BN_DEPTH: {"levels": 7}})
        runtime = WorkerRuntime(settings, worker_id="w1", redis=redis, redis_bytes=redis_bytes, session=session)
        await runtime.start()
        try:
            async def last_depth() -> dict[str, Any] | None:
                depth = [e for e in await stream_events(redis, BN_DEPTH) if e["type"] == "depth"]
                return depth[-1] if depth else None

            first = await wait_until(last_depth)
            assert first["levels"] == 7 and len(first["bids"]) == 7
            await store.set_options({BN_DEPTH: {"levels": 2}})
            runtime.wake()

            async def two_levels() -> bool:
                last = await last_depth()
                return last is not None and last["levels"] == 2 and len(last["asks"]) == 2

            await wait_until(two_levels)
            records = await store.connections()
            assert records and records[0]["books"]["synced"] == 1
        finally:
            await runtime.stop()
