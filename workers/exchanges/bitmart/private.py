"""BitMart private data: the socket login and REST signing (§1.3), and private pushes -> order/position/balance
events (§1.7). Pure: time comes in as ``now_ms``; the parser (``public.BitmartParser``) dispatches pushes here.

Private socket (``/user?protocol=1.1``, login first; §1.3, §1.7)::

    login    {"action":"access","args":["<api key>","<ts ms>","<hex HMAC-SHA256(secret, ts#memo#bitmart.WebSocket)>","web"]}
    login ok {"action":"access","success":true}   fail: {"action":"access","success":false,"error":"access failed: ..."}
    order    {"group":"futures/order","data":[{"action":3,"order":{"order_id":"220906179895578","client_order_id":"BM1234",
              "price":"1","size":"1000","symbol":"BTCUSDT","state":2,"side":1,"type":"limit","deal_avg_price":"0",
              "deal_size":"1000","update_time":1662368173000,...}}]}
    position {"group":"futures/position","data":[{"symbol":"BTCUSDT","hold_volume":"2000","position_type":1,"open_type":1,
              "hold_avg_price":"19406.2092","open_avg_price":"19406.2092","liquidate_price":"15621.998406",
              "update_time":1662692862255,...}]}
    asset    {"group":"futures/asset:BTC","data":{"currency":"BTC","available_balance":"1000","position_deposit":"1000",
              "frozen_balance":"1000"}}
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson

from workers.exchanges.base import AdapterError, Credentials
from workers.exchanges.bitmart.wire import (
    CANCEL_ACTIONS,
    EXCHANGE_ID,
    LOGIN_PAYLOAD,
    MARGIN_MODES,
    ORDER_SIDES,
    POSITION_MODES,
    POSITION_SIDES,
    REDUCING_SIDES,
    STATE_FINISHED,
)
from workers.exchanges.numbers import decimal_value
from workers.exchanges.signing import check_credentials, hmac_sha256_hex

_dumps = orjson.dumps

# -- signing (§1.3) -----------------------------------------------------------------------------------------------


def sign(secret: str, timestamp_ms: int | str, memo: str, payload: str) -> str:
    """Hex HMAC-SHA256 keyed with ``secret`` of ``"<timestamp_ms>#<memo>#<payload>"`` (§1.3).

    ``payload`` is ``bitmart.WebSocket`` for the socket login, the query string (GET) or the JSON body (POST) for REST.
    Doc vector: secret ``6c6c9854…9df9``, memo ``test001``, ts ``1589267764859``, payload ``bitmart.WebSocket`` ->
    ``3ceeb7e1…4556``.
    """
    return hmac_sha256_hex(secret, f"{timestamp_ms}#{memo}#{payload}")


def _signing_creds(creds: Credentials | None) -> Credentials:
    creds = check_credentials(creds, EXCHANGE_ID)
    if not creds.memo:  # the memo is part of every signed string; BitMart asks for one when a key is created (§1.3)
        raise AdapterError(f"bitmart:{creds.account} has no API memo; BitMart signatures need it")
    return creds


def login_frame(creds: Credentials, now_ms: int) -> str:
    """``{"action":"access","args":[api_key, "<now_ms>", sign, "web"]}``: the private socket's login (§1.3).

    ``sign`` = ``sign(secret, now_ms, memo, "bitmart.WebSocket")``; the server accepts a timestamp within 60 s and
    answers ``{"action":"access","success":true|false}`` (see ``BitmartParser``; it drops the socket on failure).
    The frame carries the API key and a signature: do not log it. Raises AdapterError for credentials of another
    exchange or without key, secret or memo.
    """
    creds = _signing_creds(creds)
    args = [creds.api_key, str(now_ms), sign(creds.api_secret, now_ms, creds.memo, LOGIN_PAYLOAD), "web"]
    return _dumps({"action": "access", "args": args}).decode()


def rest_headers(creds: Credentials, now_ms: int, payload: str) -> dict[str, str]:
    """``{"X-BM-KEY", "X-BM-TIMESTAMP", "X-BM-SIGN"}`` for a REST call whose query string (GET) or JSON body (POST)
    is ``payload`` (``""`` for none), signed at ``now_ms`` (§1.3). Raises AdapterError as ``login_frame``."""
    creds = _signing_creds(creds)
    return {
        "X-BM-KEY": creds.api_key,
        "X-BM-TIMESTAMP": str(now_ms),
        "X-BM-SIGN": sign(creds.api_secret, now_ms, creds.memo, payload),
    }


# -- private events (§1.7) ----------------------------------------------------------------------------------------


def _decimal(value: Any, name: str) -> Decimal:
    """``value`` (a decimal string or an int, as BitMart sends sizes) as a Decimal; ValueError otherwise."""
    return decimal_value(value, name, EXCHANGE_ID, kinds=(str, int))


def order_status(state: int, action: int | None, size: Any, deal_size: Any) -> str:
    """The OrderEvent ``status`` of a BitMart order (§1.7 ``state``/``action``; sizes compared as Decimals).

    1. ``action`` 3 cancel, 4 liquidate-cancel or 5 ADL-cancel -> ``canceled`` (whatever ``state`` says: the push
       reports the cancel);
    2. ``state`` 4 finished -> ``filled`` when ``deal_size >= size`` (and ``size > 0``), else ``canceled`` (a finished
       order with a remainder was cancelled: IOC/market remainder, partial fill then cancel);
    3. any other ``state`` (1 approval, 2 check: open) -> ``partially_filled`` when ``deal_size > 0``, else ``new``.

    REST open orders carry no ``action`` (None). ``deal_size`` None counts as 0. Raises ValueError for a size that
    is not a decimal string.
    """
    if action in CANCEL_ACTIONS:
        return "canceled"
    filled = Decimal(0) if deal_size is None else _decimal(deal_size, "deal_size")
    if state == STATE_FINISHED:
        total = _decimal(size, "size")
        return "filled" if total > 0 and filled >= total else "canceled"
    return "partially_filled" if filled > 0 else "new"


def order_event(
    order: dict[str, Any], account: str, ts_received_ms: int, action: int | None = None, snapshot: bool = False
) -> dict[str, Any]:
    """One BitMart order (a ``futures/order`` push's ``data[].order`` or a REST open-orders item) as an OrderEvent.

    ``order_id``/``client_order_id`` as strings (``""`` client id -> None), ``side`` 1/2 -> buy, 3/4 -> sell,
    ``type`` -> ``order_type`` as sent (limit, market, plan_order, ...), ``status`` from ``order_status``,
    ``status_raw`` ``"<state>/<action>"`` (``"<state>"`` without an action, REST), ``price``/``size`` as sent,
    ``deal_size`` -> ``filled_size``, ``deal_avg_price`` -> ``avg_fill_price`` (``"0"`` before any fill, as sent),
    ``update_time`` -> ``ts_exchange``. ``reduce_only``: in one_way_mode sides 2 and 3 are the reduce-only ones; in
    hedge_mode False (closing is expressed by the side there, like Binance's ``R`` in hedge mode); None when the
    order carries no ``position_mode`` (the doc example). Raises KeyError/ValueError for a malformed order.
    """
    state = order["state"]
    side = order["side"]
    mode = order.get("position_mode")
    if mode == "one_way_mode":
        reduce_only: bool | None = side in REDUCING_SIDES
    elif mode == "hedge_mode":
        reduce_only = False
    else:
        reduce_only = None
    client_id = order.get("client_order_id")
    return {
        "type": "order",
        "exchange": EXCHANGE_ID,
        "account": account,
        "symbol": order["symbol"],
        "order_id": str(order["order_id"]),
        "client_order_id": str(client_id) if client_id not in (None, "") else None,
        "side": ORDER_SIDES[side],
        "order_type": order["type"],
        "status": order_status(state, action, order.get("size"), order.get("deal_size")),
        "status_raw": f"{state}/{action}" if action is not None else str(state),
        "price": order.get("price"),
        "size": order.get("size"),
        "filled_size": order.get("deal_size"),
        "avg_fill_price": order.get("deal_avg_price"),
        "reduce_only": reduce_only,
        "ts_exchange": order.get("update_time"),
        "ts_received": ts_received_ms,
        "snapshot": snapshot,
    }


def _margin_mode(open_type: Any) -> str | None:
    if open_type is None:
        return None
    if type(open_type) is str:
        open_type = open_type.lower()  # REST "Cross" / "Isolated"
    return MARGIN_MODES[open_type]


def order_push_events(topic: str, account: str, data: Any, ts_received_ms: int) -> list[tuple[str, dict[str, Any]]]:
    """``futures/order``: ``data`` is an array of ``{"action": <int>, "order": {...}}``; one OrderEvent each
    (see ``order_event`` for the field and status mapping)."""
    return [(topic, order_event(item["order"], account, ts_received_ms, item.get("action"))) for item in data]


def position_push_events(
    topic: str, account: str, data: Any, ts_received_ms: int
) -> list[tuple[str, dict[str, Any]]]:
    """``futures/position`` (pushed on change and every 10 s, §1.7): ``data`` is an array; one PositionEvent each.

    ``hold_volume`` -> ``size`` (unsigned; ``position_type`` 1 long / 2 short gives ``side``), ``hold_avg_price``
    (else ``open_avg_price``) -> ``entry_price``, ``liquidate_price`` -> ``liquidation_price``, ``open_type``
    1 isolated / 2 cross -> ``margin_mode``, ``position_mode`` hedge_mode / one_way_mode -> ``mode`` hedge /
    one_way (None when absent, as in the doc example), ``update_time`` -> ``ts_exchange``. The push has no mark
    price, leverage or PnL: those are None.
    """
    events = []
    for p in data:
        entry = p.get("hold_avg_price")
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
                    "size": p["hold_volume"],
                    "entry_price": entry if entry is not None else p.get("open_avg_price"),
                    "mark_price": None,
                    "liquidation_price": p.get("liquidate_price"),
                    "leverage": None,
                    "margin_mode": _margin_mode(p.get("open_type")),
                    "unrealized_pnl": None,
                    "ts_exchange": p.get("update_time"),
                    "ts_received": ts_received_ms,
                    "snapshot": False,
                },
            )
        )
    return events


def asset_push_events(
    topic: str, account: str, symbol: str, data: Any, ts_received_ms: int
) -> list[tuple[str, dict[str, Any]]]:
    """``futures/asset:<CCY>``: ``data`` is one object ``{currency, available_balance, position_deposit,
    frozen_balance}`` (§1.7) -> one BalanceEvent; ``symbol`` is the group's currency.

    ``available`` = ``available_balance``, ``frozen`` = ``frozen_balance``. ``balance`` is None: the push has no
    wallet or equity figure, and the reference does not say how ``available_balance``, ``frozen_balance`` and
    ``position_deposit`` (margin held by positions) add up to one, nor whether unrealized PnL is in any of them,
    so no sum is invented (UNVERIFIED: REST ``assets-detail`` would have ``equity``). The push has no time:
    ``ts_exchange`` is None. A list ``data`` gives one event per item.
    """
    items = data if type(data) is list else (data,)
    return [
        (
            topic,
            {
                "type": "balance",
                "exchange": EXCHANGE_ID,
                "account": account,
                "asset": item.get("currency") or symbol,
                "balance": None,
                "available": item.get("available_balance"),
                "frozen": item.get("frozen_balance"),
                "ts_exchange": None,
                "ts_received": ts_received_ms,
                "snapshot": False,
            },
        )
        for item in items
    ]
