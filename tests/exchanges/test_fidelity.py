"""Exchange-fidelity items end to end: a real ``ExchangeConnection`` against a real local WebSocket server (the
simulator, or a scripted aiohttp server replaying recorded frames) publishing into the real Redis.

- BitMart trades without ``m``: published with ``side: null``, counted in the connection's status (``parser``).
- Gate ``event: "upgrade"``: the socket is replaced, every topic resubscribed, the gap announced with its reason.
- Gate acks without ``id`` (the 2023 capture): tied to their request by channel, so a failed subscribe fails its topic.
- Depth levels beyond the exchange's window: a stored option above the cap is clamped by the worker.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, Self

import orjson
import pytest
from aiohttp import WSMsgType, web
from redis.asyncio import Redis

from control import keys
from control.settings import Settings
from control.topics import Topic
from scripts.simulator import ExchangeSimulator
from scripts.tapes import BITMART_FIXTURES, GATE_2023, read_cryptofeed_ws, read_jkorf
from tests.workers._recording import ConnFactory, RecordingPublisher
from workers.connection import EXCHANGE_REQUEST, ExchangeConnection
from workers.exchanges import get_adapter
from workers.exchanges.base import ExchangeAdapter

pytestmark = pytest.mark.timeout(30)

SETTINGS = {
    "SUBSCRIBE_DELAY_MS": "10",
    "PING_INTERVAL_S": "0.5",
    "PONG_TIMEOUT_S": "1.0",
    "RECONNECT_DELAY_S": "0.05",
    "RECONNECT_MAX_DELAY_S": "0.5",
    "STALL_TIMEOUT_S": "30",  # the scripted servers send no data after their acks
}
WAIT_S = 8.0  # generous: the machine is shared


class ScriptedExchange:
    """A real local WebSocket server (aiohttp on 127.0.0.1): each client text frame is answered with the frames
    ``reply(text)`` returns, in order. ``received`` keeps every client frame; ``opened`` counts sockets."""

    def __init__(self, reply: Callable[[str], list[str]]) -> None:
        self.reply = reply
        self.received: list[str] = []
        self.opened = 0
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._ws)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self.opened += 1
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                self.received.append(msg.data)
                for out in self.reply(msg.data):
                    await ws.send_str(out)
        return ws


@pytest.fixture
async def pub(redis_bytes: Redis) -> AsyncIterator[RecordingPublisher]:
    p = RecordingPublisher(redis_bytes, stream_maxlen=10_000)
    p.start()
    yield p
    await p.close()


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(**SETTINGS)


@pytest.fixture
async def make_conn(
    settings: Settings, pub: RecordingPublisher
) -> AsyncIterator[Callable[..., ExchangeConnection]]:
    """Factory: a running connection for ``topics`` (with per-topic ``options``); all stopped at teardown."""
    conns = ConnFactory(settings, pub)

    def factory(
        adapter: ExchangeAdapter, url: str, topics: Iterable[Topic], options: dict[str, dict[str, Any]] | None = None
    ) -> ExchangeConnection:
        return conns.start(adapter, url, topics, options=options, rest_base_url="http://127.0.0.1:9")[0]

    yield factory
    await conns.close()


async def stream(redis: Redis, topic: str) -> list[dict[str, Any]]:
    return [orjson.loads(f[keys.STREAM_FIELD.encode()]) for _, f in await redis.xrange(keys.event_stream(topic))]


# -- BitMart: a trade without "m" --------------------------------------------------------------------------------


async def test_bitmart_trade_without_m_is_published_with_null_side_and_counted(
    make_conn: Callable[..., ExchangeConnection], pub: RecordingPublisher
) -> None:
    # The JKorf Trades.txt conversation: its push (the doc example) carries no "m".
    frames = read_jkorf(f"{BITMART_FIXTURES}/Trades.txt")
    ack = next(f.raw for f in frames if f.direction == "<")
    push = orjson.dumps(orjson.loads(next(f.raw for f in frames if f.direction == "="))).decode()

    def reply(text: str) -> list[str]:
        msg = orjson.loads(text)
        if msg.get("action") == "ping":
            return ['{"group":"System","data":"pong+1"}']
        return [ack, push] if msg.get("action") == "subscribe" else []

    topic = "bitmart:trade:ETHUSDT"
    async with ScriptedExchange(reply) as server:
        conn = make_conn(get_adapter("bitmart"), server.url, [Topic.parse(topic)])
        await pub.wait_for(lambda: bool(pub.of("trade", topic)))
        assert await pub.flush(5.0)
        [event] = await stream(pub.redis, topic)
        status = conn.status()

    assert (event["trade_id"], event["side"]) == ("1409495322", None)
    assert status["parser"]["trades_without_side"] == 1


# -- Gate: event "upgrade" -----------------------------------------------------------------------------------------


async def test_gate_upgrade_reconnects_resubscribes_and_announces_the_gap(
    make_conn: Callable[..., ExchangeConnection], pub: RecordingPublisher
) -> None:
    topic = "gateio:trade:BTC_USDT"
    native = "futures.trades:BTC_USDT"
    async with ExchangeSimulator(rate=50.0, loop=True) as sim:
        await sim.preload()  # tapes load once per process (~2 s, more on a busy machine): not inside the waits
        conn = make_conn(get_adapter("gateio"), sim.gate_ws_url, [Topic.parse(topic)])
        await pub.wait_for(lambda: len(pub.of("trade", topic)) >= 5)
        first = sim.connections[0]
        # The shape gatews acts on (exchanges.md §2.4): any frame with a channel and event "upgrade".
        await first.ws.send_str('{"time":1700000000,"channel":"futures.trades","event":"upgrade"}')
        await sim.wait_for(
            lambda: bool(sim.connections) and sim.connections[-1] is not first and native in sim.connections[-1].subscribed,
            timeout=WAIT_S,
        )
        await pub.wait_for(lambda: bool(pub.of("gap", topic)))
        before = len(pub.of("trade", topic))
        await pub.wait_for(lambda: len(pub.of("trade", topic)) > before)  # flowing again
        assert await pub.flush(5.0)
        stored = await stream(pub.redis, topic)
        status = conn.status()
        opened = sim.stats["connections_opened"]
        state = pub.states[topic]["state"]

    gaps = [e for e in stored if e["type"] == "gap"]
    kinds = [e["type"] for e in stored]
    at = kinds.index("gap")
    assert [g["reason"] for g in gaps] == [EXCHANGE_REQUEST]  # announced once, with why
    assert set(kinds[:at]) == set(kinds[at + 1 :]) == {"trade"} and at >= 5  # between the two sockets' trades
    assert gaps[0]["since"] == stored[at - 1]["ts_received"] and gaps[0]["until"] == stored[at + 1]["ts_received"]
    assert opened == 2 and status["reconnect_requests"] == 1
    assert status["reasons"] == {EXCHANGE_REQUEST: 1}
    assert "upgrade" in status["last_error"]
    assert state == "active"


# -- Gate: acks without id (2023 capture) -------------------------------------------------------------------------


def recorded_gate_acks() -> dict[str, str]:
    """Gate channel -> one subscribe ack from the 2023 capture, verbatim (no id, no payload, ``time_ms`` 0)."""
    acks: dict[str, str] = {}
    for _, raw in read_cryptofeed_ws(GATE_2023):
        msg = orjson.loads(raw)
        if msg.get("event") == "subscribe":
            acks.setdefault(msg["channel"], raw)
    return acks


CAPTURED_CONTRACTS = ("DIA_USDT", "RDNT_USDT", "LIT_USDT", "ZRX_USDT", "WOO_USDT", "QUICK_USDT", "OMG_USDT",
                      "FRONT_USDT", "PHB_USDT", "SFP_USDT")  # fmt: skip


async def test_gate_acks_without_id_tie_a_failed_subscribe_to_its_topic(
    make_conn: Callable[..., ExchangeConnection], pub: RecordingPublisher
) -> None:
    acks = recorded_gate_acks()
    assert set(acks) == {"futures.candlesticks", "futures.trades", "futures.order_book_update", "futures.book_ticker"}

    def reply(text: str) -> list[str]:
        msg = orjson.loads(text)
        if msg.get("channel") == "futures.ping":
            return ['{"time":1,"time_ms":1000,"channel":"futures.pong","event":"","result":null}']
        if msg.get("event") != "subscribe":
            return []
        if msg["channel"] == "futures.candlesticks" and msg["payload"][1] == "LIT_USDT":
            # a refusal as the 2023 server would send it: no id, no payload (error shape: exchanges.md §2.4)
            return [('{"time":1684930165,"time_ms":0,"channel":"futures.candlesticks","event":"subscribe",'
                     '"error":{"code":2,"message":"unknown contract LIT_USDT"},"result":{"status":"fail"}}')]
        return [acks[msg["channel"]]]

    topics = [Topic("gateio", "kline", c, "1m") for c in CAPTURED_CONTRACTS]
    topics += [Topic("gateio", channel, c) for channel in ("trade", "bookticker") for c in CAPTURED_CONTRACTS]
    failed = "gateio:kline:LIT_USDT:1m"
    async with ScriptedExchange(reply) as server:
        conn = make_conn(get_adapter("gateio"), server.url, topics)
        await pub.wait_for(lambda: len(pub.states) == len(topics)
                           and all(r["state"] != "pending" for r in pub.states.values()))  # fmt: skip
        assert await pub.flush(5.0)
        stored = {k.decode(): orjson.loads(v) for k, v in (await pub.redis.hgetall(keys.SUB_STATE)).items()}
        status = conn.status()

    assert Counter(r["state"] for r in stored.values()) == {"active": 29, "failed": 1}
    assert stored[failed]["state"] == "failed" and stored[failed]["error"] == "2: unknown contract LIT_USDT"
    assert status["reconnects"] == 0 and status["state"] == "open"


# -- depth: levels beyond the exchange's window ---------------------------------------------------------------------


async def test_stored_depth_levels_above_the_bitmart_window_are_clamped(
    make_conn: Callable[..., ExchangeConnection], pub: RecordingPublisher
) -> None:
    # An option written before the cap existed (fp:topic:options survives restarts) must not publish stale levels.
    topic = "bitmart:depth:BTCUSDT"
    async with ExchangeSimulator(rate=50.0, loop=True) as sim:
        await sim.preload()
        bitmart = get_adapter("bitmart")
        make_conn(bitmart, bitmart.ws_url(sim.bitmart_public_url, "public"), [Topic.parse(topic)],
                  options={topic: {"levels": 100}})  # fmt: skip
        await pub.wait_for(lambda: bool(pub.of("depth", topic)))

    depth = pub.of("depth", topic)[0]
    assert depth["levels"] == 50
    assert len(depth["bids"]) <= 50 and len(depth["asks"]) <= 50
