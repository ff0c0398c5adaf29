"""Gate.io futures REST: signed private snapshots after a (re)connect and the REST error shape (pure).

REST (§2.7, host ``https://api.gateio.ws``, paths with ``/api/v4``): headers ``KEY``, ``Timestamp`` (s) and ``SIGN`` =
hex HMAC-SHA512(secret, ``METHOD\\nPATH\\nQUERY\\nhex(SHA512(body))\\nTIMESTAMP``); errors ``{"label","message"}``.
"""

from __future__ import annotations

from typing import Any

import orjson

from control.topics import validate_account
from workers.exchanges.base import Credentials, RestRequest
from workers.exchanges.errors import json_rest_error, label_message
from workers.exchanges.gateio.private import order_event, position_event, rest_headers
from workers.exchanges.gateio.wire import OPEN_ORDERS_PATH, POSITIONS_PATH

_loads = orjson.loads


def open_orders_request(creds: Credentials, now_ms: int) -> RestRequest:
    """``GET /api/v4/futures/usdt/orders?status=open`` signed over ``status=open`` (§2.7; all contracts)."""
    headers = rest_headers(creds, "GET", OPEN_ORDERS_PATH, "status=open", "", now_ms)
    return RestRequest("GET", OPEN_ORDERS_PATH, {"status": "open"}, headers)


def positions_request(creds: Credentials, now_ms: int) -> RestRequest:
    """``GET /api/v4/futures/usdt/positions`` signed over the empty query (§2.7)."""
    return RestRequest("GET", POSITIONS_PATH, {}, rest_headers(creds, "GET", POSITIONS_PATH, "", "", now_ms))


def _rest_list(body: bytes | str, what: str) -> list[Any]:
    """A Gate REST reply that must be a list; ValueError with ``"<label>: <message>"`` for an error object (§2.7)."""
    msg = _loads(body)
    if type(msg) is list:
        return msg
    if type(msg) is dict and ("label" in msg or "message" in msg):
        raise ValueError(f"gateio {what} failed: {msg.get('label')}: {msg.get('message')}")
    raise ValueError(f"gateio {what} reply is not a list")


def parse_open_orders(body: bytes | str, account: str, ts_received_ms: int) -> list[tuple[str, dict[str, Any]]]:
    """A ``GET /api/v4/futures/usdt/orders?status=open`` reply as ``(gateio:order:<account>,
    OrderEvent(snapshot=True))`` pairs (``order_event`` with ``rest=True``). Raises ValueError for an error reply
    (``{"label":"INVALID_KEY","message":…}``) or a malformed order."""
    topic = f"gateio:order:{validate_account(account)}"
    try:
        return [
            (topic, order_event(o, account, ts_received_ms, snapshot=True, rest=True))
            for o in _rest_list(body, "open orders")
        ]
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"malformed gateio open order: {exc!r}") from exc


def parse_positions(body: bytes | str, account: str, ts_received_ms: int) -> list[tuple[str, dict[str, Any]]]:
    """A ``GET /api/v4/futures/usdt/positions`` reply as ``(gateio:position:<account>, PositionEvent(snapshot=True))``
    pairs (``position_event`` with ``rest=True``). Raises ValueError for an error reply or a malformed position."""
    topic = f"gateio:position:{validate_account(account)}"
    try:
        return [
            (topic, position_event(p, account, ts_received_ms, snapshot=True, rest=True))
            for p in _rest_list(body, "positions")
        ]
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"malformed gateio position: {exc!r}") from exc


def rest_error(body: bytes) -> tuple[int | None, str]:
    """``(None, "<label>: <message>")`` of a Gate REST error ``{"label":"INVALID_KEY","message":"…"}`` (§2.7); other
    bodies ``(None, first 200 bytes)``."""
    return json_rest_error(body, label_message)
