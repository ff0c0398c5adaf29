"""The exchange URL in the settings is the truth for where to connect (issue 10, defect 5).

The connection plan kept in Redis records each connection's URL. Redis may keep that plan across a restart of
the workers, and the workers may come back with another ``BITMART_PUBLIC_WS_URI`` / ``BINANCE_USDM_WS_URI``:
the plan is then re-planned with the URLs of the settings in force, and a connection still running on the old
URL moves to the new one make-before-break. Real ``WorkerRuntime`` objects, real Redis, real local exchanges
(two simulators; ``LiveExchange`` reached under two host names for the make-before-break case).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from control.settings import Settings
from control.store import ControlStore
from scripts.simulator import ExchangeSimulator
from workers.connection import CONNECT_FAILED
from workers.planner import read_plan

from . import _failover_world as fw
from ._failover_world import FAST, RAW_TRADES, LiveExchange, sim_env, stream
from .test_runtime import BINANCE, BITMART, sim_counts, wait_until

pytestmark = pytest.mark.timeout(90)

# Fixtures of the failover tests, found by pytest under these names: runtimes(settings, worker_id), LiveExchange.
live, make_runtimes, runtimes, session = fw.live, fw.make_runtimes, fw.runtimes, fw.session

SHORT = {"HEARTBEAT_INTERVAL_S": "0.2", "LEASE_TTL_S": "1"}


async def test_a_restart_with_a_new_exchange_url_connects_to_the_new_one_at_once(
    redis: Redis, redis_url: str, make_settings: Callable[..., Settings], runtimes: Any
) -> None:
    topics = [*BITMART, *BINANCE]
    await ControlStore(redis).add_desired(topics, now_ms=1)
    old = ExchangeSimulator(rate=50.0, loop=True)
    await old.start()
    first = await runtimes(make_settings(**sim_env(old, redis_url, **SHORT)), "w-a")
    await old.wait_for(lambda: len(sim_counts(old)) == len(topics), timeout=15)
    await first.stop()  # the plan (with the old URLs) stays in Redis, as across a real restart
    await old.stop()  # the old address is dead now

    async with ExchangeSimulator(rate=50.0, loop=True) as new:
        again = await runtimes(make_settings(**sim_env(new, redis_url, **SHORT)), "w-a")  # same id, new URLs
        try:
            await new.wait_for(lambda: len(sim_counts(new)) == len(topics), timeout=10)
        except TimeoutError:
            pass  # reported below, with what the worker did instead
        conns = {h.conn_id: h.conn.status() for h in again._held.values()}
        seen = {c: (s["url"], s["reconnects"], s["reasons"]) for c, s in conns.items()}
        print(f"\nrestart with new URLs ({new.base_url}): connections {seen}")
        assert len(sim_counts(new)) == len(topics), f"not served by the new exchange: {seen}"
        assert conns and all(s["url"].startswith(new.base_url) for s in conns.values()), seen
        assert all(s["reasons"].get(CONNECT_FAILED, 0) <= 1 for s in conns.values()), seen  # within one reconnect
        planned = await read_plan(redis)
        assert all(d["url"].startswith(new.base_url) for d in planned.conns.values()), planned.conns

        async def status_shows_new_urls() -> bool:
            records = await ControlStore(redis).connections()
            return bool(records) and all(r["url"].startswith(new.base_url) for r in records)

        await wait_until(status_shows_new_urls, what="/status records with the URL in use")


async def test_a_running_connection_moves_to_a_new_url_make_before_break(
    redis: Redis, redis_url: str, live: LiveExchange, make_settings: Callable[..., Settings], runtimes: Any
) -> None:
    """w-a runs the connection on the old URL; w-b starts later with the new one (a rolling restart): the plan
    takes the newest settings, and w-a's connection moves without a gap, the new socket subscribed before the old
    one closes. The same server is reached as 127.0.0.1 and as localhost, so one live trade sequence runs on both."""
    topic = "binanceusdm:trade:BTCUSDT"
    old_url, new_url = live.base_url, live.base_url.replace("127.0.0.1", "localhost")
    await ControlStore(redis).add_desired([topic], now_ms=1)
    a = await runtimes(make_settings(REDIS_URL=redis_url, BINANCE_USDM_WS_URI=old_url, **SHORT, **FAST, **RAW_TRADES), "w-a")
    await live.wait_for(lambda: live.subscribed() == 1 and len(live.sent) > 10)
    before_move = live.sent[-1]
    b = await runtimes(make_settings(REDIS_URL=redis_url, BINANCE_USDM_WS_URI=new_url, **SHORT, **FAST, **RAW_TRADES), "w-b")

    async def moved() -> bool:
        held = [h for r in (a, b) for h in r._held.values()]
        return len(held) == 1 and held[0].conn.url.startswith(new_url) and held[0].roll is None

    await wait_until(moved, timeout=20, what="the connection on the new URL")
    await live.wait_for(lambda: live.subscribed() == 1)
    sent = len(live.sent)
    await live.wait_for(lambda: len(live.sent) > sent + 50)  # trades on the new socket only
    last_sent = live.sent[-1]

    async def caught_up() -> bool:
        events = await stream(redis, topic)
        return bool(events) and events[-1].get("trade_id") is not None and int(events[-1]["trade_id"]) >= last_sent

    await wait_until(caught_up, what="the stream to reach the last trade broadcast")
    events = await stream(redis, topic)
    ids = [int(e["trade_id"]) for e in events if e["type"] == "trade"]
    print(f"\nURL change while running: {len(ids)} trades, gaps {[e for e in events if e['type'] == 'gap']}, "
          f"most sockets per stream {live.max_sockets_per_stream}")
    assert len(ids) == len(events)  # no gap event
    assert ids == list(range(ids[0], ids[-1] + 1))  # every trade once across the move
    assert live.max_sockets_per_stream == 2  # make-before-break: the new socket was subscribed first
    assert ids[0] <= before_move < last_sent <= ids[-1]  # the stream runs from before the move to well after it

    async def status_shows_new_url() -> bool:
        return [r["url"] for r in await ControlStore(redis).connections()] == [f"{new_url}/public/stream"]

    await wait_until(status_shows_new_url, what="/status with the URL in use")
    assert [d["url"] for d in (await read_plan(redis)).conns.values()] == [f"{new_url}/public/stream"]
