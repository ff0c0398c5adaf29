"""Request validation of the order routes (marshmallow 4): ``/orders``, ``/positions/close``, ``/trading/*`` and the
seed connector's ``/gate/*`` bodies, into the ``args`` of a ``control.orders.OrderRequest``.

Prices and sizes are decimal strings end to end: ``DecimalText`` accepts a decimal string or an integer and gives
back the string (no float ever); the seed routes, whose bodies carry JSON numbers, read them exactly (the JSON text
of the number, parsed as ``Decimal``: ``app.routes.seed_compat``). Raises ``marshmallow.ValidationError`` with
field-level messages (400 ``validation_error``).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar

from marshmallow import INCLUDE, RAISE, Schema, ValidationError, fields, validate, validates_schema

from app.schemas import StrictBoolean
from control.exchanges import DECLARATIONS
from control.topics import EXCHANGE_ALIASES, TopicError, validate_account

#: What a client order id may hold before the exchange's own form is applied (Binance's rule, the stricter).
CLIENT_ID_RE = re.compile(r"[.A-Za-z0-9_:/-]{1,36}\Z")
ORDER_EXCHANGES = tuple(d.id for d in DECLARATIONS.values() if d.orders)


class DecimalText(fields.Field[str]):
    """A positive decimal as a string (``"0.001"``); an int is taken as its digits; floats, exponents, NaN, zero,
    negatives and white space are refused (send decimal strings). In the OpenAPI document: ``OPENAPI``."""

    #: The JSON Schema of the field (``app.openapi`` maps the class to it): a string of ``PATTERN`` or an integer.
    PATTERN = r"^[0-9]+(\.[0-9]+)?$"
    OPENAPI: ClassVar[dict[str, Any]] = {"type": ["string", "integer"], "pattern": PATTERN, "minimum": 1,
               "description": 'a positive decimal string, e.g. "0.001" (or an integer)'}  # fmt: skip

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if type(value) is int:
            value = str(value)
        if not isinstance(value, str) or not re.fullmatch(self.PATTERN, value):
            raise ValidationError("must be a positive decimal string, e.g. \"0.001\"")
        try:
            if Decimal(value) <= 0:
                raise ValidationError("must be greater than 0")
        except InvalidOperation:
            raise ValidationError("not a decimal") from None
        return value


def _exchange(value: str) -> str:
    exchange = EXCHANGE_ALIASES.get(value, value)
    if exchange not in ORDER_EXCHANGES:
        message = f"orders are available on {', '.join(ORDER_EXCHANGES)} (BitMart is left out: it shuts down by 2027-01-31)"
        raise ValidationError({"exchange": [message]})
    return exchange


def _account(value: str) -> None:
    try:
        validate_account(value)
    except TopicError as exc:
        raise ValidationError(str(exc)) from None


class _Strict(Schema):
    class Meta:
        unknown = RAISE


class TriggerSchema(_Strict):
    """``{"price": "52000", "price_type": "last"|"mark"|"index"}``."""

    price = DecimalText(required=True)
    price_type = fields.String(load_default="last", validate=validate.OneOf(("last", "mark", "index")))


class _AccountSchema(_Strict):
    exchange = fields.String(load_default=None)
    account = fields.String(load_default="default", validate=_account)


class OrderSchema(_AccountSchema):
    """``POST /orders``."""

    symbol = fields.String(required=True, validate=validate.Regexp(r"[A-Za-z0-9_\-]{1,40}\Z"))
    type = fields.String(required=True, validate=validate.OneOf(("market", "limit")))
    side = fields.String(load_default=None, validate=validate.OneOf(("buy", "sell")))
    position_type = fields.String(load_default=None, validate=validate.OneOf(("long", "short")))
    size = DecimalText(required=True)
    price = DecimalText(load_default=None)
    time_in_force = fields.String(load_default="gtc", validate=validate.OneOf(("gtc", "ioc", "fok", "post_only")))
    reduce_only = StrictBoolean(load_default=False)
    leverage = fields.Integer(load_default=None, strict=True, validate=validate.Range(1, 1000))
    margin_mode = fields.String(load_default=None, validate=validate.OneOf(("isolated", "cross")))
    client_order_id = fields.String(load_default=None, validate=validate.Regexp(CLIENT_ID_RE))
    take_profit = fields.Nested(TriggerSchema, load_default=None)
    stop_loss = fields.Nested(TriggerSchema, load_default=None)

    @validates_schema
    def _consistent(self, data: dict[str, Any], **kwargs: Any) -> None:
        if (data["side"] is None) == (data["position_type"] is None):
            raise ValidationError("give side (buy|sell) or position_type (long|short)", field_name="side")
        if data["type"] == "limit" and data["price"] is None:
            raise ValidationError("a limit order needs a price", field_name="price")
        if data["type"] == "market" and data["price"] is not None:
            raise ValidationError("a market order takes no price", field_name="price")
        if data["reduce_only"] and (data["take_profit"] or data["stop_loss"]):
            raise ValidationError("take_profit/stop_loss close the position an order opens: not on a reduce-only "
                                  "order", field_name="reduce_only")  # fmt: skip


class CloseSchema(_AccountSchema):
    """``POST /positions/close``: ``side`` long|short, or the seed's ``auto_size`` close_long|close_short."""

    symbol = fields.String(required=True, validate=validate.Regexp(r"[A-Za-z0-9_\-]{1,40}\Z"))
    side = fields.String(load_default=None, validate=validate.OneOf(("long", "short")))
    auto_size = fields.String(load_default=None, validate=validate.OneOf(("close_long", "close_short")))
    client_order_id = fields.String(load_default=None, validate=validate.Regexp(CLIENT_ID_RE))

    @validates_schema
    def _one_side(self, data: dict[str, Any], **kwargs: Any) -> None:
        if (data["side"] is None) == (data["auto_size"] is None):
            raise ValidationError("give side (long|short) or auto_size (close_long|close_short)", field_name="side")


class HaltSchema(_Strict):
    """``POST /trading/halt`` | ``/trading/resume``: optional ``exchange`` + ``account`` (else every account);
    ``cancel_open`` (halt only) cancels open orders too."""

    exchange = fields.String(load_default=None)
    account = fields.String(load_default=None, validate=_account)
    cancel_open = StrictBoolean(load_default=False)
    reason = fields.String(load_default="", validate=validate.Length(max=200))


class SeedTriggerSchema(_Strict):
    """The seed connector's ``take_profit``/``stop_loss``: ``{"enabled", "price", "price_type"}``."""

    enabled = StrictBoolean()
    price = fields.Raw(allow_none=True, metadata={"description": "a JSON number or a decimal string"})
    price_type = fields.String(allow_none=True, metadata={"description": "last | mark | index"})


class SeedPlaceSchema(_Strict):
    """``POST /gate/place-futures-order``: the seed connector's body (``app.routes.seed_compat``), checked for its
    shape here; the values then go through ``OrderSchema``. Numbers stay exact (JSON numbers read as Decimal)."""

    userId = fields.Raw(allow_none=True, metadata={"description": "the account (and Gate user id); string or number"})
    user_id = fields.Raw(allow_none=True, metadata={"description": "alias of userId"})
    market_type = fields.String(required=True, metadata={"description": "market | limit"})
    price = fields.Raw(allow_none=True, metadata={"description": "limit price, a JSON number (ignored for market)"})
    contract = fields.String(required=True, metadata={"description": "Gate.io contract, e.g. BTC_USDT"})
    leverage = fields.Raw(allow_none=True, metadata={"description": "an integer"})
    leverage_type = fields.String(allow_none=True, metadata={"description": "ISOLATED | CROSS"})
    size = fields.Raw(required=True, metadata={"description": "contracts, a JSON integer"})
    position_type = fields.String(required=True, metadata={"description": "long | short"})
    take_profit = fields.Nested(SeedTriggerSchema, allow_none=True)
    stop_loss = fields.Nested(SeedTriggerSchema, allow_none=True)
    reduce_only = StrictBoolean(allow_none=True)
    exchange_id = fields.Raw(allow_none=True, metadata={"description": "ignored (the seed's)"})
    autotrader_id = fields.Raw(allow_none=True, metadata={"description": "ignored (the seed's)"})


class SeedCloseSchema(Schema):
    """``POST /gate/close-futures-order``: ``{"contract", "auto_size": "close_long"|"close_short", "userId"}``;
    other fields are ignored, as the seed did."""

    class Meta:
        unknown = INCLUDE

    userId = fields.Raw(allow_none=True, metadata={"description": "the account (and Gate user id); string or number"})
    user_id = fields.Raw(allow_none=True, metadata={"description": "alias of userId"})
    contract = fields.String(required=True)
    auto_size = fields.String(required=True, validate=validate.OneOf(("close_long", "close_short")))


_ORDER, _CLOSE, _HALT = OrderSchema(), CloseSchema(), HaltSchema()
SEED_PLACE, SEED_CLOSE = SeedPlaceSchema(), SeedCloseSchema()


def order_args(payload: Any, default_exchange: str) -> tuple[str, str, dict[str, Any]]:
    """``(exchange, account, args)`` of a ``POST /orders`` body; ``args["side"]`` is buy|sell."""
    data = _ORDER.load(payload)
    exchange = _exchange(data.pop("exchange") or default_exchange)
    account = data.pop("account")
    position_type = data.pop("position_type")
    if position_type is not None:
        data["side"] = "buy" if position_type == "long" else "sell"
    return exchange, account, data


def close_args(payload: Any, default_exchange: str) -> tuple[str, str, dict[str, Any]]:
    """``(exchange, account, {"symbol","side","client_order_id"})`` of a ``POST /positions/close`` body."""
    data = _CLOSE.load(payload)
    exchange = _exchange(data.pop("exchange") or default_exchange)
    auto = data.pop("auto_size")
    if auto is not None:
        data["side"] = auto.removeprefix("close_")
    return exchange, data.pop("account"), data


def halt_args(payload: Any) -> dict[str, Any]:
    """``{"exchange","account","cancel_open","reason"}`` of a halt/resume body (exchange canonical or None)."""
    data = _HALT.load(payload)
    if data["exchange"] is not None:
        data["exchange"] = _exchange(data["exchange"])
    if (data["exchange"] is None) != (data["account"] is None):
        raise ValidationError("give both exchange and account, or neither (every account)", field_name="account")
    return data


def order_ref(query: Any, order_id: str | None, client_order_id: str | None,
              default_exchange: str) -> tuple[str, str, dict[str, Any]]:  # fmt: skip
    """``(exchange, account, args)`` of ``GET|DELETE /orders/{order_id}`` or ``GET /orders/client/{client_order_id}``
    with the query ``exchange``, ``account``, ``symbol`` (Binance needs it), ``tp_id``, ``sl_id``."""
    errors: dict[str, list[str]] = {}
    exchange = ""
    try:
        exchange = _exchange(query.get("exchange") or default_exchange)
    except ValidationError as exc:
        errors.update(exc.normalized_messages())
    account = query.get("account") or "default"
    try:
        _account(account)
    except ValidationError as exc:
        errors["account"] = [str(exc.messages[0] if isinstance(exc.messages, list) else exc)]
    symbol = query.get("symbol") or ""
    if symbol and not re.fullmatch(r"[A-Za-z0-9_\-]{1,40}", symbol):
        errors["symbol"] = ["not a symbol"]
    args: dict[str, Any] = {"symbol": symbol, "order_id": order_id, "client_order_id": client_order_id}
    if client_order_id is not None and not CLIENT_ID_RE.fullmatch(client_order_id):
        errors["client_order_id"] = ["1 to 36 of A-Z a-z 0-9 . _ : / -"]
    if order_id is not None and not re.fullmatch(r"[A-Za-z0-9_.:\-]{1,64}", order_id):
        errors["order_id"] = ["not an order id"]
    for name in ("tp_id", "sl_id"):
        value = query.get(name)
        if value is not None and not re.fullmatch(r"[A-Za-z0-9_\-]{1,64}", value):
            errors[name] = ["not an order id"]
        args[name] = value or None
    if errors:
        raise ValidationError(errors)
    return exchange, account, args
