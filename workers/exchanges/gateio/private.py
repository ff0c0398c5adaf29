"""Gate.io private data: request signing (§2.3, §2.7), the private subscribe payloads, and private pushes -> order,
position and balance events (§2.6). Pure: time comes in as ``now_ms``.

Private channels (§2.3, §2.6)::

    subscribe {"id":1,"time":1700000000,"channel":"futures.orders","event":"subscribe",
               "auth":{"method":"api_key","KEY":"<key>","SIGN":"<hex HMAC-SHA512(secret, channel=…&event=…&time=…)>"},
               "payload":["<uid>","!all"]}                    (futures.balances: "payload":["<uid>"])
    orders    {"channel":"futures.orders","event":"update","time_ms":1541505434123,"result":[{"contract":"BTC_USD",
               "id":4872460,"size":"1.5","left":"0.5","price":40000.4,"fill_price":40000.4,"status":"finished",
               "finish_as":"filled","tif":"gtc","text":"-","is_reduce_only":false,"finish_time_ms":1628736848321,...}]}
    positions {"channel":"futures.positions","event":"update","result":[{"contract":"BTC_USD","size":"3.5",
               "entry_price":40000.36666661111,"leverage":0,"cross_leverage_limit":0,"liq_price":0.1,"mode":"single",
               "time_ms":1628736848321,...}]}
    balances  {"channel":"futures.balances","event":"update","result":[{"balance":9.998739899488,
               "change":-0.000002074115,"currency":"btc","type":"fee","time_ms":1547199246123,...}]}
"""

from __future__ import annotations

from decimal import Context, Decimal, Inexact, InvalidOperation
from typing import Any

from control.topics import Topic
from workers.exchanges.base import AdapterError, Credentials
from workers.exchanges.gateio.wire import (
    BALANCES,
    EXCHANGE_ID,
    PRIVATE_CHANNELS,
    REST_HEADERS,
    _frame_ms,
    _ms,
    _seconds_to_ms,
    _size,
    _text,
)
from workers.exchanges.numbers import decimal_value
from workers.exchanges.signing import check_credentials, hmac_sha512_hex, sha512_hex

#: Position ``mode`` (§2.6): ``single`` is one-way (signed ``size``), ``dual_long``/``dual_short`` the two legs of
#: hedge ("dual") mode. -> (PositionEvent ``side``, ``mode``).
_POSITION_MODES: dict[str, tuple[str, str]] = {
    "single": ("both", "one_way"),
    "dual_long": ("long", "hedge"),
    "dual_short": ("short", "hedge"),
}
#: Exact decimal arithmetic for ``filled = |size| - |left|``: any rounding raises instead of going unnoticed.
_EXACT = Context(prec=100, traps=[Inexact, InvalidOperation])

# -- signing (§2.3, §2.7) ---------------------------------------------------------------------------------------


def ws_signature(secret: str, channel: str, event: str, time_s: int) -> str:
    """SIGN of a private subscribe/unsubscribe (§2.3a): hex HMAC-SHA512 keyed with ``secret`` of
    ``channel=<channel>&event=<event>&time=<time_s>``, ``time_s`` being the frame's ``time`` (seconds).
    Vector: secret ``gatesecret_fedcba9876543210``, ``futures.orders``, ``subscribe``, 1700000000 -> ``7ea8581e…0330``."""
    return hmac_sha512_hex(secret, f"channel={channel}&event={event}&time={time_s}")


def ws_auth(creds: Credentials, channel: str, event: str, time_s: int) -> dict[str, str]:
    """The ``auth`` object of a private request: ``{"method":"api_key","KEY":key,"SIGN":ws_signature(...)}`` (§2.3a)."""
    return {"method": "api_key", "KEY": creds.api_key, "SIGN": ws_signature(creds.api_secret, channel, event, time_s)}


def login_signature(secret: str, channel: str, req_param: str, timestamp_s: int) -> str:
    """WebSocket-API signature (§2.3b, for placing orders over the socket later): hex HMAC-SHA512 of
    ``"api\n<channel>\n<req_param>\n<timestamp_s>"``. For ``futures.login`` the official SDK and ccxt sign
    ``req_param="{}"``; the doc says ``""`` — which one the server accepts is UNVERIFIED (follow the SDK)."""
    return hmac_sha512_hex(secret, f"api\n{channel}\n{req_param}\n{timestamp_s}")


def rest_signature(secret: str, method: str, path: str, query: str, body: str | bytes, timestamp_s: int | str) -> str:
    """REST SIGN (§2.7): hex HMAC-SHA512 of ``METHOD\nPATH\nQUERY\nhex(SHA512(body))\nTIMESTAMP``; ``path``
    includes ``/api/v4``, ``query`` is the raw query string in the order sent (``""`` if none), ``body`` ``""`` for
    none."""
    return hmac_sha512_hex(secret, f"{method.upper()}\n{path}\n{query}\n{sha512_hex(body)}\n{timestamp_s}")


def rest_headers(
    creds: Credentials, method: str, path: str, query: str, body: str | bytes, now_ms: int
) -> dict[str, str]:
    """``{"KEY", "Timestamp", "SIGN"}`` (Timestamp = ``now_ms // 1000``, within 60 s of server time) plus
    ``X-Gate-Size-Decimal: 1`` (unsigned) for a REST call (§2.7). Raises AdapterError for credentials of another
    exchange or without key/secret."""
    creds = check_credentials(creds, EXCHANGE_ID)
    timestamp = str(now_ms // 1000)
    return {
        "KEY": creds.api_key,
        "Timestamp": timestamp,
        "SIGN": rest_signature(creds.api_secret, method, path, query, body, timestamp),
        **REST_HEADERS,
    }


def account_uid(creds: Credentials) -> str:
    """Gate's user id for the private payloads (§2.6): the account's ``uid`` (``control.accounts.Account.uid``, set from
    ``GATEIO_UID`` or the accounts file), else its ``memo`` (where a Credentials object without ``uid`` carries it).
    Raises AdapterError when both are empty."""
    uid = getattr(creds, "uid", "") or creds.memo
    if not uid:
        raise AdapterError(f"gateio:{creds.account} has no uid (Gate user id); private channels need it")
    return str(uid)


def private_payload(topic: Topic, uid: str) -> tuple[str, list[str]]:
    """``(gate channel, payload)`` of a private topic: ``("futures.orders", [uid, "!all"])``, ``("futures.positions",
    [uid, "!all"])`` or ``("futures.balances", [uid])`` (§2.6). Raises AdapterError for a public topic."""
    native = PRIVATE_CHANNELS.get(topic.channel)
    if native is None:
        raise AdapterError(f"{topic} is not a private gateio topic")
    return native, [uid] if native == BALANCES else [uid, "!all"]


# -- private events (§2.6) --------------------------------------------------------------------------------------


def _signed_size(value: Any) -> tuple[bool, str]:
    """A size (int or decimal string, never a float) as ``(negative, absolute text)``: ``"-1.5"`` -> ``(True, "1.5")``."""
    text = _size(value)
    if text[:1] in ("-", "+"):
        return text[0] == "-", text[1:]
    return False, text


def _decimal(text: Any, name: str) -> Decimal:
    """``text`` (a decimal string, an int as Gate sends sizes, or a float) as a Decimal; ValueError otherwise."""
    return decimal_value(text, name, EXCHANGE_ID, kinds=(str, int, float))


def _is_zero(value: Any) -> bool:
    """True for ``0``, ``"0"``, ``0.0``, ``"0.000"`` (a price or leverage); False for None and anything else."""
    if value is None or type(value) is bool:
        return False
    text = _text(value)
    return text is not None and _decimal(text, "number") == 0


def order_status(status: str, finish_as: str, filled: Decimal, left: Decimal) -> str:
    """OrderEvent ``status`` of a Gate futures order (§2.6 ``status`` open|finished, ``finish_as``).

    ``open``: ``partially_filled`` when some size is filled, else ``new``. ``finished``: ``filled`` when
    ``finish_as`` is ``filled`` or nothing is left (``auto_deleveraged`` with nothing left included); otherwise
    ``expired`` for ``ioc`` (the unfilled remainder of an IOC order lapses, like Binance's EXPIRED) and
    ``canceled`` for ``cancelled``, ``liquidated``, ``reduce_only``, ``position_closed``, ``stp``,
    ``auto_deleveraged`` with a remainder, and any other value.
    """
    if status != "finished":
        return "partially_filled" if filled > 0 else "new"
    if finish_as == "filled" or left == 0:
        return "filled"
    return "expired" if finish_as == "ioc" else "canceled"


def order_event(
    o: dict[str, Any],
    account: str,
    ts_received_ms: int,
    *,
    snapshot: bool = False,
    rest: bool = False,
    frame_ms: int | None = None,
) -> dict[str, Any]:
    """One Gate futures order (a ``futures.orders`` item, or a REST order with ``rest=True``) as an OrderEvent.

    - ``side``: the sign of ``size`` (+ bid -> buy, − ask -> sell); a ``size`` of 0 (``close`` orders) takes the sign
      of ``left``, else buy. ``size``: ``|size|``; ``filled_size``: ``|size| − |left|`` (exact Decimal, text without
      exponent); both as decimal strings, never floats.
    - ``status`` from ``order_status``; ``status_raw`` ``"<status>/<finish_as>"`` (``"open"`` when ``finish_as`` is
      empty or absent).
    - ``order_type``: Gate has none; ``price`` 0 with ``tif`` ``ioc`` is its market order (§2.7), so ``market``,
      else ``limit``.
    - ``client_order_id``: ``text`` when it is a user id (``t-`` prefix, §2.7); other texts (``web``, ``api``,
      ``app``, ``-``) name the order's origin -> None.
    - ``price``/``avg_fill_price`` (``fill_price``): text of the JSON number or string; ``reduce_only`` =
      ``is_reduce_only``.
    - ``ts_exchange``: socket: ``update_time`` (ms), else ``finish_time_ms`` (0 while open), else
      ``create_time_ms``, else the frame's ``time_ms``; REST (``rest``): ``finish_time``, else ``create_time``, in
      seconds (floats, converted exactly; the REST model has no update time).
    Raises KeyError/ValueError for a malformed order.
    """
    size_negative, size = _signed_size(o["size"])
    left_negative, left = _signed_size(o.get("left", 0))
    size_dec = _decimal(size, "size")
    left_dec = _decimal(left, "left")
    try:
        filled = _EXACT.subtract(size_dec, left_dec) if size_dec else Decimal(0)
    except ArithmeticError:  # more than 100 significant digits: not a size
        raise ValueError(f"gateio order size {size!r} / left {left!r} cannot be subtracted exactly") from None
    sell = size_negative if size_dec else left_negative
    status = o["status"]
    finish_as = o.get("finish_as") or ""
    text = o.get("text")
    price = _text(o.get("price"))
    order_type = "market" if price is not None and _is_zero(price) and o.get("tif") == "ioc" else "limit"
    if rest:
        ts = None
        for name in ("finish_time", "create_time"):
            value = o.get(name)
            if value:
                ts = _seconds_to_ms(value)
                break
    else:
        ts = _ms(o.get("update_time")) or _ms(o.get("finish_time_ms")) or _ms(o.get("create_time_ms")) or frame_ms
    return {
        "type": "order",
        "exchange": EXCHANGE_ID,
        "account": account,
        "symbol": o["contract"],
        "order_id": str(o["id"]),
        "client_order_id": text if type(text) is str and text.startswith("t-") else None,
        "side": "sell" if sell else "buy",
        "order_type": order_type,
        "status": order_status(status, finish_as, filled, left_dec),
        "status_raw": f"{status}/{finish_as}" if finish_as else status,
        "price": price,
        "size": size,
        "filled_size": format(filled, "f"),
        "avg_fill_price": _text(o.get("fill_price")),
        "reduce_only": o.get("is_reduce_only") if type(o.get("is_reduce_only")) is bool else None,
        "ts_exchange": ts,
        "ts_received": ts_received_ms,
        "snapshot": snapshot,
    }


def position_event(
    p: dict[str, Any],
    account: str,
    ts_received_ms: int,
    *,
    snapshot: bool = False,
    rest: bool = False,
    frame_ms: int | None = None,
) -> dict[str, Any]:
    """One Gate futures position (a ``futures.positions`` item, or a REST position with ``rest=True``) as a
    PositionEvent.

    ``mode`` single -> side ``both`` / mode ``one_way`` (``size`` signed: + long, − short), dual_long / dual_short ->
    ``long`` / ``short`` and ``hedge``; a missing mode -> ``both`` / None. ``size`` as sent (int or decimal string).
    ``leverage`` 0 means cross margin (§2.6): ``margin_mode`` ``cross`` and ``leverage`` = ``cross_leverage_limit``
    (None when that is 0 or absent too); otherwise ``isolated`` with that leverage. ``entry_price``, ``liq_price`` ->
    ``liquidation_price``, ``mark_price`` and ``unrealised_pnl`` (REST only; the push has neither) as text.
    ``ts_exchange``: socket ``time_ms`` (else ``time`` s, else the frame's), REST ``update_time`` (s).
    Raises KeyError/ValueError for a malformed position.
    """
    known = _POSITION_MODES.get(p.get("mode") or "")
    side, mode = known if known is not None else ("both", None)
    leverage = p.get("leverage")
    if leverage is None:
        margin_mode = None
        lev_text = None
    elif _is_zero(leverage):
        margin_mode = "cross"
        cross = p.get("cross_leverage_limit")
        lev_text = None if cross is None or _is_zero(cross) else _text(cross)
    else:
        margin_mode = "isolated"
        lev_text = _text(leverage)
    if rest:
        ts = _seconds_to_ms(p.get("update_time")) or None
    else:
        ts = _ms(p.get("time_ms")) or _seconds_to_ms(p.get("time")) or frame_ms
    return {
        "type": "position",
        "exchange": EXCHANGE_ID,
        "account": account,
        "symbol": p["contract"],
        "side": side,
        "mode": mode,
        "size": _size(p["size"]),
        "entry_price": _text(p.get("entry_price")),
        "mark_price": _text(p.get("mark_price")),
        "liquidation_price": _text(p.get("liq_price")),
        "leverage": lev_text,
        "margin_mode": margin_mode,
        "unrealized_pnl": _text(p.get("unrealised_pnl")),
        "ts_exchange": ts,
        "ts_received": ts_received_ms,
        "snapshot": snapshot,
    }


def order_push_events(topic: str, account: str, msg: dict[str, Any], ts_received_ms: int) -> list[tuple[str, Any]]:
    """``futures.orders``: one OrderEvent per ``result`` item (see ``order_event``)."""
    frame_ms = _frame_ms(msg)
    return [(topic, order_event(o, account, ts_received_ms, frame_ms=frame_ms)) for o in msg["result"]]


def position_push_events(
    topic: str, account: str, msg: dict[str, Any], ts_received_ms: int
) -> list[tuple[str, Any]]:
    """``futures.positions``: one PositionEvent per ``result`` item (see ``position_event``)."""
    frame_ms = _frame_ms(msg)
    return [(topic, position_event(p, account, ts_received_ms, frame_ms=frame_ms)) for p in msg["result"]]


def balance_push_events(topic: str, account: str, msg: dict[str, Any], ts_received_ms: int) -> list[tuple[str, Any]]:
    """``futures.balances``: a ledger entry per ``result`` item (``balance`` after the ``change``, ``type`` e.g.
    fee, §2.6) -> one BalanceEvent each: ``asset`` = ``currency`` upper-cased (the doc example sends ``btc``),
    ``balance`` = ``balance`` (JSON number -> its text), ``available``/``frozen`` None (not in the push; a REST
    ``GET /futures/usdt/accounts`` has them), ``ts_exchange`` = ``time_ms`` (else ``time`` s, else the frame's)."""
    frame_ms = _frame_ms(msg)
    events: list[tuple[str, Any]] = []
    for b in msg["result"]:
        ts = _ms(b.get("time_ms"))
        if ts is None:
            ts = _seconds_to_ms(b.get("time"))
        events.append(
            (
                topic,
                {
                    "type": "balance",
                    "exchange": EXCHANGE_ID,
                    "account": account,
                    "asset": b["currency"].upper(),
                    "balance": _text(b.get("balance")),
                    "available": None,
                    "frozen": None,
                    "ts_exchange": ts if ts is not None else frame_ms,
                    "ts_received": ts_received_ms,
                    "snapshot": False,
                },
            )
        )
    return events
