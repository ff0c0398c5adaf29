"""Wire shapes of the simulated Gate.io order API: request parsing helpers, the JSON of orders, positions and price
orders (REST and push), and the push envelopes (exchanges.md §2.6, §2.7).

Models: https://github.com/gateio/gateapi-python/tree/master/docs (``FuturesOrder.md``, ``Position.md``,
``FuturesPriceTriggeredOrder.md``); push fields: https://www.gate.com/docs/developers/futures/ws/en/ (orders,
positions, balances, autoorders). Sizes are contracts: ints, or decimal strings for an order placed with
``X-Gate-Size-Decimal: 1``; prices decimal strings; REST times seconds (floats), push ``*_ms`` times ms.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from scripts.sim.matching import MatchingEngine
from scripts.sim.matching_types import SimOrder, SimPosition, SimTrigger
from scripts.sim.tapes import GATE

__all__ = ["GateError", "bad", "dec", "number", "order_json", "parse_object", "position_json", "push_frame",
           "required", "trade_price", "trigger_json", "uid_value"]  # fmt: skip

_TRIGGER_FINISH = {"open": "", "triggered": "succeeded", "cancelled": "cancelled", "failed": "failed"}


class GateError(Exception):
    """A Gate error answer ``{"label","message"}`` with its HTTP status."""

    def __init__(self, status: int, label: str, message: str) -> None:
        super().__init__(label)
        self.status, self.label, self.message = status, label, message


def bad(field: str, why: str = "") -> GateError:
    """400 ``INVALID_PARAM_VALUE`` naming ``field`` (message text UNVERIFIED)."""
    return GateError(400, "INVALID_PARAM_VALUE", f"Invalid parameter value: {field}{': ' + why if why else ''}")


def dec(value: Decimal) -> str:
    """A Decimal as plain text without exponent or trailing zeros (``Decimal("61800.0")`` -> ``"61800"``)."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


def uid_value(memo: str) -> int | str:
    """Gate's ``user`` field: the account's uid as an int (as Gate sends it), else the text."""
    return int(memo) if memo.isdigit() else memo


def trade_price(frame: str) -> str:
    """Price of the last trade in a ``futures.trades`` push (the engine's tape price)."""
    return str(orjson.loads(frame)["result"][-1]["price"])


def parse_object(body: bytes) -> dict[str, Any]:
    """The JSON object of a request body; GateError 400 ``INVALID_REQUEST_BODY`` otherwise."""
    try:
        req = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        req = None
    if not isinstance(req, dict):
        raise GateError(400, "INVALID_REQUEST_BODY", "Request body must be a JSON object")
    return req


def required(req: dict[str, Any], name: str) -> str:
    """A non-empty string field; GateError 400 ``MISSING_REQUIRED_PARAM`` otherwise."""
    value = req.get(name)
    if not isinstance(value, str) or not value:
        raise GateError(400, "MISSING_REQUIRED_PARAM", f"Missing required parameter: {name}")
    return value


def number(value: Any, name: str, *, integral: bool = False) -> Decimal:
    """A JSON number or decimal string as an exact Decimal (``integral``: whole numbers only). Raises GateError."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise bad(name)
    try:
        parsed = Decimal(str(value))
    except InvalidOperation:
        raise bad(name) from None
    if not parsed.is_finite() or (integral and parsed != parsed.to_integral_value()):
        raise bad(name)
    return parsed


def _size(value: Decimal, decimal: bool) -> int | str:
    if decimal or value != value.to_integral_value():
        return dec(value)
    return int(value)


def order_json(o: SimOrder, *, ws: bool = False) -> dict[str, Any]:
    """A FuturesOrder (REST) or, with ``ws``, a ``futures.orders`` item (``create_time_ms``, ``finish_time_ms`` 0
    while open, ``update_time`` ms). ``size``/``left`` signed (+ bid, − ask), 0 for a close order;
    ``finish_as`` ``_new`` while open (REST), ``filled``/``cancelled``/``ioc`` when finished."""
    sign = 1 if o.side == "buy" else -1
    closing, decimal = o.venue.get("close", False), o.venue.get("decimal", False)
    done = o.status == "finished"
    d: dict[str, Any] = {
        "id": o.order_id, "user": uid_value(o.venue.get("uid", "")), "contract": o.symbol,
        "create_time": o.create_ms / 1000, "finish_time": o.update_ms / 1000,
        "finish_as": o.finish_as if done else "_new", "status": o.status,
        "size": _size(Decimal(0) if closing else o.size * sign, decimal), "iceberg": 0,
        "price": dec(o.price) if o.price is not None else "0", "close": closing, "is_close": closing,
        "reduce_only": o.reduce_only, "is_reduce_only": o.reduce_only, "is_liq": False, "tif": o.tif,
        "left": _size(Decimal(0) if closing else o.left * sign, decimal), "fill_price": dec(o.avg_price),
        "text": o.venue.get("text", "api"), "tkfr": "0", "mkfr": "0", "refu": 0,
        "auto_size": o.venue.get("auto_size", ""), "stp_act": "-", "stp_id": 0, "amend_text": "-",
        "update_time": o.update_ms / 1000,
    }  # fmt: skip
    if not done:
        del d["finish_time"]
    if ws:
        d |= {"create_time_ms": o.create_ms, "finish_time_ms": o.update_ms if done else 0,
              "update_time": o.update_ms, "finish_as": o.finish_as}  # fmt: skip
    return d


def position_json(
    engine: MatchingEngine, api_key: str, uid: str, p: SimPosition, *, ws: bool = False, decimal: bool = True
) -> dict[str, Any]:
    """A Position (REST) or, with ``ws``, a ``futures.positions`` item (``time`` s, ``time_ms``). ``size`` signed
    (a dual_short leg negative; a decimal string with ``decimal``, else an int); ``leverage`` 0 = cross with
    ``cross_leverage_limit``; PnL at the mark price."""
    spec = engine.contract(GATE, p.symbol)
    book = engine.book(GATE, api_key)
    lev, cross = engine.leverage(GATE, api_key, p.symbol)
    mark = engine.price(GATE, p.symbol, "mark")
    signed = -p.size if p.leg == "short" else p.size
    upnl = signed * spec.multiplier * (mark - p.entry) if p.size else Decimal(0)
    margin = abs(p.size) * spec.multiplier * p.entry / Decimal(lev or cross or spec.max_leverage)
    d: dict[str, Any] = {
        "user": uid_value(uid), "contract": p.symbol, "size": _size(signed, decimal), "leverage": str(lev),
        "risk_limit": "1000000", "leverage_max": str(spec.max_leverage), "maintenance_rate": "0.005",
        "value": dec(abs(p.size) * spec.multiplier * mark), "margin": dec(margin), "entry_price": dec(p.entry),
        "liq_price": "0", "mark_price": dec(mark), "unrealised_pnl": dec(upnl), "realised_pnl": dec(p.realised),
        "history_pnl": "0", "last_close_pnl": "0", "realised_point": "0", "history_point": "0", "adl_ranking": 6,
        "pending_orders": sum(1 for o in book.orders.values() if o.status == "open" and o.symbol == p.symbol),
        "mode": "single" if p.leg == "both" else f"dual_{p.leg}", "cross_leverage_limit": str(cross),
        "update_time": p.update_ms // 1000, "open_time": 0,
    }  # fmt: skip
    if ws:
        d |= {"time": p.update_ms // 1000, "time_ms": p.update_ms}
    return d


def trigger_json(t: SimTrigger, *, ws: bool = False) -> dict[str, Any]:
    """A FuturesPriceTriggeredOrder: ``initial``/``trigger`` as sent, ``status`` open|finished, ``finish_as``
    succeeded|cancelled|failed, ``trade_id`` the order it placed. ``ws``: the ``futures.autoorders`` item, which
    adds ``name``, ``is_stop_order`` and ``stop_trigger`` (fields of the doc's "Auto orders notification",
    https://www.gate.com/docs/developers/futures/ws/en/#auto-orders-notification; their values UNVERIFIED)."""
    extra = {"name": "price_autoorders", "is_stop_order": False, "stop_trigger": {}} if ws else {}
    return extra | {
        "initial": t.venue["initial"], "trigger": t.venue["trigger"], "id": t.trigger_id,
        "user": uid_value(t.venue.get("uid", "")), "create_time": t.create_ms / 1000,
        "finish_time": t.update_ms / 1000 if t.status != "open" else 0, "trade_id": t.actual_id,
        "status": "open" if t.status == "open" else "finished", "finish_as": _TRIGGER_FINISH[t.status],
        "reason": t.reason, "order_type": t.venue.get("order_type", ""), "me_order_id": "0",
    }  # fmt: skip


def push_frame(
    engine: MatchingEngine, api_key: str, uid: str, now_ms: int, kind: str, obj: Any, extra: dict[str, Any]
) -> tuple[str, str]:
    """``(channel, frame text)`` of one engine change: ``{"time","time_ms","channel","event":"update","result":[…]}``
    on ``futures.orders`` | ``futures.positions`` | ``futures.autoorders`` | ``futures.balances`` (a ledger entry
    ``{"balance","change","text","time","time_ms","type":"pnl","currency":"USDT","user"}``)."""
    if kind == "order":
        channel, result = "futures.orders", [order_json(obj, ws=True)]
    elif kind == "position":
        channel, result = "futures.positions", [position_json(engine, api_key, uid, obj, ws=True)]
    elif kind == "trigger":
        channel, result = "futures.autoorders", [trigger_json(obj, ws=True)]
    else:
        reason = extra.get("reason", "pnl")
        channel, result = "futures.balances", [{
            "balance": dec(obj.balance), "change": dec(extra["change"]), "text": reason, "time": now_ms // 1000,
            "time_ms": now_ms, "type": reason, "currency": "USDT", "user": uid,
        }]  # fmt: skip
    frame = {"time": now_ms // 1000, "time_ms": now_ms, "channel": channel, "event": "update", "result": result}
    return channel, orjson.dumps(frame).decode()
