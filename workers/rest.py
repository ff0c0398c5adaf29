"""One REST call with the rules every worker fetch follows: a timeout, ``Retry-After`` on 429/418, errors as one type.

Used by the order-book keeper (``workers.books``: public snapshots), the private sessions (``workers.private``:
listenKeys, signed open-order and position snapshots) and order execution (``workers.orders``). Retrying is the caller's: it waits at least
``RestError.retry_after_s`` when set (binance_usdm.md §8: 429 means back off, 418 is an IP ban; both carry
``Retry-After``). Nothing here logs: a signed URL or header carries an API key.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from urllib.parse import urlencode

import aiohttp
from yarl import URL

from control.errors import FeedplaneError

#: Binance: 429 too many requests, 418 IP banned; both send Retry-After (Gate and BitMart use 429).
RATE_LIMITED = (429, 418)


class RestError(FeedplaneError):
    """A REST call failed. ``status``: the HTTP status (None when no answer came); ``body``: its first bytes;
    ``retry_after_s``: how long the server asked us to wait (429/418), else None."""

    def __init__(
        self, message: str, *, status: int | None = None, body: bytes = b"", retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.body, self.retry_after_s = status, body, retry_after_s


def retry_after_seconds(value: str | None, *, default: float) -> float:
    """``Retry-After`` in seconds (the delta-seconds form; absent or an HTTP date gives ``default``)."""
    if value is None:
        return default
    with contextlib.suppress(ValueError):
        return max(float(value), 0.0)
    return default


def request_url(base_url: str, path: str, params: Mapping[str, str] | None = None) -> URL:
    """``{base}{path}?{params}`` with the query encoded exactly once, in the given order (what a signature covers)."""
    text = base_url.rstrip("/") + path
    if params:
        text += "?" + urlencode(params)
    return URL(text, encoded=True)


async def fetch(
    session: aiohttp.ClientSession,
    method: str,
    url: str | URL,
    *,
    timeout_s: float,
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    retry_after_default_s: float = 1.0,
    data: bytes | None = None,
) -> tuple[int, bytes]:
    """``(status, body)`` of one call (``data``: the request body, e.g. Gate.io's JSON orders). Raises RestError on a
    timeout, a transport error, or 429/418 (with ``retry_after_s``). Other statuses are returned: what an error body
    means is the caller's business."""
    try:
        async with asyncio.timeout(timeout_s):
            async with session.request(method, url, params=params, headers=headers, data=data) as resp:
                status, body = resp.status, await resp.read()
                retry_after = resp.headers.get("Retry-After")
    except TimeoutError:
        raise RestError(f"timed out after {timeout_s} s") from None
    except aiohttp.ClientResponseError as exc:  # its text names the URL: a signed query stays out of messages
        raise RestError(f"{type(exc).__name__}: HTTP {exc.status}", status=exc.status) from None
    except aiohttp.ClientError as exc:
        raise RestError(f"{type(exc).__name__}: {exc}") from None
    if status in RATE_LIMITED:
        delay = retry_after_seconds(retry_after, default=retry_after_default_s)
        raise RestError(f"HTTP {status} (Retry-After {retry_after})", status=status, body=body[:200],
                        retry_after_s=delay)  # fmt: skip
    return status, body
