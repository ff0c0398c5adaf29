"""Binance USD-M REST: signed private snapshots after a (re)connect (§8) and the REST error shape (§9). Pure."""

from __future__ import annotations

from typing import Any

import orjson

from control.topics import validate_account
from workers.exchanges.base import Credentials, RestRequest
from workers.exchanges.binanceusdm.private import REST_ORDER_FIELDS, order_event, signed_request
from workers.exchanges.binanceusdm.wire import (
    EXCHANGE_ID,
    OPEN_ORDERS_PATH,
    POSITION_SIDES,
    POSITIONS_PATH,
    _error_text,
)
from workers.exchanges.errors import code_message, json_rest_error

_loads = orjson.loads


def open_orders_request(creds: Credentials, now_ms: int) -> RestRequest:
    """``GET /fapi/v1/openOrders?recvWindow=5000&timestamp=<now_ms>&signature=…`` (all symbols: weight 40)."""
    return signed_request(creds, "GET", OPEN_ORDERS_PATH, {}, now_ms)


def positions_request(creds: Credentials, now_ms: int) -> RestRequest:
    """``GET /fapi/v2/positionRisk?recvWindow=5000&timestamp=<now_ms>&signature=…`` (see ``POSITIONS_PATH``)."""
    return signed_request(creds, "GET", POSITIONS_PATH, {}, now_ms)


def _rest_list(body: bytes | str, what: str) -> list[Any]:
    msg = _loads(body)
    if type(msg) is list:
        return msg
    if type(msg) is dict and ("code" in msg or "msg" in msg):
        raise ValueError(f"binanceusdm {what} failed: {_error_text(msg.get('code'), msg.get('msg'))}")
    raise ValueError(f"binanceusdm {what} reply is not a list")


def parse_open_orders(body: bytes | str, account: str, ts_received_ms: int) -> list[tuple[str, dict[str, Any]]]:
    """A ``GET /fapi/v1/openOrders`` reply as ``(binanceusdm:order:<account>, OrderEvent(snapshot=True))`` pairs.

    ``orderId``, ``clientOrderId``, ``side``, ``type``, ``status``, ``price``, ``origQty`` -> size, ``executedQty``
    -> filled, ``avgPrice``, ``reduceOnly``, ``updateTime`` -> ``ts_exchange``. Raises ValueError for an error reply
    (``{"code":-2015,"msg":…}``) or a malformed item.
    """
    topic = f"{EXCHANGE_ID}:order:{validate_account(account)}"
    try:
        return [
            (topic, order_event(o, REST_ORDER_FIELDS, account, o.get("updateTime"), ts_received_ms, True))
            for o in _rest_list(body, "open orders")
        ]
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"malformed binanceusdm open order: {exc!r}") from exc


def parse_positions(body: bytes | str, account: str, ts_received_ms: int) -> list[tuple[str, dict[str, Any]]]:
    """A ``GET /fapi/v2/positionRisk`` (or v3) reply as ``(binanceusdm:position:<account>, PositionEvent(snapshot=True))``.

    ``positionAmt`` (signed) -> ``size``, ``positionSide`` as in ``ACCOUNT_UPDATE``, ``entryPrice``, ``markPrice``,
    ``liquidationPrice``, ``leverage`` and ``marginType`` (v2 only; None from v3), ``unRealizedProfit``,
    ``updateTime`` (0 for a never-used symbol -> None). Raises ValueError for an error reply or a malformed item.
    """
    topic = f"{EXCHANGE_ID}:position:{validate_account(account)}"
    events = []
    try:
        for p in _rest_list(body, "positions"):
            side, mode = POSITION_SIDES[p["positionSide"]]
            updated = p.get("updateTime")
            events.append(
                (
                    topic,
                    {
                        "type": "position",
                        "exchange": EXCHANGE_ID,
                        "account": account,
                        "symbol": p["symbol"],
                        "side": side,
                        "mode": mode,
                        "size": p["positionAmt"],
                        "entry_price": p.get("entryPrice"),
                        "mark_price": p.get("markPrice"),
                        "liquidation_price": p.get("liquidationPrice"),
                        "leverage": p.get("leverage"),
                        "margin_mode": p.get("marginType"),
                        "unrealized_pnl": p.get("unRealizedProfit"),
                        "ts_exchange": updated if type(updated) is int and updated > 0 else None,
                        "ts_received": ts_received_ms,
                        "snapshot": True,
                    },
                )
            )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"malformed binanceusdm position: {exc!r}") from exc
    return events


def rest_error(body: bytes) -> tuple[int | None, str]:
    """``(code, "<code>: <msg>")`` of a Binance REST error ``{"code":-1125,"msg":"This listenKey does not exist."}``
    (§9); other bodies ``(None, first 200 bytes)``."""
    return json_rest_error(body, code_message)
