"""Auth: private SSE per account (the account matrix, streaming its own topic, public SSE refusing private topics)."""

from __future__ import annotations

import orjson
import pytest
from redis.asyncio import Redis
from starlette.testclient import TestClient

from app.sse_cursor import fingerprint
from control import keys
from tests.app._auth import ALICE, BOB, CONTROL, FILE_CONTROL, READ, assert_error, call, read_events

# -- private SSE per account -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["orders", "positions", "balances"])
def test_private_sse_account_matrix(secured: TestClient, kind: str) -> None:
    base = f"/sse/{kind}"
    assert call(secured, "GET", f"{base}/alice", ALICE).status_code == 200
    assert call(secured, "GET", f"{base}/alice?exchange=bitmart", ALICE).status_code == 200
    assert call(secured, "GET", f"{base}/bob", BOB).status_code == 200
    assert call(secured, "GET", f"{base}/alice", CONTROL).status_code == 200
    assert call(secured, "GET", f"{base}/bob", FILE_CONTROL).status_code == 200
    err = assert_error(call(secured, "GET", f"{base}/bob", ALICE), 403, "forbidden")
    assert "bitmart:bob" in err["message"]
    assert_error(call(secured, "GET", f"{base}/alice", BOB), 403, "forbidden")
    assert_error(call(secured, "GET", f"{base}/alice?exchange=binanceusdm", ALICE), 403, "forbidden")
    assert_error(call(secured, "GET", f"{base}/alice", READ), 403, "forbidden")  # public read is not enough
    assert_error(call(secured, "GET", f"{base}/al:ice", ALICE), 400, "validation_error")
    assert_error(call(secured, "GET", f"{base}/alice?exchange=kraken", ALICE), 400, "validation_error")


@pytest.mark.parametrize(("kind", "channel"), [("orders", "order"), ("positions", "position"), ("balances", "balance")])
async def test_private_sse_streams_its_topic(secured: TestClient, redis: Redis, kind: str, channel: str) -> None:
    topic = f"gateio:{channel}:alice"
    payload = orjson.dumps({"type": channel, "exchange": "gateio", "account": "alice", "id": "42"})
    await redis.xadd(keys.event_stream(topic), {keys.STREAM_FIELD: payload}, id="1732300000000-0")
    await redis.xadd(keys.event_stream(f"gateio:{channel}:bob"), {keys.STREAM_FIELD: b'{"type":"x"}'})
    url = f"/sse/{kind}/alice?exchange=gate&backlog=5"  # alias accepted
    with secured.stream("GET", url, headers={"Authorization": f"Bearer {CONTROL}"}) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        first, ready = read_events(resp, "ready")
    assert first == {"id": f"{fingerprint([topic])}:1732300000000-0", "event": channel, "data": payload.decode(),
                     "retry": "2000"}  # fmt: skip
    assert orjson.loads(ready["data"]) == {"type": "ready", "topics": [topic]}


def test_public_sse_refuses_private_topics(secured: TestClient) -> None:
    for token in (READ, CONTROL):
        err = assert_error(call(secured, "GET", "/sse?topic=bitmart:order:alice", token), 400, "validation_error")
        assert "/sse/orders/{account}" in err["details"]["topic"]["0"][0]
