"""Fault tolerance of the workers: takeover after a kill, make-before-break rebalancing and lifetime rolls,
exchange faults counted and announced as gaps, graceful stop. Real Redis, real sockets.

Two exchanges serve the sockets: the simulator (``scripts.simulator``; it replays each socket's tape from its
first frame) and ``LiveExchange`` below, a tiny Binance USD-M look-alike that broadcasts ONE live trade sequence
(consecutive trade ids) to every subscribed socket, as a real exchange does, and can refuse handshakes with
HTTP 429 + Retry-After. Make-before-break is only meaningful against such a shared stream, so the roll is tested
there; the handover runs against the simulator, whose per-socket replay the switch absorbs (``workers.stitch``).

Waiting: socket-side conditions with ``sim.wait_for`` / ``LiveExchange.wait_for`` (re-checked on every change);
state in Redis or in a runtime with the bounded ``wait_until`` poll of ``tests.workers.test_runtime``.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import WSMsgType, web
from redis.asyncio import Redis

from control import keys
from control.settings import Settings
from control.store import ControlStore
from control.topics import Topic
from scripts import sim_tapes
from scripts.simulator import ExchangeSimulator
from workers.connection import (
    BANNED_MIN_DELAY_S,
    CLOSED_BY_PEER,
    DEAD_PEER,
    HANDSHAKE_ERROR,
    LIFETIME,
    REFUSED,
    SILENT_FEED,
    TAKEOVER,
    ExchangeConnection,
)
from workers.exchanges import configured_adapters, get_adapter
from workers.leases import Leases
from workers.planner import read_plan
from workers.publisher import Publisher
from workers.runtime import WorkerRuntime
from workers.stitch import CatchUp, order_key

from .test_runtime import BINANCE, BITMART, native, sim_counts, steady, wait_until

pytestmark = pytest.mark.timeout(60)

BN_TRADE = "binanceusdm:trade:BTCUSDT"
BM_TRADE = "bitmart:trade:BTCUSDT"
FAST = {
    "SUBSCRIBE_DELAY_MS": "20",
    "RECONNECT_DELAY_S": "0.05",
    "RECONNECT_MAX_DELAY_S": "0.5",
    "DRAIN_TIMEOUT_S": "2",
}
#: ``LiveExchange`` serves the raw ``btcusdt@trade`` on ``/public``, not the default aggTrade on ``/market``.
RAW_TRADES = {"BINANCE_USDM_TRADE_STREAM": "trade"}


# -- a live exchange (shared stream) --------------------------------------------------------------------------


class LiveExchange:
    """Binance USD-M routes ``/{public,market}/stream``: SUBSCRIBE/UNSUBSCRIBE acked by id, and one shared trade
    sequence for ``btcusdt@trade`` (ids counting up from 1000) broadcast to every subscribed socket at ``rate``.

    ``refuse``: (status, headers) answers for the next handshakes instead of 101. ``handshakes``: monotonic
    times of every handshake attempt. ``sent``: trade ids broadcast (each once, whatever the socket count)."""

    STREAM = "btcusdt@trade"

    def __init__(self, rate: float = 100.0) -> None:
        self.rate = rate
        self.sockets: dict[web.WebSocketResponse, set[str]] = {}
        self.transports: dict[web.WebSocketResponse, Any] = {}
        self.refuse: list[tuple[int, dict[str, str]]] = []
        self.handshakes: list[float] = []
        self.sent: list[int] = []
        self.max_sockets_per_stream = 0
        self._next_id = 1000
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._task: asyncio.Task[None] | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def subscribed(self, stream: str = STREAM) -> int:
        return sum(1 for streams in self.sockets.values() if stream in streams)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{route}/stream", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self._task = asyncio.create_task(self._broadcast())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for ws in list(self.sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    def drop(self) -> int:
        """Abort every socket without a close handshake (the client sees 1006)."""
        dropped = 0
        for ws in list(self.sockets):
            self.transports[ws].abort()
            dropped += 1
        return dropped

    def _notify(self) -> None:
        self.max_sockets_per_stream = max(self.max_sockets_per_stream, self.subscribed())
        self._changed.set()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.handshakes.append(time.monotonic())
        self._notify()
        if self.refuse:
            status, headers = self.refuse.pop(0)
            return web.Response(status=status, headers=headers, text="refused")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.sockets[ws] = set()
        self.transports[ws] = request.transport
        self._notify()
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                req = orjson.loads(msg.data)
                streams = self.sockets[ws]
                if req.get("method") == "SUBSCRIBE":
                    streams.update(req["params"])
                elif req.get("method") == "UNSUBSCRIBE":
                    streams.difference_update(req["params"])
                await ws.send_str(orjson.dumps({"result": None, "id": req.get("id")}).decode())
                self._notify()
        finally:
            self.sockets.pop(ws, None)
            self.transports.pop(ws, None)
            self._notify()
        return ws

    async def _broadcast(self) -> None:
        start = asyncio.get_running_loop().time()
        n = 0
        while True:
            n += 1
            await asyncio.sleep(max(0.0, start + n / self.rate - asyncio.get_running_loop().time()))
            trade_id, self._next_id = self._next_id, self._next_id + 1
            ms = int(time.time() * 1000)
            frame = orjson.dumps({"stream": self.STREAM, "data": {
                "e": "trade", "E": ms, "T": ms, "s": "BTCUSDT", "t": trade_id, "p": "100.5", "q": "0.001",
                "X": "MARKET", "m": bool(trade_id % 2)}}).decode()  # fmt: skip
            self.sent.append(trade_id)
            for ws, streams in list(self.sockets.items()):
                if self.STREAM in streams and not ws.closed:
                    try:
                        await ws.send_str(frame)
                    except ConnectionError:
                        pass
            self._notify()


# -- fixtures -------------------------------------------------------------------------------------------------


@pytest.fixture
async def sim() -> AsyncIterator[ExchangeSimulator]:
    async with ExchangeSimulator(rate=50.0, loop=True) as simulator:
        await simulator.preload()
        yield simulator


@pytest.fixture
async def live() -> AsyncIterator[LiveExchange]:
    exchange = LiveExchange()
    await exchange.start()
    yield exchange
    await exchange.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def make_runtimes(
    redis: Redis, redis_bytes: Redis, session: aiohttp.ClientSession
) -> AsyncIterator[Callable[..., Awaitable[WorkerRuntime]]]:
    made: list[WorkerRuntime] = []

    async def factory(settings: Settings, worker_id: str) -> WorkerRuntime:
        runtime = WorkerRuntime(settings, worker_id=worker_id, redis=redis, redis_bytes=redis_bytes, session=session)
        made.append(runtime)
        await runtime.start()
        return runtime

    async def teardown() -> AsyncIterator[Callable[..., Awaitable[WorkerRuntime]]]:
        yield factory
        await asyncio.gather(*(r.stop() for r in made))

    return teardown()


@pytest.fixture
async def runtimes(make_runtimes: Any) -> AsyncIterator[Callable[..., Awaitable[WorkerRuntime]]]:
    async for factory in make_runtimes:
        yield factory


def sim_env(sim: ExchangeSimulator, redis_url: str, **extra: str) -> dict[str, str]:
    return {"REDIS_URL": redis_url, "BITMART_PUBLIC_WS_URI": sim.bitmart_public_url,
            "BINANCE_USDM_WS_URI": sim.binance_base_url, **FAST, **extra}  # fmt: skip


async def stream(redis: Redis, topic: str) -> list[dict[str, Any]]:
    entries = await redis.xrange(keys.event_stream(topic))
    return [orjson.loads(fields[keys.STREAM_FIELD]) for _, fields in entries]


def tape_trade_ids(exchange: str, native_name: str) -> list[int]:
    """Trade ids of a simulator tape, in replay order."""
    out = []
    for frame in sim_tapes.get_tape(exchange, native_name).frames:
        obj = orjson.loads(frame)
        data = obj.get("data", obj)
        if isinstance(data, list):
            out.extend(int(d["trade_id"]) for d in data)
        else:  # Binance: the aggregate id of an aggTrade (the default stream), the trade id of a raw trade
            out.append(int(data["a"] if data["e"] == "aggTrade" else data["t"]))
    return out


def assert_contiguous(ids: list[int], tape: list[int]) -> None:
    """``ids`` is one unbroken run of ``tape`` (no repeat, no hole); the tape's own ids are unique here."""
    assert len(ids) == len(set(ids)), f"duplicates: {[i for i, n in Counter(ids).items() if n > 1][:10]}"
    start = tape.index(ids[0])
    assert ids == tape[start:start + len(ids)], "a hole or a reordering in the stream"


def gap_neighbours(events: list[dict[str, Any]], reason: str) -> list[tuple[dict[str, Any], dict[str, Any],
                                                                            dict[str, Any] | None]]:
    """(event before, gap, event after) for each gap event of ``reason``."""
    out = []
    for i, event in enumerate(events):
        if event.get("type") == "gap" and event["reason"] == reason:
            out.append((events[i - 1], event, events[i + 1] if i + 1 < len(events) else None))
    return out


# -- pure: the switch filter ----------------------------------------------------------------------------------


def _trade(trade_id: int, ts: int = 0) -> dict[str, Any]:
    return {"type": "trade", "exchange": "x", "symbol": "S", "trade_id": str(trade_id), "price": "1", "size": "1",
            "side": "buy", "ts_exchange": 5, "ts_received": ts}  # fmt: skip


def test_catch_up_continues_after_the_marker_whatever_side_the_new_socket_is_on() -> None:
    ahead = CatchUp(_trade(10, ts=1))  # the new socket saw the marker too (ts_received differs): resume after it
    assert [ahead.admit(_trade(i, ts=2)) for i in (9, 10)] == [(False, False), (False, True)]
    behind = CatchUp(_trade(10))  # a socket replaying older trades: drop until past the marker
    assert [behind.admit(_trade(i)) for i in (3, 4)] == [(False, False), (False, False)]
    assert behind.admit(_trade(11)) == (True, True)
    gap = {"type": "gap", "topic": "t", "reason": "x", "since": 1, "until": 2}
    assert behind.admit(gap) == (False, False)  # the old socket covered that time
    bar = {"type": "kline", "open_time": 60_000, "close": "1", "ts_exchange": None, "ts_received": 0}
    kline = CatchUp(bar)
    assert kline.admit({**bar, "open_time": 0}) == (False, False)
    assert kline.admit({**bar, "close": "2"}) == (True, True)  # same bar, new values: not unique, published
    assert order_key({"type": "depth_delta", "last_update_id": "7"}) < order_key({"type": "depth", "update_id": "7"})
    assert order_key({"type": "order"}) is None


# -- takeover after a kill ------------------------------------------------------------------------------------


@pytest.mark.timing  # takeover <= 5 s with a 4 s lease
@pytest.mark.parametrize("victim_holds", ["more", "fewer"])  # fewer: the survivor is at its share when it fires
async def test_takeover_after_abort_within_five_seconds_with_default_ttl(
    victim_holds: str, redis: Redis, redis_url: str, sim: ExchangeSimulator,
    make_settings: Callable[..., Settings], runtimes: Any,
) -> None:
    settings = make_settings(**sim_env(sim, redis_url))
    assert (settings.lease_ttl_s, settings.heartbeat_interval_s) == (4.0, 1.0)  # the defaults under test
    topics = [*BITMART, *BINANCE]
    await ControlStore(redis).add_desired(topics, now_ms=1)
    a, b = await runtimes(settings, "w-a"), await runtimes(settings, "w-b")
    await steady(redis, sim, [a, b], topics)
    victim, survivor = (a, b) if (len(a.held) >= len(b.held)) == (victim_holds == "more") else (b, a)
    moved = victim.held
    current = await read_plan(redis)
    orphaned = {native(t) for t, c in current.assign.items() if c in moved}
    trades = [t for t in (BN_TRADE, BM_TRADE) if current.assign[t] in moved]

    async def flowing() -> bool:
        return all([await redis.xlen(keys.event_stream(t)) > 0 for t in trades])

    await wait_until(flowing, what="trades of the victim's connections in Redis")
    t0 = time.monotonic()
    await victim.abort()  # like kill -9: sockets gone, leases and worker record left to expire

    def served() -> bool:
        return all(any(c.opened_at > t0 and n in c.subscribed for c in sim.connections) for n in orphaned)

    await sim.wait_for(served, timeout=settings.lease_ttl_s + settings.heartbeat_interval_s + 2)
    takeover_s = time.monotonic() - t0
    print(f"\ntakeover after kill ({len(moved)} of 3 connections): {takeover_s:.2f} s (LEASE_TTL_S={settings.lease_ttl_s}, "
          f"HEARTBEAT_INTERVAL_S={settings.heartbeat_interval_s})")  # fmt: skip
    assert takeover_s <= 5.0
    assert takeover_s >= settings.lease_ttl_s - settings.heartbeat_interval_s - 0.5  # not before the lease ran out
    await steady(redis, sim, [survivor], topics)

    async def takeover_gaps() -> bool:
        return all([any(e.get("reason") == TAKEOVER for e in await stream(redis, t)) for t in trades])

    await wait_until(takeover_gaps, what="takeover gap events")
    for topic in trades:
        [(before, gap, after)] = gap_neighbours(await stream(redis, topic), TAKEOVER)
        assert gap["since"] == before["ts_received"] and after is not None and gap["until"] == after["ts_received"]


# -- rebalancing: make-before-break ---------------------------------------------------------------------------


async def test_join_rebalances_make_before_break_without_gap_or_duplicate(
    redis: Redis, redis_url: str, sim: ExchangeSimulator, make_settings: Callable[..., Settings], runtimes: Any
) -> None:
    settings = make_settings(**sim_env(sim, redis_url, HEARTBEAT_INTERVAL_S="0.2", LEASE_TTL_S="1"))
    topics = [*BITMART, *BINANCE]
    await ControlStore(redis).add_desired(topics, now_ms=1)
    a = await runtimes(settings, "w-a")
    await steady(redis, sim, [a], topics)
    assert len(a.held) == 3
    current = await read_plan(redis)
    by_native = {native(t): c for t, c in current.assign.items()}

    async def trades_flowing() -> bool:
        return await redis.xlen(keys.event_stream(BM_TRADE)) > 20

    await wait_until(trades_flowing, what="BitMart trades")

    peak: Counter[str] = Counter()
    watching = True

    def watch() -> bool:  # never true: re-evaluated on every socket change, records the most sockets per stream
        for n, k in sim_counts(sim).items():
            peak[n] = max(peak[n], k)
        return not watching

    watcher = asyncio.create_task(sim.wait_for(watch, timeout=50))
    joined = time.monotonic()
    b = await runtimes(settings, "w-b")  # fair share is now ceil(3 / 2) = 2: w-a hands ONE connection over

    async def rebalanced() -> bool:
        return len(a.held) == 2 and len(b.held) == 1 and not b._taking

    await wait_until(rebalanced, timeout=20, what="one connection handed over")
    [moved] = b.held
    moved_natives = {n for n, c in by_native.items() if c == moved}
    await sim.wait_for(lambda: all(sim_counts(sim)[n] == 1 for n in by_native)
                       and all(any(c.opened_at > joined and n in c.subscribed for c in sim.connections)
                               for n in moved_natives), timeout=10)  # fmt: skip
    settled = dict(sim_counts(sim))
    watching = False
    await watcher
    await steady(redis, sim, [a, b], topics)
    assert settled == {n: 1 for n in by_native}  # never two live sockets per stream once settled
    assert all(peak[n] == 2 for n in moved_natives), peak  # make-before-break: both ran at once
    assert all(peak[n] == 1 for n in by_native if n not in moved_natives), peak
    assert not any(f.text for f in sim.received if "unsubscribe" in f.text.lower())  # the old socket just closed
    print(f"\nhandover (claim to switch): {b.handovers_done[0] * 1000:.0f} ms")

    # The stream of a moved trade topic: every trade once, in tape order, no gap, across the switch; the new
    # socket (the simulator replays its tape from the start) is filtered until it passes the old one's last trade.
    topic = BM_TRADE if current.assign[BM_TRADE] == moved else BN_TRADE
    exchange, native_name = topic.split(":")[0], native(topic)
    switch_len = await redis.xlen(keys.event_stream(topic))

    async def past_switch() -> bool:
        return await redis.xlen(keys.event_stream(topic)) > switch_len + 20

    await wait_until(past_switch, timeout=20, what="trades after the switch")
    events = await stream(redis, topic)
    assert not [e for e in events if e.get("type") == "gap"]
    assert_contiguous([int(e["trade_id"]) for e in events], tape_trade_ids(exchange, native_name))
    record = {c["id"]: c for c in await ControlStore(redis).connections()}[moved]
    assert record["worker"] == "w-b" and record["gaps"] == {}


async def test_handover_of_order_books_keeps_update_ids_increasing_without_gap(
    redis: Redis, redis_url: str, sim: ExchangeSimulator, make_settings: Callable[..., Settings], runtimes: Any
) -> None:
    settings = make_settings(**sim_env(sim, redis_url, HEARTBEAT_INTERVAL_S="0.2", LEASE_TTL_S="1",
                                       BINANCE_USDM_REST_URI=sim.binance_rest_url, DEPTH_INTERVAL_MS="50"))  # fmt: skip
    books = ["bitmart:depth:BTCUSDT", "binanceusdm:depth:SUSHIUSDT"]
    await ControlStore(redis).add_desired([*books, BM_TRADE], now_ms=1)
    a = await runtimes(settings, "w-a")

    async def depth(topic: str, n: int) -> bool:
        return await redis.xlen(keys.event_stream(topic)) >= n

    for topic in books:
        await wait_until(lambda t=topic: depth(t, 30), what=f"{topic} events")
    b = await runtimes(settings, "w-b")  # two connections, two workers: one moves, its book syncs in standby

    async def rebalanced() -> bool:
        return len(a.held) == 1 and len(b.held) == 1 and not b._taking

    await wait_until(rebalanced, timeout=20, what="one connection handed over")
    moved = books[0] if b.held == [(await read_plan(redis)).assign[books[0]]] else books[1]
    n = await redis.xlen(keys.event_stream(moved))
    await wait_until(lambda: depth(moved, n + 60), timeout=30, what="book events after the switch")
    events = await stream(redis, moved)
    assert not [e for e in events if e["type"] == "gap"]
    deltas = [e for e in events if e["type"] == "depth_delta"]
    assert all(int(q["first_update_id"]) > int(p["last_update_id"]) for p, q in itertools.pairwise(deltas))


# -- 24 h limit: the lifetime roll ----------------------------------------------------------------------------


async def test_lifetime_roll_is_make_before_break_without_gap_or_duplicate(
    redis: Redis, redis_url: str, live: LiveExchange, make_settings: Callable[..., Settings], runtimes: Any
) -> None:
    settings = make_settings(REDIS_URL=redis_url, BINANCE_USDM_WS_URI=live.base_url, HEARTBEAT_INTERVAL_S="0.2",
                             LEASE_TTL_S="1", CONNECTION_MAX_AGE_S="1.0", **FAST, **RAW_TRADES)  # fmt: skip
    await ControlStore(redis).add_desired([BN_TRADE], now_ms=1)
    runtime = await runtimes(settings, "w-roll")

    def rolls() -> int:
        return sum(h.conn.reasons[LIFETIME] for h in runtime._held.values())

    await live.wait_for(lambda: live.subscribed() == 1 and len(live.sent) > 10)
    await live.wait_for(lambda: rolls() >= 3, timeout=20)
    await live.wait_for(lambda: live.subscribed() == 1)
    last_sent = live.sent[-1]

    async def caught_up() -> bool:
        events = await stream(redis, BN_TRADE)
        return bool(events) and int(events[-1]["trade_id"]) >= last_sent

    await wait_until(caught_up, what="the stream to reach the last trade broadcast")
    events = await stream(redis, BN_TRADE)
    ids = [int(e["trade_id"]) for e in events if e["type"] == "trade"]
    assert len(ids) == len(events)  # no gap event for a planned roll
    assert ids == list(range(ids[0], ids[-1] + 1))  # every trade once, across three socket switches
    assert live.max_sockets_per_stream == 2  # the new socket was subscribed before the old one closed
    [held] = runtime._held.values()
    status = held.conn.status()
    assert status["reasons"][LIFETIME] >= 3 and status["gaps"] == {} and status["reconnects"] >= 3


# -- exchange faults: counted, announced ----------------------------------------------------------------------


@pytest.fixture
async def pub(redis_bytes: Redis) -> AsyncIterator[Publisher]:
    p = Publisher(redis_bytes, stream_maxlen=10_000)
    p.start()
    yield p
    await p.close()


@pytest.fixture
async def connect(
    make_settings: Callable[..., Settings], pub: Publisher, session: aiohttp.ClientSession
) -> AsyncIterator[Callable[..., ExchangeConnection]]:
    started: list[tuple[ExchangeConnection, asyncio.Task[None]]] = []

    def factory(exchange: str, url: str, topic: str, **env: str) -> ExchangeConnection:
        settings = make_settings(**{"PING_INTERVAL_S": "0.2", "PONG_TIMEOUT_S": "0.3", "STALL_TIMEOUT_S": "0.5",
                                    **FAST, **env})
        adapter = configured_adapters(settings)[exchange]
        conn = ExchangeConnection(conn_id=f"c{len(started) + 1}", adapter=adapter, url=url,
                                  settings=settings, session=session, publisher=pub, rng=random.Random(7))  # fmt: skip
        conn.set_topics([Topic.parse(topic)])
        started.append((conn, asyncio.create_task(conn.run())))
        return conn

    yield factory
    for conn, task in started:
        await conn.stop(timeout_s=2.0)
        await task


@pytest.mark.parametrize("fault", [DEAD_PEER, SILENT_FEED, CLOSED_BY_PEER])
async def test_exchange_fault_is_counted_and_announced(
    fault: str, redis: Redis, sim: ExchangeSimulator, connect: Any
) -> None:
    url = get_adapter("binanceusdm").ws_url(sim.binance_base_url, "market")  # aggTrade, the default
    conn = connect("binanceusdm", url, BN_TRADE)

    async def trades(n: int) -> bool:
        return await redis.xlen(keys.event_stream(BN_TRADE)) >= n

    await wait_until(lambda: trades(5), what="trades")
    if fault == DEAD_PEER:
        sim.set_dead(True)  # no data, no pongs: aiohttp's heartbeat (or our backstop) gives up
    elif fault == SILENT_FEED:
        sim.set_silent(True)  # pongs and acks flow, data does not
    else:
        assert await sim.drop_connections() == 1
    await sim.wait_for(lambda: conn.reasons[fault] >= 1, timeout=5)
    sim.set_dead(False)
    sim.set_silent(False)

    async def announced() -> bool:
        events = await stream(redis, BN_TRADE)
        return any(e.get("type") == "gap" for e in events) and events[-1].get("type") != "gap"

    await wait_until(announced, what="a gap event followed by trades")
    [(before, gap, after)] = gap_neighbours(await stream(redis, BN_TRADE), fault)
    assert gap == {"type": "gap", "topic": BN_TRADE, "reason": fault, "since": before["ts_received"],
                   "until": after["ts_received"]}  # fmt: skip
    assert before["type"] == after["type"] == "trade" and gap["since"] <= gap["until"]
    status = conn.status()
    assert status["reasons"][fault] >= 1 and status["gaps"] == {fault: 1}
    assert sum(status["reasons"].values()) == status["reconnects"]


async def test_refused_handshake_honours_retry_after_and_announces_the_gap(
    redis: Redis, live: LiveExchange, connect: Any
) -> None:
    conn = connect("binanceusdm", f"{live.base_url}/public/stream", BN_TRADE, RECONNECT_MAX_DELAY_S="0.2", **RAW_TRADES)

    async def trades(n: int) -> bool:
        return await redis.xlen(keys.event_stream(BN_TRADE)) >= n

    await wait_until(lambda: trades(5), what="trades")
    live.refuse = [(429, {"Retry-After": "1"}), (429, {"Retry-After": "1"}), (502, {})]
    before = len(live.handshakes)
    assert live.drop() == 1
    await live.wait_for(lambda: live.subscribed() == 1 and len(live.handshakes) == before + 4, timeout=10)
    attempts = live.handshakes[before:]
    waits = [b - a for a, b in itertools.pairwise(attempts)]
    assert waits[0] >= 0.95 and waits[1] >= 0.95, waits  # Retry-After: 1, although the backoff caps at 0.2 s
    assert waits[2] < 0.9, waits  # a 502 is no refusal: the plain backoff
    await wait_until(lambda: trades(1), what="trades")

    async def announced() -> bool:
        events = await stream(redis, BN_TRADE)
        return any(e.get("type") == "gap" for e in events) and events[-1].get("type") != "gap"

    await wait_until(announced, what="a gap event followed by trades")
    [(before_ev, gap, after)] = gap_neighbours(await stream(redis, BN_TRADE), CLOSED_BY_PEER)
    assert gap["since"] == before_ev["ts_received"] and after is not None and gap["until"] == after["ts_received"]
    lost = [i for i in live.sent if int(before_ev["trade_id"]) < i < int(after["trade_id"])]
    assert len(lost) >= 100  # the outage is > 2 s of trades at 100/s: the gap is real, and announced once
    reasons = conn.status()["reasons"]
    assert reasons == {CLOSED_BY_PEER: 1, REFUSED: 2, HANDSHAKE_ERROR: 1}, reasons


def test_a_ban_without_retry_after_waits_at_least_thirty_seconds() -> None:
    settings = Settings()
    sink = SimpleNamespace(publish=lambda *a, **k: None, set_state=lambda *a, **k: None)
    conn = ExchangeConnection(conn_id="c", adapter=get_adapter("binanceusdm"), url="ws://x", settings=settings,
                              session=None, publisher=sink)  # type: ignore[arg-type]  # fmt: skip
    ban = aiohttp.WSServerHandshakeError(None, (), status=418, message="banned", headers={})  # type: ignore[arg-type]
    assert conn._connect_failed(ban).kind == REFUSED
    assert conn._connect_failed(ban).retry_after_s == BANNED_MIN_DELAY_S
    told = aiohttp.WSServerHandshakeError(None, (), status=429, message="x", headers={"Retry-After": "7"})  # type: ignore[arg-type]
    assert conn._connect_failed(told).retry_after_s == 7.0
    other = aiohttp.WSServerHandshakeError(None, (), status=404, message="x", headers={})  # type: ignore[arg-type]
    assert conn._connect_failed(other).kind == HANDSHAKE_ERROR and conn._connect_failed(other).retry_after_s is None


# -- fencing and graceful stop --------------------------------------------------------------------------------


async def test_a_worker_that_loses_its_lease_stops_at_once_and_writes_nothing_more(
    redis: Redis, redis_url: str, sim: ExchangeSimulator, make_settings: Callable[..., Settings], runtimes: Any
) -> None:
    settings = make_settings(**sim_env(sim, redis_url, HEARTBEAT_INTERVAL_S="0.2", LEASE_TTL_S="1"))
    await ControlStore(redis).add_desired([BN_TRADE], now_ms=1)
    runtime = await runtimes(settings, "w-a")
    await steady(redis, sim, [runtime], [BN_TRADE])
    [conn_id] = runtime.held
    await wait_until(lambda: redis.xlen(keys.event_stream(BN_TRADE)), what="trades")
    old_socket = sim.connections[0]
    await redis.set(keys.lease(conn_id), "intruder", px=60_000)  # another owner now: this worker is fenced
    seconds, micros = await redis.time()
    stolen_ms = int(seconds) * 1000 + int(micros) // 1000
    await sim.wait_for(lambda: old_socket not in sim.connections, timeout=3)  # closed within a heartbeat
    assert not runtime.held
    assert not [f for f in sim.received if "UNSUBSCRIBE" in f.text]  # not ours to unsubscribe any more
    last = await redis.xrevrange(keys.event_stream(BN_TRADE), count=1)
    assert int(last[0][0].split("-")[0]) <= stolen_ms  # nothing written after the lease changed hands
    await wait_until(lambda: redis.hget(keys.WORKERS, "w-a"), what="worker record")
    record = orjson.loads(await redis.hget(keys.WORKERS, "w-a"))
    assert set(record["publisher"]) >= {"queue_depth", "oldest_queued_age_ms", "dropped", "fenced"}


async def test_graceful_stop_drains_flushes_and_leaves_no_lease_or_worker_record(
    redis: Redis, redis_url: str, sim: ExchangeSimulator, make_settings: Callable[..., Settings], runtimes: Any
) -> None:
    settings = make_settings(**sim_env(sim, redis_url, HEARTBEAT_INTERVAL_S="0.2", LEASE_TTL_S="1"))
    topics = [*BITMART, *BINANCE]
    await ControlStore(redis).add_desired(topics, now_ms=1)
    a, b = await runtimes(settings, "w-a"), await runtimes(settings, "w-b")
    await steady(redis, sim, [a, b], topics)
    await wait_until(lambda: redis.xlen(keys.event_stream(BN_TRADE)), what="trades")
    await asyncio.gather(a.stop(), b.stop())

    assert not sim.connections
    assert [k async for k in redis.scan_iter(match=keys.lease("*"))] == []
    assert await redis.hlen(keys.WORKERS) == 0
    current = await read_plan(redis)
    assert set((await Leases(redis).owners(sorted(current.conns))).values()) == {None}
    unsubscribed = {n for f in sim.received for n in (native(t) for t in topics if t.startswith(f.exchange))
                    if "unsubscribe" in f.text.lower() and n in f.text}  # fmt: skip
    assert unsubscribed == {native(t) for t in topics}  # drained: every stream unsubscribed before the close
    records = await ControlStore(redis).connections()
    stored = sum([await redis.xlen(keys.event_stream(t)) for t in topics])
    assert sum(r["events"] for r in records) == stored  # flushed before the leases went: nothing fenced
