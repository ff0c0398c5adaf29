"""ExchangeConnection: topics changed live, stop, malformed and binary frames."""

from __future__ import annotations

import asyncio
import zlib
from typing import Any

import pytest

from scripts.simulator import ExchangeSimulator
from tests.workers.connection._world import (
    BM_KLINE,
    BM_TRADE,
    all_active,
    bitmart_url,
    client_frames,
)
from workers.connection import _inflate
from workers.exchanges import get_adapter
from workers.exchanges.base import Parsed

pytestmark = pytest.mark.timeout(30)


# -- live topic changes, stop, malformed frames ----------------------------------------------------


async def test_set_topics_adds_and_removes_live(sim: ExchangeSimulator, make_conn: Any, pub: Any) -> None:
    conn, _ = make_conn(get_adapter("bitmart"), bitmart_url(sim), [BM_TRADE])
    await pub.wait_for(lambda: pub.counts[str(BM_TRADE)] > 0)
    conn.set_topics([BM_TRADE, BM_KLINE])
    await pub.wait_for(lambda: pub.counts[str(BM_KLINE)] > 0)
    conn.set_topics([BM_KLINE])
    removed_count = pub.counts[str(BM_TRADE)]
    sim_conn = sim.connections[0]
    await sim.wait_for(lambda: sim_conn.subscribed == {"futures/klineBin1m:BTCUSDT"})
    assert client_frames(sim_conn, "unsubscribe")[-1][1]["args"] == ["futures/trade:BTCUSDT"]
    more = pub.counts[str(BM_KLINE)] + 5
    await pub.wait_for(lambda: pub.counts[str(BM_KLINE)] >= more)
    assert pub.counts[str(BM_TRADE)] == removed_count
    assert len(sim.connections) == 1 and conn.status()["reconnects"] == 0
    assert conn.status()["topics"] == 1


async def test_stop_unsubscribes_and_closes(sim: ExchangeSimulator, make_conn: Any, pub: Any) -> None:
    conn, task = make_conn(get_adapter("bitmart"), bitmart_url(sim), [BM_TRADE, BM_KLINE])
    await pub.wait_for(all_active(pub, [BM_TRADE, BM_KLINE]))
    sim_conn = sim.connections[0]
    await conn.stop()
    await asyncio.wait_for(task, 1.0)  # run() returned
    unsubscribed = {a for _, f in client_frames(sim_conn, "unsubscribe") for a in f["args"]}
    assert unsubscribed == {"futures/trade:BTCUSDT", "futures/klineBin1m:BTCUSDT"}
    await sim.wait_for(lambda: not sim.connections)
    assert sim_conn.close_code == 1000
    assert conn.status()["state"] == "stopped" and conn.status()["connected_since"] is None
    await conn.stop()  # idempotent


class _JunkOnPong:
    """Wraps a real parser; treats every pong frame as malformed (raises ValueError)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def parse(self, raw: str | bytes, ts_received_ms: int) -> Parsed:
        if b'"System"' in (raw if isinstance(raw, bytes) else raw.encode()):
            raise ValueError("junk")
        return self.inner.parse(raw, ts_received_ms)


class _JunkAdapter:
    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def new_parser(self) -> _JunkOnPong:
        return _JunkOnPong(self._inner.new_parser())


async def test_malformed_frames_are_counted_not_fatal(sim: ExchangeSimulator, make_conn: Any, pub: Any) -> None:
    conn, _ = make_conn(_JunkAdapter(get_adapter("bitmart")), bitmart_url(sim), [BM_TRADE])
    await sim.wait_for(lambda: conn.malformed_frames >= 3)
    before = pub.counts[str(BM_TRADE)]
    await pub.wait_for(lambda: pub.counts[str(BM_TRADE)] > before)
    assert conn.status()["reconnects"] == 0
    assert conn.status()["malformed_frames"] >= 3


def test_binary_frames_are_raw_inflated() -> None:
    packer = zlib.compressobj(wbits=-15)
    packed = packer.compress(b'{"group":"System","data":"pong+1"}') + packer.flush()
    assert _inflate(packed) == b'{"group":"System","data":"pong+1"}'
    assert _inflate(b'{"plain":1}') == b'{"plain":1}'
