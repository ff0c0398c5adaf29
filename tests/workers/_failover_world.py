"""The shared world of the fault-tolerance tests (``test_failover``, ``test_failover_faults``, and the handover,
URL-change and suspend tests): ``LiveExchange`` (one live trade sequence broadcast to every subscribed socket, see
``test_failover``), the runtime fixtures and the stream checks. Test modules take the fixtures by assigning them
(``live, make_runtimes, ... = fw.live, fw.make_runtimes, ...``), which registers them with pytest there.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import WSMsgType, web
from redis.asyncio import Redis

from control import keys
from control.settings import Settings
from scripts.sim import tapes as sim_tapes
from scripts.simulator import ExchangeSimulator
from workers.runtime import WorkerRuntime

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

