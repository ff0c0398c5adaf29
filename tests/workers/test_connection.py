"""ExchangeConnection against the in-process exchange simulator, publishing into the real Redis.

Conditions are awaited event-driven: ``sim.wait_for`` (re-checked on every frame in or out and every
open/close) or ``RecordingPublisher.wait_for`` (re-checked on every publish/set_state call).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import aiohttp
import orjson
import pytest
from redis.asyncio import Redis

from control import keys
from control.settings import Settings
from control.topics import Topic
from scripts.simulator import ExchangeSimulator, SimConnection
from workers.connection import CLOSED_BY_PEER, CONNECT_FAILED, DEAD_PEER, SILENT_FEED, ExchangeConnection, _inflate
from workers.exchanges import get_adapter
from workers.exchanges.base import ExchangeAdapter, Parsed
from workers.publisher import Publisher

pytestmark = pytest.mark.timeout(30)

FAST = {
    "SUBSCRIBE_DELAY_MS": "50",
    "PING_INTERVAL_S": "0.2",
    "PONG_TIMEOUT_S": "0.3",
    "RECONNECT_DELAY_S": "0.05",
    "RECONNECT_MAX_DELAY_S": "0.5",
    "STALL_TIMEOUT_S": "0.5",
}
BM_TRADE = Topic.parse("bitmart:trade:BTCUSDT")
BM_KLINE = Topic.parse("bitmart:kline:BTCUSDT:1m")
BN_TRADE = Topic.parse("binanceusdm:trade:BTCUSDT")


class RecordingPublisher(Publisher):
    """The real Publisher, also counting calls so tests can await conditions on them."""

    def __init__(self, redis: Redis, **kw: Any) -> None:
        super().__init__(redis, **kw)
        self.counts: Counter[str] = Counter()
        self.states: dict[str, dict[str, Any]] = {}
        self._poke = asyncio.Event()

    def publish(self, topic: str, event: dict[str, Any], conn_id: str | None = None) -> None:
        super().publish(topic, event, conn_id)
        self.counts[topic] += 1
        self._poke.set()

    def set_state(self, topic: str, record: dict[str, Any], conn_id: str | None = None) -> None:
        super().set_state(topic, record, conn_id)
        self.states[topic] = record
        self._poke.set()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self._poke.clear()
                await self._poke.wait()


@pytest.fixture
async def sim() -> AsyncIterator[ExchangeSimulator]:
    async with ExchangeSimulator(rate=50.0, loop=True) as s:
        yield s


@pytest.fixture
async def pub(redis_bytes: Redis) -> AsyncIterator[RecordingPublisher]:
    p = RecordingPublisher(redis_bytes, stream_maxlen=10_000)
    p.start()
    yield p
    await p.close()


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(**FAST)


@pytest.fixture
async def make_conn(
    settings: Settings, pub: RecordingPublisher
) -> AsyncIterator[Callable[..., tuple[ExchangeConnection, asyncio.Task[None]]]]:
    """Factory: start a connection's run() for ``topics``; every one is stopped at teardown."""
    session = aiohttp.ClientSession()
    started: list[tuple[ExchangeConnection, asyncio.Task[None]]] = []

    def factory(
        adapter: ExchangeAdapter, url: str, topics: Iterable[Topic], settings: Settings = settings
    ) -> tuple[ExchangeConnection, asyncio.Task[None]]:
        conn = ExchangeConnection(
            conn_id=f"c{len(started) + 1}", adapter=adapter, url=url, settings=settings, session=session,
            publisher=pub, worker_id="w1", rng=random.Random(42),
        )
        conn.set_topics(topics)
        task = asyncio.create_task(conn.run())
        started.append((conn, task))
        return conn, task

    yield factory
    for conn, task in started:
        await conn.stop(timeout_s=2.0)
        await task
    await session.close()


def bitmart_url(sim: ExchangeSimulator) -> str:
    return get_adapter("bitmart").ws_url(sim.bitmart_public_url, "public")


def binance_url(sim: ExchangeSimulator, route: str) -> str:
    return get_adapter("binanceusdm").ws_url(sim.binance_base_url, route)


def client_frames(sim_conn: SimConnection, action: str) -> list[tuple[float, dict[str, Any]]]:
    out = []
    for t, text in sim_conn.received:
        msg = orjson.loads(text)
        if msg.get("action") == action or msg.get("method") == action.upper():
            out.append((t, msg))
    return out


def all_active(pub: RecordingPublisher, topics: Iterable[Topic]) -> Callable[[], bool]:
    return lambda: all(pub.states.get(str(t), {}).get("state") == "active" for t in topics)


async def stream_events(raw: Redis, topic: Topic) -> list[dict[str, Any]]:
    entries = await raw.xrange(keys.event_stream(str(topic)))
    return [orjson.loads(f[keys.STREAM_FIELD.encode()]) for _, f in entries]


# -- subscribe: batching, pacing, acks ------------------------------------------------------------


async def test_bitmart_batches_paces_and_tracks_acks(sim: ExchangeSimulator, make_conn: Any, pub: Any) -> None:
    symbols = ("BTCUSDT", "ETHUSDT", "AAAUSDT", "BBBUSDT", "CCCUSDT")
    topics = [Topic("bitmart", "kline", s, tf) for s in symbols for tf in ("1m", "5m", "15m", "30m", "1h", "2h",
                                                                             "4h", "1d", "1w")]
    assert len(topics) == 45
    conn, _ = make_conn(get_adapter("bitmart"), bitmart_url(sim), topics)
    await sim.wait_for(lambda: sim.connections and len(client_frames(sim.connections[0], "subscribe")) == 3)
    frames = client_frames(sim.connections[0], "subscribe")
    assert [len(f["args"]) for _, f in frames] == [20, 20, 5]
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(frames)]
    assert min(gaps) >= 0.045, gaps  # SUBSCRIBE_DELAY_MS=50 (5 ms allowance for loopback scheduling)
    good = [t for t in topics if t.symbol in ("BTCUSDT", "ETHUSDT")]
    bad = Topic("bitmart", "kline", "AAAUSDT", "1h")
    await pub.wait_for(lambda: len(pub.states) == 45 and all(r["state"] != "pending" for r in pub.states.values()))
    assert all_active(pub, good)()
    assert pub.states[str(bad)]["state"] == "failed"
    assert pub.states[str(bad)]["error"] == "Invalid channel: not found futures/klineBin1H:AAAUSDT"
    assert pub.states[str(bad)]["conn"] == "c1"
    assert conn.status()["state"] == "open"
    assert await pub.flush(5.0)
    state = orjson.loads(await pub.redis.hget(keys.SUB_STATE, str(bad)))
    assert state["error"] == "Invalid channel: not found futures/klineBin1H:AAAUSDT"


async def test_binance_paces_at_its_rate_limit_and_acks_by_id(
    sim: ExchangeSimulator, make_conn: Any, pub: Any
) -> None:
    symbols = ("SUSHIUSDT", "AKROUSDT", "KEEPUSDT", "CTKUSDT", "AAAUSDT")
    topics = [Topic("binanceusdm", "kline", s, tf) for s in symbols for tf in ("1m", "5m", "15m", "30m", "1h", "2h",
                                                                                 "4h", "1d", "1w")]
    make_conn(get_adapter("binanceusdm"), binance_url(sim, "market"), topics)
    await pub.wait_for(all_active(pub, topics))
    frames = client_frames(sim.connections[0], "subscribe")
    assert [len(f["params"]) for _, f in frames] == [20, 20, 5]
    assert len({f["id"] for _, f in frames}) == 3
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(frames)]
    assert min(gaps) >= 0.105, gaps  # adapter.min_send_interval_ms=110 beats SUBSCRIBE_DELAY_MS=50


async def test_binance_rejected_subscribe_is_failed_with_exchange_text(
    sim: ExchangeSimulator, make_conn: Any, pub: Any
) -> None:
    sim.reject("btcusdt@aggTrade", "Invalid request: stream not allowed")
    conn, _ = make_conn(get_adapter("binanceusdm"), binance_url(sim, "market"), [BN_TRADE])
    await pub.wait_for(lambda: pub.states.get(str(BN_TRADE), {}).get("state") == "failed")
    assert pub.states[str(BN_TRADE)]["error"] == "2: Invalid request: stream not allowed"
    assert conn.status()["reconnects"] == 0


# -- events -----------------------------------------------------------------------------------------


async def test_bitmart_trades_reach_redis_with_decimal_strings_intact(
    sim: ExchangeSimulator, make_conn: Any, pub: Any
) -> None:
    conn, _ = make_conn(get_adapter("bitmart"), bitmart_url(sim), [BM_TRADE])
    await pub.wait_for(lambda: pub.counts[str(BM_TRADE)] >= 20)
    assert await pub.flush(5.0)
    got = await stream_events(pub.redis, BM_TRADE)
    sent = [t for frame in sim.sent_data["futures/trade:BTCUSDT"] for t in reversed(orjson.loads(frame)["data"])]
    n = len(got)
    assert n >= 20
    assert [(e["trade_id"], e["price"], e["size"]) for e in got] == [
        (str(t["trade_id"]), t["deal_price"], t["deal_vol"]) for t in sent[:n]
    ]
    assert all(isinstance(e["price"], str) and isinstance(e["ts_received"], int) for e in got)
    latest = orjson.loads(await pub.redis.get(keys.latest(str(BM_TRADE))))
    assert latest == got[-1]
    status = conn.status()
    assert status["events"] >= n and status["messages_received"] > 0 and status["last_message_at"] is not None


async def test_binance_trades_reach_redis_with_decimal_strings_intact(
    sim: ExchangeSimulator, make_conn: Any, pub: Any
) -> None:
    make_conn(get_adapter("binanceusdm"), binance_url(sim, "market"), [BN_TRADE])  # aggTrade, the default
    await pub.wait_for(lambda: pub.counts[str(BN_TRADE)] >= 20)
    assert await pub.flush(5.0)
    got = await stream_events(pub.redis, BN_TRADE)
    sent = [orjson.loads(frame)["data"] for frame in sim.sent_data["btcusdt@aggTrade"]]
    assert [(e["trade_id"], e["price"], e["size"], e["ts_exchange"]) for e in got] == [
        (str(d["a"]), d["p"], d["q"], d["T"]) for d in sent[: len(got)]
    ]
    assert any(e["price"].endswith("0") for e in got) or all("." in e["price"] for e in got)


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
