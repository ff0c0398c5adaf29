"""The control API over HTTP, for the CLI: ``ApiClient`` (aiohttp) and ``CliError``.

The address is ``CTRL_ADDR`` (``host:port``, or a full ``http(s)://`` URL), default ``127.0.0.1:8089``; the bearer
token is ``FEEDPLANE_TOKEN`` (sent as ``Authorization: Bearer``; never printed). Every non-2xx answer becomes a
``CliError`` carrying the server's error envelope (``{"error": {"code", "message", "details"}}``), so the CLI prints
the server's own message; a server that cannot be reached is ``CliError`` with code ``unreachable``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

DEFAULT_ADDR = "127.0.0.1:8089"
#: Seconds for one ordinary request (a subscribe with ``?wait=S`` gets S more).
REQUEST_TIMEOUT_S = 15.0


class CliError(Exception):
    """A request that failed: HTTP ``status`` (0: no answer), envelope ``code`` and ``message``."""

    def __init__(self, status: int, code: str, message: str, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.request_id: str | None = None  # set by ApiClient.request: the X-Request-ID it sent
        self.status = status
        self.code = code
        self.message = message
        self.details = dict(details or {})

    def __str__(self) -> str:
        where = f"HTTP {self.status} " if self.status else ""
        return f"{where}{self.code}: {self.message}"


def new_request_id() -> str:
    """A request id for ``X-Request-ID``: ``cli-`` and 16 hex digits (the server logs it, and the worker's job)."""
    return f"cli-{uuid.uuid4().hex[:16]}"


def base_url(addr: str | None = None) -> str:
    """``http://host:port`` from ``addr`` or ``CTRL_ADDR`` (a full URL is kept, without a trailing slash)."""
    raw = (addr or os.environ.get("CTRL_ADDR") or DEFAULT_ADDR).strip()
    if raw.startswith(("http://", "https://")):
        return raw.rstrip("/")
    return f"http://{raw}"


def error_from(status: int, body: Any, text: str = "") -> CliError:
    """A ``CliError`` from an error answer: the envelope when there is one, else the status and text."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return CliError(status, str(error.get("code") or "error"), error["message"], error.get("details") or {})
    return CliError(status, "http_error", (text or "").strip()[:200] or f"HTTP {status}")


@dataclass(frozen=True, slots=True)
class ApiClient:
    """Requests to one control server. ``token``: bearer token or None (open mode)."""

    base: str
    token: str | None = None

    @classmethod
    def from_env(cls, addr: str | None = None, token: str | None = None) -> ApiClient:
        """From ``CTRL_ADDR`` and ``FEEDPLANE_TOKEN`` (arguments win)."""
        return cls(base_url(addr), token or os.environ.get("FEEDPLANE_TOKEN") or None)

    def headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """``Authorization`` (when a token is set) plus ``extra``."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        headers.update(extra or {})
        return headers

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Sequence[tuple[str, str]] | None = None,
        timeout_s: float = REQUEST_TIMEOUT_S,
        request_id: str | None = None,
    ) -> tuple[int, Any]:
        """``(status, JSON body)`` of a 2xx answer; raises ``CliError`` otherwise (envelope message) or when the
        server does not answer within ``timeout_s`` seconds. Sends ``X-Request-ID: request_id`` (default: a new
        one); the error carries it (``CliError.request_id``)."""
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        rid = request_id or new_request_id()
        headers = self.headers({"X-Request-ID": rid})
        try:
            try:
                return await self._send(method, path, body, params, headers, timeout)
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise CliError(0, "unreachable", f"no answer from {self.base}: {type(exc).__name__}: {exc}") from exc
        except CliError as exc:
            exc.request_id = rid
            raise

    async def _send(self, method: str, path: str, body: Any, params: Sequence[tuple[str, str]] | None,
                    headers: dict[str, str], timeout: aiohttp.ClientTimeout) -> tuple[int, Any]:  # fmt: skip
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.request(method, self.base + path, json=body, params=params, headers=headers) as resp,
        ):
            text = await resp.text()
            try:
                data = await resp.json(content_type=None) if text else None
            except ValueError:
                data = None
            if resp.status >= 400:
                raise error_from(resp.status, data, text)
            return resp.status, data if data is not None else text
