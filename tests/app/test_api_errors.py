"""JSON API: bad input answers the error envelope and changes nothing (a table of requests), caps, 405, Redis
down (503), unexpected errors (500), the gap summary."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis
from starlette.testclient import TestClient

from app.main import create_app
from control.settings import Settings
from tests.app._api import KLINE_BODY, assert_envelope, snapshot

# -- bad input: envelope, status, and Redis untouched ----------------------------------------------------

BAD_REQUESTS: list[tuple[str, str, str, dict[str, Any], int, str, str | None]] = [
    ("invalid json", "POST", "/klines/subscribe",
     {"content": b"{nope", "headers": {"content-type": "application/json"}}, 400, "invalid_json", None),
    ("json array", "POST", "/klines/subscribe", {"json": [KLINE_BODY]}, 400, "invalid_json", None),
    ("empty body", "POST", "/trades/subscribe", {}, 400, "invalid_json", None),
    ("missing symbol", "POST", "/klines/subscribe", {"json": {"tfs": ["1m"]}}, 400, "validation_error", "symbol"),
    ("bad symbol", "POST", "/klines/subscribe", {"json": {"symbol": "BTC USDT!", "tfs": ["1m"]}}, 400,
     "validation_error", "symbol"),
    ("bad symbol in bulk", "POST", "/trades/subscribe", {"json": {"symbols": ["BTCUSDT", "$"]}}, 400,
     "validation_error", "symbols"),
    ("unknown field", "POST", "/klines/subscribe", {"json": {**KLINE_BODY, "foo": 1}}, 400, "validation_error", "foo"),
    ("tfs on trades", "POST", "/trades/subscribe", {"json": KLINE_BODY}, 400, "validation_error", "tfs"),
    ("tfs not a list", "POST", "/klines/subscribe", {"json": {"symbol": "BTCUSDT", "tfs": "1m"}}, 400,
     "validation_error", "tfs"),
    ("tfs empty", "POST", "/klines/subscribe", {"json": {"symbol": "BTCUSDT", "tfs": []}}, 400, "validation_error",
     "tfs"),
    ("tf 3m", "POST", "/klines/subscribe", {"json": {"symbol": "BTCUSDT", "tfs": ["1m", "3m"]}}, 400,
     "validation_error", "tfs"),
    ("unknown exchange", "POST", "/klines/subscribe", {"json": {**KLINE_BODY, "exchange": "kraken"}}, 400,
     "validation_error", "exchange"),
    ("too many symbols", "POST", "/trades/subscribe", {"json": {"symbols": [f"S{i:03d}USDT" for i in range(201)]}},
     400, "validation_error", "symbols"),
    ("depth levels 0", "POST", "/depth/subscribe", {"json": {"symbol": "BTCUSDT", "levels": 0}}, 400,
     "validation_error", "levels"),
    ("depth levels 101", "POST", "/depth/subscribe", {"json": {"symbol": "BTCUSDT", "levels": 101}}, 400,
     "validation_error", "levels"),
    ("bitmart depth levels 51", "POST", "/depth/subscribe", {"json": {"symbol": "BTCUSDT", "levels": 51}}, 400,
     "validation_error", "levels"),
    ("gate depth levels 101", "POST", "/depth/subscribe",
     {"json": {"symbol": "BTC_USDT", "exchange": "gateio", "levels": 101}}, 400, "validation_error", "levels"),
    ("depth levels string", "POST", "/depth/subscribe", {"json": {"symbol": "BTCUSDT", "levels": "20"}}, 400,
     "validation_error", "levels"),
    ("gate has no 2h klines", "POST", "/klines/subscribe",
     {"json": {"symbol": "BTC_USDT", "tfs": ["2h"], "exchange": "gateio"}}, 400, "validation_error", "tfs"),
    ("ticker bad symbol", "POST", "/ticker/subscribe", {"json": {"symbol": "B T C"}}, 400, "validation_error",
     "symbol"),
    ("wait=abc", "POST", "/klines/subscribe?wait=abc", {"json": KLINE_BODY}, 400, "validation_error", "wait"),
    ("wait=31", "POST", "/klines/subscribe?wait=31", {"json": KLINE_BODY}, 400, "validation_error", "wait"),
    ("stop clear not bool", "POST", "/stop", {"json": {"clear": "maybe"}}, 400, "validation_error", "clear"),
    ("unsubscribe tf 3m", "POST", "/klines/unsubscribe", {"json": {"symbol": "BTCUSDT", "tfs": ["3m"]}}, 400,
     "validation_error", "tfs"),
    ("body over limit", "POST", "/klines/subscribe",
     {"content": orjson.dumps({"symbols": ["BTCUSDT"] * 1000, "tfs": ["1m"]}),
      "headers": {"content-type": "application/json"}}, 413, "payload_too_large", None),
    ("chunked body over limit", "POST", "/trades/subscribe",  # no Content-Length: the limit trips while reading
     {"content": [b'{"symbols": [', b'"A",' * 4000, b"]}"]}, 413, "payload_too_large", None),
    ("unknown path", "GET", "/nope", {}, 404, "not_found", None),
    ("unknown post path", "POST", "/foo/subscribe", {"json": KLINE_BODY}, 404, "not_found", None),
    ("wrong method", "GET", "/klines/subscribe", {}, 405, "method_not_allowed", None),
    ("wrong method on status", "POST", "/status", {}, 405, "method_not_allowed", None),
    ("private: no account configured", "POST", "/orders/subscribe", {}, 400, "validation_error", "account"),
    ("private: unknown field", "POST", "/orders/subscribe", {"json": {"symbol": "BTCUSDT"}}, 400, "validation_error",
     "symbol"),
    ("private: bad account name", "POST", "/positions/subscribe", {"json": {"account": "bad name!"}}, 400,
     "validation_error", "account"),
    ("private: account not a string", "POST", "/balances/subscribe", {"json": {"account": 7}}, 400,
     "validation_error", "account"),
    ("private: unknown exchange", "POST", "/orders/unsubscribe", {"json": {"exchange": "kraken"}}, 400,
     "validation_error", "exchange"),
    ("private: json array", "POST", "/balances/unsubscribe", {"json": []}, 400, "invalid_json", None),
    ("private: wait=abc", "POST", "/orders/subscribe?wait=abc", {}, 400, "validation_error", "wait"),
    ("optional body of whitespace", "POST", "/balances/unsubscribe", {"content": b"\n"}, 400, "invalid_json", None),
    ("stop clear a number", "POST", "/stop", {"json": {"clear": 0}}, 400, "validation_error", "clear"),
    ("unknown query parameter", "POST", "/klines/subscribe?wiat=5", {"json": KLINE_BODY}, 400, "validation_error",
     "wiat"),
    ("unknown query on unsubscribe", "POST", "/klines/unsubscribe?x=1", {"json": KLINE_BODY}, 400,
     "validation_error", "x"),
    ("unknown query on sse", "GET", "/sse?topic=bitmart:trade:BTCUSDT&tpoic=x", {}, 400, "validation_error",
     "tpoic"),
    ("status filter unknown state", "GET", "/status?state=gone", {}, 400, "validation_error", "state"),
    ("help format unknown", "GET", "/help?format=xml", {}, 400, "validation_error", "format"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "method", "path", "kwargs", "status", "code", "field"), BAD_REQUESTS,
                         ids=[b[0] for b in BAD_REQUESTS])  # fmt: skip
async def test_bad_input_answers_envelope_and_changes_nothing(
    client: TestClient, redis_bytes: Redis, name: str, method: str, path: str, kwargs: dict[str, Any], status: int,
    code: str, field: str | None,
) -> None:  # fmt: skip
    client.post("/klines/subscribe", json={"symbol": "ETHUSDT", "tfs": ["1h"]})
    client.post("/stop")
    before = await snapshot(redis_bytes)
    assert before  # something to protect
    err = assert_envelope(client.request(method, path, **kwargs), status, code)
    if field is not None:
        assert field in err["details"], err
    assert await snapshot(redis_bytes) == before


async def test_depth_levels_are_capped_per_exchange(client: TestClient, redis_bytes: Redis) -> None:
    # BitMart's depthIncrease keeps 50 levels (exchanges.md §1.6): more would publish levels that never update.
    before = await snapshot(redis_bytes)
    resp = client.post("/depth/subscribe", json={"symbols": ["BTCUSDT", "ETHUSDT"], "levels": 51})
    details = assert_envelope(resp, 400, "validation_error")["details"]
    assert details == {"levels": ["bitmart keeps at most 50 order-book levels per side; ask for 1..50"]}
    assert await snapshot(redis_bytes) == before
    for body in ({"symbol": "BTCUSDT", "levels": 50}, {"symbol": "BTC_USDT", "exchange": "gateio", "levels": 100},
                 {"symbol": "BTCUSDT", "exchange": "binanceusdm", "levels": 100}):  # fmt: skip
        assert client.post("/depth/subscribe", json=body).status_code == 202, body
    # levels are ignored on unsubscribe: a client holding an older, larger value can still leave
    resp = client.post("/depth/unsubscribe", json={"symbol": "BTCUSDT", "levels": 100})
    assert resp.status_code == 200 and resp.json()["removed"] == ["bitmart:depth:BTCUSDT"]


def test_tf_error_details_are_per_item(client: TestClient) -> None:
    resp = client.post("/klines/subscribe", json={"symbol": "BTCUSDT", "tfs": ["1m", "3m"]})
    details = assert_envelope(resp, 400, "validation_error")["details"]
    assert list(details) == ["tfs"] and list(details["tfs"]) == ["1"]
    assert details["tfs"]["1"][0].startswith("unknown timeframe '3m'")


def test_405_keeps_allow_header(client: TestClient) -> None:
    resp = client.get("/stop")
    assert_envelope(resp, 405, "method_not_allowed")
    assert resp.headers["allow"] == "POST"


# -- Redis down -----------------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_redis_down_answers_503(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(REDIS_URL=f"redis://127.0.0.1:{_closed_port()}/15")
    with TestClient(create_app(settings)) as c:
        assert_envelope(c.get("/status"), 503, "redis_unavailable")
        assert_envelope(c.post("/klines/subscribe", json=KLINE_BODY), 503, "redis_unavailable")
        assert_envelope(c.post("/stop"), 503, "redis_unavailable")
        assert_envelope(c.get("/sse?topic=bitmart:trade:BTCUSDT"), 503, "redis_unavailable")
        assert_envelope(c.post("/klines/subscribe", json={"tfs": ["1m"]}), 400, "validation_error")  # still 400
        assert c.get("/help").status_code == 200


def test_unexpected_error_is_500_envelope(settings: Settings, redis: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as c:

        async def boom(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError("boom")

        monkeypatch.setattr(app.state.dispatcher, "subscribe", boom)
        err = assert_envelope(c.post("/klines/subscribe", json=KLINE_BODY), 500, "internal_error")
    assert "boom" not in err["message"]  # no internals leak


def test_gap_summary_counts_publisher_gaps_per_reason() -> None:
    from app.routes.status import gap_summary

    connections = [{"gaps": {"takeover": 2}, "books": {"gaps": 1}}]
    workers = [{"publisher": {"gaps_published": 4, "gaps_by_reason": {"redis_backlog_overflow": 1, "redis_error": 3}}},
               {"publisher": {"gaps_published": 2}}]  # fmt: skip
    assert gap_summary(connections, workers) == {
        "book_sequence": 1, "redis_backlog_overflow": 3, "redis_error": 3, "takeover": 2,
    }
