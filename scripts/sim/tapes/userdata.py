"""Private (user-data) fixtures: the pushes of each private channel and the REST bodies built from them.

Sources: JKorf BitMart.Net and GateIo.Net fixture conversations, nautilus Binance USD-M user-data payloads
(``../shared/exchange-ws-samples/``). Played once per subscription by ``scripts.sim.private``.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import orjson

from scripts import tapes
from scripts.sim.tapes.catalog import BINANCE, BITMART, GATE, LOAD_LOCK, dec, dir_key, rel_path

SRC_BINANCE_USER_FIXTURE = "nautilus Binance USD-M user-data fixture (not a live capture)"
#: Private channel keys: BitMart topics as subscribed, Gate channels, and Binance's one user stream.
BINANCE_USER_STREAM = "user-data"
_BITMART_PRIVATE_FILES = ("Orders.txt", "Positions.txt", "Balances.txt")
_GATE_PRIVATE_FILES = (
    "SubscribeToOrderUpdates.txt",
    "SubscribeToPositionUpdates.txt",
    "SubscribeToBalanceUpdates.txt",
)
#: ``algo_update_new.json``: a resting TAKE_PROFIT in the Algo Service (ALGO_UPDATE, binance_usdm.md §7). Its
#: ``algo_update_canceled.json`` twin is left out: both carry the same ``E``, so their order would be arbitrary.
_BINANCE_USER_FILES = ("order_update_*.json", "account_update*.json", "algo_update_new.json")
_private_cache: dict[str, dict[tuple[str, str], tuple[str, ...]]] = {}


def private_frames(exchange: str, channel: str, samples_dir: Path | None = None) -> tuple[str, ...]:
    """The fixture pushes of one private channel, minified with key order kept; () when there are none.

    - BitMart (``channel`` = topic): ``futures/order`` (``Orders.txt``), ``futures/position``
      (``Positions.txt``), ``futures/asset:BTC`` (``Balances.txt``, whose only push is BTC; USDT and ETH
      have no fixture frame). Each served only on the topic its ``group`` names.
    - Gate (``channel`` = ``futures.orders`` | ``futures.positions`` | ``futures.balances``): the JKorf
      ``SubscribeTo{Order,Position,Balance}Updates.txt`` pushes, verbatim values (contract ``BTC_USD``,
      ``user`` "110"/"211", sizes as decimal strings).
    - Binance (``channel`` = ``BINANCE_USER_STREAM``): the nautilus ``order_update_*.json``,
      ``account_update*.json`` and ``algo_update_new.json`` (a resting conditional order) payloads (bare, ws
      mode), ordered by ``E`` then file name — so an order's NEW precedes its TRADEs (binance_usdm.md §7: sort
      by ``E``).

    Small files, read once per process (blocking, a few ms). Raises FileNotFoundError without the samples.
    """
    key = dir_key(samples_dir)
    with LOAD_LOCK:
        loaded = _private_cache.get(key)
        if loaded is None:
            loaded = _private_cache[key] = _load_private(samples_dir)
    return loaded.get((exchange, channel), ())


def _load_private(samples_dir: Path | None) -> dict[tuple[str, str], tuple[str, ...]]:
    out: dict[tuple[str, str], list[str]] = {}
    for name in _BITMART_PRIVATE_FILES:
        for fr in tapes.read_jkorf(rel_path(samples_dir, f"{tapes.BITMART_FIXTURES}/{name}")):
            if fr.direction == "=":
                frame = orjson.loads(fr.raw)
                out.setdefault((BITMART, frame["group"]), []).append(orjson.dumps(frame).decode())
    for name in _GATE_PRIVATE_FILES:
        for fr in tapes.read_jkorf(rel_path(samples_dir, f"jkorf-gateio-net/{name}")):
            if fr.direction == "=":
                frame = orjson.loads(fr.raw)
                out.setdefault((GATE, frame["channel"]), []).append(orjson.dumps(frame).decode())
    folder = (samples_dir or tapes.samples_dir()) / "nautilus" / "binance-futures"
    events = []
    for pattern in _BINANCE_USER_FILES:
        for path in folder.glob(pattern):
            payload = orjson.loads(path.read_bytes())
            events.append((int(payload["E"]), path.name, orjson.dumps(payload).decode()))
    if not events:
        raise FileNotFoundError(f"no Binance user-data fixtures in {folder}")
    out[(BINANCE, BINANCE_USER_STREAM)] = [frame for _, _, frame in sorted(events)]
    return {k: tuple(v) for k, v in out.items()}


def bitmart_open_orders(samples_dir: Path | None = None) -> list[dict[str, object]]:
    """``GET /contract/private/get-open-orders`` ``data``: the ``futures/order`` fixture orders still open.

    Open = ``state`` 1 (approval) or 2 (check); the last push of an ``order_id`` wins. Fields are the
    push's ``order`` object less the push-only ``last_trade`` and ``plan_order_id`` (the REST doc's
    example has neither); REST-only fields the fixture lacks (``position_mode``, preset TP/SL) are
    left out.
    """
    orders: dict[str, dict[str, object]] = {}
    for raw in private_frames(BITMART, "futures/order", samples_dir):
        for item in orjson.loads(raw)["data"]:
            order = {k: v for k, v in item["order"].items() if k not in ("last_trade", "plan_order_id")}
            orders[str(order["order_id"])] = order
    return [o for o in orders.values() if o.get("state") in (1, 2)]


def bitmart_positions(samples_dir: Path | None = None) -> list[dict[str, object]]:
    """``GET /contract/private/position`` ``data``, mapped from the ``futures/position`` fixture pushes.

    Push field -> REST field: ``hold_volume`` -> ``current_amount``, ``hold_avg_price`` -> ``entry_price``,
    ``close_volume`` -> ``close_vol``, ``create_time`` -> ``open_timestamp``, ``update_time`` ->
    ``timestamp``, ``open_type`` 1/2 -> ``margin_type`` Isolated/Cross, ``liquidate_price`` ->
    ``liquidation_price`` (that REST name is UNVERIFIED: the doc example has no liquidation price);
    ``symbol``, ``position_type``, ``open_avg_price``, ``close_avg_price`` as pushed. REST fields the push
    lacks (leverage, mark price, values, fees, position_mode) are left out. Mapping UNVERIFIED (no fixture
    pairs a push with a REST answer).
    """
    out = []
    for raw in private_frames(BITMART, "futures/position", samples_dir):
        for p in orjson.loads(raw)["data"]:
            out.append(
                {
                    "symbol": p["symbol"],
                    "timestamp": p["update_time"],
                    "open_timestamp": p["create_time"],
                    "margin_type": "Isolated" if p["open_type"] == 1 else "Cross",
                    "close_vol": p["close_volume"],
                    "close_avg_price": p["close_avg_price"],
                    "open_avg_price": p["open_avg_price"],
                    "entry_price": p["hold_avg_price"],
                    "current_amount": p["hold_volume"],
                    "liquidation_price": p["liquidate_price"],
                    "position_type": p["position_type"],
                    "account": "futures",
                }
            )
    return out


def binance_open_orders(samples_dir: Path | None = None) -> list[dict[str, object]]:
    """``GET /fapi/v1/openOrders``: the fixture orders whose last ``ORDER_TRADE_UPDATE`` is NEW or PARTIALLY_FILLED.

    Mapped from ``o``: ``i`` orderId, ``c`` clientOrderId, ``s``, ``S`` side, ``o`` type, ``ot`` origType,
    ``f`` timeInForce, ``q`` origQty, ``z`` executedQty, ``p`` price, ``ap`` avgPrice, ``sp`` stopPrice,
    ``ps`` positionSide, ``R`` reduceOnly, ``cp`` closePosition, ``wt`` workingType, ``pP`` priceProtect,
    ``V`` selfTradePreventionMode, ``AP``/``cr`` activatePrice/priceRate (trailing stops only), ``T``
    time and updateTime; cumQuote = ``z`` x ``ap`` (derived). UNVERIFIED where the fixtures are silent
    (order creation time, priceMatch, goodTillDate: left out).
    """
    last: dict[int, dict[str, object]] = {}
    for raw in private_frames(BINANCE, BINANCE_USER_STREAM, samples_dir):
        event = orjson.loads(raw)
        if event.get("e") == "ORDER_TRADE_UPDATE":
            last[int(event["o"]["i"])] = event["o"]
    out = []
    for o in last.values():
        if o["X"] not in ("NEW", "PARTIALLY_FILLED"):
            continue
        order: dict[str, object] = {
            "orderId": o["i"],
            "symbol": o["s"],
            "status": o["X"],
            "clientOrderId": o["c"],
            "price": o["p"],
            "avgPrice": o["ap"],
            "origQty": o["q"],
            "executedQty": o["z"],
            "cumQuote": dec(Decimal(str(o["z"])) * Decimal(str(o["ap"]))),
            "timeInForce": o["f"],
            "type": o["o"],
            "reduceOnly": o["R"],
            "closePosition": o["cp"],
            "side": o["S"],
            "positionSide": o["ps"],
            "stopPrice": o["sp"],
            "workingType": o["wt"],
            "priceProtect": o["pP"],
            "origType": o["ot"],
            "selfTradePreventionMode": o["V"],
            "time": o["T"],
            "updateTime": o["T"],
        }
        if o["o"] == "TRAILING_STOP_MARKET":
            order["activatePrice"], order["priceRate"] = o["AP"], o["cr"]
        out.append(order)
    return out


def binance_position_risk(samples_dir: Path | None = None) -> list[dict[str, object]]:
    """``GET /fapi/v2/positionRisk``: the positions of the fixture ``ACCOUNT_UPDATE`` events, last per ``(s, ps)``.

    Mapped from ``a.P[]``: ``s`` symbol, ``pa`` positionAmt, ``ep`` entryPrice, ``bep`` breakEvenPrice,
    ``up`` unRealizedProfit, ``mt`` marginType, ``iw`` isolatedWallet, ``ps`` positionSide, the event's
    ``E`` updateTime. markPrice, liquidationPrice, leverage, notional and maxNotionalValue are not in the
    fixtures and are left out (UNVERIFIED shape beyond these keys).
    """
    positions: dict[tuple[str, str], dict[str, object]] = {}
    for raw in private_frames(BINANCE, BINANCE_USER_STREAM, samples_dir):
        event = orjson.loads(raw)
        if event.get("e") != "ACCOUNT_UPDATE":
            continue
        for p in event["a"]["P"]:
            positions[(p["s"], p["ps"])] = {
                "symbol": p["s"],
                "positionAmt": p["pa"],
                "entryPrice": p["ep"],
                "breakEvenPrice": p["bep"],
                "unRealizedProfit": p["up"],
                "marginType": p["mt"],
                "isolatedWallet": p["iw"],
                "positionSide": p["ps"],
                "updateTime": event["E"],
            }
    return list(positions.values())


def gate_orders(status: str, samples_dir: Path | None = None) -> list[dict[str, object]]:
    """``GET /api/v4/futures/usdt/orders?status=…``: the ``futures.orders`` fixture orders.

    ``finished``: verbatim. ``open``: the same orders restated as still open — ``status`` "open",
    ``finish_as`` "_new", ``finish_time``/``finish_time_ms`` 0 — because the only fixture order is
    finished (it is partly filled, ``left`` 0.5 of 1.5, so it reads as a resting order). DERIVED.
    """
    out = []
    for raw in private_frames(GATE, "futures.orders", samples_dir):
        for order in orjson.loads(raw)["result"]:
            if status == "open":
                order = order | {"status": "open", "finish_as": "_new", "finish_time": 0, "finish_time_ms": 0}
            out.append(order)
    return out


def gate_positions(samples_dir: Path | None = None) -> list[dict[str, object]]:
    """``GET /api/v4/futures/usdt/positions``: the ``futures.positions`` fixture positions, verbatim."""
    return [p for raw in private_frames(GATE, "futures.positions", samples_dir) for p in orjson.loads(raw)["result"]]
