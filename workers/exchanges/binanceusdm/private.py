"""Binance USD-M user-data stream duties: the listenKey session (§7), request signing (§8) and order events (§7).
Pure: time comes in as ``now_ms``. ``ACCOUNT_UPDATE`` and ``ALGO_UPDATE`` events are in ``user``.

User-data stream (§7; ``wss://fstream.binance.com/private/ws?listenKey=<key>``, bare payloads)::

    ORDER_TRADE_UPDATE {"e":"ORDER_TRADE_UPDATE","E":1568879465651,"T":1568879465651,"o":{"s":"BTCUSDT","c":"TEST",
               "S":"BUY","o":"LIMIT","q":"0.001","p":"7100.50","ap":"7100.50","X":"PARTIALLY_FILLED","i":8886774,
               "z":"0.001","R":false,"ps":"LONG",...}}
    listenKeyExpired {"e":"listenKeyExpired","E":1576653824250,"listenKey":"..."}   (E: int, formerly a string)

REST (§7, §8, ``https://fapi.binance.com``): listenKey ``POST/PUT/DELETE /fapi/v1/listenKey`` with ``X-MBX-APIKEY`` only;
signed calls add ``recvWindow``, ``timestamp`` and ``signature`` = hex HMAC-SHA256(secret, query string).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

import orjson

from workers.exchanges.base import Credentials, Parsed, RestRequest
from workers.exchanges.binanceusdm.user import _decimal
from workers.exchanges.binanceusdm.wire import (
    EXCHANGE_ID,
    LISTEN_KEY_GONE,
    LISTEN_KEY_METHODS,
    LISTEN_KEY_PATH,
    ORDER_STATUSES,
    RECV_WINDOW_MS,
    _error_text,
)
from workers.exchanges.signing import check_credentials, hmac_sha256_hex

_loads = orjson.loads


# -- listenKey (§7) -------------------------------------------------------------------------------------------------


def listen_key_request(creds: Credentials, method: str) -> RestRequest:
    """``POST`` (create, or return and extend the active key), ``PUT`` (keep alive, +60 min) or ``DELETE`` (close)
    ``/fapi/v1/listenKey``: header ``X-MBX-APIKEY`` only, no parameters, no signature (§7). One key per account: a
    DELETE ends every socket of that account. Raises ValueError for another method, AdapterError for credentials of
    another exchange or without a key."""
    method = method.upper()
    if method not in LISTEN_KEY_METHODS:
        raise ValueError(f"listenKey requests are POST, PUT or DELETE, not {method!r}")
    creds = check_credentials(creds, EXCHANGE_ID)
    return RestRequest(method, LISTEN_KEY_PATH, {}, {"X-MBX-APIKEY": creds.api_key})


def parse_listen_key(body: bytes | str) -> str:
    """The key in a listenKey reply ``{"listenKey":"…"}`` (§7). Raises ValueError with the exchange's text for an
    error reply (``{"code":-1125,"msg":"This listenKey does not exist."}``, §9) and for a reply without a key (a
    DELETE answers ``{}``: nothing to parse)."""
    msg = _loads(body)
    if type(msg) is not dict:
        raise ValueError("binanceusdm listenKey reply is not an object")
    key = msg.get("listenKey")
    if type(key) is str and key:
        return key
    if "code" in msg or "msg" in msg:
        raise ValueError(f"binanceusdm listenKey request failed: {_error_text(msg.get('code'), msg.get('msg'))}")
    raise ValueError("binanceusdm listenKey reply has no listenKey")


def private_ws_url(base_url: str, listen_key: str) -> str:
    """``<base>/private/ws?listenKey=<key>``: the user-data socket (§1, ccxt and go-binance's form); every event type
    arrives bare (ws mode). A bogus key still completes the handshake: only a received event proves it (§7)."""
    return f"{base_url.rstrip('/')}/private/ws?listenKey={quote(listen_key, safe='')}"


class BinanceListenKey:
    """The listenKey duty of a user-data socket (``workers.exchanges.base.ListenKeySession``): one key per account
    (``POST`` creates it or returns the active one, ``PUT`` extends it by 60 min, ``DELETE`` closes it and so every
    socket of that account); the socket URL carries it; ``-1125`` means it is gone (§7, §9)."""

    gone_code = LISTEN_KEY_GONE

    def request(self, creds: Credentials, method: str) -> RestRequest:
        """``listen_key_request(creds, method)``."""
        return listen_key_request(creds, method)

    def parse(self, body: bytes) -> str:
        """``parse_listen_key(body)``."""
        return parse_listen_key(body)

    def ws_url(self, base_url: str, key: str) -> str:
        """``private_ws_url(base_url, key)``."""
        return private_ws_url(base_url, key)

    def planned_url(self, base_url: str) -> str:
        """``<base>/private/ws``: the account's socket before a key exists (the planner records no key)."""
        return f"{base_url.rstrip('/')}/private/ws"


def on_listen_key_expired(d: dict[str, Any], ts_received_ms: int) -> Parsed:
    """``listenKeyExpired`` ``{e,E,listenKey}`` (``E`` an int since 2026-05, a string before, §0, §7): the socket stays
    open but silent, so the connection must get a new key and reconnect."""
    return Parsed(reconnect="listenKeyExpired")


# -- signing (§8) ---------------------------------------------------------------------------------------------------


def sign_query(params: dict[str, str], secret: str) -> str:
    """``params`` form-encoded in their order with ``&signature=<hex HMAC-SHA256(secret, that query)>`` appended (§8).

    The signature covers exactly the encoded text before it, so send the query as returned (or the same params in
    the same order, with the same encoding). Doc vector: secret ``2b5eb11e…b4d9``, params
    ``symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=1&price=9000&timeInForce=GTC&recvWindow=5000&timestamp=1591702613943``
    -> ``signature=3c661234…4af9``.
    """
    query = urlencode(params)
    signature = hmac_sha256_hex(secret, query)
    return f"{query}&signature={signature}" if query else f"signature={signature}"


def ws_api_signature(params: dict[str, str], secret: str) -> str:
    """The WebSocket-API (``ws-fapi``) request signature (§8): every param except ``signature``, **sorted by name**,
    joined as ``k=v`` with ``&``, hex HMAC-SHA256 keyed with ``secret``. For the later order phase."""
    payload = "&".join(f"{k}={params[k]}" for k in sorted(params) if k != "signature")
    return hmac_sha256_hex(secret, payload)


def signed_request(creds: Credentials, method: str, path: str, params: dict[str, str], now_ms: int) -> RestRequest:
    """A USER_DATA/TRADE REST call (§8): ``params`` + ``recvWindow=5000`` + ``timestamp=now_ms`` + ``signature``, in
    that order, key in ``X-MBX-APIKEY``. The server rejects it (-1021) when ``now_ms`` is off by more than the
    window. Raises AdapterError for credentials of another exchange or without key/secret."""
    creds = check_credentials(creds, EXCHANGE_ID)
    signed = {**params, "recvWindow": str(RECV_WINDOW_MS), "timestamp": str(now_ms)}
    signed["signature"] = hmac_sha256_hex(creds.api_secret, urlencode(signed))  # what sign_query appends
    return RestRequest(method, path, signed, {"X-MBX-APIKEY": creds.api_key})


# -- order events (§7) ----------------------------------------------------------------------------------------------


def order_status(status: str, size: Any, filled: Any) -> str:
    """OrderEvent ``status`` for Binance's order status (§7 ``o.X``, REST ``status``).

    NEW -> new, PARTIALLY_FILLED -> partially_filled, FILLED -> filled, CANCELED -> canceled, EXPIRED and
    EXPIRED_IN_MATCH -> expired, REJECTED -> rejected. Any other status (``NEW_INSURANCE``, ``NEW_ADL``: liquidation
    fills in the nautilus fixtures) is derived from the sizes (Decimal): filled >= size -> filled, filled > 0 ->
    partially_filled, else new. Raises ValueError when that needs a size that is not a decimal string.
    """
    known = ORDER_STATUSES.get(status)
    if known is not None:
        return known
    done = _decimal(filled, "filled quantity")
    total = _decimal(size, "quantity")
    if total > 0 and done >= total:
        return "filled"
    return "partially_filled" if done > 0 else "new"


#: Field names of an order: ``ORDER_TRADE_UPDATE.o`` (§7) and a REST order (``/fapi/v1/openOrders``), in the order
#: symbol, order id, client id, side, type, status, price, size, filled, average fill price, reduce-only.
WS_ORDER_FIELDS = ("s", "i", "c", "S", "o", "X", "p", "q", "z", "ap", "R")
REST_ORDER_FIELDS = (
    "symbol", "orderId", "clientOrderId", "side", "type", "status", "price", "origQty", "executedQty", "avgPrice",
    "reduceOnly",
)  # fmt: skip


def order_event(
    o: dict[str, Any], fields: tuple[str, ...], account: str, ts_exchange: Any, ts_received_ms: int, snapshot: bool
) -> dict[str, Any]:
    symbol, order_id, client_id, side, order_type, status, price, size, filled, avg_price, reduce_only = fields
    client = o.get(client_id)
    status_raw = o[status]
    reduce = o.get(reduce_only)
    return {
        "type": "order",
        "exchange": EXCHANGE_ID,
        "account": account,
        "symbol": o[symbol],
        "order_id": str(o[order_id]),
        "client_order_id": str(client) if client not in (None, "") else None,
        "side": o[side].lower(),
        "order_type": o[order_type].lower(),
        "status": order_status(status_raw, o.get(size), o.get(filled)),
        "status_raw": status_raw,
        "price": o.get(price),
        "size": o.get(size),
        "filled_size": o.get(filled),
        "avg_fill_price": o.get(avg_price),
        "reduce_only": reduce if type(reduce) is bool else None,
        "ts_exchange": ts_exchange if type(ts_exchange) is int else None,
        "ts_received": ts_received_ms,
        "snapshot": snapshot,
    }
