"""The dashboard's server side: the page and assets (public, no CDN), the SSE feed (token as ``?access_token=``),
and the sampler's measures (rate, latency, reconnect/gap log) against a real Redis.

The page itself is driven in a real browser by ``tests/e2e/test_dashboard_browser.py``.
"""

from __future__ import annotations

import re
import time
from types import SimpleNamespace
from typing import Any

import orjson
from redis.asyncio import Redis
from starlette.testclient import TestClient

from app.dashboard_feed import CLOCK_SKEW_LIMIT_MS, DashboardFeed, counter_events, latency
from app.routes.dashboard import ASSETS, STATIC_DIR
from control import keys
from control.store import ACTIVE, ControlStore
from tests.app._auth import CONTROL, READ, WRONG, assert_error, read_events

TOPIC = "binanceusdm:trade:DASHUSDT"


def _entry(ms: int, ts_exchange: int | None, ts_received: int | None) -> tuple[bytes, dict[bytes, bytes]]:
    event = {"type": "trade", "ts_exchange": ts_exchange, "ts_received": ts_received}
    return f"{ms}-0".encode(), {b"d": orjson.dumps(event)}


# -- pure parts ----------------------------------------------------------------------------------------


def test_latency_uses_the_exchange_clock_when_comparable() -> None:
    now = 1_800_000_000_000
    entries = [_entry(now, now - 12, now - 2), _entry(now + 5, now - 3, now + 4), _entry(now + 9, now, now + 8)]
    assert latency(entries) == (9.0, "exchange")  # Redis ms - ts_exchange: 12, 8, 9


def test_latency_falls_back_to_the_worker_clock_for_replayed_times() -> None:
    now = 1_800_000_000_000
    replayed = now - 2 * 365 * 86_400_000  # a 2024 recording replayed today
    entries = [_entry(now, replayed, now - 1), _entry(now + 1, now - CLOCK_SKEW_LIMIT_MS - 1, now - 2)]
    assert latency(entries) == (2.0, "worker")  # median of 1 and 3
    assert latency([_entry(now, None, now - 4)]) == (4.0, "worker")  # BitMart klines: no exchange time


def test_latency_skips_malformed_entries() -> None:
    bad = [(b"1-0", {b"x": b"{}"}), (b"2-0", {b"d": b"not json"}), (b"3-0", {b"d": b"[1]"})]
    assert latency(bad) == (None, None)


def _status(reconnects: int, reasons: dict[str, int], gaps: dict[str, int], book_gaps: int = 0) -> dict[str, Any]:
    conn = {"id": "bitmart.public.1", "exchange": "bitmart", "reconnects": reconnects, "reasons": reasons,
            "gaps": gaps, "books": {"gaps": book_gaps}, "last_error": "closed by peer: code 1006"}  # fmt: skip
    worker = {"id": "w1", "publisher": {"gaps_by_reason": {"redis_backlog_overflow": 0}}}
    return {"connections": [conn], "workers": [worker]}


def test_counter_events_reports_what_grew_since_the_previous_tick() -> None:
    first = _status(0, {}, {})
    assert counter_events(None, first, 1) == []  # the first tick is the baseline
    later = _status(2, {"closed_by_peer": 2}, {"closed_by_peer": 1}, book_gaps=1)
    later["workers"][0]["publisher"]["gaps_by_reason"]["redis_backlog_overflow"] = 3
    events = counter_events(first, later, 5)
    assert {(e["kind"], e["reason"], e["count"], e["source"]) for e in events} == {
        ("reconnect", "closed_by_peer", 2, "bitmart.public.1"),
        ("gap", "closed_by_peer", 1, "bitmart.public.1"),
        ("gap", "book_sequence", 1, "bitmart.public.1"),
        ("gap", "redis_backlog_overflow", 3, "w1"),
    }
    reconnect = next(e for e in events if e["kind"] == "reconnect")
    assert reconnect["detail"] == "closed by peer: code 1006" and reconnect["at"] == 5
    assert counter_events(later, later, 6) == []


# -- page and assets -----------------------------------------------------------------------------------


def test_page_and_assets_need_no_token_and_load_nothing_from_elsewhere(secured: TestClient) -> None:
    page = secured.get("/dashboard")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<meta name="feedplane-auth" content="secured">' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for url in re.findall(r'(?:src|href)="([^"]+)"', page.text):
        assert url.startswith(("/dashboard/assets/", "data:")), url  # no CDN
        if url.startswith("/"):
            assert secured.get(url).status_code == 200, url
    for name, (file, media_type) in ASSETS.items():
        resp = secured.get(f"/dashboard/assets/{name}")
        assert resp.status_code == 200 and resp.headers["content-type"] == media_type
        assert resp.content == (STATIC_DIR / file).read_bytes()
    assert "MIT License" in secured.get("/dashboard/assets/uPlot.LICENSE").text
    assert secured.get("/dashboard/assets/../main.py").status_code in (401, 404)
    for name in ("index.html", "vendor/uPlot.LICENSE", "nothing.js"):  # only the listed names: 404 for the rest
        assert_error(secured.get(f"/dashboard/assets/{name}"), 404, "not_found")
    assert_error(secured.post("/dashboard/assets/dashboard.js"), 405, "method_not_allowed")
    js = secured.get("/dashboard/assets/dashboard.js")
    again = secured.get("/dashboard/assets/dashboard.js", headers={"If-None-Match": js.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert_error(secured.post("/dashboard"), 405, "method_not_allowed")


def test_page_says_open_mode(open_client: TestClient) -> None:
    assert '<meta name="feedplane-auth" content="open">' in open_client.get("/dashboard").text


# -- the feed ------------------------------------------------------------------------------------------


def test_feed_needs_a_read_token_and_takes_it_from_the_query(secured: TestClient) -> None:
    assert_error(secured.get("/dashboard/feed"), 401, "unauthorized")
    assert_error(secured.get(f"/dashboard/feed?access_token={WRONG}"), 401, "unauthorized")
    for token in (READ, CONTROL):
        with secured.stream("GET", f"/dashboard/feed?access_token={token}") as resp:
            assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
            event = read_events(resp, "snapshot")[-1]
        snapshot = orjson.loads(event["data"])
        assert {"server_time", "workers", "connections", "subscriptions", "gaps", "log"} <= set(snapshot)
        assert event["retry"] == "2000"
        assert token not in str(snapshot)


async def test_measure_counts_events_rate_and_latency(make_settings: Any, redis: Redis, redis_bytes: Redis) -> None:
    store = ControlStore(redis)
    await store.add_desired([TOPIC], 1)
    await store.set_states({TOPIC: {"state": ACTIVE, "error": None, "since": 1, "conn": "c1"}})
    state = SimpleNamespace(store=store, settings=make_settings())
    feed = DashboardFeed(state, redis_bytes)
    stream = keys.event_stream(TOPIC)
    now = int(time.time() * 1000)
    await redis.xadd(stream, {"d": orjson.dumps({"ts_exchange": now - 5, "ts_received": now - 1}).decode()})
    first = await feed.sample()
    record = next(s for s in first["subscriptions"] if s["topic"] == TOPIC)
    assert record["events"] == 1 and record["rate"] is None and record["latency_from"] == "exchange"
    assert 0 <= record["latency_ms"] < 5_000
    for _ in range(4):
        await redis.xadd(stream, {"d": orjson.dumps({"ts_exchange": None, "ts_received": now}).decode()})
    second = await feed.measure([TOPIC])
    assert second[TOPIC]["events"] == 5 and second[TOPIC]["rate"] > 0
    assert second[TOPIC]["latency_from"] == "worker"  # only the 4 new entries are sampled
    third = await feed.measure([TOPIC])
    assert third[TOPIC] == {"events": 5, "rate": 0.0, "latency_ms": None, "latency_from": None}
    assert (await feed.measure(["bitmart:trade:NOSTREAM"]))["bitmart:trade:NOSTREAM"]["events"] == 0


async def test_one_sampler_serves_every_client_and_stops_with_the_last(
    make_settings: Any, redis: Redis, redis_bytes: Redis
) -> None:
    feed = DashboardFeed(SimpleNamespace(store=ControlStore(redis), settings=make_settings()), redis_bytes, 0.05)
    feed.join()
    feed.join()
    task = feed._task
    number, snapshot = await feed.next(0)
    assert number >= 1 and "subscriptions" in snapshot
    later, _ = await feed.next(number)
    assert later > number and feed._task is task  # the second client shares the task
    await feed.leave()
    assert feed._task is task and not task.done()
    await feed.leave()
    assert feed._task is None and task.done() and feed.clients == 0



async def test_redis_down_gives_an_error_snapshot_not_a_dead_feed(make_settings: Any) -> None:
    from control.redis_client import make_redis
    from tests.e2e.harness import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    dead, dead_bytes = make_redis(url, retries=0), make_redis(url, decode=False, retries=0)
    feed = DashboardFeed(SimpleNamespace(store=ControlStore(dead), settings=make_settings()), dead_bytes, 0.05)
    feed.join()
    try:
        number, snapshot = await feed.next(0)
        assert snapshot["error"] == "redis_unavailable" and snapshot["log"] == []
        later, _ = await feed.next(number)  # the sampler keeps going, and picks up once Redis is back
        assert later > number
    finally:
        await feed.leave()
        await dead.aclose()
        await dead_bytes.aclose()
