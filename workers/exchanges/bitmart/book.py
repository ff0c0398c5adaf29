"""BitMart order books (§1.6 depthIncrease): pushes -> ``BookUpdate``, the ``version + 1`` sequence rule, and the
on-socket resync request. There is no REST snapshot: the first push after subscribe is the snapshot.

Wire shape::

    depth {"group":"futures/depthIncrease50:BTCUSDT@100ms","data":{"symbol":"BTCUSDT","asks":[{"price":"1","vol":"2"}],
           "bids":[],"ms_t":1700000000000,"version":42,"type":"snapshot"|"update"}}
"""

from __future__ import annotations

from typing import Any

import orjson

from control.topics import Topic
from workers.exchanges.base import AdapterError, BookUpdate, Parsed, SnapshotRequest
from workers.exchanges.bitmart.wire import EXCHANGE_ID, native_topic
from workers.orderbook import APPLIED, GAP, STALE, BookSync

_dumps = orjson.dumps


class BitmartSync(BookSync):
    """BitMart ``depthIncrease`` (exchanges.md §1.6): the snapshot arrives on the socket (no buffering); then
    ``version <= local`` is stale, ``== local + 1`` is applied, ``> local + 1`` is a gap (ask for a new snapshot
    with ``resync_frame``)."""

    rule = "bitmart"
    buffers = False

    def _check(self, update: BookUpdate) -> str:
        last = self.last_id
        assert last is not None
        version = update.last_id
        if version <= last:
            return STALE
        return APPLIED if version == last + 1 else GAP


def on_depth(channel: str, symbol: str, data: Any, ts_received_ms: int) -> Parsed:
    """depthIncrease push (§1.6): ``{symbol, asks:[{price,vol}], bids, ms_t, version, type}`` -> one ``BookUpdate``.

    ``type:"snapshot"`` replaces the book, ``"update"`` carries absolute sizes (``vol "0"`` deletes). ``version``
    goes into both ``first_id`` and ``last_id``: the keeper applies ``version == local + 1``, drops older ones
    and asks for a fresh snapshot (``resync_frame``) on a gap. Updates with empty or absent sides still advance
    the version. No checksum exists (§1.6). Raises ValueError for an unknown ``type`` or a non-integer version.
    """
    sym = symbol or data["symbol"]
    kind = data["type"]
    if kind == "update":
        snapshot = False
    elif kind == "snapshot":
        snapshot = True
    else:
        raise ValueError(f"bitmart depth type must be 'snapshot' or 'update', got {kind!r}")
    version = data["version"]
    if type(version) is not int:
        if type(version) is str and version.isdigit():
            version = int(version)
        else:
            raise ValueError(f"bitmart depth version must be an integer, got {version!r}")
    return Parsed(
        book=[
            BookUpdate(
                f"bitmart:depth:{sym}",
                sym,
                _levels(data.get("bids")),
                _levels(data.get("asks")),
                version,
                version,
                None,
                snapshot,
                data.get("ms_t"),
                ts_received_ms,
            )
        ]
    )


def _levels(levels: Any) -> list[tuple[str, str]]:
    """``[{"price":"1","vol":"2"}, ...]`` (None or empty: no change on that side) -> ``[("1", "2"), ...]``."""
    if not levels:
        return []
    return [(level["price"], level["vol"]) for level in levels]


def snapshot_request(symbol: str, levels: int) -> SnapshotRequest | None:
    """None: the first depthIncrease push after subscribe is the snapshot (§1.6)."""
    return None


def parse_snapshot(symbol: str, body: bytes, ts_received_ms: int) -> BookUpdate:
    """Never called for BitMart (``snapshot_request`` is None); raises AdapterError."""
    raise AdapterError("bitmart order-book snapshots arrive on the socket; there is no REST snapshot to parse")


def resync_frame(topic: Topic) -> str | None:
    """``{"action":"request","args":["futures/depthIncrease50:<SYM>@100ms"]}``: after a version gap, ask for a
    fresh snapshot on the same topic (§1.6). Raises AdapterError unless ``topic`` is a bitmart depth topic."""
    if topic.exchange != EXCHANGE_ID or topic.channel != "depth":
        raise AdapterError(f"no order-book resync for {topic}")
    return _dumps({"action": "request", "args": [native_topic(topic)]}).decode()
