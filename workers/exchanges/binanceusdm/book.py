"""Binance USD-M order books (§6): ``depthUpdate`` frames -> ``BookUpdate``, the ``pu`` chain rule, and the REST
snapshot (``GET /fapi/v1/depth``, 1000 levels) it bridges from; a gap refetches the snapshot (no socket resync).

Wire shapes (§5, §6)::

    depthUpdate {"e":"depthUpdate","E":123456789,"T":123456788,"s":"BTCUSDT","U":157,"u":160,"pu":149,
               "b":[["0.0024","10"]],"a":[["0.0026","100"]]}
    REST depth {"lastUpdateId":1027024,"E":1589436922972,"T":1589436922959,"bids":[["4.0","431"]],"asks":[...]}
"""

from __future__ import annotations

from typing import Any

import orjson

from control.topics import Topic
from workers.exchanges.base import BookUpdate, SnapshotRequest
from workers.exchanges.binanceusdm.wire import SNAPSHOT_LIMIT, SNAPSHOT_PATH, _error_text
from workers.orderbook import APPLIED, GAP, STALE, BookSync

_loads = orjson.loads


class BinanceSync(BookSync):
    """Binance USD-M diff depth (binance_usdm.md §6): buffer the diff stream until the REST snapshot (``lastUpdateId``
    L) is in; drop ``u < L``; the first applied frame must have ``U <= L <= u``; afterwards every frame must have
    ``pu == previous u``. ``U == previous u + 1`` is *not* tested: the ids have gaps."""

    rule = "binance"

    def _check(self, update: BookUpdate) -> str:
        last = self.last_id
        assert last is not None
        u = update.last_id
        if self._bridged:
            if update.prev_last_id == last:
                return APPLIED
            return STALE if u <= last else GAP
        # Bridging: drop u < L; the first applied frame must satisfy U <= L <= u.
        if u < last:
            return STALE
        first = update.first_id if update.first_id is not None else u
        return APPLIED if first <= last else GAP


def depth_update(topic: str, d: dict[str, Any], ts_received_ms: int) -> BookUpdate:
    """``depthUpdate`` (§5 diff depth, ``<s>@depth@100ms`` on ``/public``) -> ``BookUpdate`` on ``topic`` for the keeper.

    ``U``/``u`` first/last update id, ``pu`` the previous frame's ``u`` (the chain ``BinanceSync`` checks, §6
    step 5; ``U == prev u + 1`` does **not** hold on futures), ``b``/``a`` ``[[price, qty]]`` absolute,
    ``"0"`` deletes. Raises ValueError if an id is not an integer.
    """
    first_id, last_id, prev_last_id = d["U"], d["u"], d["pu"]
    if type(first_id) is not int or type(last_id) is not int or type(prev_last_id) is not int:
        raise ValueError(
            f"binanceusdm depthUpdate ids must be integers: U={first_id!r} u={last_id!r} pu={prev_last_id!r}"
        )
    return BookUpdate(
        topic,
        d["s"],
        [(p, q) for p, q in d["b"]],
        [(p, q) for p, q in d["a"]],
        first_id,
        last_id,
        prev_last_id,
        False,
        d["E"],
        ts_received_ms,
    )


def snapshot_request(symbol: str, levels: int) -> SnapshotRequest | None:
    """``GET /fapi/v1/depth?symbol=<S>&limit=1000`` (§6 step 2). The documented procedure uses 1000 levels
    whatever ``levels`` is published: the top N are cut from the local book."""
    return SnapshotRequest(SNAPSHOT_PATH, {"symbol": symbol, "limit": str(SNAPSHOT_LIMIT)})


def parse_depth_snapshot(symbol: str, body: bytes | str, ts_received_ms: int) -> BookUpdate:
    """A ``GET /fapi/v1/depth`` reply (§6 step 2: ``{lastUpdateId,E,T,bids,asks}``) as ``BookUpdate(snapshot=True)``.

    ``last_id`` is ``lastUpdateId`` (the keeper drops frames with ``u < lastUpdateId`` and starts at the one with
    ``U <= lastUpdateId <= u``, §6 steps 3-4); ``first_id`` is None; ``ts_exchange`` is ``E`` when present.
    Raises ValueError for invalid JSON, a REST error body (``{"code":-1121,"msg":"Invalid symbol."}``) or a
    malformed snapshot.
    """
    msg = _loads(body)
    if type(msg) is not dict:
        raise ValueError(f"binanceusdm depth snapshot for {symbol} is not an object")
    if "lastUpdateId" not in msg and "code" in msg:
        raise ValueError(
            f"binanceusdm depth snapshot for {symbol} failed: {_error_text(msg.get('code'), msg.get('msg'))}"
        )
    try:
        last_id = msg["lastUpdateId"]
        if type(last_id) is not int:
            raise ValueError(f"binanceusdm depth snapshot lastUpdateId must be an integer, got {last_id!r}")
        ts_exchange = msg.get("E")
        return BookUpdate(
            f"binanceusdm:depth:{symbol}",
            symbol,
            [(p, q) for p, q in msg["bids"]],
            [(p, q) for p, q in msg["asks"]],
            None,
            last_id,
            None,
            True,
            ts_exchange if type(ts_exchange) is int else None,
            ts_received_ms,
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"malformed binanceusdm depth snapshot for {symbol}: {exc!r}") from exc


def resync_frame(topic: Topic) -> str | None:
    """None: Binance has no socket-side snapshot request; the keeper refetches the REST snapshot (§6 step 5)."""
    return None
