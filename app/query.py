"""Query parameters of ``GET /status`` and ``GET /help`` (marshmallow 4; the OpenAPI document names these classes),
and ``check_query``, which every handler calls so an unknown query parameter is a 400 like an unknown body field.

Raises ``marshmallow.ValidationError`` (-> 400 ``validation_error``, ``app.errors``); nothing here touches Redis.
"""

from __future__ import annotations

from collections.abc import Iterable

from marshmallow import RAISE, Schema, ValidationError, fields, validate

from control.topics import EXCHANGE_ALIASES, EXCHANGES


def check_query(names: Iterable[str], schema: type[Schema] | None = None) -> None:
    """Refuse query parameters ``schema`` (the operation's query schema in the OpenAPI document; None: the
    operation takes none) does not declare, as bodies refuse unknown fields: a typo (``?wiat=5``) must not pass
    silently. Raises ValidationError ``{name: ["Unknown field."]}``."""
    allowed = {f.data_key or name for name, f in schema._declared_fields.items()} if schema is not None else set()
    unknown = sorted(set(names) - allowed)
    if unknown:
        raise ValidationError({name: ["Unknown field."] for name in unknown})


MAX_STATUS_LIMIT = 5000


class StatusQuerySchema(Schema):
    """``GET /status`` filters (they apply to the subscription list; ``exchange`` to connections too), the
    ``summary`` form and paging (``limit`` with ``after``, the last topic of the previous page)."""

    class Meta:
        unknown = RAISE

    state = fields.String(validate=validate.OneOf(["pending", "active", "failed"]),
                          metadata={"description": "only subscriptions in this state"})  # fmt: skip
    exchange = fields.String(
        validate=validate.OneOf([*EXCHANGES, *EXCHANGE_ALIASES]),
        metadata={"description": f"only this exchange ({', '.join(EXCHANGES)}; aliases accepted)"},
    )
    topic = fields.String(metadata={"description": "topic prefix, e.g. bitmart:kline:BTCUSDT"})
    stale = fields.Boolean(metadata={"description": "1: only stale subscriptions; 0: only the others"})
    summary = fields.Boolean(metadata={"description": "1: counts by state, exchange and reason instead of lists"})
    limit = fields.Integer(
        strict=False,
        validate=validate.Range(min=1, max=MAX_STATUS_LIMIT),
        metadata={"description": f"page size of the subscription list, 1..{MAX_STATUS_LIMIT}; default: all"},
    )
    after = fields.String(metadata={"description": "paging cursor: the last topic of the previous page"})


class HelpQuerySchema(Schema):
    """``GET /help``: ``?format=json`` (or ``Accept: application/json``) for JSON, ``?format=text`` for text."""

    class Meta:
        unknown = RAISE

    format = fields.String(validate=validate.OneOf(["json", "text"]), metadata={"description": "json or text"})


class _OrderAccountQuerySchema(Schema):
    class Meta:
        unknown = RAISE

    exchange = fields.String(metadata={"description": "gateio or binanceusdm; default DEFAULT_EXCHANGE"})
    account = fields.String(metadata={"description": "the account; default: default"})
    symbol = fields.String(metadata={"description": "the order's symbol (Binance USD-M needs it)"})


class OrderClientQuerySchema(_OrderAccountQuerySchema):
    """``GET /orders/client/{client_order_id}``: which account and symbol."""


class OrderRefQuerySchema(_OrderAccountQuerySchema):
    """``GET|DELETE /orders/{order_id}``: which account and symbol; ``tp_id``/``sl_id`` (DELETE) cancel the order's
    take-profit and stop-loss trigger orders too."""

    tp_id = fields.String(metadata={"description": "take-profit trigger order id (DELETE)"})
    sl_id = fields.String(metadata={"description": "stop-loss trigger order id (DELETE)"})


class SeedQuerySchema(Schema):
    """The seed connector's ``?userId=`` (the account when the body has none)."""

    userId = fields.String(metadata={"description": "the account (and Gate user id); default: default"})


class SeedTradeQuerySchema(SeedQuerySchema):
    """``/gate/cancel-futures-order`` and ``/gate/get-futures-order``."""

    trade_id = fields.String(required=True, validate=validate.Length(min=1), metadata={"description": "order id"})
    tp_id = fields.String(metadata={"description": "take-profit trigger order id (cancel)"})
    sl_id = fields.String(metadata={"description": "stop-loss trigger order id (cancel)"})
    contract = fields.String(metadata={"description": "the contract, e.g. BTC_USDT"})
