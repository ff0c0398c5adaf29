"""SSE wire bytes, built once per event and shared by every client of its topic.

``sse_frame`` builds one event; ``fingerprint`` names a topic set (the ``<fp>:`` of a cursor, ``app.sse_cursor``).
``wire_of`` is what the hub (``app.sse_hub``) puts on each ``Entry`` when it reads it, once per process: the
``event:``/``data:`` lines (``wire``) and, for clients of exactly that one topic, the whole frame with its
``id:`` line (``frame``), so a client on one topic sends bytes built once for all clients; a client of several
topics adds only its own ``id:`` line (its cursor names every topic) in front of ``wire``.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Sequence

FP_HEX = 8
_UNSAFE = re.compile(rb"[\r\n]")


def fingerprint(topics: Sequence[str]) -> str:
    """8 hex digits identifying the topic *set* (order and duplicates do not matter)."""
    joined = "\n".join(sorted(set(topics))).encode()
    return hashlib.sha256(joined).hexdigest()[:FP_HEX]


@functools.lru_cache(maxsize=4096)
def single_topic_prefix(topic: str) -> bytes:
    """``b"id: <fp>:"`` of the cursor of a client of ``topic`` alone (cached: one SHA-256 per topic)."""
    return b"id: " + fingerprint([topic]).encode() + b":"


def event_lines(event: str, data: bytes) -> bytes:
    """``event:`` and ``data:`` lines plus the blank line that ends an event (``\\n`` line ends).

    ``data`` is sent as-is, split into several ``data:`` lines if it has line breaks; ``event`` loses any."""
    head = b"event: " + _UNSAFE.sub(b"", event.encode()) + b"\n"
    if _UNSAFE.search(data):
        return head + b"".join(b"data: " + line + b"\n" for line in data.splitlines()) + b"\n"
    return head + b"data: " + data + b"\n\n"


def sse_frame(event: str, data: bytes, event_id: str | None, retry_ms: int | None = None) -> bytes:
    """One SSE event as bytes (``\\n`` line ends): ``id:`` (when given), ``event:``, ``data:``, ``retry:``."""
    lines = event_lines(event, data)
    head = b"id: " + event_id.encode() + b"\n" if event_id is not None else b""
    if retry_ms is None:
        return head + lines
    return head + lines[:-1] + b"retry: %d\n\n" % retry_ms


def wire_of(topic: str, stream_id: str, event: str, data: bytes) -> tuple[bytes, bytes]:
    """``(wire, frame)`` of one stream entry: its event lines, and the full frame for single-topic clients."""
    wire = event_lines(event, data)
    return wire, single_topic_prefix(topic) + stream_id.encode() + b"\n" + wire
