"""Private-session pieces (issue #3): Retry-After on a private REST snapshot, a data event activating a pending
topic (a server that acks nothing)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from control.accounts import Account
from control.settings import Settings
from scripts.simulator import ExchangeSimulator

from . import _private_world as pw
from ._private_world import (
    _async,
    bitmart_order_push,
    tok,
    wait_until,
)

pytestmark = pytest.mark.timeout(60)

# the shared fixtures, registered in this module (redaction_calls is autouse)
sim, world, make_env, session, redaction_calls, runtimes, app_server = (pw.sim, pw.world, pw.make_env, pw.session,
                                                                         pw.redaction_calls, pw.runtimes, pw.app_server)  # fmt: skip


# -- pieces: Retry-After on private REST, data activating a pending topic -------------------------------------


class Recorder:
    """Publisher stand-in: keeps what is published and the states set."""

    congested = False

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.states: dict[str, dict[str, Any]] = {}

    def publish(self, topic: str, event: dict[str, Any], conn_id: str | None = None) -> None:
        self.events.append((topic, event))

    def set_state(self, topic: str, record: dict[str, Any], conn_id: str | None = None) -> None:
        self.states[topic] = record

    async def room(self) -> None:
        return None


@pytest.mark.parametrize("status", [429, 418])
async def test_private_snapshot_honours_retry_after(status: int, session: aiohttp.ClientSession) -> None:
    """A rate-limited snapshot call waits the server's Retry-After (longer than its own backoff) before retrying."""
    from aiohttp import web

    from workers.exchanges import REGISTRY
    from workers.private import PrivateSession

    calls: list[float] = []
    loop = asyncio.get_running_loop()

    async def open_orders(request: web.Request) -> web.Response:
        calls.append(loop.time())
        if len(calls) == 1:
            return web.json_response({"code": 30013, "message": "rate limited"}, status=status,
                                     headers={"Retry-After": "0.4"})  # fmt: skip
        order = bitmart_order_push("R-1")["data"][0]["order"]
        return web.json_response({"code": 1000, "message": "Ok", "data": [order], "trace": "t"})

    app = web.Application()
    app.router.add_get("/contract/private/get-open-orders", open_orders)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    recorder = Recorder()
    account = Account("bitmart", "x", tok("k"), tok("s"), memo=tok("m"))
    private = PrivateSession(account=account, adapter=REGISTRY["bitmart"], session=session, publisher=recorder,  # type: ignore[arg-type]
                             ws_base_url="ws://unused", rest_base_url=f"http://127.0.0.1:{port}",
                             retry_initial_s=0.01, retry_max_s=0.05)  # fmt: skip
    private.bind("c1", lambda topic: True)
    try:
        private.want_snapshot("bitmart:order:x")
        await wait_until(lambda: _async(any(e.get("order_id") == "R-1" for _, e in recorder.events)),
                         what="the snapshot after the 429")  # fmt: skip
    finally:
        await private.close()
        await runner.cleanup()
    assert len(calls) == 2 and calls[1] - calls[0] >= 0.4
    assert [e["type"] for _, e in recorder.events] == ["gap", "order"]
    assert recorder.events[0][1]["reason"] == "subscribe" and recorder.events[1][1]["snapshot"] is True
    assert private.stats["rest_failures"] == 1 and f"HTTP {status}" in (private.last_error or "")


class _NoAckParser:
    """Wraps a real parser and drops every ack (an older Gate server that echoes no request id)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def parse(self, raw: str | bytes, ts_received_ms: int) -> Any:
        parsed = self.inner.parse(raw, ts_received_ms)
        parsed.acks = []
        return parsed


class _NoAckAdapter:
    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def new_parser(self) -> _NoAckParser:
        return _NoAckParser(self._inner.new_parser())


async def test_data_event_activates_a_pending_topic(
    make_settings: Callable[..., Settings], session: aiohttp.ClientSession
) -> None:
    from control.topics import Topic
    from workers.connection import ExchangeConnection
    from workers.exchanges import REGISTRY

    async with ExchangeSimulator(rate=50.0, loop=True) as simulator:
        recorder = Recorder()
        topic = Topic.parse("gateio:trade:BTC_USDT")
        conn = ExchangeConnection(conn_id="g1", adapter=_NoAckAdapter(REGISTRY["gateio"]), url=simulator.gate_ws_url,  # type: ignore[arg-type]
                                  settings=make_settings(SUBSCRIBE_DELAY_MS="0"), session=session,
                                  publisher=recorder)  # type: ignore[arg-type]  # fmt: skip
        conn.set_topics([topic])
        task = asyncio.create_task(conn.run())
        try:
            await wait_until(lambda: _async(recorder.states.get(str(topic), {}).get("state") == "active"),
                             what="active without an ack")  # fmt: skip
        finally:
            await conn.stop(timeout_s=2.0)
            await task
    assert any(t == str(topic) and e["type"] == "trade" for t, e in recorder.events)

