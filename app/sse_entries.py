"""Stream entries as the SSE and WebSocket fan-out sends them: ids, ``Entry`` (serialized once), catch-up reads.

Stream ids are ``(ms, seq)`` tuples compared as such; ``Entry`` carries the raw event JSON and its SSE bytes
(``app.sse_wire``), built once when read. ``catch_up`` reads a client's missed entries with exclusive XRANGE
pages, merged across topics by id. Re-exported by ``app.sse_hub`` (its public API).
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import NamedTuple

import orjson
from redis.asyncio import Redis
from redis.exceptions import ClusterError, RedisClusterException, RedisError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.sse_wire import wire_of
from control import keys

#: What a read of the events Redis raises while it is unreachable, or while a Redis Cluster moves slots or fails
#: over (``RedisClusterException`` is no ``RedisError``): wait and retry from the cursor.
UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError, ClusterError, TryAgainError, RedisClusterException)
#: Every failure of a read of the events Redis (single server or cluster).
READ_ERRORS = (RedisError, OSError, RedisClusterException)
#: ``gap`` reason of a live stream whose entries vanished from Redis (a master failed over before replicating
#: them): the hub moves the topic back to what the stream still holds (``Rewind``).
REDIS_FAILOVER = "redis_failover"

StreamId = tuple[int, int]
ZERO_ID: StreamId = (0, 0)
_FIELD = keys.STREAM_FIELD.encode()
_TYPE_PREFIX = b'{"type":"'
_MAX_PART = 2**64 - 1


def parse_stream_id(text: str | bytes) -> StreamId:
    """``"1732300000000-4"`` -> ``(1732300000000, 4)``; raises ValueError for anything else (each part 0..2**64-1)."""
    raw = text.decode() if isinstance(text, bytes) else text
    ms, sep, seq = raw.partition("-")
    if not (sep and raw.isascii() and ms.isdigit() and seq.isdigit() and len(ms) <= 20 and len(seq) <= 20):
        raise ValueError(f"invalid stream id {raw[:50]!r}")
    sid = int(ms), int(seq)
    if sid[0] > _MAX_PART or sid[1] > _MAX_PART:  # Redis stream ids are two unsigned 64-bit numbers
        raise ValueError(f"stream id out of range {raw!r}")
    return sid


def format_stream_id(sid: StreamId) -> str:
    """``(ms, seq)`` -> ``"ms-seq"``."""
    return f"{sid[0]}-{sid[1]}"


def event_type(payload: bytes) -> str:
    """The ``type`` field of an event JSON (fast path for ``{"type":"...`` as workers write it); ``message`` if none."""
    if payload.startswith(_TYPE_PREFIX):
        end = payload.find(b'"', len(_TYPE_PREFIX))
        candidate = payload[len(_TYPE_PREFIX) : end] if end > 0 else b""
        if candidate and b"\\" not in candidate:
            return candidate.decode("utf-8", "replace")
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return "message"
    kind = value.get("type") if isinstance(value, dict) else None
    return kind if isinstance(kind, str) and kind else "message"


class Entry(NamedTuple):
    """One stream entry ready to send: ``sid`` (ms, seq), ``id`` text, ``topic``, ``event`` type, raw JSON ``data``.

    Serialized once, when the hub reads it (``app.sse_wire.wire_of``), and shared by every client of the topic:
    ``wire`` = the SSE ``event:``/``data:`` lines, ``frame`` = the whole SSE event with the ``id:`` (cursor) of a
    client of this one topic. Both are ``b""`` on an Entry built by hand; ``sse_wire.wire_of`` fills them.
    """

    sid: StreamId
    id: str
    topic: str
    event: str
    data: bytes
    wire: bytes = b""
    frame: bytes = b""


class Batch(list[Entry]):
    """One topic's entries from one hub read, in id order, shared (read-only) by every subscriber of the topic.

    ``frames``: their single-topic SSE frames joined, built on first use and then shared: a client of that one
    topic whose cursor is before the batch sends it as one ``bytes`` without looking at each entry."""

    @functools.cached_property
    def frames(self) -> bytes:
        """``b"".join(entry.frame ...)``, computed once."""
        return b"".join(entry.frame for entry in self)


class Rewind(list[Entry]):
    """A hub message, not an event: one ``Entry`` (``sid`` = where the topic's stream now ends, ``data`` = the
    ``gap`` event JSON, reason ``REDIS_FAILOVER``) telling subscribers of ``entry.topic`` that entries after
    ``sid`` were lost on the server. A subscriber whose cursor is past ``sid`` sends the gap and moves its cursor
    back to ``sid`` (new entries may reuse ids it has seen); one at or before ``sid`` ignores it."""


def to_entries(topic: str, raw: Iterable[tuple[bytes, Mapping[bytes, bytes]]]) -> list[Entry]:
    """Entries as returned by redis-py (bytes client) -> ``Entry`` list with their SSE bytes; entries without
    the field are skipped."""
    out = []
    for raw_id, fields in raw:
        payload = fields.get(_FIELD)
        if payload is None:
            continue
        text = raw_id.decode()
        kind = event_type(payload)
        out.append(Entry(parse_stream_id(text), text, topic, kind, payload, *wire_of(topic, text, kind, payload)))
    return out


async def catch_up(redis: Redis, cursors: Mapping[str, StreamId], page: int = 500) -> AsyncIterator[Entry]:
    """Yield every entry after each topic's cursor up to the stream's end, merged across topics by id.

    Reads pages of ``page`` entries per topic with exclusive ``XRANGE (cursor +``. Raises redis errors.
    """
    after = dict(cursors)
    buffers: dict[str, deque[Entry]] = {t: deque() for t in after}
    exhausted: set[str] = set()
    while True:
        need = [t for t in after if t not in exhausted and not buffers[t]]
        if need:
            async with redis.pipeline(transaction=False) as pipe:
                for topic in need:
                    pipe.xrange(keys.event_stream(topic), min="(" + format_stream_id(after[topic]), max="+", count=page)
                results = await pipe.execute()
            for topic, raw in zip(need, results):
                if len(raw) < page:
                    exhausted.add(topic)
                if raw:
                    after[topic] = parse_stream_id(raw[-1][0])
                    buffers[topic].extend(to_entries(topic, raw))
                elif topic not in exhausted:  # pragma: no cover - a full page is never empty
                    exhausted.add(topic)
        ready = [t for t, b in buffers.items() if b]
        if not ready:
            return
        topic = min(ready, key=lambda t: buffers[t][0].sid)
        yield buffers[topic].popleft()
