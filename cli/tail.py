"""``feedplane tail``: follow topics over the control server's SSE, resuming after a dropped connection.

The stream is ``GET /sse?topic=..`` (``app.routes.sse``). Each SSE event's ``id:`` is the resume cursor; when the
connection drops (server restart, network), the reader reconnects after ``retry_s`` with ``Last-Event-ID`` set to
the last id seen, so nothing is lost or repeated (the server's resume guarantee). ``--from-id`` starts from a
given cursor the same way. ``gap`` events (a resume that could not be exact) are printed like any other event.
``ready`` and ``bye`` are control events: ``ready`` is not printed, ``bye`` (server shutdown) triggers the resume.

Output: one JSON line per event (the event exactly as stored), or with ``pretty`` a compact table row per event.
An HTTP error answer (401, 403, 400 ...) ends the tail with the server's message (``CliError``); only a reconnect
answered 429 (the SSE rate limit) or 503 (Redis away) is tried again, after its ``Retry-After``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from cli.client import ApiClient, CliError, error_from

#: Events the server sends for the stream itself, not data.
CONTROL_EVENTS = frozenset({"ready", "bye"})
#: Answers to a *reconnect* that are waited out (``Retry-After``) instead of ending the tail: rate limit, Redis away.
RETRIED = frozenset({429, 503})
#: Longest wait for one ``Retry-After``, seconds.
MAX_RETRY_AFTER_S = 60.0


def _retry_after(value: str | None, default_s: float) -> float:
    try:
        return min(MAX_RETRY_AFTER_S, max(default_s, float(value or "")))
    except ValueError:
        return default_s


@dataclass(slots=True)
class SseEvent:
    """One parsed SSE event: ``event`` name, ``data`` text, ``id`` (cursor) or None."""

    event: str
    data: str
    id: str | None


class SseParser:
    """Incremental ``text/event-stream`` parser (lines in, events out); comments and ``retry:`` are skipped."""

    def __init__(self) -> None:
        self._event = "message"
        self._data: list[str] = []
        self._id: str | None = None

    def feed(self, line: str) -> SseEvent | None:
        """One line without its line ending; returns the event a blank line completes."""
        if not line:
            if not self._data:
                self._event, self._id = "message", None
                return None
            event = SseEvent(self._event, "\n".join(self._data), self._id)
            self._event, self._data, self._id = "message", [], None
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            self._id = value
        return None


async def tail(
    client: ApiClient,
    topics: Sequence[str],
    emit: Callable[[SseEvent, Any], None],
    *,
    from_id: str | None = None,
    retry_s: float = 1.0,
    max_events: int | None = None,
    on_connect: Callable[[int], None] | None = None,
) -> str | None:
    """Follow ``topics`` until ``max_events`` data events were emitted (None: forever); returns the last cursor.

    ``emit(event, decoded JSON data)`` is called per data event (gap events included). ``on_connect(n)`` is called
    after each successful (re)connection, n = 1, 2, ... Raises ``CliError`` for an HTTP error answer.
    """
    cursor = from_id
    emitted = 0
    connects = 0
    params = [("topic", t) for t in topics]
    while True:
        headers = client.headers({"Accept": "text/event-stream", **({"Last-Event-ID": cursor} if cursor else {})})
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=10)) as http,
                http.get(client.base + "/sse", params=params, headers=headers) as resp,
            ):
                if resp.status in RETRIED and connects:  # a resume refused for now: wait as told, try again
                    await asyncio.sleep(_retry_after(resp.headers.get("Retry-After"), retry_s))
                    continue
                if resp.status >= 400:
                    text = await resp.text()
                    try:
                        body = orjson.loads(text)
                    except orjson.JSONDecodeError:
                        body = None
                    raise error_from(resp.status, body, text)
                connects += 1
                if on_connect is not None:
                    on_connect(connects)
                parser = SseParser()
                async for raw in resp.content:
                    event = parser.feed(raw.decode("utf-8", errors="replace").rstrip("\r\n"))
                    if event is None:
                        continue
                    if event.id:
                        cursor = event.id
                    if event.event in CONTROL_EVENTS:
                        continue
                    try:
                        data = orjson.loads(event.data)
                    except orjson.JSONDecodeError:
                        data = event.data
                    emit(event, data)
                    emitted += 1
                    if max_events is not None and emitted >= max_events:
                        return cursor
        except CliError:
            raise
        except (aiohttp.ClientError, TimeoutError, ConnectionError):
            pass  # dropped: resume from the cursor
        await asyncio.sleep(retry_s)
