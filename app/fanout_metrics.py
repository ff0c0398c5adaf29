"""Fan-out metrics read at scrape time: the shared SSE/WebSocket hub, the SSE streams' ticker and the WebSocket
closes, as Prometheus families in the control server's registry (``app.observe.ControlMetrics``).

Nothing is counted per event here: each scrape reads the counters the hub, the ticker and the WebSocket registry
keep anyway (``SSEHub.stats``, ``SSETicker.stats``, ``Registry.closes``)::

    feedplane_fanout_entries_read_total           stream entries the hub read from Redis (once each, for every client)
    feedplane_fanout_delivered_total              entries queued to subscribers (SSE and WebSocket)
    feedplane_fanout_overflows_total              subscribers whose bounded buffer overflowed (cut, resume by cursor)
    feedplane_fanout_read_errors_total            failed hub reads (Redis away); ``..._reconnects_total`` recoveries
    feedplane_fanout_reader_up                    1 while the hub's Redis reader works, 0 while Redis is away
    feedplane_fanout_subscribers / _topics        live hub subscriptions and the topics they cover
    feedplane_sse_cut_total{reason}               SSE streams cut by the server: slow_consumer (a send blocked past
                                                  SSE_SEND_TIMEOUT_S), shutdown
    feedplane_ws_server_closes_total{reason}      /ws connections closed by the server (slow client, idle, ...)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

_HUB_COUNTERS = {
    "entries_read": "stream entries the hub read from Redis, once each whatever the number of clients",
    "delivered": "stream entries queued to subscribers (SSE and WebSocket clients)",
    "overflows": "subscribers whose bounded buffer overflowed (the client is cut and resumes by cursor)",
    "read_errors": "failed hub reads (Redis unreachable)",
    "reconnects": "hub reader recoveries after failed reads",
}


class FanoutCollector(Collector):
    """Collects the families in the module docstring from ``state`` (the app's ``state``: ``hub``, ``sse_ticker``,
    ``ws_registry``; each may be absent before lifespan has run, and is then skipped)."""

    def __init__(self, state: Any) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        hub = getattr(self.state, "hub", None)
        if hub is not None:
            stats = hub.stats()
            for name, doc in _HUB_COUNTERS.items():
                yield CounterMetricFamily(f"feedplane_fanout_{name}", doc, value=stats.get(name, 0))
            yield GaugeMetricFamily("feedplane_fanout_reader_up", "1 while the hub's Redis reader works",
                                    value=1 if stats.get("reader_up") else 0)  # fmt: skip
            yield GaugeMetricFamily("feedplane_fanout_subscribers", "live hub subscriptions",
                                    value=stats.get("subscribers", 0))  # fmt: skip
            yield GaugeMetricFamily("feedplane_fanout_topics", "topics the hub reads", value=stats.get("topics", 0))
        ticker = getattr(self.state, "sse_ticker", None)
        if ticker is not None:
            stats = ticker.stats()
            cut = CounterMetricFamily("feedplane_sse_cut", "SSE streams cut by the server, by reason", labels=["reason"])
            cut.add_metric(["slow_consumer"], stats.get("cut_slow", 0))
            cut.add_metric(["shutdown"], stats.get("cut_shutdown", 0))
            yield cut
        registry = getattr(self.state, "ws_registry", None)
        if registry is not None:
            closes = CounterMetricFamily("feedplane_ws_server_closes", "/ws connections closed by the server, by reason",
                                         labels=["reason"])  # fmt: skip
            for reason, count in sorted(registry.closes.items()):
                closes.add_metric([reason], count)
            yield closes
