"""workers.metrics: the per-batch aggregates (events by exchange and channel, the latency histogram) and the
collector's families, read from a runtime-shaped object."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from prometheus_client import generate_latest

from tests.app.test_observe import samples
from workers.lag_guard import LagGuard
from workers.metrics import LATENCY_BUCKETS_MS, IngestStats, registry_for


def item(topic: str, ts: int | None) -> tuple[Any, ...]:
    return (topic, b"{}", ts, "c1", 0.0)


def test_latency_buckets_are_cumulative_and_exact() -> None:
    stats = IngestStats()
    now = 1_000_000
    latencies = [0, 1, 2, 3, 7, 30, 400, 20_000]
    stats.written([item("binanceusdm:trade:BTCUSDT", now - ms) for ms in reversed(latencies)], now)
    stats.written([item("bitmart:kline:BTCUSDT:1m", None), item("bitmart:kline:BTCUSDT:1m", now - 5)], now)
    stats.written([item("binanceusdm:depth:BTCUSDT", None)], now)  # a gap event alone: counted, no latency
    latencies.append(5)
    expected = [sum(1 for ms in latencies if ms <= bound) for bound in LATENCY_BUCKETS_MS]
    assert stats.cumulative == expected
    assert stats.count == len(latencies) and stats.sum_ms == sum(latencies)
    assert stats.by_channel() == {("binanceusdm", "trade"): 8, ("bitmart", "kline"): 2, ("binanceusdm", "depth"): 1}
    assert stats.errors == 0


def test_collector_families_from_runtime_state() -> None:
    ingest = IngestStats()
    ingest.written([item("gateio:trade:BTC_USDT", 995), item("gateio:trade:BTC_USDT", 999)], 1000)
    stats = {"dropped_by_reason": {"redis_backlog_overflow": 3}, "gaps_by_reason": {"redis_backlog_overflow": 1},
             "queue_depth": 7, "inflight": 2, "oldest_queued_age_ms": 1500, "fenced": 4, "redis_errors": 1,
             "batches": 9}  # fmt: skip
    status = {"messages_received": 12, "malformed_frames": 1, "unknown_frames": 0, "state": "open",
              "reasons": {"dead_peer": 2}, "gaps": {"reconnect": 2}, "parser": {"stale_klines": 3},
              "books": {"books": 1, "synced": 1, "applied": 40, "gaps": 1, "last_error": None},
              "backpressure": {"holds": 1, "held_s": 0.2, "sheds": 0, "shed": 0, "shedding": False},
              "suspension": {"suspended": False, "suspensions": 2, "dropped": 5, "suspended_s": 1.5},
              "reconnect_requests": 1, "lag_ms": 250, "subscriptions": {"pending": 1, "active": 4, "failed": 0}}  # fmt: skip
    conn = SimpleNamespace(status=lambda: status)
    held = {"gateio.public.1": SimpleNamespace(exchange="gateio", conn=conn)}
    guard = LagGuard(2000, heartbeat_interval_s=1.0)
    guard.lagging, guard.spread, guard.shed = True, 2, 17
    runtime = SimpleNamespace(publisher=SimpleNamespace(ingest=ingest, stats=stats),
                              launcher=SimpleNamespace(held=held), lag_guard=guard)  # fmt: skip
    got = samples(generate_latest(registry_for(runtime)).decode())  # type: ignore[arg-type]
    conn_labels = (("conn", "gateio.public.1"), ("exchange", "gateio"))
    assert got[("feedplane_worker_events_published_total", (("channel", "trade"), ("exchange", "gateio")))] == 2
    assert got[("feedplane_worker_redis_write_latency_seconds_bucket", (("le", "0.001"),))] == 1
    assert got[("feedplane_worker_redis_write_latency_seconds_bucket", (("le", "0.005"),))] == 2
    assert got[("feedplane_worker_redis_write_latency_seconds_sum", ())] == 0.006
    assert got[("feedplane_worker_frames_received_total", conn_labels)] == 12
    assert got[("feedplane_worker_frames_malformed_total", conn_labels)] == 1
    assert got[("feedplane_worker_reconnects_total", (*conn_labels, ("reason", "dead_peer")))] == 2
    assert got[("feedplane_worker_gaps_total", (*conn_labels, ("reason", "reconnect")))] == 2
    assert got[("feedplane_worker_parser_total", (("conn", "gateio.public.1"), ("counter", "stale_klines"),
                                                  ("exchange", "gateio")))] == 3  # fmt: skip
    assert got[("feedplane_worker_book_updates_total", (("conn", "gateio.public.1"), ("exchange", "gateio"),
                                                        ("kind", "applied")))] == 40  # fmt: skip
    assert got[("feedplane_worker_suspension_total", (*conn_labels, ("kind", "dropped")))] == 5
    assert got[("feedplane_worker_reconnect_requests_total", conn_labels)] == 1
    assert got[("feedplane_worker_connection_lag_seconds", conn_labels)] == 0.25
    assert ("feedplane_worker_suspension_total", (*conn_labels, ("kind", "suspended"))) not in got  # a bool
    assert got[("feedplane_worker_events_lost_total", (("reason", "redis_backlog_overflow"),))] == 3
    assert got[("feedplane_worker_publisher_backlog_events", ())] == 9
    assert got[("feedplane_worker_publisher_oldest_queued_age_seconds", ())] == 1.5
    assert got[("feedplane_worker_connections", (("exchange", "gateio"), ("state", "open")))] == 1
    assert got[("feedplane_worker_subscriptions", (("exchange", "gateio"), ("state", "active")))] == 4
    assert got[("feedplane_worker_leases_held", ())] == 1
    assert got[("feedplane_worker_lagging", ())] == 1
    assert got[("feedplane_worker_lag_spread_connections_total", ())] == 2
    assert got[("feedplane_worker_lag_shed_events_total", ())] == 17
