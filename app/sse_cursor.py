"""SSE cursors: the ``id:`` of every SSE event, and how a ``Last-Event-ID`` becomes start positions.

Cursor format: ``<fp>:<id>,<id>,...``, e.g. ``"5d41402a:1732300000000-0,1732300000123-4"``.

* ``fp``: 8 lowercase hex digits, the first 4 bytes of SHA-256 over the request's topics sorted and joined by
  ``\\n``. It ties the cursor to its topic set: a cursor replayed on another set of topics is detected and
  refused (``invalid_cursor``), never applied to the wrong streams.
* the ids: per topic, the stream id (``ms-seq``) of the last entry delivered, or the position the stream was
  at when the client started (``0-0``: the stream was empty). They are in the topics' **sorted** order, not the
  request order, so the same topics asked in another order resume exactly.
* A bare stream id (``"1732300000000-0"``, no ``fp``) is accepted when exactly one topic is requested: it cannot
  be matched to the wrong stream, and it is what a hand-written ``curl -H 'Last-Event-ID: ..'`` or a client
  of a server before this format sends. A bare list for several topics is refused: its order is unknown.

``resume_positions`` checks a parsed cursor against each stream (``XINFO STREAM``, ``XRANGE``, ``TIME``) and
returns where to start plus the ``gap`` events to send first (see ``GAP_REASONS``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from app.sse_hub import ZERO_ID, StreamId, format_stream_id, parse_stream_id
from app.sse_wire import FP_HEX, fingerprint
from control import keys
from control.errors import FeedplaneError
from control.events import GapEvent
from control.events_redis import is_cluster

#: Gap ``reason`` codes sent by the SSE routes before the catch-up of a resumed stream.
RETENTION = "retention"  # entries after the cursor were trimmed (MAXLEN) before the client came back
STREAM_RESET = "stream_reset"  # the stream was recreated (key deleted, in-memory Redis restarted, older data
# restored): the cursor is not a position of the stream as it is now, and entries after it were lost
INVALID_CURSOR = "invalid_cursor"  # malformed, for another topic set, or in the future: the topic starts live
GAP_REASONS = (RETENTION, STREAM_RESET, INVALID_CURSOR)

__all__ = [
    "FP_HEX", "GAP_REASONS", "INVALID_CURSOR", "RETENTION", "STREAM_RESET", "CursorError", "CursorFormat",
    "fingerprint", "gap_event", "invalid_cursor_gaps", "judge", "parse_cursor", "resume_positions",
]  # fmt: skip

_CURSOR = re.compile(rf"(?:(?P<fp>[0-9a-f]{{{FP_HEX}}}):)?(?P<ids>[0-9,\-\s]+)")


class CursorError(FeedplaneError, ValueError):
    """A ``Last-Event-ID`` that cannot be used for the requested topics (the message says why)."""


class CursorFormat:
    """Formats the cursor of one SSE stream. ``topics``: the request's (distinct) topics in any order."""

    def __init__(self, topics: Sequence[str]) -> None:
        self.order = sorted(topics)
        self.slot = {t: i for i, t in enumerate(self.order)}  # topic -> index of its id in the cursor
        self.prefix = fingerprint(topics) + ":"

    def format(self, ids: Sequence[str]) -> str:
        """``ids``: ``ms-seq`` texts indexed like ``order`` -> the cursor text."""
        return self.prefix + ",".join(ids)


def parse_cursor(text: str, topics: Sequence[str]) -> dict[str, StreamId]:
    """Cursor text -> ``{topic: (ms, seq)}`` for the requested ``topics``; raises ``CursorError``."""
    match = _CURSOR.fullmatch(text.strip())
    if match is None:
        raise CursorError("not a cursor of this server (expected '<fingerprint>:<ms-seq>,...')")
    fp, parts = match["fp"], match["ids"].split(",")
    try:
        ids = [parse_stream_id(p.strip()) for p in parts]
    except ValueError as exc:
        raise CursorError(str(exc)) from None
    if fp is None:
        if len(topics) != 1 or len(ids) != 1:
            raise CursorError("a cursor without fingerprint is accepted for one topic only")
        return {topics[0]: ids[0]}
    if fp != fingerprint(topics):
        raise CursorError("the cursor belongs to another set of topics")
    if len(ids) != len(topics):
        raise CursorError(f"expected {len(topics)} stream ids, got {len(ids)}")
    return dict(zip(sorted(topics), ids))


def gap_event(topic: str, reason: str, since: int | None, until: int | None) -> GapEvent:
    """A ``gap`` event (``control.events.GapEvent``; ``since``/``until`` in ms, None when unknown)."""
    return {"type": "gap", "topic": topic, "reason": reason, "since": since, "until": until}


def _sid(raw: Any) -> StreamId | None:
    return parse_stream_id(raw) if raw is not None else None


def judge(
    cursor: StreamId, info: Mapping[str, Any] | None, at: Sequence[Any], now_ms: int
) -> tuple[StreamId, str | None, int | None]:
    """Where one topic resumes, and why entries may be missing: ``(start, gap reason or None, until ms)``.

    ``cursor``: the client's position; ``info``: ``XINFO STREAM`` (None: no such stream); ``at``: ``XRANGE key
    cursor + COUNT 1`` (the cursor's entry, or the first one after it); ``now_ms``: Redis ``TIME``.
    Entries are only ever trimmed from the head (``MAXLEN``), so a cursor that is still an entry of the stream
    means nothing after it was lost. Otherwise (Redis 7 fields; without them every deletion counts as trim):

    * the stream never got as far as the cursor (no stream, or cursor > ``last-generated-id``): a cursor in
      the future (its ms after Redis ``TIME``) is ``invalid_cursor``; else the stream was recreated or restored
      from older data: ``stream_reset``. Either way the topic starts at the stream's current end, because
      anything added from now on is new to the client, even when its id is below the cursor.
    * the cursor is older than what is kept, or falls between kept entries: ``retention`` when this stream
      has deleted entries (``entries-added`` > ``length``, or ``max-deleted-entry-id`` >= cursor), else
      ``stream_reset`` (nothing was ever deleted here, so the cursor's entry lived in an earlier stream).
      The topic resumes right after the cursor.

    A ``0-0`` cursor (the stream was empty when the client came) resumes from the start, with a
    ``retention`` gap when the stream has deleted entries since.
    """
    if info is None:
        if cursor == ZERO_ID:
            return ZERO_ID, None, None
        return ZERO_ID, INVALID_CURSOR if cursor[0] > now_ms else STREAM_RESET, None
    first = info.get("first-entry")
    first_id = _sid(first[0]) if first else None
    added, length = info.get("entries-added"), int(info.get("length") or 0)
    deleted = added is None or int(added) > length
    if cursor == ZERO_ID:
        if deleted and first_id is not None:
            return ZERO_ID, RETENTION, first_id[0]
        return ZERO_ID, None, None
    last_generated = _sid(info.get("last-generated-id")) or ZERO_ID
    if cursor > last_generated:
        return last_generated, INVALID_CURSOR if cursor[0] > now_ms else STREAM_RESET, None
    after = parse_stream_id(at[0][0]) if at else None
    if after == cursor:
        return cursor, None, None  # still there: everything after it is too
    max_deleted = _sid(info.get("max-deleted-entry-id"))
    if first_id is not None and cursor > first_id:  # between kept entries: only XDEL removes those
        deleted = max_deleted is not None and max_deleted >= cursor
    until = after[0] if after is not None else None
    return cursor, RETENTION if deleted else STREAM_RESET, until


async def resume_positions(
    redis: Redis, topics: Sequence[str], cursor: Mapping[str, StreamId]
) -> tuple[dict[str, StreamId], list[GapEvent]]:
    """Start positions for a client resuming from ``cursor`` and the gap events to send first (request order).

    ``redis``: a bytes client (or cluster client: TIME is then asked on its own, a cluster pipeline refuses
    keyless commands). Raises redis errors (connection errors included) other than a missing stream.
    """
    cluster = is_cluster(redis)
    async with redis.pipeline(transaction=False) as pipe:
        if not cluster:
            pipe.time()
        for topic in topics:
            key = keys.event_stream(topic)
            pipe.xinfo_stream(key)
            pipe.xrange(key, min=format_stream_id(cursor[topic]), max="+", count=1)
        replies = await pipe.execute(raise_on_error=False)
    if cluster:
        replies.insert(0, await redis.time())
    for reply in replies:
        if isinstance(reply, Exception) and not isinstance(reply, ResponseError):
            raise reply
    sec, usec = replies[0]
    now_ms = int(sec) * 1000 + int(usec) // 1000
    positions: dict[str, StreamId] = {}
    gaps: list[GapEvent] = []
    for i, topic in enumerate(topics):
        info, at = replies[1 + 2 * i], replies[2 + 2 * i]
        if isinstance(at, ResponseError):
            raise at
        sid = cursor[topic]
        start, reason, until = judge(sid, None if isinstance(info, ResponseError) else info, at, now_ms)
        positions[topic] = start
        if reason == INVALID_CURSOR:
            gaps.append(gap_event(topic, reason, None, None))
        elif reason is not None:
            gaps.append(gap_event(topic, reason, sid[0] if sid != ZERO_ID else None, until))
    return positions, gaps


def invalid_cursor_gaps(topics: Sequence[str]) -> list[GapEvent]:
    """One ``invalid_cursor`` gap per topic (request order), for a cursor that could not be parsed at all."""
    return [gap_event(topic, INVALID_CURSOR, None, None) for topic in topics]
