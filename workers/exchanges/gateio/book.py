"""Gate.io order books (§2.5): ``futures.order_book_update`` pushes -> ``BookUpdate``, the ``U == prev u + 1`` rule,
and the REST snapshot (``with_id=true``) the rule bridges from. Resyncs are a new REST snapshot, never a socket frame.

Wire shapes::

    book    {"channel":"futures.order_book_update","event":"update","result":{"t":1684930165247,"s":"RDNT_USDT",
             "U":203083178,"u":203083178,"b":[],"a":[{"p":"0.3047","s":8393}]}}
    REST    {"current":<s.ms>,"update":<s.ms>,"asks":[{"p","s"}],"bids":[...],"id":<N>}
"""

from __future__ import annotations

from typing import Any

import orjson

from control.topics import Topic
from workers.exchanges.base import BookUpdate, SnapshotRequest
from workers.exchanges.gateio.wire import BOOK_LEVEL, SNAPSHOT_PATH, _int, _ms, _seconds_to_ms, _size
from workers.orderbook import APPLIED, GAP, STALE, BookSync

_loads = orjson.loads


class GateSync(BookSync):
    """Gate futures ``order_book_update`` (exchanges.md §2.5): buffer until the REST snapshot (``id`` B) is in; drop
    ``u < B + 1``; the first applied push must have ``U <= B + 1 <= u``; afterwards ``U == previous u + 1``. A
    ``full:true`` push (``snapshot=True`` from the stream) replaces the book."""

    rule = "gate"

    def _check(self, update: BookUpdate) -> str:
        last = self.last_id
        assert last is not None
        u = update.last_id
        first = update.first_id if update.first_id is not None else u
        if self._bridged:
            if first == last + 1:
                return APPLIED
            return STALE if u <= last else GAP
        # Bridging: drop u < B + 1; the first applied push must satisfy U <= B + 1 <= u.
        if u < last + 1:
            return STALE
        return APPLIED if first <= last + 1 else GAP


def book_update(topic: str, msg: dict[str, Any], ts_received_ms: int) -> BookUpdate:
    """``futures.order_book_update`` (§2.5): a delta ``U``..``u`` for the book keeper (not an event) on ``topic``.

    Chain rule (``GateSync``): ``U == previous u + 1``; ``full: true`` (2025+) marks a full book.
    """
    r = msg["result"]
    contract = r["s"]
    return BookUpdate(
        topic=topic,
        symbol=contract,
        bids=[(level["p"], _size(level["s"])) for level in r["b"]],
        asks=[(level["p"], _size(level["s"])) for level in r["a"]],
        first_id=_int(r["U"]),
        last_id=_int(r["u"]),
        snapshot=r.get("full") is True,
        ts_exchange=_ms(r.get("t")),
        ts_received=ts_received_ms,
    )


def snapshot_request(symbol: str, levels: int) -> SnapshotRequest | None:
    """``GET /api/v4/futures/usdt/order_book?contract=…&limit=100&with_id=true`` (§2.5 recipe).

    ``limit`` must equal the subscribed level (always 100, ``BOOK_LEVEL``), whatever ``levels``
    the topic publishes; the book keeper trims.
    """
    return SnapshotRequest(SNAPSHOT_PATH, {"contract": symbol, "limit": BOOK_LEVEL, "with_id": "true"})


def parse_snapshot(symbol: str, body: bytes, ts_received_ms: int) -> BookUpdate:
    """The REST book ``{"current":s.ms,"update":s.ms,"asks":[{"p","s"}],"bids":[...],"id":N}`` as a
    ``BookUpdate(snapshot=True, first_id=None, last_id=id)`` (§2.5). ``ts_exchange`` is ``current``
    (float seconds) in ms, converted exactly. Raises ValueError for a malformed or error body."""
    msg = _loads(body)
    if type(msg) is not dict:
        raise ValueError(f"gateio order book snapshot for {symbol} is not an object")
    if "id" not in msg:
        detail = f"{msg.get('label')}: {msg.get('message')}" if "label" in msg else "no id (with_id=true?)"
        raise ValueError(f"gateio order book snapshot for {symbol}: {detail}")
    try:
        return BookUpdate(
            topic=f"gateio:depth:{symbol}",
            symbol=symbol,
            bids=[(level["p"], _size(level["s"])) for level in msg["bids"]],
            asks=[(level["p"], _size(level["s"])) for level in msg["asks"]],
            first_id=None,
            last_id=_int(msg["id"]),
            snapshot=True,
            ts_exchange=_seconds_to_ms(msg.get("current")),
            ts_received=ts_received_ms,
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"malformed gateio order book snapshot for {symbol}: {exc!r}") from exc


def resync_frame(topic: Topic) -> str | None:
    """None: Gate resyncs by a new REST snapshot (§2.5), not by a socket request."""
    return None
