"""REST error bodies in the exchanges' shapes, as ``(code, text)`` (pure; each adapter's ``rest_error`` picks its shape).

The text may echo secrets sent with the request (an API key in a message): callers scrub it before logging
(``workers.private.PrivateSession.scrub``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import orjson

#: Reads one decoded JSON object; None when the object is not an error of that shape.
ErrorReader = Callable[[dict[str, Any]], "tuple[int | None, str] | None"]


def code_message(msg: dict[str, Any]) -> tuple[int | None, str] | None:
    """``{"code":-1125,"msg":"…"}`` (Binance, binance_usdm.md §9) or ``{"code":30005,"message":"…"}`` (BitMart,
    exchanges.md §1.3) -> ``(code, "<code>: <text>")``; the code is None unless it is an integer."""
    if "code" not in msg:
        return None
    code = msg.get("code")
    return (code if isinstance(code, int) else None), f"{code}: {msg.get('msg') or msg.get('message')}"


def label_message(msg: dict[str, Any]) -> tuple[int | None, str] | None:
    """``{"label":"INVALID_KEY","message":"…"}`` (Gate.io, exchanges.md §2.7) -> ``(None, "<label>: <message>")``."""
    if "label" not in msg and "message" not in msg:
        return None
    return None, f"{msg.get('label')}: {msg.get('message')}"


def json_rest_error(body: bytes, read: ErrorReader) -> tuple[int | None, str]:
    """``read(decoded body)`` when the body is a JSON object of that shape, else ``(None, first 200 bytes)``."""
    with contextlib.suppress(ValueError):
        msg = orjson.loads(body)
        if isinstance(msg, dict):
            found = read(msg)
            if found is not None:
                return found
    return None, body[:200].decode(errors="replace")
