"""Wire shapes of the simulated Binance USD-M order API: error bodies, REST order / algo order / position JSON and the
user-data pushes ``ORDER_TRADE_UPDATE``, ``ACCOUNT_UPDATE`` and ``ALGO_UPDATE`` (binance_usdm.md §7).

Sources: New Order https://developers.binance.com/docs/derivatives/usds-margined-futures/trade/rest-api (response
fields), Query Algo Order https://developers.binance.com/docs/derivatives/usds-margined-futures/trade/rest-api/Query-Algo-Order
(algo JSON), error codes https://developers.binance.com/docs/derivatives/usds-margined-futures/error-code, events
https://developers.binance.com/docs/derivatives/usds-margined-futures/user-data-streams (Event-Order-Update,
Event-Balance-and-Position-Update, Event-Algo-Order-Update). Decimals are strings, times epoch ms, ids ints.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson

from scripts.sim.matching import MatchingEngine
from scripts.sim.matching_types import Book, SimOrder, SimPosition, SimTrigger
from scripts.sim.tapes import BINANCE

__all__ = [
    "BinanceError",
    "account_update",
    "algo_json",
    "algo_update",
    "fixed",
    "order_json",
    "order_update",
    "places",
    "position_json",
    "trade_price",
]  # fmt: skip

#: Engine reason -> (code, msg) (error-code page above; the -5022 text as quoted in third-party reports, UNVERIFIED).
ERRORS: dict[str, tuple[int, str]] = {
    "unknown_symbol": (-1121, "Invalid symbol."),
    "bad_tick": (-4014, "Price not increased by tick size."),
    "bad_lot": (-1013, "Filter failure: LOT_SIZE"),
    "size_too_small": (-4004, "Quantity less than min quantity."),
    "insufficient_margin": (-2019, "Margin is insufficient."),
    "reduce_only": (-2022, "ReduceOnly Order is rejected."),
    "position_empty": (-2022, "ReduceOnly Order is rejected."),
    "post_only_cross": (-5022, ("Due to the order could not be executed as maker, the Post Only order will be "
                               "rejected. The order will not be recorded in the order history")),
    "leverage_invalid": (-4028, "Leverage is not valid"),
    "would_trigger": (-2021, "Order would immediately trigger."),
}  # fmt: skip
_STATUS = {"filled": "FILLED", "cancelled": "CANCELED", "ioc": "EXPIRED"}
_ALGO_STATUS = {"open": "NEW", "triggered": "FINISHED", "cancelled": "CANCELED", "failed": "REJECTED"}


class BinanceError(Exception):
    """A Binance error answer ``{"code","msg"}`` with its HTTP status (400 unless told)."""

    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        super().__init__(f"{code} {msg}")
        self.code, self.msg, self.status = code, msg, status


def fixed(value: Decimal, places: int) -> str:
    """``value`` with exactly ``places`` decimals (Binance pads: ``"61800.00"``, quantities ``"0.010"``)."""
    return f"{value:.{places}f}"


def trade_price(frame: str) -> str:
    """``p`` of a ``<s>@trade`` / ``@aggTrade`` payload (bare, or in a combined-stream envelope)."""
    msg = orjson.loads(frame)
    return str(msg.get("data", msg)["p"])


def places(step: Decimal) -> int:
    """Decimals of a filter step as written (``Decimal("0.10")`` -> 2, ``Decimal("0.001")`` -> 3)."""
    return max(0, -step.as_tuple().exponent)  # type: ignore[operator]


def order_json(engine: MatchingEngine, o: SimOrder) -> dict[str, Any]:
    """A REST order (New/Query/Cancel Order response): ``status`` NEW|FILLED|CANCELED|EXPIRED, ``executedQty``,
    ``avgPrice``, ``cumQuote``; ``price`` "0" for a market order."""
    spec = engine.contract(BINANCE, o.symbol)
    px, qx = places(spec.tick), places(spec.lot)
    status = _STATUS.get(o.finish_as, "NEW") if o.status == "finished" else "NEW"
    return {
        "orderId": o.order_id, "symbol": o.symbol, "status": status, "clientOrderId": o.client_id,
        "price": fixed(o.price or Decimal(0), px), "avgPrice": fixed(o.avg_price, px), "origQty": fixed(o.size, qx),
        "executedQty": fixed(o.filled, qx), "cumQty": fixed(o.filled, qx),
        "cumQuote": fixed(o.filled * o.avg_price, px), "timeInForce": o.venue.get("tif", "GTC"),
        "type": o.venue.get("type", "LIMIT"), "reduceOnly": o.reduce_only, "closePosition": o.close_position,
        "side": o.side.upper(), "positionSide": "BOTH", "stopPrice": "0", "workingType": "CONTRACT_PRICE",
        "priceProtect": False, "origType": o.venue.get("type", "LIMIT"), "priceMatch": "NONE",
        "selfTradePreventionMode": "EXPIRE_MAKER", "goodTillDate": 0, "time": o.create_ms, "updateTime": o.update_ms,
    }  # fmt: skip


def algo_json(engine: MatchingEngine, t: SimTrigger) -> dict[str, Any]:
    """A Query Algo Order object: ``algoStatus`` NEW|FINISHED|CANCELED|REJECTED, ``actualOrderId`` once fired."""
    spec = engine.contract(BINANCE, t.symbol)
    px, qx = places(spec.tick), places(spec.lot)
    o = t.order
    return {
        "algoId": t.trigger_id, "clientAlgoId": t.client_id, "algoType": "CONDITIONAL",
        "orderType": t.venue["type"], "symbol": t.symbol, "side": o.side.upper(), "positionSide": "BOTH",
        "timeInForce": t.venue.get("tif", "GTC"), "quantity": fixed(o.size, qx), "algoStatus": _ALGO_STATUS[t.status],
        "actualOrderId": str(t.actual_id) if t.actual_id else "", "actualPrice": fixed(o.avg_price, px),
        "triggerPrice": fixed(t.trigger, px), "price": fixed(o.price or Decimal(0), px), "icebergQuantity": None,
        "selfTradePreventionMode": "EXPIRE_MAKER",
        "workingType": "MARK_PRICE" if t.price_type == "mark" else "CONTRACT_PRICE", "priceMatch": "NONE",
        "closePosition": o.close_position, "priceProtect": False, "reduceOnly": o.reduce_only,
        "createTime": t.create_ms, "updateTime": t.update_ms, "triggerTime": t.update_ms if t.actual_id else 0,
        "goodTillDate": 0,
    }  # fmt: skip


def position_json(engine: MatchingEngine, api_key: str, p: SimPosition, margin_type: str) -> dict[str, Any]:
    """A ``/fapi/v2/positionRisk`` item (one-way mode: ``positionSide`` BOTH, ``positionAmt`` signed)."""
    spec = engine.contract(BINANCE, p.symbol)
    lev, _ = engine.leverage(BINANCE, api_key, p.symbol)
    mark = engine.price(BINANCE, p.symbol, "mark")
    px, qx = places(spec.tick), places(spec.lot)
    isolated = p.size * p.entry / Decimal(lev) if margin_type == "isolated" else Decimal(0)
    return {
        "symbol": p.symbol, "positionAmt": fixed(p.size, qx), "entryPrice": fixed(p.entry, px),
        "breakEvenPrice": fixed(p.entry, px), "markPrice": fixed(mark, px),
        "unRealizedProfit": fixed(p.size * (mark - p.entry), 8), "liquidationPrice": "0", "leverage": str(lev),
        "maxNotionalValue": "10000000", "marginType": margin_type, "isolatedMargin": fixed(abs(isolated), 8),
        "isAutoAddMargin": "false", "positionSide": "BOTH", "notional": fixed(p.size * mark, 8),
        "isolatedWallet": fixed(abs(isolated), 8), "updateTime": p.update_ms,
    }  # fmt: skip


def order_update(engine: MatchingEngine, o: SimOrder, now_ms: int, execution: str) -> str:
    """An ``ORDER_TRADE_UPDATE`` frame; ``execution`` (``x``) NEW|TRADE|CANCELED|EXPIRED; TRADE carries the fill
    (``l``/``L``, all at once: the engine fills an order whole)."""
    spec = engine.contract(BINANCE, o.symbol)
    px, qx = places(spec.tick), places(spec.lot)
    trade = execution == "TRADE"
    status = {"NEW": "NEW", "TRADE": "FILLED", "CANCELED": "CANCELED", "EXPIRED": "EXPIRED"}[execution]
    body = {
        "s": o.symbol, "c": o.client_id, "S": o.side.upper(), "o": o.venue.get("type", "LIMIT"),
        "f": o.venue.get("tif", "GTC"), "q": fixed(o.size, qx), "p": fixed(o.price or Decimal(0), px),
        "ap": fixed(o.avg_price if trade else Decimal(0), px), "sp": "0", "x": execution, "X": status,
        "i": o.order_id, "l": fixed(o.filled if trade else Decimal(0), qx),
        "z": fixed(o.filled if trade else Decimal(0), qx), "L": fixed(o.avg_price if trade else Decimal(0), px),
        "n": "0", "N": "USDT", "T": o.update_ms, "t": o.order_id if trade else 0, "b": "0", "a": "0",
        "m": trade and o.venue.get("maker", False), "R": o.reduce_only, "wt": "CONTRACT_PRICE",
        "ot": o.venue.get("type", "LIMIT"), "ps": "BOTH", "cp": o.close_position, "rp": "0", "pP": False, "si": 0,
        "ss": 0, "V": "EXPIRE_MAKER", "pm": "NONE", "gtd": 0, "er": "0",
    }  # fmt: skip
    return orjson.dumps({"e": "ORDER_TRADE_UPDATE", "E": now_ms, "T": o.update_ms, "o": body}).decode()


def account_update(engine: MatchingEngine, book: Book, p: SimPosition, margin_type: str, now_ms: int) -> str:
    """An ``ACCOUNT_UPDATE`` (reason ``ORDER``) with the USDT balance and the changed position."""
    spec = engine.contract(BINANCE, p.symbol)
    px, qx = places(spec.tick), places(spec.lot)
    mark = engine.price(BINANCE, p.symbol, "mark")
    wallet = fixed(book.balance, 8)
    a = {
        "m": "ORDER", "B": [{"a": "USDT", "wb": wallet, "cw": wallet, "bc": "0"}],
        "P": [{"s": p.symbol, "pa": fixed(p.size, qx), "ep": fixed(p.entry, px), "bep": fixed(p.entry, px),
               "cr": fixed(p.realised, 8), "up": fixed(p.size * (mark - p.entry), 8), "mt": margin_type,
               "iw": "0", "ps": "BOTH"}],
    }  # fmt: skip
    return orjson.dumps({"e": "ACCOUNT_UPDATE", "E": now_ms, "T": p.update_ms, "a": a}).decode()


def algo_update(engine: MatchingEngine, t: SimTrigger, now_ms: int, status: str) -> str:
    """An ``ALGO_UPDATE`` frame with algo status ``status`` (NEW, CANCELED, TRIGGERED, FINISHED, REJECTED)."""
    d = algo_json(engine, t)
    fired = status in ("TRIGGERED", "FINISHED")
    o = {
        "caid": d["clientAlgoId"], "aid": d["algoId"], "at": "CONDITIONAL", "o": d["orderType"], "s": d["symbol"],
        "S": d["side"], "ps": "BOTH", "f": d["timeInForce"], "q": d["quantity"], "X": status,
        "ai": d["actualOrderId"] if fired else "", "ap": d["actualPrice"],
        "aq": d["quantity"] if status == "FINISHED" else "0", "act": "0", "tp": d["triggerPrice"], "p": d["price"],
        "V": "EXPIRE_MAKER", "wt": d["workingType"], "pm": "NONE", "cp": d["closePosition"], "pP": False,
        "R": d["reduceOnly"], "tt": d["triggerTime"], "gtd": 0, "rm": t.reason,
    }  # fmt: skip
    return orjson.dumps({"e": "ALGO_UPDATE", "T": t.update_ms, "E": now_ms, "o": o}).decode()
