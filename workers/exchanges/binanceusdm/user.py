"""Binance USD-M user-data events that take more than a field copy (pure: no I/O, no clock, no logging):
``ACCOUNT_UPDATE`` item by item (what parses is kept, what does not is counted), and ``ALGO_UPDATE`` (conditional
orders held by the Algo Service) as OrderEvents with their trigger. ``public.BinanceUsdmParser`` calls these; facts
are from ``shared/reference/binance_usdm.md`` (§0, §7) and the pages quoted below.

    ACCOUNT_UPDATE {"e":"ACCOUNT_UPDATE","E":1564745798939,"T":1564745798939,"a":{"m":"ORDER",
               "B":[{"a":"USDT","wb":"122624.12345678","cw":"100.12345678","bc":"50.12345678"}],
               "P":[{"s":"BTCUSDT","pa":"20","ep":"6563.6","bep":"6563.559","cr":"0","up":"2850.21200","mt":"isolated",
               "iw":"13200.70726908","ps":"LONG"}]}}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from workers.exchanges.binanceusdm.wire import ALGO_STATUSES, EXCHANGE_ID, POSITION_SIDES
from workers.exchanges.numbers import decimal_value

#: How many skip reasons an ACCOUNT_UPDATE report quotes (the counts cover them all).
_MAX_REASONS = 3


def _decimal(value: Any, name: str) -> Decimal:
    """``value`` (a decimal string, as Binance sends prices and sizes) as a finite Decimal; ValueError otherwise."""
    return decimal_value(value, name, EXCHANGE_ID)


@dataclass(slots=True)
class AccountUpdate:
    """What one ``ACCOUNT_UPDATE`` gave: ``events`` (PositionEvents, then BalanceEvents, in frame order), the number
    of ``a.P`` / ``a.B`` items skipped because they did not parse, the item counts, and the first few reasons."""

    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    positions: int = 0
    balances: int = 0
    skipped_positions: int = 0
    skipped_balances: int = 0
    reasons: list[str] = field(default_factory=list)

    def report(self) -> str | None:
        """None when every item parsed, else one line for the log (``Parsed.error``), e.g. ``binanceusdm
        ACCOUNT_UPDATE: skipped 1 of 3 positions (ETHUSDT: unknown position side 'SIDEWAYS')``."""
        parts = [
            f"{skipped} of {total} {what}"
            for skipped, total, what in (
                (self.skipped_positions, self.positions, "positions"),
                (self.skipped_balances, self.balances, "balances"),
            )
            if skipped
        ]
        if not parts:
            return None
        return f"binanceusdm ACCOUNT_UPDATE: skipped {' and '.join(parts)} ({'; '.join(self.reasons)})"

    def _skip(self, reason: str) -> None:
        if len(self.reasons) < _MAX_REASONS:
            self.reasons.append(reason)


def account_update_events(
    d: dict[str, Any], position_topic: str, balance_topic: str, account: str, ts_received_ms: int
) -> AccountUpdate:
    """``ACCOUNT_UPDATE`` ``{e,E,T,a:{m,B:[…],P:[…]}}`` (only changed balances and positions, §7) -> one PositionEvent
    per ``a.P`` item, then one BalanceEvent per ``a.B`` item, all with ``ts_exchange`` = ``E``.

    Positions: ``pa`` (signed amount) -> ``size`` as sent; ``ps`` LONG/SHORT -> side long/short and mode hedge,
    BOTH -> side both and mode one_way; ``ep`` -> ``entry_price``; ``up`` -> ``unrealized_pnl``; ``mt`` ->
    ``margin_mode``; no mark price, liquidation price or leverage in this event (None).
    Balances: ``a`` asset, ``wb`` wallet balance -> ``balance``. ``available`` and ``frozen`` are None: ``cw``
    is the *cross wallet* balance (wallet minus isolated margin), not what is free to trade, and the event has
    no available figure (REST ``/fapi/v2/balance`` ``availableBalance`` has).

    Each item stands alone: one with a position side outside BOTH/LONG/SHORT, or without ``s``/``pa`` (``a`` for a
    balance), is skipped and counted in the result instead of costing the frame's other items. Raises KeyError,
    TypeError or AttributeError only when the frame itself has no ``a`` object.
    """
    a = d["a"]
    ts_exchange = d.get("E")
    positions, balances = a.get("P") or (), a.get("B") or ()
    out = AccountUpdate()
    for p in positions:
        out.positions += 1
        try:
            side_mode = POSITION_SIDES.get(p["ps"])
            if side_mode is None:
                raise LookupError(f"unknown position side {p['ps']!r}")
            side, mode = side_mode
            event = {
                "type": "position",
                "exchange": EXCHANGE_ID,
                "account": account,
                "symbol": p["s"],
                "side": side,
                "mode": mode,
                "size": p["pa"],
                "entry_price": p.get("ep"),
                "mark_price": None,
                "liquidation_price": None,
                "leverage": None,
                "margin_mode": p.get("mt"),
                "unrealized_pnl": p.get("up"),
                "ts_exchange": ts_exchange,
                "ts_received": ts_received_ms,
                "snapshot": False,
            }
        except (LookupError, TypeError, AttributeError) as exc:
            out.skipped_positions += 1
            out._skip(f"{_item_symbol(p, 's')}: {_why(exc)}")
            continue
        out.events.append((position_topic, event))
    for b in balances:
        out.balances += 1
        try:
            event = {
                "type": "balance",
                "exchange": EXCHANGE_ID,
                "account": account,
                "asset": b["a"],
                "balance": b.get("wb"),
                "available": None,
                "frozen": None,
                "ts_exchange": ts_exchange,
                "ts_received": ts_received_ms,
                "snapshot": False,
            }
        except (LookupError, TypeError, AttributeError) as exc:
            out.skipped_balances += 1
            out._skip(f"balance {_item_symbol(b, 'a')}: {_why(exc)}")
            continue
        out.events.append((balance_topic, event))
    return out


def _item_symbol(item: Any, key: str) -> str:
    value = item.get(key) if type(item) is dict else None
    return str(value) if value is not None else "?"


def _why(exc: Exception) -> str:
    if type(exc) is KeyError:
        return f"missing {exc}"
    return str(exc) if type(exc) is LookupError else repr(exc)


def algo_status(status: str, size: Any, executed: Any) -> str:
    """OrderEvent ``status`` of an algo (conditional) order: ``ALGO_STATUSES`` for NEW, CANCELED, TRIGGERING,
    TRIGGERED, REJECTED and EXPIRED. FINISHED ("the triggered conditional order has been filled or canceled in the
    matching engine") is ``filled`` when the executed quantity ``aq`` is > 0 and covers the quantity ``q`` (or ``q``
    is 0: a close-all order), else ``canceled``; without ``aq`` it stays ``triggered`` (the resulting order's own
    ``ORDER_TRADE_UPDATE`` tells its end). Any other status is ``new`` (``status_raw`` keeps the word). Raises
    ValueError when FINISHED comes with quantities that are not decimal strings."""
    known = ALGO_STATUSES.get(status)
    if known is not None:
        return known
    if status != "FINISHED":
        return "new"
    if executed is None:
        return "triggered"
    done = _decimal(executed, "algo executed quantity")
    total = _decimal(size, "algo quantity") if size is not None else Decimal(0)
    return "filled" if done > 0 and (total == 0 or done >= total) else "canceled"


def algo_order_event(o: dict[str, Any], account: str, ts_exchange: Any, ts_received_ms: int) -> dict[str, Any]:
    """One ``ALGO_UPDATE`` order object ``o`` as an OrderEvent plus four keys that only these events carry.

    Since 2025-12-02 STOP*, TAKE_PROFIT* and TRAILING_STOP_MARKET orders live in the Algo Service and report through
    ``ALGO_UPDATE`` until they trigger (binance_usdm.md §0, §7). Fields, from the documented frame ("Event: Algo Order
    Update", https://developers.binance.com/docs/derivatives/usds-margined-futures/user-data-streams/Event-Algo-Order-Update)::

        {"e":"ALGO_UPDATE","T":1750515742297,"E":1750515742303,"o":{"caid":"Q5xaq5EGKgXXa0fD7fs0Ip","aid":2148719,
         "at":"CONDITIONAL","o":"TAKE_PROFIT","s":"BNBUSDT","S":"SELL","ps":"BOTH","f":"GTC","q":"0.01",
         "X":"CANCELED","ai":"","ap":"0.00000","aq":"0.00000","act":"0","tp":"750","p":"750","V":"EXPIRE_MAKER",
         "wt":"CONTRACT_PRICE","pm":"NONE","cp":false,"pP":false,"R":false,"tt":0,"gtd":0,"rm":"Reduce Only reject"}}

    ``aid`` (algo id; its own id space, not an order id) -> ``order_id``; ``caid`` -> ``client_order_id``; ``S`` and
    ``o`` lower-cased -> ``side`` and ``order_type`` (``take_profit``, ``stop_market``, ``trailing_stop_market``…);
    ``X`` -> ``status`` (``algo_status``; the new value ``triggered``) and ``status_raw``; ``p`` price, ``q`` size,
    ``aq`` -> ``filled_size``, ``ap`` -> ``avg_fill_price`` (as sent, None when absent: "only display when order is
    triggered"); ``R`` -> ``reduce_only``; ``ts_exchange`` = the frame's ``E`` (as for ``ORDER_TRADE_UPDATE``; the doc
    labels ``E``/``T`` inconsistently between versions). Extra keys: ``trigger_price`` (``tp``, decimal string),
    ``trigger_price_type`` (``wt`` lower-cased: ``contract_price`` = last price, ``mark_price``), ``actual_order_id``
    (``ai``: the matching-engine order the trigger placed, whose ``ORDER_TRADE_UPDATE`` events carry it as
    ``order_id``; None before that) and ``algo`` (True). Raises KeyError/TypeError/AttributeError for a missing
    ``aid``, ``s``, ``S``, ``o`` or ``X``, ValueError for non-decimal quantities on FINISHED.
    """
    status_raw = o["X"]
    client = o.get("caid")
    reduce = o.get("R")
    trigger = o.get("tp")
    working = o.get("wt")
    actual = o.get("ai")
    return {
        "type": "order",
        "exchange": EXCHANGE_ID,
        "account": account,
        "symbol": o["s"],
        "order_id": str(o["aid"]),
        "client_order_id": str(client) if client not in (None, "") else None,
        "side": o["S"].lower(),
        "order_type": o["o"].lower(),
        "status": algo_status(status_raw, o.get("q"), o.get("aq")),
        "status_raw": status_raw,
        "price": o.get("p"),
        "size": o.get("q"),
        "filled_size": o.get("aq"),
        "avg_fill_price": o.get("ap"),
        "reduce_only": reduce if type(reduce) is bool else None,
        "ts_exchange": ts_exchange if type(ts_exchange) is int else None,
        "ts_received": ts_received_ms,
        "snapshot": False,
        "trigger_price": trigger if type(trigger) is str and trigger else None,
        "trigger_price_type": working.lower() if type(working) is str and working else None,
        "actual_order_id": str(actual) if actual not in (None, "", 0) else None,
        "algo": True,
    }
