"""Shared pieces of the order-book tests: constants, the recording publisher, the dropping adapter, helpers.

Waits are event-driven: ``RecordingPublisher.wait_for`` re-checks its predicate on every publish,
``sim.wait_for`` on every frame and REST call.
"""

from __future__ import annotations

from typing import Any

import orjson
from redis.asyncio import Redis

from control import keys
from scripts import tapes
from scripts.simulator import ExchangeSimulator
from workers.exchanges import get_adapter
from workers.exchanges.base import BookUpdate, ExchangeAdapter, FrameParser, Parsed
from workers.exchanges.binanceusdm import BinanceSync

FAST = {
    "SUBSCRIBE_DELAY_MS": "20",
    "PING_INTERVAL_S": "1",
    "PONG_TIMEOUT_S": "1",
    "RECONNECT_DELAY_S": "0.05",
    "RECONNECT_MAX_DELAY_S": "0.2",
    "STALL_TIMEOUT_S": "10",
    "DEPTH_INTERVAL_MS": "50",
}
BN_DEPTH = "binanceusdm:depth:BTCUSDT"
BN_TAPE_UPDATES = 6551
BN_TAPE_APPLIED = 6547  # 4 frames predate the recorded snapshot (binance_usdm.md §6)


class DroppingAdapter:
    """Delegates to an adapter; its parsers lose the ``drop_at``-th book update (1-based) of every socket."""

    def __init__(self, inner: ExchangeAdapter, drop_at: int) -> None:
        self._inner, self.drop_at = inner, drop_at
        self.dropped: list[BookUpdate] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def new_parser(self) -> FrameParser:
        inner, outer = self._inner.new_parser(), self
        seen = 0

        class Parser:
            def parse(self, raw: str | bytes, ts_received_ms: int) -> Parsed:
                nonlocal seen
                parsed = inner.parse(raw, ts_received_ms)
                kept = []
                for update in parsed.book:
                    seen += 1
                    if seen == outer.drop_at:
                        outer.dropped.append(update)
                    else:
                        kept.append(update)
                parsed.book = kept
                return parsed

        return Parser()


def binance_url(sim: ExchangeSimulator) -> str:
    return get_adapter("binanceusdm").ws_url(sim.binance_base_url, "public")


def offline_binance_top(levels: int) -> tuple[list[list[str]], list[list[str]], int]:
    """Top levels and last id after the whole 2024 tape, rebuilt offline from the recording."""
    adapter = get_adapter("binanceusdm")
    parser, sync = adapter.new_parser(), BinanceSync()
    for ts_ns, raw in tapes.read_hftbacktest():
        if not raw.startswith('{"stream"'):
            sync.feed(adapter.parse_snapshot("BTCUSDT", raw.encode(), ts_ns // 1_000_000))
        else:
            for update in parser.parse(raw, ts_ns // 1_000_000).book:
                sync.feed(update)
    bids, asks = sync.book.top(levels)
    assert sync.last_id is not None
    return bids, asks, sync.last_id


async def stream_events(redis: Redis, topic: str) -> list[dict[str, Any]]:
    entries = await redis.xrange(keys.event_stream(topic))
    return [orjson.loads(fields[keys.STREAM_FIELD]) for _, fields in entries]


# -- Binance ------------------------------------------------------------------------------------------
