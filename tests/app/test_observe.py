"""app.observe: request ids (echoed, generated, carried into the reconcile job) and the control server's metrics."""

from __future__ import annotations

import re
from collections.abc import Callable

from arq.constants import job_key_prefix
from arq.jobs import deserialize_job
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis
from starlette.testclient import TestClient

from app.main import create_app
from app.observe import ControlMetrics
from control.jobs import reconcile_job_id
from control.settings import Settings


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text exposition, keyed by (name, sorted labels)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_request_id_is_echoed_or_generated(client: TestClient) -> None:
    assert client.get("/status", headers={"X-Request-ID": "cli-7f3a.1"}).headers["x-request-id"] == "cli-7f3a.1"
    generated = client.get("/status").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    for bad in ("has space", "x" * 129, "a;b", ""):
        echoed = client.get("/nope", headers={"X-Request-ID": bad}).headers["x-request-id"]
        assert echoed != bad and re.fullmatch(r"[0-9a-f]{32}", echoed)  # error answers carry one too


async def test_subscribe_passes_its_request_id_to_the_reconcile_job(client: TestClient, redis_bytes: Redis) -> None:
    resp = client.post("/klines/subscribe", json={"symbol": "BTCUSDT", "tfs": ["1m"]}, headers={"X-Request-ID": "r-42"})
    assert resp.status_code == 202 and resp.headers["x-request-id"] == "r-42"
    version = int(client.get("/status").json()["desired_version"])
    raw = await redis_bytes.get(job_key_prefix + reconcile_job_id(version))
    job = deserialize_job(raw)
    assert job.function == "reconcile" and job.args == (version,) and job.kwargs == {"request_id": "r-42"}


def test_metrics_count_requests_by_route_template_and_status(client: TestClient) -> None:
    client.get("/status")
    client.get("/status")
    client.post("/klines/subscribe", json={"symbol": "BTCUSDT", "tfs": ["3m"]})  # 400
    client.get("/no/such/path")
    client.get("/sse/klines/BTCUSDT?tf=1m&backlog=-1")  # 400 before any stream: the template, not the path
    resp = client.get("/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    got = samples(resp.text)

    def requests(method: str, route: str, status: str) -> float:
        labels = (("method", method), ("route", route), ("status", status))
        return got.get(("feedplane_http_requests_total", labels), 0.0)

    assert requests("GET", "/status", "200") == 2
    assert requests("POST", "/klines/subscribe", "400") == 1
    assert requests("GET", "<unmatched>", "404") == 1
    assert requests("GET", "/sse/klines/{symbol}", "400") == 1
    assert got[("feedplane_http_request_duration_seconds_count", (("method", "GET"), ("route", "/status")))] == 2
    assert got[("feedplane_sse_clients", ())] == 0


def test_rate_limit_refusals_are_counted(make_settings: Callable[..., Settings], redis: Redis) -> None:
    settings = make_settings(CONTROL_TOKEN="c" * 20, READ_TOKEN="r" * 20, RATE_LIMIT_READ_PER_MIN="2")
    app = create_app(settings)
    with TestClient(app) as client:
        codes = [client.get("/status", headers={"Authorization": "Bearer " + "r" * 20}).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        metrics: ControlMetrics = app.state.metrics
        got = samples(metrics.exposition().decode())
        assert got[("feedplane_rate_limit_refusals_total", (("route", "/status"),))] == 1


def test_redis_errors_are_counted(make_settings: Callable[..., Settings]) -> None:
    app = create_app(make_settings(REDIS_URL="redis://127.0.0.1:1/0"))  # nothing listens on port 1
    with TestClient(app) as client:
        resp = client.get("/status")
        assert resp.status_code == 503 and resp.json()["error"]["code"] == "redis_unavailable"
        got = samples(client.get("/metrics").text)
        assert got[("feedplane_redis_errors_total", (("where", "request"),))] == 1
        assert got[("feedplane_http_requests_total", (("method", "GET"), ("route", "/status"), ("status", "503")))] == 1
