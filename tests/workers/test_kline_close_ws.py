"""Klines of exchanges without a closed flag (BitMart, Gate) are closed by ``close_time + KLINE_CLOSE_GRACE_MS``,
live: an ``ExchangeConnection`` against a real local WebSocket server (aiohttp) speaking BitMart, Gate.io or
Binance USD-M, publishing into the real Redis through the fenced ``Publisher``. One bar, then silence: the closed
bar must be in the stream by its deadline, and the next bar must not close it again (except as a marked
correction when its values changed). The pure counterpart is ``test_kline_close.py``.
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
from workers.connection import ExchangeConnection
from workers.exchanges import get_adapter
from workers.publisher import Publisher

pytestmark = pytest.mark.timeout(30)

GRACE_MS = 300
#: Allowed lateness of the closed bar behind its deadline (a loaded 2-core test machine, Redis round trip).
TOLERANCE_MS = 700
FAST = {"SUBSCRIBE_DELAY_MS": "10", "PING_INTERVAL_S": "1", "PONG_TIMEOUT_S": "1", "RECONNECT_DELAY_S": "0.05",
        "RECONNECT_MAX_DELAY_S": "0.5", "STALL_TIMEOUT_S": "20", "KLINE_CLOSE_GRACE_MS": str(GRACE_MS)}  # fmt: skip


# -- a local exchange ---------------------------------------------------------------------------------------


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
