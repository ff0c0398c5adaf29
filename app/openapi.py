"""The OpenAPI 3.1 document of the control server, generated with ``apispec`` and its marshmallow plugin.

How a route gets into the document: its endpoint's docstring ends with a YAML block after a ``---`` line, one
key per HTTP method (apispec's docstring convention, ``apispec.yaml_utils``)::

    async def status(request):
        \"\"\"What the endpoint does, for humans.
        ---
        get:
          summary: workers, connections, subscriptions
          parameters: [{in: query, schema: StatusQuerySchema}]
          responses:
            200: {description: the status, content: {application/json: {schema: StatusResponseSchema}}}
        \"\"\"

Schemas are named by their marshmallow class (``app.schemas`` and ``app.query`` validate requests,
``app.responses`` describes answers; all are imported here so the names resolve). A plain-text answer (e.g.
Prometheus metrics) is ``content: {text/plain: {schema: {type: string}}}``. ``build_spec`` adds what every
route of a kind shares, so a docstring only states what is particular to it:

* path parameters (``{symbol}``) as strings, unless declared; ``tags``: the route's module (``control``, ``sse``);
* ``security`` from the route's ``app.auth.Rule``: ``bearer`` with the scope (``read``, ``control``,
  ``account``); SSE routes also accept ``access_token`` in the query; public routes (``PUBLIC_RULE``) none;
  in open mode (no token configured) every requirement also lists ``{}``: the document served describes
  the server as configured;
* error answers (``ErrorEnvelopeSchema``): 400, 401, 403, 429 and 503 on every route behind a token (a bad
  query or token in the query, missing/invalid token, scope, rate limit, Redis unreachable), 413 on every
  route that takes a body. A status the docstring declares itself is kept as it is;
* the order routes' answers (``x-orders: placed|one|canceled|switch`` in the docstring, ``ORDER_ANSWERS``): the
  worker's success body and every error status an order request can end with (409 ``orders_disabled``, 423
  ``trading_halted``, 502 ``exchange_error``, 504 ``order_timeout``, ...).

A field class of its own is mapped to JSON Schema by its ``OPENAPI`` attribute (``DecimalText``).

Routes without YAML are left out, which ``tests/app/test_openapi.py`` reports as a failure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from apispec.yaml_utils import load_operations_from_docstring
from starlette.routing import BaseRoute, Route

from app import order_schemas, query, responses, schemas  # noqa: F401  (registers the schema classes named)
from app.auth import PUBLIC, Rule
from app.order_schemas import DecimalText
from control.credentials import ACCOUNT_SCHEMA
from control.topics import ACCOUNT_RE, EXCHANGE_ALIASES, EXCHANGES

OPENAPI_VERSION = "3.1.0"
TITLE = "Feedplane control API"
VERSION = "0.1.0"
#: Methods Starlette adds by itself (HEAD to every GET route): not documented.
_IMPLICIT_METHODS = {"HEAD", "OPTIONS"}
_COMMON_ERRORS = {
    "400": "bad request: validation_error, invalid_json, token_in_query (details name the field)",
    "401": "unauthorized: missing or invalid token (WWW-Authenticate: Bearer)",
    "403": "forbidden: the token lacks the scope (details.required_scope) or the account",
    "429": "rate_limited: over a per-minute limit (Retry-After, seconds)",
    "503": "redis_unavailable: Redis is unreachable; retry shortly",
}
#: One Server-Sent Event of a stream (the media type's schema describes each event, as schemathesis checks it).
SSE_EVENT = {
    "type": "object",
    "properties": {
        "event": {"type": "string", "description": "the stored event's type (kline, trade, ...), or gap, ready, bye"},
        "data": {"type": "string", "description": "the event as JSON, exactly as the worker stored it"},
        "id": {"type": "string", "description": "the resume cursor (opaque): send it back as Last-Event-ID"},
        "retry": {"type": "integer", "description": "reconnect delay hint in ms (first event)"},
    },
    "required": ["data"],
}
_BODY_ERRORS = {"413": "payload_too_large: the body is larger than MAX_BODY_BYTES"}
def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}},
    }


#: Error answers of every order route (``app.routes.orders``, ``workers.order_flow``), by status.
_ORDER_ERRORS = {
    "400": "validation_error, invalid_json, unknown_account, invalid_order (exchange rules), orders_unsupported",
    "403": "forbidden (the token may not trade this account), guard_symbol / guard_leverage (the account's guards)",
    "409": "orders_disabled (ORDERS_ENABLED is not 1), no_position (close), order_in_progress (same client_order_id)",
    "423": "trading_halted: the kill switch is on (POST /trading/resume)",
    "500": "internal_error: the worker failed executing the request (its log says why)",
    "502": "exchange_error: the exchange refused (details: exchange_code, exchange_message, step, steps done)",
    "504": "order_timeout (no worker answered within ORDERS_TIMEOUT_S; retry with the same client_order_id) or "
    "exchange_timeout (the exchange did not answer; outcome unknown)",
}


def _answer(description: str, schema: str) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{schema}"}
    return {"description": description, "content": {"application/json": {"schema": ref}}}


#: ``x-orders`` kind -> the success answers it adds, and the error statuses (``_ORDER_ERRORS``) that apply.
ORDER_ANSWERS: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "placed": ({"201": _answer("placed (and its take-profit/stop-loss)", "OrderPlaced"),
                "200": _answer("replayed: the answer of an earlier request with this client_order_id", "OrderPlaced")},
               tuple(_ORDER_ERRORS)),
    "one": ({"200": _answer("the order", "OrderOne"),
             "404": _error("order_not_found: the exchange has no such order")}, tuple(_ORDER_ERRORS)),
    "canceled": ({"200": _answer("canceled", "OrderCanceled")}, tuple(_ORDER_ERRORS)),
    "switch": ({}, ("400", "409")),
}  # fmt: skip


def account_request_schema() -> dict[str, Any]:
    """JSON Schema of the ``POST /accounts`` body, generated from ``control.credentials.ACCOUNT_SCHEMA`` (the
    declarations ``parse_account`` validates with: ``control`` does not use marshmallow)."""
    properties: dict[str, Any] = {}
    for field in ACCOUNT_SCHEMA:
        prop: dict[str, Any] = {"type": ["string", "integer"] if field.numbers else "string",
                                "description": field.doc}  # fmt: skip
        if field.max_chars:
            prop["maxLength"] = field.max_chars
        if field.required:
            prop["minLength"] = 1
        if field.secret and field.required:
            prop["pattern"] = r"^\S+$"
        if field.name == "exchange":
            prop["enum"] = [*EXCHANGES, *EXCHANGE_ALIASES]
        elif field.name == "account":
            prop["pattern"] = f"^{ACCOUNT_RE.pattern.strip('^$')}$"
        properties[field.name] = prop
    return {
        "type": "object",
        "properties": properties,
        "required": [f.name for f in ACCOUNT_SCHEMA if f.required],
        "additionalProperties": False,
    }


def _own_fields(self: Any, field: Any, ret: dict[str, Any]) -> dict[str, Any]:
    """apispec attribute function: a field class with an ``OPENAPI`` JSON Schema (``DecimalText``) gets it, with
    ``null`` added when the field allows None."""
    if not isinstance(field, DecimalText):
        return {}
    schema = dict(DecimalText.OPENAPI)
    if field.allow_none:
        schema["type"] = ["string", "integer", "null"]
    return schema


def _security(rule: Rule, open_mode: bool) -> list[dict[str, list[str]]]:
    if rule.access == PUBLIC:
        return []
    requirement = [{"bearer": [rule.access]}]
    if rule.stream:  # EventSource cannot send headers
        requirement.append({"access_token": [rule.access]})
    if open_mode:  # no token configured: any request passes (the empty requirement: no authentication)
        requirement.append({})
    return requirement


def _path_parameters(route: Route, declared: list[Any]) -> list[dict[str, Any]]:
    names = {p.get("name") for p in declared if isinstance(p, dict) and p.get("in") == "path"}
    return [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
        for name in route.param_convertors
        if name not in names
    ]


def _complete(route: Route, rule: Rule, method: str, operation: dict[str, Any], open_mode: bool) -> dict[str, Any]:
    """The operation with shared parts added (see module docstring); ``operation`` is not changed."""
    op = dict(operation)
    op.setdefault("operationId", f"{method}_{route.name}")
    op.setdefault("tags", [route.endpoint.__module__.rpartition(".")[2]])  # the route module: health, control, ...
    op["parameters"] = [*op.get("parameters", []), *_path_parameters(route, op.get("parameters", []))]
    if not op["parameters"]:
        del op["parameters"]
    op["security"] = _security(rule, open_mode)
    answers = {str(status): value for status, value in op.get("responses", {}).items()}
    if "x-orders" in op:
        success, statuses = ORDER_ANSWERS[op.pop("x-orders")]
        for status, value in success.items():
            answers.setdefault(status, value)
        for status in statuses:
            answers.setdefault(status, _error(_ORDER_ERRORS[status]))
    shared = {} if rule.access == PUBLIC else dict(_COMMON_ERRORS)
    if "requestBody" in op:
        shared.update(_BODY_ERRORS)
    for status, description in shared.items():
        answers.setdefault(status, _error(description))
    op["responses"] = dict(sorted(answers.items()))
    return op


def documented_operations(route: BaseRoute) -> dict[str, dict[str, Any]]:
    """``{method (lower case): operation}`` from the YAML of ``route``'s endpoint docstring; {} when it has none."""
    if not isinstance(route, Route):
        return {}
    return load_operations_from_docstring(route.endpoint.__doc__ or "")


def build_spec(
    policy: Sequence[tuple[BaseRoute, Rule]], server_url: str | None = None, open_mode: bool = False
) -> dict[str, Any]:
    """The OpenAPI 3.1 document (a JSON-ready dict) of the routes in ``policy`` (``app.routes.access_policy``).
    ``open_mode``: the server has no token configured, so every security requirement also lists ``{}`` (none).

    Raises ``apispec.exceptions.APISpecError`` (or marshmallow's RegistryError) for a docstring naming an
    unknown schema or an invalid operation: a programming error, found by the tests.
    """
    plugin = MarshmallowPlugin()
    spec = APISpec(
        title=TITLE,
        version=VERSION,
        openapi_version=OPENAPI_VERSION,
        plugins=[plugin],
        info={
            "description": (
                "Exchange WebSocket streams to Redis and Server-Sent Events. Every error answer is the envelope "
                '{"error": {"code", "message", "details", "timestamp"}}. Without any token configured and on a '
                "loopback address no token is needed (open mode); otherwise every route but /health/live, "
                "/health/ready, /openapi.json, /docs and the dashboard page needs one. GET /ws (WebSocket fan-out) "
                "is not an HTTP operation, so it is not in this document: README's WebSocket section describes it."
            )
        },
        **({"servers": [{"url": server_url}]} if server_url else {}),
    )
    assert plugin.converter is not None
    plugin.converter.add_attribute_function(_own_fields)
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    spec.components.security_scheme(
        "access_token", {"type": "apiKey", "in": "query", "name": "access_token",
                         "description": "GET /sse routes only (EventSource cannot send headers)"}
    )  # fmt: skip
    spec.components.schema("ErrorEnvelope", schema=responses.ErrorEnvelopeSchema)
    spec.components.schema("AccountRequest", account_request_schema())
    for name in ("OrderPlaced", "OrderOne", "OrderCanceled"):  # named by ORDER_ANSWERS
        spec.components.schema(name, schema=getattr(responses, f"{name}Schema"))
    spec.components.parameter("LastEventId", "header", {
        "name": "Last-Event-ID", "required": False, "schema": {"type": "string"},
        "description": "resume cursor: the id of the last event seen (EventSource sends it on reconnect)",
    })  # fmt: skip
    for name, header in (("ApiKey", "api-key"), ("ApiSecret", "api-secret")):
        spec.components.parameter(name, "header", {
            "name": header, "required": False, "schema": {"type": "string"},
            "description": "seed connector: with the other, stores account gateio:{userId} (control token, "
                           "FEEDPLANE_SECRET_KEY); never logged or echoed",
        })  # fmt: skip
    spec.components.response("EventStream", {
        "description": "an event stream: gap events, catch-up, ready, then live events; bye on shutdown",
        "content": {"text/event-stream": {"schema": SSE_EVENT}},
    })  # fmt: skip
    for route, rule in policy:
        operations = documented_operations(route)
        if not operations:
            continue
        assert isinstance(route, Route)
        methods = sorted((route.methods or set()) - _IMPLICIT_METHODS)
        complete = {m.lower(): _complete(route, rule, m.lower(), operations[m.lower()], open_mode)
                    for m in methods if m.lower() in operations}  # fmt: skip
        spec.path(path=route.path, operations=complete)
    return spec.to_dict()


def routes_markdown(doc: dict[str, Any]) -> str:
    """README's route table (between ``<!-- routes:begin -->`` and ``<!-- routes:end -->``): method, path,
    token scope, summary; one row per operation, in path order. ``python -m app.openapi`` prints it."""
    rows = ["| method and path | token | what |", "| --- | --- | --- |"]
    for path, operations in sorted(doc["paths"].items()):
        for method, op in operations.items():
            scopes = sorted({scope for requirement in op["security"] for values in requirement.values()
                             for scope in values})  # fmt: skip
            token = ", ".join(scopes) or "none"
            rows.append(f"| `{method.upper()} {path}` | {token} | {op.get('summary', '').replace('|', '/')} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    from app.routes import access_policy

    print(routes_markdown(build_spec(access_policy())), end="")
