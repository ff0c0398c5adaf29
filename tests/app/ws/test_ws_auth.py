"""``/ws`` auth and connection limits in secured mode (real Hypercorn, real Redis): refusals are the spec's error
event then close code 1008; ``?token=`` / ``?access_token=`` / ``Authorization: Bearer``; scopes per topic and for
``ensure``; 3 connections per token; 5 new connections per minute per address; ``?token=`` on the SSE routes."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypercorn.config import Config
from redis.asyncio import Redis

from app.serve import RedactingAccessLogger
from app.ws.access import Registry
from control.redact import MASK
from control.store import ControlStore
from tests.app._auth import ALICE, CONTROL, READ, WRONG, write_secrets
from tests.app.ws._ws import TRADE, WSClient, desire, open_ws

Start = Callable[..., Any]
ALICE_ORDERS = "bitmart:order:alice"


@pytest.fixture
def secured_env(tmp_path: Path) -> dict[str, str]:
    return {"CONTROL_TOKEN": CONTROL, "READ_TOKEN": READ, "ACCOUNTS_FILE": write_secrets(tmp_path)}


async def refused(ws: WSClient) -> tuple[str, str]:
    """(code, message) of a refusal; asserts it is followed by close code 1008."""
    error = await ws.next()
    seen, code = await ws.closed()
    assert error["type"] == "error" and not seen and code == 1008, (error, seen, code)
    return error["error"]["code"], error["error"]["message"]


async def test_refusals_are_unauthorized_error_events_and_1008(
    start_server: Start, session: aiohttp.ClientSession, secured_env: dict[str, str], redis: Redis
) -> None:
    server = await start_server(**secured_env)
    code, message = await refused(await open_ws(session, server))
    assert code == "UNAUTHORIZED" and "?token=" in message
    assert await refused(await open_ws(session, server, f"token={WRONG}")) == ("UNAUTHORIZED", "invalid token")
    both = await open_ws(session, server, f"token={READ}", headers={"Authorization": f"Bearer {READ}"})
    assert (await refused(both))[0] == "UNAUTHORIZED"


async def test_token_ways_and_scopes_per_topic(start_server: Start, session: aiohttp.ClientSession,
                                               secured_env: dict[str, str], redis: Redis) -> None:  # fmt: skip
    await desire(redis, TRADE, ALICE_ORDERS, state="active")
    server = await start_server(**secured_env)
    reader = await open_ws(session, server, f"token={READ}")
    await reader.until("connected")
    await reader.send({"type": "subscribe", "channel": "trades", "instruments": ["SSEAPPUSDT"]})
    assert (await reader.next())["type"] == "subscribed"
    for message in ({"type": "subscribe", "channel": "orders", "parameters": {"account": "alice"}},
                    {"type": "subscribe", "topics": ["bitmart:trade:OTHERUSDT"], "ensure": True}):  # fmt: skip
        await reader.send(message)
        error = await reader.next()
        assert error["error"]["code"] == "UNAUTHORIZED", error
    alice = await open_ws(session, server, headers={"Authorization": f"Bearer {ALICE}"})  # account-only token
    await alice.until("connected")
    await alice.send({"type": "subscribe", "channel": "orders", "parameters": {"account": "alice"}})
    assert (await alice.next())["subscriptions"][0]["topic"] == ALICE_ORDERS
    await alice.send({"type": "subscribe", "topics": [TRADE]})
    assert "read scope" in (await alice.next())["error"]["message"]
    control = await open_ws(session, server, f"access_token={CONTROL}")
    await control.until("connected")
    await control.send({"type": "subscribe", "topics": ["bitmart:trade:OTHERUSDT"], "ensure": True})
    assert (await control.next())["subscriptions"][0]["state"] == "pending"
    await control.send({"type": "subscribe", "channel": "positions", "parameters": {"account": "zed"}, "ensure": True})
    unknown = await control.next()
    assert unknown["error"]["code"] == "INVALID_SUBSCRIPTION" and "unknown account" in unknown["error"]["message"]
    await control.send(
        {"type": "subscribe", "channel": "positions", "parameters": {"account": "alice"}, "ensure": True}
    )
    assert (await control.next())["subscriptions"][0] == {"topic": "bitmart:position:alice", "state": "pending",
                                                          "error": None, "cursor": "0-0"}  # fmt: skip
    assert "bitmart:position:zed" not in await ControlStore(redis).desired()


async def test_three_connections_per_token(start_server: Start, session: aiohttp.ClientSession,
                                           secured_env: dict[str, str], redis: Redis) -> None:  # fmt: skip
    server = await start_server(**secured_env)
    held = [await open_ws(session, server, f"token={READ}") for _ in range(3)]
    for ws in held:
        await ws.until("connected")
    code, message = await refused(await open_ws(session, server, f"token={READ}"))
    assert code == "RATE_LIMITED" and "3 open /ws connections" in message
    other = await open_ws(session, server, f"token={CONTROL}")  # another token is counted on its own
    assert (await other.next())["type"] == "connected"
    registry: Registry = server.app.state.ws_registry
    assert registry.open == 4


async def test_new_connections_per_minute_per_address(start_server: Start, session: aiohttp.ClientSession,
                                                      secured_env: dict[str, str], redis: Redis) -> None:  # fmt: skip
    server = await start_server(**secured_env, WS_CONNECTIONS_PER_TOKEN="0")
    for _ in range(5):
        ws = await open_ws(session, server, f"token={READ}")
        assert (await ws.next())["type"] == "connected"
        await ws.ws.close()
    code, message = await refused(await open_ws(session, server, f"token={CONTROL}"))
    assert code == "RATE_LIMITED" and "5 per minute" in message


async def test_new_connections_behind_a_trusted_proxy_count_per_forwarded_client(
    start_server: Start, session: aiohttp.ClientSession, secured_env: dict[str, str], redis: Redis
) -> None:
    """Behind a load balancer listed in TRUSTED_PROXIES every client has the proxy's address: the per-address
    allowance follows X-Forwarded-For instead, so one client's 5 connections leave another's untouched."""
    server = await start_server(**secured_env, WS_CONNECTIONS_PER_TOKEN="0", TRUSTED_PROXIES="127.0.0.1")
    first = {"X-Forwarded-For": "203.0.113.7"}
    for _ in range(5):
        ws = await open_ws(session, server, f"token={READ}", headers=first)
        assert (await ws.next())["type"] == "connected"
        await ws.ws.close()
    code, _ = await refused(await open_ws(session, server, f"token={READ}", headers=first))
    assert code == "RATE_LIMITED"
    other = await open_ws(session, server, f"token={READ}", headers={"X-Forwarded-For": "203.0.113.8"})
    assert (await other.next())["type"] == "connected"


async def test_sse_routes_accept_token_query(start_server: Start, session: aiohttp.ClientSession,
                                             secured_env: dict[str, str], redis: Redis) -> None:  # fmt: skip
    server = await start_server(**secured_env, RATE_LIMIT_SSE_PER_MIN="0")
    async with session.get(f"{server.url}/sse/trades/SSEAPPUSDT?token={READ}") as resp:
        assert resp.status == 200
    async with session.get(f"{server.url}/sse/orders/alice?token={ALICE}") as resp:
        assert resp.status == 200
    async with session.get(f"{server.url}/status?token={READ}") as resp:
        assert resp.status == 400 and (await resp.json())["error"]["code"] == "token_in_query"


async def test_token_query_is_masked_in_access_log_atoms() -> None:
    lines: list[str] = []

    class Sink(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    sink = logging.getLogger("test.feedplane.ws.access")
    handler = Sink()
    sink.addHandler(handler)
    sink.setLevel(logging.INFO)
    sink.propagate = False
    try:
        config = Config()
        config.accesslog = sink
        config.access_log_format = "%(R)s|%(q)s"
        config.logger_class = RedactingAccessLogger
        for path in ("/ws", "/sse/trades/BTCUSDT"):
            scope = {
                "type": "http",
                "http_version": "1.1",
                "method": "GET",
                "scheme": "http",
                "path": path,
                "query_string": f"batch=0&token={READ}".encode(),
                "client": ("127.0.0.1", 1),
                "headers": [],
            }
            await config.log.access(scope, {"status": 101, "headers": []}, 0.01)  # type: ignore[arg-type]
    finally:
        sink.removeHandler(handler)
    assert lines == [f"GET /ws?batch=0&token={MASK} 1.1|batch=0&token={MASK}",
                     f"GET /sse/trades/BTCUSDT?batch=0&token={MASK} 1.1|batch=0&token={MASK}"]  # fmt: skip
