"""Shared WebSocket helpers of the simulator tests. Waits are event-driven (``ws.receive``); the only fixed
timeout (``ABSENCE_S``) is the short window that proves something did *not* happen."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import WSMsgType

REPO = Path(__file__).resolve().parents[2]
DECIMAL = re.compile(r"^\d+(\.\d+)?$")
RFC3339_NS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$")
N_TRADES = 21_313
ABSENCE_S = 0.3  # window used only to show that nothing arrives


async def recv(ws: aiohttp.ClientWebSocketResponse, timeout: float = 10.0) -> Any:
    msg = await ws.receive(timeout=timeout)
    assert msg.type is WSMsgType.TEXT, msg
    return orjson.loads(msg.data)


async def send(ws: aiohttp.ClientWebSocketResponse, obj: Any) -> None:
    await ws.send_str(orjson.dumps(obj).decode())


async def nothing_arrives(ws: aiohttp.ClientWebSocketResponse) -> None:
    with pytest.raises(TimeoutError):
        await ws.receive(timeout=ABSENCE_S)


def bitmart_sub(*topics: str, action: str = "subscribe") -> dict[str, Any]:
    return {"action": action, "args": list(topics)}
