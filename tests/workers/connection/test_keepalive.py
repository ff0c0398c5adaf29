"""ExchangeConnection: app pings, reconnects that resubscribe, dead peers, silent feeds, refused connects, stop."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import aiohttp
import pytest

from control.settings import Settings
from scripts.simulator import ExchangeSimulator
from tests.workers.connection._world import (
    BM_KLINE,
    BM_TRADE,
    BN_TRADE,
    RecordingPublisher,
    all_active,
    binance_url,
    bitmart_url,
    client_frames,
)
from workers.connection import CLOSED_BY_PEER, CONNECT_FAILED, DEAD_PEER, SILENT_FEED, ExchangeConnection
from workers.exchanges import get_adapter

pytestmark = pytest.mark.timeout(30)


# -- keep-alive and watchdogs -----------------------------------------------------------------------


async def test_bitmart_app_ping_at_the_interval(sim: ExchangeSimulator, make_conn: Any) -> None:
    make_conn(get_adapter("bitmart"), bitmart_url(sim), [])
    await sim.wait_for(lambda: bool(sim.connections) and len(client_frames(sim.connections[0], "ping")) >= 4)
    sim_conn = sim.connections[0]
    times = [sim_conn.opened_at] + [t for t, _ in client_frames(sim_conn, "ping")]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(0.18 <= g <= 0.4 for g in gaps), gaps  # PING_INTERVAL_S=0.2


async def test_reconnect_resubscribes_everything(sim: ExchangeSimulator, make_conn: Any, pub: Any) -> None:
    topics = [BM_TRADE, BM_KLINE]
    conn, _ = make_conn(get_adapter("bitmart"), bitmart_url(sim), topics)
    await pub.wait_for(all_active(pub, topics))
    first = sim.connections[0]
    assert await sim.drop_connections() == 1
    natives = {"futures/trade:BTCUSDT", "futures/klineBin1m:BTCUSDT"}
    await sim.wait_for(lambda: bool(sim.connections) and sim.connections[0] is not first
                       and sim.connections[0].subscribed == natives)
    await pub.wait_for(all_active(pub, topics))
    status = conn.status()
    assert status["reconnects"] == 1 and status["reasons"] == {CLOSED_BY_PEER: 1}
    assert status["last_error"].startswith("closed by peer") or "error" in status["last_error"]
    before = pub.counts[str(BM_TRADE)]
    await pub.wait_for(lambda: pub.counts[str(BM_TRADE)] > before)  # data flows again


async def test_dead_peer_is_detected_and_reconnected(sim: ExchangeSimulator, make_conn: Any, pub: Any) -> None:
    conn, _ = make_conn(get_adapter("bitmart"), bitmart_url(sim), [BM_TRADE])
    await pub.wait_for(all_active(pub, [BM_TRADE]))
    sim.set_dead(True)
    await sim.wait_for(lambda: conn.reconnects >= 1, timeout=5.0)
    assert conn.status()["last_error"].startswith("dead peer: no frame for")
    assert conn.reasons[DEAD_PEER] >= 1
    sim.set_dead(False)
    await pub.wait_for(all_active(pub, [BM_TRADE]))


async def test_binance_dead_peer_via_heartbeat(sim: ExchangeSimulator, make_conn: Any, pub: Any) -> None:
    conn, _ = make_conn(get_adapter("binanceusdm"), binance_url(sim, "public"), [BN_TRADE])
    await pub.wait_for(all_active(pub, [BN_TRADE]))
    sim.set_dead(True)
    await sim.wait_for(lambda: conn.reconnects >= 1, timeout=5.0)
    assert "PONG" in conn.status()["last_error"] or "dead peer" in conn.status()["last_error"]
    assert conn.reasons[DEAD_PEER] >= 1
    sim.set_dead(False)
    await pub.wait_for(all_active(pub, [BN_TRADE]))


async def test_silent_feed_is_detected_and_reconnected(sim: ExchangeSimulator, make_conn: Any, pub: Any) -> None:
    conn, _ = make_conn(get_adapter("bitmart"), bitmart_url(sim), [BM_TRADE])
    await pub.wait_for(lambda: pub.counts[str(BM_TRADE)] > 0)
    sim.set_silent(True)  # pongs and acks still flow: only our own watchdog can notice
    await sim.wait_for(lambda: conn.reconnects >= 1, timeout=5.0)
    assert conn.status()["last_error"].startswith("silent feed: no data for")
    assert conn.reasons[SILENT_FEED] >= 1
    sim.set_silent(False)
    before = pub.counts[str(BM_TRADE)]
    await pub.wait_for(lambda: pub.counts[str(BM_TRADE)] > before)


async def test_refused_connections_back_off_without_a_storm(make_conn: Any) -> None:
    probe = ExchangeSimulator()
    await probe.start()
    url = probe.bitmart_public_url
    await probe.stop()  # the port now refuses connections
    conn, _ = make_conn(get_adapter("bitmart"), url, [BM_TRADE])
    await asyncio.sleep(1.5)  # the observation window itself, not synchronisation
    attempts = conn.status()["reconnects"] + 1
    # 0.05 -> 0.5 s with equal jitter: at most 9 attempts fit in 1.5 s (test_backoff); a tight loop makes hundreds.
    assert 3 <= attempts <= 9, attempts
    status = conn.status()
    assert status["state"] in ("backoff", "connecting")  # "connecting" if the window ends mid-attempt
    assert "connect failed" in status["last_error"]
    assert status["reasons"] == {CONNECT_FAILED: status["reconnects"]}  # no socket, no gap: nothing was flowing
    await asyncio.wait_for(conn.stop(), 1.0)  # stop during backoff is immediate
    assert conn.status()["state"] == "stopped"


async def test_stop_before_run_and_caller_cancellation(
    sim: ExchangeSimulator, settings: Settings, pub: RecordingPublisher
) -> None:
    async with aiohttp.ClientSession() as session:
        idle = ExchangeConnection(conn_id="c9", adapter=get_adapter("bitmart"), url=bitmart_url(sim),
                                  settings=settings, session=session, publisher=pub)
        await idle.stop()
        await idle.run()  # returns at once after stop()
        assert idle.status()["state"] == "stopped"

        conn = ExchangeConnection(conn_id="c10", adapter=get_adapter("bitmart"), url=bitmart_url(sim),
                                  settings=settings, session=session, publisher=pub)
        conn.set_topics([BM_TRADE])
        task = asyncio.create_task(conn.run())
        await pub.wait_for(lambda: pub.counts[str(BM_TRADE)] > 0)
        task.cancel()  # e.g. the worker shutting down hard
        with pytest.raises(asyncio.CancelledError):
            await task
        await sim.wait_for(lambda: not sim.connections)  # the socket was closed, no task left behind
        await conn.stop()
