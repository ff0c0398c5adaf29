"""Keep-alive connections stay usable after an answer given before the request body was read.

Why: Hypercorn 0.18 reuses an HTTP/1.1 connection after a response only when h11 reports both sides ``DONE``
(``hypercorn/protocol/h11.py``, ``H11Protocol._maybe_recycle``, run when the app sends its last response message).
When the app answers before the client's body has fully arrived (400 for ``?wait=999``, 401/403/429 from
``app.auth``, 413, 404, 405), the client side is still ``SEND_BODY``, so Hypercorn closes the TCP connection,
although the response it just sent promised keep-alive (no ``Connection: close``). A keep-alive client (httpx,
aiohttp, requests) sends its next request on that connection and gets "Server disconnected without sending a
response". Whether the rest of the body had arrived in time is a race: a few percent of requests with a 3 KB body.

What ``DrainUnreadBody`` does (outermost ASGI layer, so every answer of every layer passes through it): when a
request has a body (``Content-Length`` > 0 or ``Transfer-Encoding``) and the app starts its response before it has
read that body to the end, the response start is held while the rest of the body is read and discarded. h11 then
reaches ``DONE`` and Hypercorn reuses the connection. The drain is bounded by ``max_bytes`` and ``timeout_s``: a
declared remainder above the bound, a body that turns out longer, or a client that does not send it within the
time gets the response with ``Connection: close`` instead; h11 then closes after that response and the client
knows not to reuse the connection. Requests without a body pass through untouched (h11 is ``DONE`` with them as
soon as their headers are parsed), so SSE streams are not affected.

Limit: the drain reads through the app's ``receive``; an app that reads the body from another task while it sends
its response (none in Feedplane) would race with it and get the ``Connection: close`` answer after ``timeout_s``.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)

#: Bodies up to this size (bytes) are always drained, whatever MAX_BODY_BYTES is: reading 1 MiB over a
#: connection the client keeps is cheaper than the new TCP connection a close would cost it.
DRAIN_MIN_BYTES = 1 << 20
#: Seconds a held answer waits for the rest of the body before it goes out with ``Connection: close``.
DRAIN_TIMEOUT_S = 5.0


class _Body:
    """What the app and the drain have received of the request body."""

    __slots__ = ("declared", "disconnected", "done", "received")

    def __init__(self, declared: int | None) -> None:
        self.declared = declared  # Content-Length, None when chunked
        self.received = 0
        self.done = False
        self.disconnected = False

    def see(self, message: Message) -> None:
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            self.done = not message.get("more_body", False)
        elif message["type"] == "http.disconnect":
            self.done = self.disconnected = True


class DrainUnreadBody:
    """Pure ASGI wrapper: reads and discards an unread request body before the response starts (module docstring).

    ``max_bytes``: most body bytes discarded per request (the caller passes at least MAX_BODY_BYTES);
    ``timeout_s``: most seconds an answer is held waiting for them. Beyond either, the answer gets
    ``Connection: close``.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float = DRAIN_TIMEOUT_S) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        declared = _content_length(headers.get("content-length"))
        if "transfer-encoding" not in headers and not declared:
            await self.app(scope, receive, send)
            return
        body = _Body(declared)

        async def receive_tracked() -> Message:
            if body.disconnected:  # the drain consumed the (only) http.disconnect: repeat it, never block
                return {"type": "http.disconnect"}
            message = await receive()
            body.see(message)
            return message

        async def send_after_drain(message: Message) -> None:
            if message["type"] == "http.response.start" and not body.done and not await self._drain(receive, body):
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
                message = {**message, "headers": [*kept, (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive_tracked, send_after_drain)

    async def _drain(self, receive: Receive, body: _Body) -> bool:
        """Read the rest of ``body``; True when it ended (or the client left) within the bounds."""
        if body.declared is not None and body.declared - body.received > self.max_bytes:
            logger.debug("answer before a %d-byte body: closing the connection", body.declared)
            return False
        start = body.received
        try:
            async with asyncio.timeout(self.timeout_s):
                while not body.done:
                    body.see(await receive())
                    if body.received - start > self.max_bytes:
                        logger.debug("answer before a body over %d bytes: closing the connection", self.max_bytes)
                        return False
        except TimeoutError:
            logger.debug("request body not received within %.1f s: closing the connection", self.timeout_s)
            return False
        return True


def _content_length(value: str | None) -> int | None:
    """The Content-Length as an int; None when absent (h11 has already refused a malformed one)."""
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
