"""Gate.io USDT futures v4 order execution (``OrderAdapter``): signed REST calls and their answers (pure).

Endpoints (base ``GATEIO_REST_URI``, paths with ``/api/v4``; signing exchanges.md §2.7, ``private.rest_headers``):

=================================================  ===================================================================
``POST /futures/usdt/orders``                      place (JSON body ``contract, size, price, tif, text, reduce_only,
                                                   close, auto_size``) — https://www.gate.com/docs/developers/apiv4/en/#place-futures-order
``GET /futures/usdt/orders/{order_id}``            one order by id or by its ``text`` (``t-…``) —
                                                   https://www.gate.com/docs/developers/apiv4/en/#query-single-order-details
``DELETE /futures/usdt/orders/{order_id}``         cancel — https://www.gate.com/docs/developers/apiv4/en/#cancel-single-order
``POST /futures/usdt/price_orders``                take-profit/stop-loss trigger (``initial``, ``trigger``,
                                                   ``order_type``) — https://www.gate.com/docs/developers/apiv4/en/#create-price-triggered-order
``GET /futures/usdt/price_orders?status=open``     open triggers — https://www.gate.com/docs/developers/apiv4/en/#query-auto-order-list
``DELETE /futures/usdt/price_orders/{id}``         cancel a trigger — https://www.gate.com/docs/developers/apiv4/en/#cancel-single-auto-order
``GET /futures/usdt/positions``                    positions (``mode`` single | dual_long | dual_short, ``leverage``,
                                                   ``cross_leverage_limit``) — https://www.gate.com/docs/developers/apiv4/en/#list-all-positions-of-a-user
``POST /futures/usdt/positions/{c}/leverage``      ``?leverage=N`` (isolated) or ``?leverage=0&cross_leverage_limit=N``
                                                   (cross: Gate's margin mode *is* the leverage, 0 = cross) —
                                                   https://www.gate.com/docs/developers/apiv4/en/#update-position-leverage
``POST /futures/usdt/dual_comp/positions/{c}/leverage``  the same in dual (hedge) mode —
                                                   https://www.gate.com/docs/developers/apiv4/en/#update-position-leverage-in-dual-mode
``GET /futures/usdt/contracts/{c}``                contract info (``quanto_multiplier``, ``order_price_round``,
                                                   ``order_size_min``, ``mark_price``; public) —
                                                   https://www.gate.com/docs/developers/apiv4/en/#query-a-single-contract
=================================================  ===================================================================

Facts used: ``size`` is signed contracts (+ buy, − sell); ``price`` ``"0"`` with ``tif`` ``ioc`` is a market order;
``tif`` ``poc`` is post-only; ``text`` is ``t-`` + at most 28 of ``[0-9A-Za-z_.-]`` (§2.7); closing a whole position is
``size 0`` with ``close: true`` (single mode) or ``auto_size: close_long|close_short`` with ``reduce_only`` (dual mode);
trigger ``rule`` 1 is ``>=``, 2 is ``<=``, ``price_type`` 0 last, 1 mark, 2 index. Errors are ``{"label","message"}``.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import orjson

from workers.exchanges.base import AdapterError, Credentials, RestRequest, SnapshotRequest
from workers.exchanges.gateio.private import order_event, position_event, rest_headers
from workers.exchanges.gateio.wire import EXCHANGE_ID, _text
from workers.exchanges.order_contract import ContractRules, OrderSpec, PositionInfo, TriggerSpec, VenueRefusal

BASE = "/api/v4/futures/usdt"
ORDERS_PATH = f"{BASE}/orders"
TRIGGERS_PATH = f"{BASE}/price_orders"
POSITIONS_PATH = f"{BASE}/positions"
CONTRACTS_PATH = f"{BASE}/contracts"
#: ``text``: ``t-`` + at most 28 of these (§2.7).
_TEXT_RE = re.compile(r"t-[0-9A-Za-z_.\-]{1,28}")
_TIF = {"gtc": "gtc", "ioc": "ioc", "fok": "fok", "post_only": "poc"}
_PRICE_TYPES = {"last": 0, "mark": 1, "index": 2}
_JSON = {"Content-Type": "application/json", "Accept": "application/json"}


def _loads(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ValueError(f"gateio answer is not JSON: {body[:80]!r}") from None


def _signed(creds: Credentials, method: str, path: str, params: dict[str, str], body: bytes, now_ms: int) -> RestRequest:
    query = "&".join(f"{k}={v}" for k, v in params.items())  # what is sent, in order (values need no encoding)
    headers = {**rest_headers(creds, method, path, query, body, now_ms), **(_JSON if body else {})}
    return RestRequest(method, path, params, headers, body)


def _size_json(size: str, negative: bool) -> int | str:
    """Gate's ``size``: an integer when the decimal is whole (the documented int64), else the decimal string
    (contracts with decimal sizes, ``X-Gate-Size-Decimal: 1``); negative for a sell."""
    value = Decimal(size)
    value = -value if negative else value
    return int(value) if value == value.to_integral_value() else format(value, "f")


class GateioOrders:
    """Gate.io's ``OrderAdapter``. Client order ids are ``text`` values: ``t-`` + 1-28 of ``[0-9A-Za-z_.-]``; a
    value without the ``t-`` prefix gets it."""

    id = EXCHANGE_ID
    price_types = frozenset(_PRICE_TYPES)
    contract_sized = True

    def client_order_id(self, value: str | None, fresh: str) -> str:
        """``t-<value>`` (kept when it already starts with ``t-``), or ``t-fp<fresh[:26]>``; AdapterError when the
        text breaks Gate's rule."""
        text = f"t-fp{fresh[:26]}" if value is None else value if value.startswith("t-") else f"t-{value}"
        if not _TEXT_RE.fullmatch(text):
            raise AdapterError("gateio client_order_id: at most 28 of 0-9 A-Z a-z _ . - (after an optional 't-')")
        return text

    def refusal(self, status: int, body: bytes) -> VenueRefusal | None:
        """``{"label","message"}`` with a status >= 400 -> VenueRefusal(status, label, message)."""
        if status < 400:
            return None
        try:
            msg = orjson.loads(body)
        except orjson.JSONDecodeError:
            msg = None
        if isinstance(msg, dict) and ("label" in msg or "message" in msg):
            return VenueRefusal(status, str(msg.get("label") or status), str(msg.get("message") or ""))
        return VenueRefusal(status, f"HTTP_{status}", body[:200].decode(errors="replace"))

    def is_not_found(self, refusal: VenueRefusal) -> bool:
        """``ORDER_NOT_FOUND`` (and a bare 404)."""
        return refusal.code in ("ORDER_NOT_FOUND", "AUTO_ORDER_NOT_FOUND") or (refusal.status == 404
                                                                               and refusal.code == "HTTP_404")  # fmt: skip

    # -- positions, leverage, margin mode ---------------------------------------------------------------------

    def positions_request(self, creds: Credentials, symbol: str, now_ms: int) -> RestRequest:
        """``GET /futures/usdt/positions`` (every contract, both modes; filtered by ``parse_positions``)."""
        return _signed(creds, "GET", POSITIONS_PATH, {}, b"", now_ms)

    def parse_positions(self, body: bytes, symbol: str) -> list[PositionInfo]:
        """The positions of ``symbol`` (single mode: one; dual mode: ``dual_long`` and ``dual_short``)."""
        items = _loads(body)
        if not isinstance(items, list):
            raise ValueError("gateio positions answer is not a list")  # noqa: TRY004 (an exchange answer)
        out = []
        for p in items:
            if not isinstance(p, dict) or p.get("contract") != symbol:
                continue
            e = position_event(p, "orders", 0, rest=True)
            out.append(PositionInfo(symbol, e["side"], str(e["size"]), e["leverage"], e["margin_mode"],
                                    e["mode"] == "hedge"))  # fmt: skip
        return out

    def leverage_requests(
        self, creds: Credentials, symbol: str, leverage: int | None, margin_mode: str | None,
        positions: list[PositionInfo], now_ms: int,
    ) -> list[tuple[str, RestRequest]]:
        """One ``leverage`` step (Gate sets margin mode and leverage together); none when the position already has
        them. Isolated needs a leverage (AdapterError otherwise); cross without one keeps the current limit."""
        if leverage is None and margin_mode is None:
            return []
        current = positions[0] if positions else None
        mode = margin_mode or (current.margin_mode if current else None) or "isolated"
        if mode == "isolated" and leverage is None:
            raise AdapterError("gateio sets isolated margin through the leverage: give leverage with margin_mode")
        if current is not None and current.margin_mode == mode and (
            leverage is None or (current.leverage is not None and Decimal(current.leverage) == leverage)
        ):
            return []
        if mode == "isolated":
            params = {"leverage": str(leverage)}
        else:
            params = {"leverage": "0"}
            if leverage is not None:
                params["cross_leverage_limit"] = str(leverage)
        hedge = any(p.hedge for p in positions)
        path = f"{BASE}/dual_comp/positions/{symbol}/leverage" if hedge else f"{POSITIONS_PATH}/{symbol}/leverage"
        return [("leverage", _signed(creds, "POST", path, params, b"", now_ms))]

    # -- orders --------------------------------------------------------------------------------------------

    def order_request(self, creds: Credentials, spec: OrderSpec, now_ms: int) -> RestRequest:
        """``POST /futures/usdt/orders`` with ``{"contract","size","price","tif","text"}``, ``reduce_only: true`` when
        asked (left out otherwise, Gate's default), ``close: true`` (single mode) or ``auto_size`` + ``reduce_only``
        (dual mode) for a whole-position close (``spec.size`` ``"0"``)."""
        body: dict[str, Any] = {"contract": spec.symbol}
        closing = Decimal(spec.size) == 0
        body["size"] = 0 if closing else _size_json(spec.size, spec.side == "sell")
        if spec.type == "market":
            body["price"], body["tif"] = "0", "ioc"
        else:
            if spec.price is None:
                raise AdapterError("a limit order needs a price")
            body["price"], body["tif"] = spec.price, _TIF[spec.time_in_force]
        body["text"] = spec.client_order_id
        if closing and spec.position_side is None:
            body["close"] = True
        elif spec.reduce_only or closing:
            body["reduce_only"] = True
        if closing and spec.position_side is not None:
            body["auto_size"] = f"close_{spec.position_side}"
        return _signed(creds, "POST", ORDERS_PATH, {}, orjson.dumps(body), now_ms)

    def get_request(
        self, creds: Credentials, symbol: str, order_id: str | None, client_order_id: str | None, now_ms: int
    ) -> RestRequest:
        """``GET /futures/usdt/orders/{order_id or text}``."""
        ref = order_id or client_order_id
        if not ref:
            raise AdapterError("an order id or a client order id is needed")
        return _signed(creds, "GET", f"{ORDERS_PATH}/{ref}", {}, b"", now_ms)

    def cancel_request(self, creds: Credentials, symbol: str, order_id: str, now_ms: int) -> RestRequest:
        """``DELETE /futures/usdt/orders/{order_id}``."""
        return _signed(creds, "DELETE", f"{ORDERS_PATH}/{order_id}", {}, b"", now_ms)

    def parse_order(self, body: bytes, account: str, ts_received_ms: int) -> dict[str, Any]:
        """A FuturesOrder answer as an OrderEvent (``private.order_event``, REST times)."""
        o = _loads(body)
        if not isinstance(o, dict):
            raise ValueError("gateio order answer is not an object")  # noqa: TRY004 (an exchange answer)
        try:
            return order_event(o, account, ts_received_ms, rest=True)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed gateio order: {exc!r}") from None

    def close_spec(self, symbol: str, side: str, positions: list[PositionInfo], client_order_id: str) -> OrderSpec | None:
        """``size 0`` + ``close`` (single mode) or ``auto_size close_<side>`` (dual mode), at market; None when the
        ``side`` position is flat."""
        for p in positions:
            size = Decimal(p.size)
            if p.hedge and p.side == side and size != 0:
                return OrderSpec(symbol, "sell" if side == "long" else "buy", "market", "0", None, "ioc", True,
                                 client_order_id, position_side=side)  # fmt: skip
            if not p.hedge and size != 0 and (size > 0) == (side == "long"):
                return OrderSpec(symbol, "sell" if side == "long" else "buy", "market", "0", None, "ioc", True,
                                 client_order_id)  # fmt: skip
        return None

    # -- take-profit / stop-loss ------------------------------------------------------------------------------

    def trigger_request(self, creds: Credentials, spec: TriggerSpec, now_ms: int) -> RestRequest:
        """``POST /futures/usdt/price_orders``: ``initial`` a whole-position market close, ``trigger`` ``rule`` >= for a
        long's take-profit and a short's stop-loss, <= otherwise; ``order_type`` ``close-<side>-position``."""
        if spec.price_type not in _PRICE_TYPES:
            raise AdapterError(f"gateio trigger price_type must be one of {', '.join(_PRICE_TYPES)}")
        initial: dict[str, Any] = {"contract": spec.symbol, "size": 0, "price": "0", "tif": "ioc"}
        if spec.hedge:
            initial["reduce_only"], initial["auto_size"] = True, f"close_{spec.position}"
        else:
            initial["close"] = True
        rises = (spec.kind == "take_profit") == (spec.position == "long")
        body = {
            "initial": initial,
            "trigger": {"strategy_type": 0, "price_type": _PRICE_TYPES[spec.price_type], "price": spec.price,
                        "rule": 1 if rises else 2},
            "order_type": f"close-{spec.position}-position",
        }
        return _signed(creds, "POST", TRIGGERS_PATH, {}, orjson.dumps(body), now_ms)

    def parse_trigger(self, body: bytes) -> str:
        """``{"id": 1432329}`` -> ``"1432329"``."""
        msg = _loads(body)
        if not isinstance(msg, dict) or msg.get("id") is None:
            raise ValueError("gateio trigger answer has no id")
        return str(msg["id"])

    def cancel_trigger_request(self, creds: Credentials, symbol: str, trigger_id: str, now_ms: int) -> RestRequest:
        """``DELETE /futures/usdt/price_orders/{id}``."""
        return _signed(creds, "DELETE", f"{TRIGGERS_PATH}/{trigger_id}", {}, b"", now_ms)

    def open_triggers_request(self, creds: Credentials, now_ms: int) -> RestRequest:
        """``GET /futures/usdt/price_orders?status=open``."""
        return _signed(creds, "GET", TRIGGERS_PATH, {"status": "open"}, b"", now_ms)

    def parse_open_triggers(self, body: bytes) -> list[tuple[str, str]]:
        """``(initial.contract, id)`` of each listed trigger."""
        items = _loads(body)
        if not isinstance(items, list):
            raise ValueError("gateio price_orders answer is not a list")  # noqa: TRY004 (an exchange answer)
        return [(str((t.get("initial") or {}).get("contract", "")), str(t["id"])) for t in items
                if isinstance(t, dict) and "id" in t]  # fmt: skip

    # -- contract rules ----------------------------------------------------------------------------------------

    def contract_request(self, symbol: str) -> SnapshotRequest:
        """``GET /futures/usdt/contracts/{symbol}`` (public)."""
        return SnapshotRequest(f"{CONTRACTS_PATH}/{symbol}", {})

    def parse_contract(self, body: bytes, symbol: str) -> ContractRules:
        """``order_price_round`` (tick), ``order_size_min``, ``quanto_multiplier``, ``mark_price`` (else
        ``last_price``); lot 1 unless the contract takes decimal sizes (``enable_decimal``)."""
        c = _loads(body)
        if not isinstance(c, dict) or c.get("name", symbol) != symbol:
            raise ValueError(f"no gateio contract {symbol}")
        return ContractRules(
            symbol,
            tick=_text(c.get("order_price_round")),
            lot=None if c.get("enable_decimal") else "1",
            min_size=_text(c.get("order_size_min")),
            multiplier=_text(c.get("quanto_multiplier")) or "1",
            ref_price=_text(c.get("mark_price")) or _text(c.get("last_price")),
        )
