"""cli.tail against a small real SSE server: resume with Last-Event-ID after a drop, a refused reconnect (429)
waited out, an error answer on the first connect reported with the server's message."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from cli.client import ApiClient, CliError
from cli.tail import SseEvent, tail

pytestmark = pytest.mark.integration


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, list[str | None]]]:
    """1st connection: ready + events 1, 2, then the socket ends; 2nd: 429; later: events after Last-Event-ID."""
    seen: list[str | None] = []

    async def sse(request: web.Request) -> web.StreamResponse:
        seen.append(request.headers.get("Last-Event-ID"))
        if request.query.getall("topic") != ["t:a"]:
            return web.json_response({"error": {"code": "validation_error", "message": "bad topic"}}, status=400)
        if len(seen) == 2:
            return web.json_response({"error": {"code": "rate_limited", "message": "slow down"}}, status=429,
                                     headers={"Retry-After": "0"})  # fmt: skip
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        start = int(seen[-1] or 0)
        await resp.write(b'event: ready\ndata: {"type":"ready"}\nid: ' + str(start).encode() + b"\n\n")
        for n in range(start + 1, start + 3):
            await resp.write(b': ping\n\nevent: trade\ndata: {"n": %d}\nid: %d\n\n' % (n, n))
        return resp  # the stream ends: the client must resume

    app = web.Application()
    app.router.add_get("/sse", sse)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", seen
    await runner.cleanup()


async def test_resumes_after_each_drop_without_loss_or_repeat(server: tuple[str, list[str | None]]) -> None:
    base, seen = server
    got: list[Any] = []
    connects: list[int] = []

    def emit(event: SseEvent, data: Any) -> None:
        got.append((event.event, data["n"], event.id))

    cursor = await tail(ApiClient(base), ["t:a"], emit, retry_s=0.01, max_events=5, on_connect=connects.append)
    assert [n for _, n, _ in got] == [1, 2, 3, 4, 5] and all(kind == "trade" for kind, _, _ in got)
    assert cursor == "5" and seen[:4] == [None, "2", "2", "4"]  # the 429 was waited out, same cursor again
    assert connects == [1, 2, 3]


async def test_from_id_and_an_error_answer(server: tuple[str, list[str | None]]) -> None:
    base, seen = server
    got: list[int] = []
    await tail(ApiClient(base), ["t:a"], lambda e, d: got.append(d["n"]), from_id="40", max_events=1)
    assert got == [41] and seen == ["40"]
    with pytest.raises(CliError) as err:
        await tail(ApiClient(base), ["t:other"], lambda e, d: None, max_events=1)
    assert (err.value.status, err.value.code, err.value.message) == (400, "validation_error", "bad topic")
