"""BookKeeper: order books through a real ExchangeConnection, the exchange simulator and real Redis.

The simulator plays the recorded depth tapes and serves the recorded REST snapshots (Binance
``/fapi/v1/depth``, Gate ``/api/v4/futures/usdt/order_book``; ``fail_rest(n)`` answers 429) and
BitMart's on-socket ``request`` resync. Waits are event-driven: ``RecordingPublisher.wait_for``
re-checks its predicate on every publish, ``sim.wait_for`` on every frame and REST call.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from redis.asyncio import Redis

from scripts.simulator import ExchangeSimulator
from tests.workers._recording import RecordingPublisher
from tests.workers.books._world import (
    BN_DEPTH,
    BN_TAPE_APPLIED,
    DroppingAdapter,
    binance_url,
    offline_binance_top,
    stream_events,
)
from workers.connection import ExchangeConnection
from workers.exchanges import get_adapter

pytestmark = pytest.mark.timeout(30)


async def test_binance_depth_zero_gaps_top_n_and_throttled_snapshots(
    sim: ExchangeSimulator, pub: RecordingPublisher, redis: Redis, make_conn: Callable[..., ExchangeConnection],
) -> None:
    conn = make_conn(get_adapter("binanceusdm"), binance_url(sim), [BN_DEPTH], sim.binance_rest_url,
                     options={BN_DEPTH: {"levels": 5}})
    stats = conn.books.stats
    await pub.wait_for(lambda: stats["applied"] == BN_TAPE_APPLIED)
    bids, asks, last_id = offline_binance_top(5)
    await pub.wait_for(lambda: pub.of("depth")[-1]["update_id"] == str(last_id), timeout=2.0)  # trailing publish
    assert await pub.flush(5.0)

    assert stats["gaps"] == 0 and stats["snapshots_fetched"] == 1
    assert [(r.path_qs, r.status) for r in sim.rest_requests] == [("/fapi/v1/depth?symbol=BTCUSDT&limit=1000", 200)]
    events = await stream_events(redis, BN_DEPTH)
    assert "gap" not in {e["type"] for e in events}
    deltas = [e for e in events if e["type"] == "depth_delta"]
    assert len(deltas) == BN_TAPE_APPLIED
    ids = [(int(d["first_update_id"]), int(d["last_update_id"])) for d in deltas]
    assert all(a[1] < b[0] for a, b in itertools.pairwise(ids))  # in order, none twice
    depth = [e for e in events if e["type"] == "depth"]
    assert depth[-1]["bids"] == bids and depth[-1]["asks"] == asks and depth[-1]["update_id"] == str(last_id)
    for d in depth:
        assert d["levels"] == 5 and len(d["bids"]) == 5 and len(d["asks"]) == 5
        assert d["exchange"] == "binanceusdm" and d["symbol"] == "BTCUSDT"
        bid_prices = [float(p) for p, _ in d["bids"]]
        ask_prices = [float(p) for p, _ in d["asks"]]
        assert bid_prices == sorted(bid_prices, reverse=True) and ask_prices == sorted(ask_prices)
        assert bid_prices[0] < ask_prices[0]
    # At most one depth event per DEPTH_INTERVAL_MS (50) per topic, however fast the deltas come.
    times = [t for t, (_, e) in zip(pub.times, pub.events, strict=True) if e["type"] == "depth"]
    assert all(b - a >= 0.045 for a, b in itertools.pairwise(times))  # 5 ms for a busy machine's scheduling
    assert len(depth) < len(deltas) / 5
    record = conn.status()["books"]
    assert record["books"] == 1 and record["synced"] == 1 and record["applied"] == BN_TAPE_APPLIED


async def test_binance_rate_limited_snapshot_is_announced_and_retried_after_retry_after(
    sim: ExchangeSimulator, pub: RecordingPublisher, make_conn: Callable[..., ExchangeConnection],
) -> None:
    sim.fail_rest(1)  # 429 with Retry-After: 1
    conn = make_conn(get_adapter("binanceusdm"), binance_url(sim), [BN_DEPTH], sim.binance_rest_url)
    await pub.wait_for(lambda: conn.books.stats["applied"] == BN_TAPE_APPLIED)
    assert [r.status for r in sim.rest_requests] == [429, 200]
    assert sim.rest_requests[1].monotonic_s - sim.rest_requests[0].monotonic_s >= 0.95
    gaps = pub.of("gap")
    assert [g["reason"] for g in gaps] == ["snapshot_failed"]
    assert gaps[0]["topic"] == BN_DEPTH and gaps[0]["until"] is None and isinstance(gaps[0]["since"], int)
    stats = conn.books.stats
    assert stats["snapshot_failures"] == 1 and stats["snapshots_fetched"] == 1 and stats["gaps"] == 0
    assert "HTTP 429" in (conn.books.last_error or "")


async def test_binance_dropped_update_publishes_a_gap_and_fetches_a_new_snapshot(
    sim: ExchangeSimulator, pub: RecordingPublisher, make_conn: Callable[..., ExchangeConnection],
) -> None:
    adapter = DroppingAdapter(get_adapter("binanceusdm"), drop_at=1000)
    conn = make_conn(adapter, binance_url(sim), [BN_DEPTH], sim.binance_rest_url)
    await sim.wait_for(lambda: len(sim.rest_requests) >= 2)
    gaps = pub.of("gap")
    assert [g["reason"] for g in gaps] == ["sequence"]
    assert len(adapter.dropped) == 1
    # Deltas up to the one before the lost update, and none after it until a snapshot bridges again.
    last_delta = pub.of("depth_delta")[-1]
    assert int(last_delta["last_update_id"]) == adapter.dropped[0].prev_last_id
    assert gaps[0]["since"] == last_delta["ts_received"]
    assert conn.books.stats["gaps"] == 1 and conn.books.stats["resyncs"] >= 1
    # The recorded snapshot is static and now older than the stream, so the keeper keeps refetching
    # (with backoff) rather than applying anything across the hole.
    applied = conn.books.stats["applied"]
    await sim.wait_for(lambda: len(sim.rest_requests) >= 3)
    assert conn.books.stats["applied"] == applied
    assert not conn.books.book(BN_DEPTH).synced  # type: ignore[union-attr]


async def test_reconnect_announces_a_gap_and_resyncs_on_the_new_socket(
    sim: ExchangeSimulator, pub: RecordingPublisher, make_conn: Callable[..., ExchangeConnection],
) -> None:
    conn = make_conn(get_adapter("binanceusdm"), binance_url(sim), [BN_DEPTH], sim.binance_rest_url)
    stats = conn.books.stats
    await pub.wait_for(lambda: stats["applied"] == BN_TAPE_APPLIED)
    await sim.drop_connections()
    await pub.wait_for(lambda: stats["applied"] == 2 * BN_TAPE_APPLIED)  # the tape replays on the new socket
    assert [g["reason"] for g in pub.of("gap")] == ["reconnect"]
    assert stats["gaps"] == 0 and stats["snapshots_fetched"] == 2 and stats["resyncs"] == 1
    assert conn.reconnects == 1


async def test_levels_follow_set_options(
    pub: RecordingPublisher, make_conn: Callable[..., ExchangeConnection],
) -> None:
    async with ExchangeSimulator(rate=500.0) as paced:  # slow enough to change options mid-stream
        conn = make_conn(get_adapter("binanceusdm"), binance_url(paced), [BN_DEPTH], paced.binance_rest_url)
        await pub.wait_for(lambda: bool(pub.of("depth")))
        first = pub.of("depth")[0]
        assert first["levels"] == 20 and len(first["bids"]) == 20  # DEPTH_LEVELS_DEFAULT
        conn.set_options({BN_DEPTH: {"levels": 3}})
        await pub.wait_for(lambda: pub.of("depth")[-1]["levels"] == 3)
        assert len(pub.of("depth")[-1]["asks"]) == 3
        conn.set_options({BN_DEPTH: {"levels": 1000}})  # out of range: the default again
        await pub.wait_for(lambda: pub.of("depth")[-1]["levels"] == 20)
        await conn.stop()


# -- BitMart and Gate -------------------------------------------------------------------------------------
