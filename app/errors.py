"""The error envelope and the one table that turns exceptions into HTTP responses.

Every error answer has the same shape::

    {"error": {"code": str, "message": str, "details": {field: [msgs]} or {}, "timestamp": ms}}

Exception tree handled here (translated at the edge, see ``EXCEPTION_HANDLERS``)::

    control.errors.FeedplaneError    (the root of Feedplane's own errors; tree in control/errors.py)
    ├── ApiError                     -> its own status/code (invalid_json 400, not_implemented 501, ...)
    ├── AccountError                 -> 400 validation_error, field-level details (POST /accounts)
    └── any other                    -> 500 internal_error (escaped a handler: a bug; logged with traceback)
    marshmallow.ValidationError      -> 400 validation_error, field-level details
    starlette HTTPException          -> 404 not_found, 405 method_not_allowed (Allow kept), 413 payload_too_large
    redis ConnectionError/TimeoutError, OSError -> 503 redis_unavailable
    Exception                        -> 500 internal_error (a bug; logged with traceback)

``PayloadTooLargeEnvelope`` exists because Starlette's body-limit middleware (``max_body_size``)
answers a declared over-size ``Content-Length`` itself with a plain-text 413, outside every
exception handler; this outermost ASGI wrapper rewrites any 413 into the envelope.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from marshmallow import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from control.credentials import AccountError
from control.errors import FeedplaneError

logger = logging.getLogger(__name__)

_CODES_BY_STATUS = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    501: "not_implemented",
    503: "redis_unavailable",
}


def now_ms() -> int:
    """Current epoch time in milliseconds."""
    return time.time_ns() // 1_000_000


class ApiError(FeedplaneError):
    """An error answer chosen by a handler: ``status`` (HTTP), ``code`` (envelope), ``details``."""

    def __init__(self, status: int, code: str, message: str, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = dict(details or {})


def envelope(code: str, message: str, details: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The error body ``{"error": {code, message, details, timestamp}}`` (timestamp in ms)."""
    return {"error": {"code": code, "message": message, "details": dict(details or {}), "timestamp": now_ms()}}


def error_response(
    status: int,
    code: str,
    message: str,
    details: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """A JSONResponse carrying the envelope."""
    return JSONResponse(envelope(code, message, details), status_code=status, headers=headers)


def _first_message(messages: Any, path: str = "") -> str:
    """``"tfs.0: unknown timeframe '3m'; ..."`` from marshmallow's nested messages (for humans)."""
    if isinstance(messages, Mapping):
        for key, value in messages.items():
            return _first_message(value, f"{path}.{key}" if path else str(key))
    if isinstance(messages, list) and messages:
        return _first_message(messages[0], path)
    text = str(messages)
    return f"{path}: {text}" if path else text


def validation_details(exc: ValidationError) -> dict[str, Any]:
    """Field-level details as a dict (schema-level messages go under ``_schema``)."""
    messages = exc.normalized_messages()
    return {str(k): v for k, v in messages.items()} if isinstance(messages, dict) else {"_schema": messages}


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.details)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ValidationError)
    details = validation_details(exc)
    return error_response(400, "validation_error", _first_message(details), details)


async def _account_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AccountError)
    details = {field: list(messages) for field, messages in exc.messages.items()}
    return error_response(400, "validation_error", _first_message(details), details)


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _CODES_BY_STATUS.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail), headers=exc.headers)


async def _redis_unavailable(request: Request, exc: Exception) -> Response:
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.redis_error("request")
    logger.warning("redis unavailable for %s %s: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
    return error_response(503, "redis_unavailable", "Redis is unreachable; try again shortly")


async def _internal_error(request: Request, exc: Exception) -> Response:
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "internal error")


#: The one table from exception class to envelope (Starlette picks the nearest class in the exception's MRO).
EXCEPTION_HANDLERS: dict[Any, Any] = {
    ApiError: _api_error,
    AccountError: _account_error,
    FeedplaneError: _internal_error,  # ours but not an answer: a bug, same 500 as any other escaped exception
    ValidationError: _validation_error,
    HTTPException: _http_exception,
    RedisConnectionError: _redis_unavailable,
    RedisTimeoutError: _redis_unavailable,
    OSError: _redis_unavailable,
    Exception: _internal_error,
}


class PayloadTooLargeEnvelope:
    """Pure ASGI wrapper: replaces any 413 response (including Starlette's plain-text one) with the envelope."""

    def __init__(self, app: ASGIApp, max_body_size: int) -> None:
        self.app = app
        self.max_body_size = max_body_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        replaced = False

        async def send_wrapper(message: Message) -> None:
            nonlocal replaced
            if message["type"] == "http.response.start" and message["status"] == 413:
                replaced = True
                message_text = f"request body is larger than {self.max_body_size} bytes"
                response = error_response(413, "payload_too_large", message_text)
                await send({"type": "http.response.start", "status": 413, "headers": response.raw_headers})
                await send({"type": "http.response.body", "body": response.body, "more_body": False})
                return
            if replaced:  # swallow the original 413 body
                return
            await send(message)

        await self.app(scope, receive, send_wrapper)
