"""marshmallow schemas of the control server's answers: the OpenAPI document (``app.openapi``) names them.

They describe, they do not build: handlers assemble plain dicts (``app.dispatch``, ``app.routes.*``) and
``tests/app/test_openapi_fuzz.py`` checks every answer against the document generated from these classes.
Records written by workers (worker, connection) carry more fields than listed (``unknown = INCLUDE``, so the
document says ``additionalProperties: true``); the fields listed are the ones clients may rely on.
Times are epoch milliseconds.
"""

from __future__ import annotations

from marshmallow import INCLUDE, Schema, fields


class _Open(Schema):
    class Meta:
        unknown = INCLUDE


class ErrorBodySchema(Schema):
    """The inside of the envelope (``app.errors.envelope``)."""

    code = fields.String(required=True, metadata={"description": "machine-readable, e.g. validation_error"})
    message = fields.String(required=True, metadata={"description": "for humans; never echoes a secret"})
    details = fields.Dict(required=True, metadata={"description": "field -> messages, or other facts; {} if none"})
    timestamp = fields.Integer(required=True, metadata={"description": "epoch ms"})


class ErrorEnvelopeSchema(Schema):
    """``{"error": {"code", "message", "details", "timestamp"}}``: every error answer."""

    error = fields.Nested(ErrorBodySchema, required=True)


class SubscriptionRecordSchema(_Open):
    """One desired topic as ``/status`` shows it."""

    topic = fields.String(required=True, metadata={"description": "e.g. bitmart:kline:BTCUSDT:1m"})
    state = fields.String(required=True, metadata={"description": "pending | active | failed"})
    error = fields.String(allow_none=True, metadata={"description": "the exchange's text when failed"})
    since = fields.Integer(allow_none=True, metadata={"description": "epoch ms of the last state change"})
    conn = fields.String(allow_none=True, metadata={"description": "connection id serving it"})
    last_event_at = fields.Integer(allow_none=True, metadata={"description": "epoch ms of its last event"})
    stale = fields.Boolean(metadata={"description": "active but silent longer than STALL_TIMEOUT_S"})


class SubscribeResponseSchema(Schema):
    """``POST /<channel>/subscribe``: 202, or 200 with ``subscriptions`` when ``?wait`` settled."""

    accepted = fields.List(fields.String(), required=True, metadata={"description": "canonical topics"})
    added = fields.List(fields.String(), required=True, metadata={"description": "newly desired"})
    already = fields.List(fields.String(), required=True, metadata={"description": "were desired already"})
    paused = fields.Boolean(required=True, metadata={"description": "streaming is stopped (POST /start)"})
    subscriptions = fields.List(fields.Nested(SubscriptionRecordSchema), metadata={"description": "with ?wait"})


class UnsubscribeResponseSchema(Schema):
    """``POST /<channel>/unsubscribe``."""

    removed = fields.List(fields.String(), required=True)
    not_subscribed = fields.List(fields.String(), required=True)


class StopResponseSchema(Schema):
    """``POST /stop``."""

    stopped = fields.Boolean(required=True)
    paused = fields.Boolean(required=True, metadata={"description": "false with clear: nothing left to resume"})
    cleared = fields.Integer(required=True, metadata={"description": "topics forgotten (clear)"})


class StartResponseSchema(Schema):
    """``POST /start``."""

    started = fields.Boolean(required=True)
    topics = fields.Integer(required=True, metadata={"description": "desired topics now streaming"})


class AccountSchema(Schema):
    """One account as listed: never a key or secret, only the key's fingerprint."""

    exchange = fields.String(required=True)
    account = fields.String(required=True)
    source = fields.String(required=True, metadata={"description": "env | file | api"})
    key = fields.String(required=True, metadata={"description": "fingerprint of the API key"})


class AccountListSchema(Schema):
    """``GET /accounts``."""

    accounts = fields.List(fields.Nested(AccountSchema), required=True)


class _AccountRefSchema(Schema):
    exchange = fields.String(required=True)
    account = fields.String(required=True)


class AccountDeletedSchema(Schema):
    """``DELETE /accounts/{exchange}/{account}``."""

    deleted = fields.Nested(_AccountRefSchema, required=True)


class WorkerRecordSchema(_Open):
    """A worker as ``/status`` shows it (its heartbeat record plus ``alive``)."""

    id = fields.String(required=True)
    alive = fields.Boolean(required=True, metadata={"description": "heartbeat within LEASE_TTL_S"})
    heartbeat_at = fields.Integer(allow_none=True)
    connections = fields.List(fields.Raw(), required=True)
    publisher = fields.Dict(required=True, metadata={"description": "backlog: queue_depth, dropped, ..."})


class ConnectionRecordSchema(_Open):
    """A connection as ``/status`` shows it (the worker's record plus ``lease``, ``reasons``, ``gaps``)."""

    id = fields.String(required=True)
    exchange = fields.String()
    state = fields.String(metadata={"description": "connecting|login|subscribing|open|backoff|stopping|..."})
    lease = fields.Dict(required=True, metadata={"description": "owner, expires_in_ms, expires_at"})
    reasons = fields.Dict(required=True, metadata={"description": "reconnects by reason"})
    gaps = fields.Dict(required=True, metadata={"description": "announced gaps by reason"})


class PageSchema(Schema):
    """Paging of the ``/status`` subscription list (topics in ascending order)."""

    limit = fields.Integer(required=True)
    total = fields.Integer(required=True, metadata={"description": "subscriptions matching the filters"})
    next = fields.String(
        required=True, allow_none=True, metadata={"description": "path and query of the next page; null: last page"}
    )


class StatusResponseSchema(Schema):
    """``GET /status``."""

    server_time = fields.Integer(required=True)
    paused = fields.Boolean(required=True)
    desired_version = fields.Integer(required=True)
    workers = fields.List(fields.Nested(WorkerRecordSchema), required=True)
    connections = fields.List(fields.Nested(ConnectionRecordSchema), required=True)
    subscriptions = fields.List(fields.Nested(SubscriptionRecordSchema), required=True)
    gaps = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True)
    page = fields.Nested(PageSchema, required=True)


class CountsSchema(Schema):
    """Subscription counts of ``/status?summary=1`` (after the filters)."""

    total = fields.Integer(required=True)
    stale = fields.Integer(required=True)
    by_state = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True)
    by_exchange = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True)
    by_reason = fields.Dict(
        keys=fields.String(), values=fields.Integer(), required=True,
        metadata={"description": "failed subscriptions by their error text"},
    )  # fmt: skip


class StatusSummarySchema(Schema):
    """``GET /status?summary=1``: counts only, a few hundred bytes at any scale."""

    server_time = fields.Integer(required=True)
    paused = fields.Boolean(required=True)
    desired_version = fields.Integer(required=True)
    workers = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True,
                          metadata={"description": "total, alive"})  # fmt: skip
    connections = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True,
                              metadata={"description": "by state"})  # fmt: skip
    subscriptions = fields.Nested(CountsSchema, required=True)
    gaps = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True)


class HealthProbeSchema(Schema):
    """``GET /health/live`` and ``/health/ready`` when healthy: nothing else disclosed."""

    status = fields.String(required=True, metadata={"description": "ok (live) or ready"})


class HealthSchema(Schema):
    """``GET /health``: the summary behind a read token."""

    status = fields.String(required=True, metadata={"description": "ok | degraded"})
    ready = fields.Boolean(required=True)
    reason = fields.String(required=True, allow_none=True, metadata={"description": "why not ready"})
    redis = fields.Dict(required=True, metadata={"description": "ok, latency_ms"})
    workers = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True,
                          metadata={"description": "total, alive"})  # fmt: skip
    paused = fields.Boolean(required=True, allow_none=True)
    server_time = fields.Integer(required=True)


class OrderStepSchema(_Open):
    """One step of an order request as the worker did it (``entry``, ``take_profit``, ``cancel``, ...)."""

    step = fields.String(required=True)
    status = fields.String(required=True, metadata={"description": "done | failed | skipped | ..."})


class OrderPlacedSchema(_Open):
    """``POST /orders`` and ``POST /positions/close``: 201 placed (200 with ``replayed``: a retry of a
    client order id that was placed already). ``order``: the normalized order (control.events), prices and sizes
    as decimal strings."""

    order = fields.Dict(required=True, metadata={"description": "the order as the exchange has it"})
    client_order_id = fields.String(required=True)
    steps = fields.List(fields.Nested(OrderStepSchema), required=True)
    recovered = fields.Boolean(metadata={"description": "found by client order id after a lost answer"})
    take_profit = fields.Dict(allow_none=True, metadata={"description": "the take-profit trigger order (orders)"})
    stop_loss = fields.Dict(allow_none=True, metadata={"description": "the stop-loss trigger order (orders)"})
    replayed = fields.Boolean(metadata={"description": "true: the stored answer of an earlier identical request"})


class OrderOneSchema(_Open):
    """``GET /orders/{order_id}`` and ``GET /orders/client/{client_order_id}``: 200."""

    order = fields.Dict(required=True, metadata={"description": "the order as the exchange has it now"})


class OrderCanceledSchema(_Open):
    """``DELETE /orders/{order_id}``: 200, the order and the trigger orders (``tp_id``, ``sl_id``) canceled."""

    order = fields.Dict(metadata={"description": "the canceled order"})
    take_profit = fields.Dict(metadata={"description": "{order_id, status: canceled} with tp_id"})
    stop_loss = fields.Dict(metadata={"description": "{order_id, status: canceled} with sl_id"})
    steps = fields.List(fields.Nested(OrderStepSchema), required=True)


class HaltResponseSchema(Schema):
    """``POST /trading/halt``: 200."""

    halted = fields.String(required=True, metadata={"description": "exchange:account, or * (every account)"})
    cancel_open = fields.List(fields.Dict(), required=True, metadata={
        "description": "per account: exchange, account, status and canceled/failed lists (or error)"})  # fmt: skip


class ResumeResponseSchema(Schema):
    """``POST /trading/resume``: 200."""

    resumed = fields.List(fields.String(), required=True, metadata={"description": "halt entries removed"})
    still_halted = fields.Boolean(required=True, metadata={"description": "a global halt (*) still holds"})
