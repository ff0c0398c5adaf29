"""BitMart futures REST: signed private snapshots after a (re)connect, and the REST error shape (pure).

REST (``https://api-cloud-v2.bitmart.com``, §1.1, §1.3): headers ``X-BM-KEY``, ``X-BM-TIMESTAMP``, ``X-BM-SIGN`` = hex
HMAC-SHA256(secret, ``<ts ms>#<memo>#<payload>``), payload = query string (GET) or JSON body (POST); replies
``{"code":1000,"message":"Ok","data":[...],"trace":"..."}``.
"""

from __future__ import annotations

from typing import Any

import orjson

from control.topics import validate_account
from workers.exchanges.base import Credentials, RestRequest
from workers.exchanges.bitmart.private import _margin_mode, order_event, rest_headers
from workers.exchanges.bitmart.wire import (
    EXCHANGE_ID,
    OPEN_ORDERS_PATH,
    POSITION_MODES,
    POSITION_SIDES,
    POSITIONS_PATH,
)
from workers.exchanges.errors import code_message, json_rest_error

_loads = orjson.loads


def open_orders_request(creds: Credentials, now_ms: int) -> RestRequest:
    """``GET /contract/private/get-open-orders`` (all symbols), signed over the empty query string.

    The endpoint returns at most 100 orders (its ``limit`` default and maximum, futures v2 doc): more open orders
    than that are not all in the snapshot.
    """
    return RestRequest("GET", OPEN_ORDERS_PATH, {}, rest_headers(creds, now_ms, ""))


def positions_request(creds: Credentials, now_ms: int) -> RestRequest:
    """``GET /contract/private/position`` (all symbols), signed over the empty query string."""
    return RestRequest("GET", POSITIONS_PATH, {}, rest_headers(creds, now_ms, ""))


def _rest_data(body: bytes | str, what: str) -> list[Any]:
    """``data`` of a BitMart REST reply ``{"code":1000,"message":"Ok","data":[...]}``; ValueError for an error
    reply (``code`` other than 1000, text kept) or another shape."""
    msg = _loads(body)
    if type(msg) is not dict:
        raise ValueError(f"bitmart {what} reply is not an object")
    code = msg.get("code")
    if code != 1000:
        raise ValueError(f"bitmart {what} failed: {code}: {msg.get('message')}")
    data = msg.get("data")
    if type(data) is not list:
        raise ValueError(f"bitmart {what} reply has no data list")
    return data


def parse_open_orders(body: bytes | str, account: str, ts_received_ms: int) -> list[tuple[str, dict[str, Any]]]:
    """A ``GET /contract/private/get-open-orders`` reply as ``(bitmart:order:<account>, OrderEvent(snapshot=True))``
    pairs. Items have the push's order fields (futures v2 doc; ``state`` 2, no ``action``). Raises ValueError for an
    error reply or a malformed item."""
    topic = f"bitmart:order:{validate_account(account)}"
    try:
        return [
            (topic, order_event(item, account, ts_received_ms, None, True)) for item in _rest_data(body, "open orders")
        ]
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"malformed bitmart open order: {exc!r}") from exc


def parse_positions(body: bytes | str, account: str, ts_received_ms: int) -> list[tuple[str, dict[str, Any]]]:
    """A ``GET /contract/private/position`` reply as ``(bitmart:position:<account>, PositionEvent(snapshot=True))``.

    REST fields (futures v2 doc "Get Current Position"): ``current_amount`` -> ``size``, ``position_type`` 1/2 ->
    long/short, ``position_mode``, ``entry_price`` (else ``open_avg_price``), ``mark_price``, ``leverage``,
    ``margin_type`` Cross/Isolated -> cross/isolated, ``unrealized_value`` -> ``unrealized_pnl``, ``timestamp`` ->
    ``ts_exchange``. The doc's example carries no liquidation price; ``liquidation_price`` is read from
    ``liquidation_price`` or ``liquidate_price`` when present (UNVERIFIED field name). Raises ValueError for an error
    reply or a malformed item.
    """
    topic = f"bitmart:position:{validate_account(account)}"
    events = []
    try:
        for p in _rest_data(body, "positions"):
            entry = p.get("entry_price")
            liq = p.get("liquidation_price")
            events.append(
                (
                    topic,
                    {
                        "type": "position",
                        "exchange": EXCHANGE_ID,
                        "account": account,
                        "symbol": p["symbol"],
                        "side": POSITION_SIDES[p["position_type"]],
                        "mode": POSITION_MODES.get(p.get("position_mode") or ""),
                        "size": p["current_amount"],
                        "entry_price": entry if entry is not None else p.get("open_avg_price"),
                        "mark_price": p.get("mark_price"),
                        "liquidation_price": liq if liq is not None else p.get("liquidate_price"),
                        "leverage": p.get("leverage"),
                        "margin_mode": _margin_mode(p.get("margin_type")),
                        "unrealized_pnl": p.get("unrealized_value"),
                        "ts_exchange": p.get("timestamp"),
                        "ts_received": ts_received_ms,
                        "snapshot": True,
                    },
                )
            )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"malformed bitmart position: {exc!r}") from exc
    return events


def rest_error(body: bytes) -> tuple[int | None, str]:
    """``(code, "<code>: <message>")`` of a BitMart REST reply ``{"code":30005,"message":"…"}`` (§1.3); other bodies
    ``(None, first 200 bytes)``."""
    return json_rest_error(body, code_message)
