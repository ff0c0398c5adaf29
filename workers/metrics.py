"""Prometheus metrics of one worker process, read at scrape time: nothing is added to the per-event hot path.

Two sources:

- ``IngestStats``: what the publisher wrote, aggregated once per written batch (``Publisher._written``): events by
  topic and the exchange -> Redis latency histogram (``ts_received`` to the batch's script reply, ms). One sort of the
  batch's receive times (already in order: timsort is linear) and one bisection per bucket bound, not per event.
- ``WorkerCollector``: a prometheus-client collector that, when scraped, reads the counters the runtime already
  keeps (connection status records, subscription counts, publisher stats, leases held).

Every family (``feedplane_worker_`` prefix; ``exchange``/``conn`` labels where they apply)::

    events_published_total{exchange,channel}       events written to Redis (gap events excluded)
    redis_write_latency_seconds                    histogram: ts_received -> the Redis write, per event
    frames_received_total{exchange,conn}           frames read from the socket (connection counters restart at 0
    frames_malformed_total{exchange,conn}          when a connection is rebuilt: a counter reset to Prometheus)
    frames_unknown_total{exchange,conn}
    reconnects_total{exchange,conn,reason}         by ``workers.conn_reasons`` kind
    gaps_total{exchange,conn,reason}               gap events announced by the connection (reconnect, takeover...)
    events_lost_total{reason}                      events the publisher could not write (each announced by a gap)
    publisher_gap_events_total{reason}             gap events the publisher wrote for those losses
    publisher_backlog_events                       queued + in flight
    publisher_oldest_queued_age_seconds
    publisher_fenced_events_total, publisher_redis_errors_total, publisher_batches_total,
    publisher_unreplicated_events_total            (split mode) events written without the replicas' WAIT
    lagging                                        1 while the worker lags (``workers.lag_guard``), else 0
    lag_spread_connections_total                   connections it offered to healthy workers because it lagged
    lag_shed_events_total                          events shed past LAG_MAX_MS (also events_lost_total{reason="lag"})
    subscriptions{exchange,state}                  pending|active|failed, on this worker's sockets
    connections{exchange,state}                    connecting|login|subscribing|open|backoff|stopping|suspended...
    leases_held                                    connections this worker holds the lease of
    parser_total{exchange,conn,counter}            parser counters (BitMart ``stale_klines``,
                                                   ``trades_without_side``)
    book_updates_total{exchange,conn,kind}         order-book counters (applied, buffered, stale, gaps, resyncs, ...)
    backpressure_total{exchange,conn,kind}         holds, sheds, shed (events shed)
    reconnect_requests_total{exchange,conn}        reconnects the exchange asked for
    private_total{exchange,conn,kind}              private session counters (accounts' sockets)
    suspension_total{exchange,conn,kind}           suspensions (Redis outages) and events dropped meanwhile

``serve_metrics`` exposes them over HTTP (aiohttp, in the worker's event loop, so a scrape reads a consistent
state) on ``METRICS_PORT + PROCESS_NUM``.
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from workers.runtime import WorkerRuntime

log = logging.getLogger(__name__)

PREFIX = "feedplane_worker_"
#: Latency bucket bounds, milliseconds (exposed in seconds).
LATENCY_BUCKETS_MS = (1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000)
_topic_of, _ts_of = itemgetter(0), itemgetter(2)


class IngestStats:
    """Events written per topic and the ts_received -> Redis latency histogram (cumulative bucket counts)."""

    __slots__ = ("by_topic", "count", "cumulative", "errors", "sum_ms")

    def __init__(self) -> None:
        self.by_topic: Counter[str] = Counter()
        #: Per bound of ``LATENCY_BUCKETS_MS``: events whose latency was <= it (cumulative, as Prometheus wants).
        self.cumulative = [0] * len(LATENCY_BUCKETS_MS)
        self.count = 0  # events with a ts_received (the +Inf bucket)
        self.sum_ms = 0
        self.errors = 0  # batches whose accounting failed (a bug; never raised into the writer)

    def written(self, batch: Iterable[tuple[Any, ...]], now_ms: int) -> None:
        """Account for publisher items ``(topic, payload, ts_received ms or None, ...)`` written at ``now_ms``.

        Never raises (it runs in the publisher's writer task): anything unexpected is counted in ``errors``."""
        try:
            self._written(batch if isinstance(batch, list) else list(batch), now_ms)
        except Exception:  # noqa: BLE001 - metrics must never stop the writer
            self.errors += 1

    def _written(self, items: list[tuple[Any, ...]], now_ms: int) -> None:
        if not items:
            return
        self.by_topic.update(map(_topic_of, items))
        stamps = list(map(_ts_of, items))
        try:
            stamps.sort()  # in receive order already: linear
        except TypeError:  # None (no ts_received, e.g. a gap event) among ints
            stamps = []
        if not stamps or not isinstance(stamps[0], int):  # mixed, or [None] (sorts without a comparison)
            stamps = sorted(t for t in map(_ts_of, items) if isinstance(t, int))
            if not stamps:
                return
        n = len(stamps)
        cumulative = self.cumulative
        for i, bound in enumerate(LATENCY_BUCKETS_MS):
            cumulative[i] += n - bisect_left(stamps, now_ms - bound)
        self.count += n
        self.sum_ms += n * now_ms - sum(stamps)

    def by_channel(self) -> dict[tuple[str, str], int]:
        """Events written per ``(exchange, channel)``."""
        out: Counter[tuple[str, str]] = Counter()
        for topic, n in self.by_topic.items():
            exchange, _, rest = topic.partition(":")
            out[(exchange, rest.partition(":")[0])] += n
        return dict(out)


class WorkerCollector(Collector):
    """Reads ``runtime``'s counters when scraped (see the module docstring)."""

    def __init__(self, runtime: WorkerRuntime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        """The metric families, built from the runtime's current state."""
        runtime = self.runtime
        publisher = runtime.publisher
        yield from _ingest(publisher.ingest)
        yield from _publisher(publisher.stats)
        guard = runtime.lag_guard
        yield _gauge("lagging", "1 while this worker lags behind the exchange (over LAG_MAX_MS / 2, workers.lag_guard)",
                     [], [([], float(guard.lagging))])  # fmt: skip
        yield _counter("lag_spread_connections", "connections offered to healthy workers because this worker lagged",
                       [], [([], guard.spread)])  # fmt: skip
        yield _counter("lag_shed_events", "queued events shed past LAG_MAX_MS, each announced by a gap (reason lag)",
                       [], [([], guard.shed)])  # fmt: skip
        records = [(held.exchange, conn_id, held.conn) for conn_id, held in sorted(runtime.launcher.held.items())]
        yield from _connections(records)
        leases = GaugeMetricFamily(PREFIX + "leases_held", "connections whose lease this worker holds")
        leases.add_metric([], len(records))
        yield leases


def _counter(name: str, doc: str, labels: list[str], values: Iterable[tuple[list[str], float]]) -> Metric:
    family = CounterMetricFamily(PREFIX + name, doc, labels=labels)
    for label_values, value in values:
        family.add_metric(label_values, value)
    return family


def _gauge(name: str, doc: str, labels: list[str], values: Iterable[tuple[list[str], float]]) -> Metric:
    family = GaugeMetricFamily(PREFIX + name, doc, labels=labels)
    for label_values, value in values:
        family.add_metric(label_values, value)
    return family


def _ingest(ingest: IngestStats) -> Iterator[Metric]:
    yield _counter("events_published", "events written to Redis by exchange and channel", ["exchange", "channel"],
                   ((list(key), n) for key, n in sorted(ingest.by_channel().items())))  # fmt: skip
    buckets = [(str(bound / 1000), float(n)) for bound, n in zip(LATENCY_BUCKETS_MS, ingest.cumulative, strict=True)]
    buckets.append(("+Inf", float(ingest.count)))
    latency = HistogramMetricFamily(PREFIX + "redis_write_latency_seconds",
                                    "time from an event's ts_received to its Redis write, seconds")  # fmt: skip
    latency.add_metric([], buckets, ingest.sum_ms / 1000)
    yield latency


def _publisher(stats: dict[str, Any]) -> Iterator[Metric]:
    yield _counter("events_lost", "events not written, each announced by a gap event, by reason", ["reason"],
                   (([r], n) for r, n in sorted(stats["dropped_by_reason"].items())))  # fmt: skip
    yield _counter("publisher_gap_events", "gap events written for lost events, by reason", ["reason"],
                   (([r], n) for r, n in sorted(stats["gaps_by_reason"].items())))  # fmt: skip
    yield _gauge("publisher_backlog_events", "events queued or in flight to Redis", [],
                 [([], stats["queue_depth"] + stats["inflight"])])  # fmt: skip
    yield _gauge("publisher_oldest_queued_age_seconds", "age of the oldest unwritten event", [],
                 [([], stats["oldest_queued_age_ms"] / 1000)])  # fmt: skip
    yield _counter("publisher_fenced_events", "events not written: their connection's lease was not ours", [],
                   [([], stats["fenced"])])  # fmt: skip
    yield _counter("publisher_redis_errors", "failed batch writes and failed commands", [],
                   [([], stats["redis_errors"])])  # fmt: skip
    yield _counter("publisher_batches", "batches written (one script call each)", [], [([], stats["batches"])])
    if "unreplicated" in stats:  # split mode (EVENTS_REDIS_URL): writes accepted without the replicas' WAIT
        yield _counter("publisher_unreplicated_events", "events written without the EVENTS_MIN_REPLICAS confirmation "
                       "(no replica confirmed in time)", [], [([], stats["unreplicated"])])  # fmt: skip


def _connections(records: list[tuple[str, str, Any]]) -> Iterator[Metric]:
    frames, malformed, unknown, requests, lag = [], [], [], [], []
    reconnects, gaps, parser, books, backpressure, private, suspension = [], [], [], [], [], [], []
    conn_states: Counter[tuple[str, str]] = Counter()
    sub_states: Counter[tuple[str, str]] = Counter()
    for exchange, conn_id, conn in records:
        status = conn.status()
        key = [exchange, conn_id]
        frames.append((key, status["messages_received"]))
        malformed.append((key, status["malformed_frames"]))
        unknown.append((key, status["unknown_frames"]))
        requests.append((key, status.get("reconnect_requests") or 0))
        lag.append((key, (status.get("lag_ms") or 0) / 1000))
        reconnects += [([*key, reason], n) for reason, n in sorted(status["reasons"].items())]
        gaps += [([*key, reason], n) for reason, n in sorted(status["gaps"].items())]
        parser += [([*key, name], n) for name, n in sorted(status["parser"].items())]
        books += _numbers(key, status.get("books") or {}, exclude=("books", "synced"))
        backpressure += _numbers(key, status.get("backpressure") or {}, exclude=("held_s", "shedding"))
        private += _numbers(key, status.get("private") or {}, exclude=("listen_key_renewed_at",))
        suspension += _numbers(key, status.get("suspension") or {}, exclude=())
        conn_states[(exchange, status["state"])] += 1
        for state, n in status["subscriptions"].items():
            sub_states[(exchange, state)] += n
    conn_labels = ["exchange", "conn"]
    yield _counter("frames_received", "frames read from exchange sockets", conn_labels, frames)
    yield _counter("frames_malformed", "frames that did not parse (counted and logged, never fatal)", conn_labels,
                   malformed)  # fmt: skip
    yield _counter("frames_unknown", "frames of no known kind", conn_labels, unknown)
    yield _counter("reconnects", "socket sessions ended, by reason", [*conn_labels, "reason"], reconnects)
    yield _counter("gaps", "gap events announced by connections, by reason", [*conn_labels, "reason"], gaps)
    yield _counter("parser", "parser counters (e.g. stale_klines, trades_without_side)", [*conn_labels, "counter"],
                   parser)  # fmt: skip
    yield _counter("book_updates", "order-book counters by kind", [*conn_labels, "kind"], books)
    yield _counter("backpressure", "reader holds, sheds and events shed", [*conn_labels, "kind"], backpressure)
    yield _counter("reconnect_requests", "reconnects the exchange asked for", conn_labels, requests)
    yield _counter("private", "private session counters (logins, snapshots, listenKey renewals, ...)",
                   [*conn_labels, "kind"], private)  # fmt: skip
    yield _counter("suspension", "Redis-outage suspensions of the connection and events dropped meanwhile",
                   [*conn_labels, "kind"], suspension)  # fmt: skip
    yield _gauge("connection_lag_seconds", "how far behind the exchange a connection is: socket backlog over the read"
                 " rate plus the oldest unwritten event's age (lag_ms in /status, workers.lag)", conn_labels, lag)
    yield _gauge("connections", "connections held by state", ["exchange", "state"],
                 ((list(k), n) for k, n in sorted(conn_states.items())))  # fmt: skip
    yield _gauge("subscriptions", "subscriptions on this worker's sockets by state", ["exchange", "state"],
                 ((list(k), n) for k, n in sorted(sub_states.items())))  # fmt: skip


def _numbers(key: list[str], record: dict[str, Any], exclude: tuple[str, ...]) -> list[tuple[list[str], float]]:
    return [([*key, name], value) for name, value in sorted(record.items())
            if name not in exclude and isinstance(value, int) and not isinstance(value, bool)]  # fmt: skip


def registry_for(runtime: WorkerRuntime) -> CollectorRegistry:
    """A registry holding only ``runtime``'s collector (one per runtime; tests run several in one process)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WorkerCollector(runtime))
    return registry


async def serve_metrics(registry: CollectorRegistry, host: str, port: int) -> Callable[[], Any] | None:
    """Serve ``GET /metrics`` for ``registry`` on ``host:port``; returns the coroutine function that stops it, or
    None when the port cannot be bound (logged: metrics are never a reason for a worker not to run)."""

    async def metrics(_request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        log.warning("metrics: cannot listen on %s:%d (%s); this worker runs without a metrics port", host, port, exc)
        await runner.cleanup()
        return None
    log.info("metrics: http://%s:%d/metrics", host, port)
    return runner.cleanup
