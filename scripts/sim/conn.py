"""What the simulator records about sockets and calls, and the small helpers every simulator module uses."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson
from aiohttp import web

__all__ = [
    "CLOSE_TIMEOUT_S",
    "ReceivedFrame",
    "RestRequest",
    "SimConnection",
    "guarded",
    "int_param",
    "json_response",
    "read_json_body",
    "reraise_if_cancelling",
]

CLOSE_TIMEOUT_S = 2.0  # how long a server-initiated close waits for the client's close reply


class ReceivedFrame(NamedTuple):
    """One client->server text frame: ``monotonic_s`` is ``time.monotonic()`` at receipt."""

    conn_id: int
    exchange: str
    monotonic_s: float
    text: str


class RestRequest(NamedTuple):
    """One REST call: ``path_qs`` as requested (a Binance ``signature`` shown as ``***``), ``status`` as answered."""

    exchange: str
    monotonic_s: float
    path_qs: str
    status: int
    method: str = "GET"


@dataclass(eq=False)
class SimConnection:
    """A live client socket, for observation (the simulator owns and mutates it).

    ``route``: ``api`` (BitMart), ``user`` (BitMart private), ``public`` | ``market`` | ``legacy`` (Binance
    unrouted ``/ws``, ``/stream``), ``private`` (Binance user data) or ``usdt`` (Gate). ``mode``: ``ws`` |
    ``stream`` (Binance), ``api`` / ``user`` (BitMart) or ``v4`` (Gate). ``subscribed``: native topics (BitMart
    ``futures/trade:BTCUSDT``), streams (``btcusdt@trade``) or Gate natives (``futures.trades:BTC_USDT``, see
    ``scripts.sim.gate_wire``). ``received``: ``(monotonic_s, text)`` per client text frame. ``sent_count``: text
    frames sent (data, acks, errors, pongs). ``opened_at``: ``time.monotonic()``.
    """

    conn_id: int
    exchange: str
    route: str
    mode: str
    path: str
    opened_at: float
    subscribed: set[str] = field(default_factory=set)
    received: list[tuple[float, str]] = field(default_factory=list)
    sent_count: int = 0
    close_code: int | None = None
    ws: web.WebSocketResponse = field(repr=False, kw_only=True)
    combined: bool = False  # Binance: wrap data in {"stream","data"} (stream mode or SET_PROPERTY)
    _order: dict[str, None] = field(default_factory=dict, repr=False)  # subscription order for LIST
    _tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict, repr=False)
    _in_write: set[asyncio.Task[Any] | None] = field(default_factory=set, repr=False)  # replay tasks mid-send
    _msg_times: deque[float] = field(default_factory=deque, repr=False)
    _pong_deadline: float | None = field(default=None, repr=False)
    _closer: asyncio.Task[Any] | None = field(default=None, repr=False)
    _transport: asyncio.Transport | None = field(default=None, repr=False)
    _url_streams: list[str] = field(default_factory=list, repr=False)  # Binance streams named in the URL
    _positions: dict[str, int] = field(default_factory=dict, repr=False)  # native -> index of the last frame written
    _private: Any = field(default=None, repr=False)  # scripts.sim.private.PrivateConn on private sockets


def reraise_if_cancelling() -> None:
    """Re-raise CancelledError when the current task itself is being cancelled (not a sibling's shared future)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def guarded(write: Awaitable[None]) -> None:
    """Await a websocket write (text, ping, pong), surviving aiohttp's shared drain future being cancelled.

    aiohttp (3.14 ``BaseProtocol._drain_helper``) makes every writer on a connection await one shared
    future; cancelling one waiting task cancels that future, so the other writers would see a
    CancelledError nobody asked for. Unsubscribe avoids that (``SimCore._remove_sub``); this is the safety
    net for teardown, where the frame is already in the transport and the socket is going away anyway.
    """
    try:
        await write
    except asyncio.CancelledError:
        reraise_if_cancelling()


def int_param(raw: str | None, default: int, maximum: int, *, minimum: int = 1) -> int | None:
    """A query integer in ``minimum..maximum``; ``default`` when absent; None when invalid."""
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if minimum <= value <= maximum else None


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """``data`` as an ``application/json`` response (orjson)."""
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json", headers=headers)


async def read_json_body(request: web.Request) -> dict[str, Any]:
    """A control call's JSON object body, or its query parameters when it has no body; 400 when not an object."""
    if not request.can_read_body:
        return dict(request.query)
    try:
        body = await request.json(loads=orjson.loads)
    except (orjson.JSONDecodeError, ValueError):
        raise web.HTTPBadRequest(text="body must be a JSON object") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="body must be a JSON object")
    return body
