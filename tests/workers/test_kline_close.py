"""Klines of exchanges without a closed flag (BitMart, Gate) are closed by ``close_time + KLINE_CLOSE_GRACE_MS``.

Unit tests drive ``KlineCloser`` with the recorded/fixture frames through the real parsers (a clock set relative
to the recorded times, the loop's timers); the integration tests run an ``ExchangeConnection`` against a real
local WebSocket server (aiohttp) speaking BitMart, Gate.io or Binance, publishing into the real Redis through the
fenced ``Publisher``: one bar, then silence; the closed bar must be in the stream by its deadline.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from redis.asyncio import Redis

from control import keys
from control.settings import Settings
from control.topics import Topic
from scripts.tapes import BITMART_FIXTURES, GATE_2023, read_cryptofeed_ws, read_jkorf
from workers.connection import ExchangeConnection
from workers.exchanges import get_adapter
from workers.exchanges.base import FrameParser
from workers.kline_close import KlineCloser
from workers.publisher import Publisher
from workers.stitch import CatchUp, order_key

pytestmark = pytest.mark.timeout(30)

GRACE_MS = 300
#: Allowed lateness of the closed bar behind its deadline (a loaded 2-core test machine, Redis round trip).
TOLERANCE_MS = 700
FAST = {"SUBSCRIBE_DELAY_MS": "10", "PING_INTERVAL_S": "1", "PONG_TIMEOUT_S": "1", "RECONNECT_DELAY_S": "0.05",
        "RECONNECT_MAX_DELAY_S": "0.5", "STALL_TIMEOUT_S": "20", "KLINE_CLOSE_GRACE_MS": str(GRACE_MS)}  # fmt: skip


# -- unit: the closer with recorded frames and the real parsers ------------------------------------------------------


class ShiftedClock:
    """Epoch seconds that start at ``start`` and run with the event loop's clock (a recorded time, replayed now)."""

    def __init__(self, start: float) -> None:
        self.offset = start - asyncio.get_running_loop().time()

    def __call__(self) -> float:
        return self.offset + asyncio.get_running_loop().time()


class Emitted:
    """What a closer published through its ``emit``, awaitable."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._poke = asyncio.Event()

    def __call__(self, topic: str, event: dict[str, Any]) -> None:
        self.events.append((topic, event))
        self._poke.set()

    async def wait(self, n: int = 1, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.events) < n:
                self._poke.clear()
                await self._poke.wait()


def closing(
    exchange: str, clock: Callable[[], float], grace_ms: int, topics: set[str]
) -> tuple[KlineCloser, FrameParser, Emitted]:
    emitted = Emitted()
    closer = KlineCloser(active=not get_adapter(exchange).kline_closed_flag, grace_ms=grace_ms, emit=emitted,
                         wanted=topics.__contains__, clock=clock)  # fmt: skip
    return closer, closer.wrap(get_adapter(exchange).new_parser()), emitted


def recorded_gate_candle() -> tuple[float, str]:
    """The 2023 Gate capture's only candle frame: FRONT_USDT 1m, ``v`` 0 (a quiet market), sent 12:09:25.934 UTC
    for the bar 12:09:00-12:09:59.999 (exchanges.md §2.5); no next bar came before the capture ended."""
    [(ts, raw)] = [(ts, raw) for ts, raw in read_cryptofeed_ws(GATE_2023) if "futures.candlesticks" in raw
                   and '"update"' in raw]  # fmt: skip
    return ts, raw


def jkorf_push(name: str, tag: str = "") -> dict[str, Any]:
    [frame] = [f for f in read_jkorf(f"{BITMART_FIXTURES}/{name}") if f.direction == "=" and f.tag == tag]
    return orjson.loads(frame.raw)


def with_items(push: dict[str, Any], *items: dict[str, Any]) -> str:
    """``push`` (a BitMart kline frame) with other ``items`` (derived frames: later pushes of the same stream)."""
    return orjson.dumps({**push, "data": {**push["data"], "items": list(items)}}).decode()


def test_default_grace_is_1500_ms() -> None:
    assert Settings().kline_close_grace_ms == 1500
    assert Settings.from_env({"KLINE_CLOSE_GRACE_MS": "250"}).kline_close_grace_ms == 250


async def test_recorded_gate_quiet_bar_is_closed_at_its_deadline_with_the_last_values() -> None:
    _, raw = recorded_gate_candle()
    grace = Settings().kline_close_grace_ms
    deadline_ms = 1684930199999 + grace
    clock = ShiftedClock((deadline_ms - 150) / 1000)  # the frame arrives 150 ms before its bar's deadline
    topic = "gateio:kline:FRONT_USDT:1m"
    closer, parser, emitted = closing("gateio", clock, grace, {topic})

    [(_, forming)] = parser.parse(raw, int(clock() * 1000)).events
    assert forming["closed"] is False and emitted.events == []
    await emitted.wait()

    [(name, closed)] = emitted.events
    assert name == topic
    assert closed == {**forming, "closed": True, "ts_received": closed["ts_received"]}  # the last values, closed
    assert deadline_ms - 1 <= closed["ts_received"] <= deadline_ms + TOLERANCE_MS  # a timer may fire <1 ms early
    assert "correction" not in closed
    assert parser.parse(raw, int(clock() * 1000)).events == []  # the same bar again: not closed a second time
    assert (closer.timer_closes, closer.repeats, closer.corrections) == (1, 1, 0)


async def test_recorded_gate_bar_seen_after_its_deadline_goes_out_closed_once() -> None:
    """Subscribing in a quiet market gets the last bar, possibly long over (here: 2023): it is final as it is."""
    _, raw = recorded_gate_candle()
    topic = "gateio:kline:FRONT_USDT:1m"
    closer, parser, emitted = closing("gateio", time.time, 1500, {topic})

    [(_, event)] = parser.parse(raw, 1).events
    assert event["closed"] is True and event["close"] == "0.1701" and "correction" not in event
    assert parser.parse(raw, 2).events == []
    assert emitted.events == [] and closer.status()["forming"] == 0


async def test_bitmart_fixture_bar_closed_on_time_then_the_next_bar_does_not_close_it_again() -> None:
    push = jkorf_push("Klines.txt")  # ETHUSDT 1D, ts 1721030401 (the fixture's real-looking frame)
    [item] = push["data"]["items"]
    close_time = item["ts"] * 1000 + 86_400_000 - 1
    clock = ShiftedClock((close_time + 1500 - 100) / 1000)
    topic = "bitmart:kline:ETHUSDT:1d"
    closer, parser, emitted = closing("bitmart", clock, 1500, {topic})

    assert [e["closed"] for _, e in parser.parse(orjson.dumps(push), 1).events] == [False]
    await emitted.wait()
    assert [(e["close"], e["closed"]) for _, e in emitted.events] == [("3352.2", True)]

    next_bar = {**item, "ts": item["ts"] + 86_400, "o": "3352.2", "c": "3360"}
    out = parser.parse(with_items(push, next_bar), 2).events  # the parser closes the first bar again: dropped
    assert [(e["open_time"], e["close"], e["closed"]) for _, e in out] == [(next_bar["ts"] * 1000, "3360", False)]
    assert (closer.timer_closes, closer.repeats, closer.corrections) == (1, 1, 0)


async def test_bitmart_fixture_bar_updated_after_its_close_is_one_correction() -> None:
    push = jkorf_push("Concurrent.txt", "1")  # ETHUSDT 1H
    [item] = push["data"]["items"]
    close_time = item["ts"] * 1000 + 3_600_000 - 1
    clock = ShiftedClock((close_time + 200 - 50) / 1000)
    topic = "bitmart:kline:ETHUSDT:1h"
    closer, parser, emitted = closing("bitmart", clock, 200, {topic})
    parser.parse(orjson.dumps(push), 1)
    await emitted.wait()

    late = {**item, "c": "3350", "l": "3330"}  # a trade near the end, pushed with the next bar in one frame
    next_bar = {**item, "ts": item["ts"] + 3600, "o": "3350", "c": "3351"}
    out = [(e["open_time"] // 1000, e["close"], e["closed"], e.get("correction"))
           for _, e in parser.parse(with_items(push, late, next_bar), 2).events]  # fmt: skip
    assert out == [(item["ts"], "3350", True, True), (next_bar["ts"], "3351", False, None)]
    assert (closer.timer_closes, closer.repeats, closer.corrections) == (1, 1, 1)
    assert len(emitted.events) == 1


async def test_the_next_bar_before_the_deadline_closes_as_before_and_cancels_the_timer() -> None:
    push = jkorf_push("Concurrent.txt", "1")
    [item] = push["data"]["items"]
    clock = ShiftedClock(item["ts"] + 60)  # mid-bar
    topic = "bitmart:kline:ETHUSDT:1h"
    closer, parser, emitted = closing("bitmart", clock, 1500, {topic})
    parser.parse(orjson.dumps(push), 1)
    [timer] = closer._timers.values()
    out = parser.parse(with_items(push, {**item, "ts": item["ts"] + 3600}), 2).events
    assert [(e["open_time"] // 1000, e["closed"]) for _, e in out] == [(item["ts"], True), (item["ts"] + 3600, False)]
    assert timer.cancelled() and len(closer._timers) == 1  # the first bar's timer gone, the next bar's armed
    assert emitted.events == []


async def test_unsubscribe_and_disconnect_cancel_the_timers() -> None:
    push = jkorf_push("Concurrent.txt", "1")
    [item] = push["data"]["items"]
    topics = {"bitmart:kline:ETHUSDT:1h"}
    clock = ShiftedClock(item["ts"] + 60)
    closer, parser, _ = closing("bitmart", clock, 1500, topics)
    parser.parse(orjson.dumps(push), 1)
    [timer] = closer._timers.values()
    closer.retain(set())
    assert timer.cancelled() and closer.status()["forming"] == 0

    parser.parse(orjson.dumps(push), 2)
    [timer] = closer._timers.values()
    closer.reset()
    assert timer.cancelled() and not closer._timers

    topics.clear()  # a frame of a topic no longer desired (its unsubscribe in flight): not tracked
    assert [e["closed"] for _, e in parser.parse(orjson.dumps(push), 3).events] == [False]
    assert not closer._timers


async def test_a_final_bar_is_not_closed_again_after_a_reconnect() -> None:
    push = jkorf_push("Klines.txt")
    [item] = push["data"]["items"]
    topic = "bitmart:kline:ETHUSDT:1d"
    closer, parser, _ = closing("bitmart", time.time, 1500, {topic})
    assert [e["closed"] for _, e in parser.parse(orjson.dumps(push), 1).events] == [True]
    closer.reset()  # the socket dropped
    fresh = closer.wrap(get_adapter("bitmart").new_parser())  # the next socket re-sends the bar
    assert fresh.parse(orjson.dumps(push), 2).events == []
    changed = fresh.parse(with_items(push, {**item, "c": "3353"}), 3).events
    assert [(e["close"], e["closed"], e["correction"]) for _, e in changed] == [("3353", True, True)]


def test_binance_is_left_alone() -> None:
    parser = get_adapter("binanceusdm").new_parser()
    closer = KlineCloser(active=not get_adapter("binanceusdm").kline_closed_flag, grace_ms=1500,
                         emit=lambda t, e: None, wanted=lambda t: True, clock=time.time)  # fmt: skip
    assert closer.wrap(parser) is parser
    assert not get_adapter("bitmart").kline_closed_flag and not get_adapter("gateio").kline_closed_flag


def test_catch_up_after_a_handover_keeps_one_closed_bar() -> None:
    """A quiet Gate bar closed by the old socket (the marker); the new socket got the bar re-sent with a newer
    exchange time and closed it itself: neither the re-sent update nor its close goes out after the marker."""
    bar = {"type": "kline", "exchange": "gateio", "symbol": "FRONT_USDT", "timeframe": "1m",
           "open_time": 1684930140000, "close_time": 1684930199999, "open": "0.1701", "high": "0.1701",
           "low": "0.1701", "close": "0.1701", "volume": "0", "closed": False, "ts_exchange": 1684930165934,
           "ts_received": 1}  # fmt: skip
    catchup = CatchUp({**bar, "closed": True})
    resent = {**bar, "ts_exchange": 1684930290000, "ts_received": 2}
    assert catchup.admit(resent) == (False, False)
    assert catchup.admit({**resent, "closed": True}) == (False, True)
    assert order_key(bar) < order_key({**bar, "closed": True}) < order_key({**bar, "open_time": 1684930200000})
    assert CatchUp(bar).admit({**bar, "close": "2", "ts_exchange": 1684930165999}) == (True, True)


# -- integration: a local exchange -----------------------------------------------------------------------------------------------


class LocalExchange:
    """One WebSocket endpoint speaking enough BitMart, Gate.io or Binance USD-M for a kline subscription: acks every
    subscribe (BitMart per topic, Gate and Binance by id), answers application pings, and sends ``push(text)`` to
    every socket that subscribed. Nothing else is ever sent: a quiet market."""

    def __init__(self, exchange: str) -> None:
        self.exchange = exchange
        self.sockets: list[web.WebSocketResponse] = []
        self.subscribed = asyncio.Event()  # a subscribe was acked and its socket receives pushes
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/ws", self._handle)
        app.router.add_get("/{route}/stream", self._handle)  # Binance routes
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        for ws in list(self.sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def push(self, text: str) -> None:
        for ws in list(self.sockets):
            await ws.send_str(text)

    async def _handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        try:
            async for msg in ws:
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    continue
                replies, subscribe = self._replies(orjson.loads(msg.data))
                for reply in replies:
                    await ws.send_str(reply)
                if subscribe and ws not in self.sockets:
                    self.sockets.append(ws)
                    self.subscribed.set()
        finally:
            if ws in self.sockets:
                self.sockets.remove(ws)
        return ws

    def _replies(self, msg: dict[str, Any]) -> tuple[list[str], bool]:
        """(replies to ``msg``, whether it was a subscribe)."""
        if msg.get("action") == "ping":  # BitMart (exchanges.md §1.5)
            return ['{"group":"System","data":"pong+1"}'], False
        if msg.get("channel") == "futures.ping":  # Gate (§2.4)
            return [json.dumps({"time": msg["time"], "channel": "futures.pong", "event": "", "result": None})], False
        if msg.get("action") == "subscribe":  # BitMart: one ack per topic (§1.4)
            return [json.dumps({"action": "subscribe", "group": g, "success": True, "request": msg})
                    for g in msg["args"]], True  # fmt: skip
        if msg.get("event") == "subscribe":  # Gate: the request echoed with a result (§2.4)
            return [json.dumps({**msg, "time_ms": msg["time"] * 1000, "result": {"status": "success"}})], True
        if msg.get("method") == "SUBSCRIBE":  # Binance (binance_usdm.md §4)
            return [json.dumps({"result": None, "id": msg["id"]})], True
        return [], False


def bitmart_bar(open_s: int, close: str, *more: tuple[int, str]) -> str:
    """A ``futures/klineBin1m:BTCUSDT`` push (wire shape ``data.items[]``, ``ts`` = bar open in s, §1.6)."""
    items = [{"o": "100", "h": "110", "l": "90", "c": c, "v": "7", "ts": ts} for ts, c in ((open_s, close), *more)]
    return json.dumps({"group": "futures/klineBin1m:BTCUSDT", "data": {"symbol": "BTCUSDT", "items": items}})


def gate_bar(open_s: int, close: str, *more: tuple[int, str]) -> str:
    """A ``futures.candlesticks`` update for ``1m_BTC_USDT`` (§2.5; the recorded 2023 frame's shape)."""
    now_ms = int(time.time() * 1000)
    items = [{"t": ts, "v": 7, "c": c, "h": "110", "l": "90", "o": "100", "n": "1m_BTC_USDT"}
             for ts, c in ((open_s, close), *more)]  # fmt: skip
    return json.dumps({"time": now_ms // 1000, "time_ms": now_ms, "channel": "futures.candlesticks",
                       "event": "update", "result": items})  # fmt: skip


def binance_bar(open_s: int, close: str) -> str:
    """A ``btcusdt@kline_1m`` payload in the combined-stream envelope, ``x`` false (binance_usdm.md §5)."""
    t = open_s * 1000
    k = {"t": t, "T": t + 59_999, "s": "BTCUSDT", "i": "1m", "f": 1, "L": 2, "o": "100", "c": close, "h": "110",
         "l": "90", "v": "7", "n": 2, "x": False, "q": "700", "V": "3", "Q": "300", "B": "0"}  # fmt: skip
    data = {"e": "kline", "E": int(time.time() * 1000), "s": "BTCUSDT", "k": k}
    return json.dumps({"stream": "btcusdt@kline_1m", "data": data})


BARS: dict[str, Callable[..., str]] = {"bitmart": bitmart_bar, "gateio": gate_bar}
TOPICS = {"bitmart": "bitmart:kline:BTCUSDT:1m", "gateio": "gateio:kline:BTC_USDT:1m",
          "binanceusdm": "binanceusdm:kline:BTCUSDT:1m"}  # fmt: skip


def bar_closing_soon(now_ms: int) -> int:
    """Open time (s) of a 1 m bar whose close_time is 0.5-1.5 s after ``now_ms``: its deadline is a second away."""
    return (now_ms + 1500) // 1000 - 60


@pytest.fixture
async def local() -> AsyncIterator[Callable[[str], LocalExchange]]:
    started: list[LocalExchange] = []

    def factory(exchange: str) -> LocalExchange:
        server = LocalExchange(exchange)
        started.append(server)
        return server

    yield factory
    for server in started:
        await server.stop()


@pytest.fixture
async def pub(redis_bytes: Redis, redis: Redis) -> AsyncIterator[Publisher]:
    """The real publisher, fenced: it writes connection ``k1``'s events only while ``w1`` holds its lease."""
    await redis.set(keys.lease("k1"), "w1")
    p = Publisher(redis_bytes, stream_maxlen=10_000, worker_id="w1")
    p.start()
    yield p
    await p.close()


@pytest.fixture
async def connect(
    make_settings: Callable[..., Settings], pub: Publisher
) -> AsyncIterator[Callable[..., ExchangeConnection]]:
    session = aiohttp.ClientSession()
    started: list[tuple[ExchangeConnection, asyncio.Task[None]]] = []

    def factory(exchange: str, url: str, standby: bool = False) -> ExchangeConnection:
        adapter = get_adapter(exchange)
        conn = ExchangeConnection(conn_id="k1", adapter=adapter, url=adapter.ws_url(url, "market"),
                                  settings=make_settings(**FAST), session=session, publisher=pub, worker_id="w1",
                                  rng=random.Random(3), standby=standby)  # fmt: skip
        conn.set_topics([Topic.parse(TOPICS[exchange])])
        started.append((conn, asyncio.create_task(conn.run())))
        return conn

    yield factory
    for conn, task in started:
        await conn.stop(timeout_s=2.0)
        await task
    await session.close()


async def stream(redis: Redis, topic: str) -> list[dict[str, Any]]:
    return [orjson.loads(fields[keys.STREAM_FIELD]) for _, fields in await redis.xrange(keys.event_stream(topic))]


async def poll_stream(
    redis: Redis, topic: str, done: Callable[[list[dict[str, Any]]], bool], timeout_s: float, what: str
) -> list[dict[str, Any]]:
    """Bounded poll of the topic's stream (another process's state) until ``done(events)``."""
    deadline = time.monotonic() + timeout_s
    while True:
        events = await stream(redis, topic)
        if done(events):
            return events
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout_s:.1f} s; stream: {events}")
        await asyncio.sleep(0.02)


def closed_of(events: list[dict[str, Any]], open_time: int) -> list[dict[str, Any]]:
    return [e for e in events if e.get("open_time") == open_time and e.get("closed")]


async def one_quiet_bar(
    exchange: str, local: Callable[[str], LocalExchange], connect: Any, redis: Redis
) -> tuple[LocalExchange, ExchangeConnection, int, list[dict[str, Any]]]:
    """Subscribe, send one bar closing in about a second, then nothing: returns (server, connection, open time
    in s, the stream once the closed bar is in it), after checking the closed bar's timing."""
    server = local(exchange)
    await server.start()
    conn = connect(exchange, server.url)
    topic = TOPICS[exchange]
    await asyncio.wait_for(server.subscribed.wait(), 10)
    open_s = bar_closing_soon(int(time.time() * 1000))
    close_time = open_s * 1000 + 59_999
    await server.push(BARS[exchange](open_s, "101"))
    wait_s = (close_time + GRACE_MS + TOLERANCE_MS) / 1000 - time.time()
    events = await poll_stream(redis, topic, lambda ev: bool(closed_of(ev, open_s * 1000)), max(wait_s, 0.1),
                               f"closed bar by close_time + {GRACE_MS} ms + {TOLERANCE_MS} ms")  # fmt: skip
    seen_at = int(time.time() * 1000)
    [closed] = closed_of(events, open_s * 1000)
    assert closed["close"] == "101"
    assert close_time + GRACE_MS - 1 <= closed["ts_received"] <= close_time + GRACE_MS + TOLERANCE_MS, (
        f"closed at {closed['ts_received'] - close_time} ms after close_time (grace {GRACE_MS})"
    )
    print(
        f"{exchange}: closed bar published {closed['ts_received'] - close_time} ms after close_time, "
        f"seen in Redis {seen_at - close_time} ms after (grace {GRACE_MS} ms)"
    )
    return server, conn, open_s, events


@pytest.mark.parametrize("exchange", ["bitmart", "gateio"])
async def test_quiet_bar_is_closed_by_its_deadline_and_not_again_by_the_next_bar(
    exchange: str, local: Any, connect: Any, redis: Redis
) -> None:
    server, conn, open_s, _ = await one_quiet_bar(exchange, local, connect, redis)
    topic = TOPICS[exchange]
    await server.push(BARS[exchange](open_s + 60, "105"))  # the next bar; the parser closes the first one again
    events = await poll_stream(redis, topic, lambda ev: any(e.get("open_time") == (open_s + 60) * 1000 for e in ev),
                               5, "next bar")  # fmt: skip
    first = [(e["close"], e["closed"], e.get("correction", False)) for e in events if e["open_time"] == open_s * 1000]
    assert first == [("101", False, False), ("101", True, False)]  # one closed bar, no second one
    assert [(e["close"], e["closed"]) for e in events if e["open_time"] != open_s * 1000] == [("105", False)]
    assert all("correction" not in e for e in events)
    assert conn.reconnects == 0


@pytest.mark.parametrize("exchange", ["bitmart", "gateio"])
async def test_changed_values_after_the_close_are_one_correction(
    exchange: str, local: Any, connect: Any, redis: Redis
) -> None:
    server, conn, open_s, _ = await one_quiet_bar(exchange, local, connect, redis)
    topic = TOPICS[exchange]
    # One frame: a late update of the closed bar (a trade just before its end), then the next bar.
    await server.push(BARS[exchange](open_s, "99", (open_s + 60, "105")))
    events = await poll_stream(redis, topic, lambda ev: any(e.get("open_time") == (open_s + 60) * 1000 for e in ev),
                               5, "next bar")  # fmt: skip
    first = [(e["close"], e["closed"], e.get("correction", False)) for e in events if e["open_time"] == open_s * 1000]
    assert first == [("101", False, False), ("101", True, False), ("99", True, True)]
    assert [(e["close"], e["closed"]) for e in events if e["open_time"] != open_s * 1000] == [("105", False)]
    assert conn.reconnects == 0


async def test_binance_bars_are_left_to_their_own_flag(local: Any, connect: Any, redis: Redis) -> None:
    """Binance sends ``k.x``: a bar past its deadline with ``x`` false is not closed by Feedplane."""
    server = local("binanceusdm")
    await server.start()
    connect("binanceusdm", f"ws://127.0.0.1:{server.port}")
    await asyncio.wait_for(server.subscribed.wait(), 10)
    open_s = int(time.time()) - 120  # over for a minute already
    await server.push(binance_bar(open_s, "101"))
    topic = TOPICS["binanceusdm"]
    await poll_stream(redis, topic, bool, 5, "the bar")  # past its deadline on arrival: a closer would close it now
    await server.push(binance_bar(open_s, "102"))
    events = await poll_stream(redis, topic, lambda ev: len(ev) >= 2, 5, "the second update")
    assert [(e["close"], e["closed"]) for e in events] == [("101", False), ("102", False)]


async def test_the_close_goes_through_the_fenced_publish_path(
    local: Any, connect: Any, redis: Redis, pub: Publisher
) -> None:
    """The timer's closed bar is fenced like any event: once another worker holds the lease it is not written."""
    server = local("bitmart")
    await server.start()
    connect("bitmart", server.url)
    await asyncio.wait_for(server.subscribed.wait(), 10)
    open_s = bar_closing_soon(int(time.time() * 1000))
    await server.push(bitmart_bar(open_s, "101"))
    topic = TOPICS["bitmart"]
    await poll_stream(redis, topic, bool, 5, "the forming bar")
    await redis.set(keys.lease("k1"), "w2")  # the connection moved to another worker
    fenced = pub.stats["fenced"]
    deadline = time.monotonic() + 5
    while pub.stats["fenced"] == fenced:  # bounded poll: the timer's close reaches the publisher and is fenced
        assert time.monotonic() < deadline, "the closed bar never reached the publisher"
        await asyncio.sleep(0.02)
    assert [e["closed"] for e in await stream(redis, topic)] == [False]


async def test_a_standby_socket_holds_its_close_until_promoted(local: Any, connect: Any, redis: Redis) -> None:
    """Make-before-break: a standby connection's timer close is buffered like its other events."""
    server = local("gateio")
    await server.start()
    conn = connect("gateio", server.url, standby=True)
    await asyncio.wait_for(server.subscribed.wait(), 10)
    open_s = bar_closing_soon(int(time.time() * 1000))
    await server.push(gate_bar(open_s, "101"))
    deadline_s = (open_s * 1000 + 59_999 + GRACE_MS) / 1000
    while conn._klines.timer_closes == 0:  # bounded poll on the closer's counter (the timer has fired)
        assert time.time() < deadline_s + TOLERANCE_MS / 1000, "no close by the deadline"
        await asyncio.sleep(0.02)
    topic = TOPICS["gateio"]
    assert await stream(redis, topic) == []
    conn.promote({topic: None})
    events = await poll_stream(redis, topic, lambda ev: len(ev) >= 2, 5, "the buffered bar and its close")
    assert [(e["close"], e["closed"]) for e in events] == [("101", False), ("101", True)]
