"""BookKeeper: order books through a real ExchangeConnection, the exchange simulator and real Redis.

The simulator plays the recorded depth tapes and serves the recorded REST snapshots (Binance
``/fapi/v1/depth``, Gate ``/api/v4/futures/usdt/order_book``; ``fail_rest(n)`` answers 429) and
BitMart's on-socket ``request`` resync. Waits are event-driven: ``RecordingPublisher.wait_for``
re-checks its predicate on every publish, ``sim.wait_for`` on every frame and REST call.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import aiohttp
import orjson
import pytest
from redis.asyncio import Redis

from control import keys
from control.settings import Settings
from control.store import ControlStore
from control.topics import Topic
from scripts import sim_tapes, tapes
from scripts.simulator import ExchangeSimulator
from workers.books import BookKeeper
from workers.connection import ExchangeConnection
from workers.exchanges import get_adapter
from workers.exchanges.base import BookUpdate, ExchangeAdapter, FrameParser, Parsed
from workers.orderbook import new_sync
from workers.publisher import Publisher
from workers.runtime import WorkerRuntime

pytestmark = pytest.mark.timeout(30)

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


class RecordingPublisher(Publisher):
    """The real Publisher, also keeping every event (with its monotonic publish time) for assertions."""

    def __init__(self, redis: Redis, **kw: Any) -> None:
        super().__init__(redis, **kw)
        self.events: list[tuple[float, str, dict[str, Any]]] = []
        self._poke = asyncio.Event()

    def publish(self, topic: str, event: dict[str, Any]) -> None:
        now = time.monotonic()  # before the publish: as close as it gets to the throttle's own clock read
        super().publish(topic, event)
        self.events.append((now, topic, event))
        self._poke.set()

    def of(self, kind: str, topic: str | None = None) -> list[dict[str, Any]]:
        return [e for _, t, e in self.events if e["type"] == kind and (topic is None or t == topic)]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self._poke.clear()
                await self._poke.wait()


@pytest.fixture
async def sim() -> AsyncIterator[ExchangeSimulator]:
    try:
        tapes.samples_dir().resolve(strict=True)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    async with ExchangeSimulator(speed=0) as s:  # as fast as the socket drains
        yield s


@pytest.fixture
async def pub(redis_bytes: Redis) -> AsyncIterator[RecordingPublisher]:
    p = RecordingPublisher(redis_bytes, stream_maxlen=100_000)
    p.start()
    yield p
    await p.close()


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(**FAST)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def make_conn(
    settings: Settings, pub: RecordingPublisher, session: aiohttp.ClientSession
) -> AsyncIterator[Callable[..., ExchangeConnection]]:
    """Factory: run a connection for ``topics``; stopped at teardown."""
    started: list[tuple[ExchangeConnection, asyncio.Task[None]]] = []

    def factory(adapter: ExchangeAdapter, url: str, topics: Iterable[str], rest_base_url: str,
                options: dict[str, dict[str, Any]] | None = None) -> ExchangeConnection:
        conn = ExchangeConnection(
            conn_id=f"c{len(started) + 1}", adapter=adapter, url=url, settings=settings, session=session,
            publisher=pub, worker_id="w1", rng=random.Random(7), rest_base_url=rest_base_url,
        )
        conn.set_options(options or {})
        conn.set_topics([Topic.parse(t) for t in topics])
        started.append((conn, asyncio.create_task(conn.run())))
        return conn

    yield factory
    for conn, task in started:
        await conn.stop(timeout_s=2.0)
        await task


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
    parser, sync = adapter.new_parser(), new_sync("binance")
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


async def test_binance_depth_zero_gaps_top_n_and_throttled_snapshots(
    sim: ExchangeSimulator, pub: RecordingPublisher, redis: Redis, make_conn: Callable[..., ExchangeConnection],
) -> None:
    conn = make_conn(get_adapter("binanceusdm"), binance_url(sim), [BN_DEPTH], sim.binance_rest_url,
                     options={BN_DEPTH: {"levels": 5}})
    stats = conn.books.stats
    await pub.wait_for(lambda: stats["applied"] == BN_TAPE_APPLIED)
    bids, asks, last_id = offline_binance_top(5)
    await pub.wait_for(lambda: pub.of("depth")[-1]["update_id"] == str(last_id), timeout=2.0)  # trailing publish
    assert await pub.flush(5.0)

    assert stats["gaps"] == 0 and stats["snapshots_fetched"] == 1
    assert [(r.path_qs, r.status) for r in sim.rest_requests] == [("/fapi/v1/depth?symbol=BTCUSDT&limit=1000", 200)]
    events = await stream_events(redis, BN_DEPTH)
    assert "gap" not in {e["type"] for e in events}
    deltas = [e for e in events if e["type"] == "depth_delta"]
    assert len(deltas) == BN_TAPE_APPLIED
    ids = [(int(d["first_update_id"]), int(d["last_update_id"])) for d in deltas]
    assert all(a[1] < b[0] for a, b in itertools.pairwise(ids))  # in order, none twice
    depth = [e for e in events if e["type"] == "depth"]
    assert depth[-1]["bids"] == bids and depth[-1]["asks"] == asks and depth[-1]["update_id"] == str(last_id)
    for d in depth:
        assert d["levels"] == 5 and len(d["bids"]) == 5 and len(d["asks"]) == 5
        assert d["exchange"] == "binanceusdm" and d["symbol"] == "BTCUSDT"
        bid_prices = [float(p) for p, _ in d["bids"]]
        ask_prices = [float(p) for p, _ in d["asks"]]
        assert bid_prices == sorted(bid_prices, reverse=True) and ask_prices == sorted(ask_prices)
        assert bid_prices[0] < ask_prices[0]
    # At most one depth event per DEPTH_INTERVAL_MS (50) per topic, however fast the deltas come.
    times = [t for t, _, e in pub.events if e["type"] == "depth"]
    assert all(b - a >= 0.045 for a, b in itertools.pairwise(times))  # 5 ms for a busy machine's scheduling
    assert len(depth) < len(deltas) / 5
    record = conn.status()["books"]
    assert record["books"] == 1 and record["synced"] == 1 and record["applied"] == BN_TAPE_APPLIED


async def test_binance_rate_limited_snapshot_is_announced_and_retried_after_retry_after(
    sim: ExchangeSimulator, pub: RecordingPublisher, make_conn: Callable[..., ExchangeConnection],
) -> None:
    sim.fail_rest(1)  # 429 with Retry-After: 1
    conn = make_conn(get_adapter("binanceusdm"), binance_url(sim), [BN_DEPTH], sim.binance_rest_url)
    await pub.wait_for(lambda: conn.books.stats["applied"] == BN_TAPE_APPLIED)
    assert [r.status for r in sim.rest_requests] == [429, 200]
    assert sim.rest_requests[1].monotonic_s - sim.rest_requests[0].monotonic_s >= 0.95
    gaps = pub.of("gap")
    assert [g["reason"] for g in gaps] == ["snapshot_failed"]
    assert gaps[0]["topic"] == BN_DEPTH and gaps[0]["until"] is None and isinstance(gaps[0]["since"], int)
    stats = conn.books.stats
    assert stats["snapshot_failures"] == 1 and stats["snapshots_fetched"] == 1 and stats["gaps"] == 0
    assert "HTTP 429" in (conn.books.last_error or "")


async def test_binance_dropped_update_publishes_a_gap_and_fetches_a_new_snapshot(
    sim: ExchangeSimulator, pub: RecordingPublisher, make_conn: Callable[..., ExchangeConnection],
) -> None:
    adapter = DroppingAdapter(get_adapter("binanceusdm"), drop_at=1000)
    conn = make_conn(adapter, binance_url(sim), [BN_DEPTH], sim.binance_rest_url)
    await sim.wait_for(lambda: len(sim.rest_requests) >= 2)
    gaps = pub.of("gap")
    assert [g["reason"] for g in gaps] == ["sequence"]
    assert len(adapter.dropped) == 1
    # Deltas up to the one before the lost update, and none after it until a snapshot bridges again.
    last_delta = pub.of("depth_delta")[-1]
    assert int(last_delta["last_update_id"]) == adapter.dropped[0].prev_last_id
    assert gaps[0]["since"] == last_delta["ts_received"]
    assert conn.books.stats["gaps"] == 1 and conn.books.stats["resyncs"] >= 1
    # The recorded snapshot is static and now older than the stream, so the keeper keeps refetching
    # (with backoff) rather than applying anything across the hole.
    applied = conn.books.stats["applied"]
    await sim.wait_for(lambda: len(sim.rest_requests) >= 3)
    assert conn.books.stats["applied"] == applied
    assert not conn.books.book(BN_DEPTH).synced  # type: ignore[union-attr]


async def test_reconnect_announces_a_gap_and_resyncs_on_the_new_socket(
    sim: ExchangeSimulator, pub: RecordingPublisher, make_conn: Callable[..., ExchangeConnection],
) -> None:
    conn = make_conn(get_adapter("binanceusdm"), binance_url(sim), [BN_DEPTH], sim.binance_rest_url)
    stats = conn.books.stats
    await pub.wait_for(lambda: stats["applied"] == BN_TAPE_APPLIED)
    await sim.drop_connections()
    await pub.wait_for(lambda: stats["applied"] == 2 * BN_TAPE_APPLIED)  # the tape replays on the new socket
    assert [g["reason"] for g in pub.of("gap")] == ["reconnect"]
    assert stats["gaps"] == 0 and stats["snapshots_fetched"] == 2 and stats["resyncs"] == 1
    assert conn.reconnects == 1


async def test_levels_follow_set_options(
    pub: RecordingPublisher, make_conn: Callable[..., ExchangeConnection],
) -> None:
    async with ExchangeSimulator(rate=500.0) as paced:  # slow enough to change options mid-stream
        conn = make_conn(get_adapter("binanceusdm"), binance_url(paced), [BN_DEPTH], paced.binance_rest_url)
        await pub.wait_for(lambda: bool(pub.of("depth")))
        first = pub.of("depth")[0]
        assert first["levels"] == 20 and len(first["bids"]) == 20  # DEPTH_LEVELS_DEFAULT
        conn.set_options({BN_DEPTH: {"levels": 3}})
        await pub.wait_for(lambda: pub.of("depth")[-1]["levels"] == 3)
        assert len(pub.of("depth")[-1]["asks"]) == 3
        conn.set_options({BN_DEPTH: {"levels": 1000}})  # out of range: the default again
        await pub.wait_for(lambda: pub.of("depth")[-1]["levels"] == 20)
        await conn.stop()


# -- BitMart and Gate -------------------------------------------------------------------------------------

BM_DEPTH = "bitmart:depth:BTCUSDT"
BM_NATIVE = "futures/depthIncrease50:BTCUSDT@100ms"


async def test_bitmart_socket_snapshot_then_updates_zero_gaps(
    sim: ExchangeSimulator, pub: RecordingPublisher, make_conn: Callable[..., ExchangeConnection],
) -> None:
    tape = await asyncio.to_thread(sim_tapes.get_tape, "bitmart", BM_NATIVE)
    assert tape is not None
    conn = make_conn(get_adapter("bitmart"), sim.bitmart_public_url, [BM_DEPTH], "")
    stats = conn.books.stats
    await pub.wait_for(lambda: stats["applied"] == len(tape) - 1)  # everything after the leading snapshot
    assert stats["gaps"] == 0 and stats["snapshots_fetched"] == 1 and stats["stale"] == 0
    assert sim.rest_requests == [] and not any('"request"' in f.text for f in sim.received)
    assert pub.of("depth")[0]["levels"] == 20 and conn.books.book(BM_DEPTH).synced  # type: ignore[union-attr]


async def test_bitmart_version_jump_sends_a_resync_request_and_recovers(
    sim: ExchangeSimulator, pub: RecordingPublisher, make_conn: Callable[..., ExchangeConnection],
) -> None:
    tape = await asyncio.to_thread(sim_tapes.get_tape, "bitmart", BM_NATIVE)
    assert tape is not None
    adapter = DroppingAdapter(get_adapter("bitmart"), drop_at=500)
    conn = make_conn(adapter, sim.bitmart_public_url, [BM_DEPTH], "")
    stats = conn.books.stats
    await sim.wait_for(lambda: any('"request"' in f.text for f in sim.received))
    request = next(orjson.loads(f.text) for f in sim.received if '"request"' in f.text)
    assert request == {"action": "request", "args": [BM_NATIVE]}
    await pub.wait_for(lambda: stats["snapshots_fetched"] == 2)  # the answer: a fresh snapshot push
    await sim.wait_for(lambda: len(sim.sent_data.get(BM_NATIVE, ())) == len(tape) + 1)  # tape + the snapshot
    await pub.wait_for(lambda: conn.books.book(BM_DEPTH).last_id == adapter.dropped[0].last_id + (  # type: ignore[union-attr]
        len(tape) - 500))
    assert [g["reason"] for g in pub.of("gap")] == ["sequence"] and stats["gaps"] == 1
    assert conn.books.book(BM_DEPTH).synced  # type: ignore[union-attr]


async def test_gate_rest_snapshot_bridges_the_recorded_contracts_zero_gaps(
    sim: ExchangeSimulator, pub: RecordingPublisher, make_conn: Callable[..., ExchangeConnection],
) -> None:
    """RDNT_USDT and OMG_USDT: 70 and 109 recorded pushes, of which 61 and 101 follow the snapshot id."""
    topics = ["gateio:depth:RDNT_USDT", "gateio:depth:OMG_USDT"]
    conn = make_conn(get_adapter("gateio"), sim.gate_ws_url, topics, sim.gate_rest_url)
    stats = conn.books.stats
    await pub.wait_for(lambda: stats["applied"] == 61 + 101)
    assert stats["gaps"] == 0 and stats["snapshots_fetched"] == 2
    assert sorted(r.path_qs for r in sim.rest_requests) == [
        f"/api/v4/futures/usdt/order_book?contract={c}&limit=100&with_id=true" for c in ("OMG_USDT", "RDNT_USDT")
    ]
    for topic in topics:
        sync = conn.books.book(topic)
        assert sync is not None and sync.synced and not sync.book.crossed()
    assert {e["symbol"] for e in pub.of("depth_delta")} == {"RDNT_USDT", "OMG_USDT"}


# -- the keeper alone (hand-made updates) -----------------------------------------------------------------


def bm_update(version: int, *, snapshot: bool = False, bids: list[tuple[str, str]] | None = None,
              asks: list[tuple[str, str]] | None = None) -> BookUpdate:
    return BookUpdate("bitmart:depth:BTCUSDT", "BTCUSDT", bids or [], asks or [], version, version,
                      snapshot=snapshot, ts_received=1_000 + version)


async def test_keeper_throttles_depth_and_always_sends_the_last_state(
    pub: RecordingPublisher, session: aiohttp.ClientSession,
) -> None:
    sent: list[str] = []

    async def send(frame: str) -> None:
        sent.append(frame)

    keeper = BookKeeper(conn_id="k", adapter=get_adapter("bitmart"), publisher=pub, session=session,
                        rest_base_url="", interval_ms=100, send_frame=send, levels_for=lambda t: 2)
    topic = "bitmart:depth:BTCUSDT"
    keeper.start(topic)
    keeper.on_update(bm_update(5))  # before the snapshot the subscribe brings: dropped
    keeper.on_update(bm_update(10, snapshot=True, bids=[("100", "1"), ("99", "1"), ("98", "1")], asks=[("101", "1")]))
    for v in range(11, 61):
        keeper.on_update(bm_update(v, bids=[("99", str(v))]))
    assert len(pub.of("depth")) == 1  # the snapshot's, at once; the rest within the interval
    assert len(pub.of("depth_delta")) == 50
    await pub.wait_for(lambda: len(pub.of("depth")) == 2, timeout=1.0)  # the trailing publish
    last = pub.of("depth")[-1]
    assert last["update_id"] == "60" and last["bids"] == [["100", "1"], ["99", "60"]] and last["levels"] == 2
    assert keeper.stats["applied"] == 50 and keeper.stats["stale"] == 1 and sent == []

    # A version jump: gap published, resync request sent on the socket, nothing applied until a snapshot.
    keeper.on_update(bm_update(62))
    await asyncio.sleep(0)
    assert [g["reason"] for g in pub.of("gap")] == ["sequence"]
    assert pub.of("gap")[0]["since"] == 1_060
    assert [orjson.loads(f) for f in sent] == [{"action": "request", "args": ["futures/depthIncrease50:BTCUSDT@100ms"]}]
    keeper.on_update(bm_update(63))
    keeper.on_update(bm_update(70, snapshot=True, bids=[("100", "2")], asks=[("101", "2")]))
    keeper.on_update(bm_update(71, asks=[("102", "1")]))
    assert keeper.stats["applied"] == 51 and keeper.stats["gaps"] == 1 and keeper.stats["snapshots_fetched"] == 2
    assert pub.of("depth")[-1]["update_id"] == "70"

    keeper.reset("reconnect")
    assert [g["reason"] for g in pub.of("gap")] == ["sequence", "reconnect"]
    keeper.stop(topic)
    keeper.on_update(bm_update(1, snapshot=True))  # not kept any more: ignored
    assert keeper.status()["books"] == 0
    await keeper.close()


# -- the runtime hands fp:topic:options to its connections ---------------------------------------------------


async def wait_until(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Re-evaluate ``await check()`` every 20 ms until truthy (Redis sends no notice for stream writes)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (value := await check()):
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.02)
    return value


async def test_runtime_reads_topic_options_into_depth_levels(
    redis: Redis, redis_bytes: Redis, session: aiohttp.ClientSession, make_settings: Callable[..., Settings],
) -> None:
    async with ExchangeSimulator(rate=300.0) as paced:
        settings = make_settings(**FAST, BINANCE_USDM_WS_URI=paced.binance_base_url,
                                 BINANCE_USDM_REST_URI=paced.binance_rest_url, HEARTBEAT_INTERVAL_S="0.1",
                                 LEASE_TTL_S="1", DRAIN_TIMEOUT_S="1")
        store = ControlStore(redis)
        await store.add_desired([BN_DEPTH], now_ms=1)
        await store.set_options({BN_DEPTH: {"levels": 7}})
        runtime = WorkerRuntime(settings, worker_id="w1", redis=redis, redis_bytes=redis_bytes, session=session)
        await runtime.start()
        try:
            async def last_depth() -> dict[str, Any] | None:
                depth = [e for e in await stream_events(redis, BN_DEPTH) if e["type"] == "depth"]
                return depth[-1] if depth else None

            first = await wait_until(last_depth)
            assert first["levels"] == 7 and len(first["bids"]) == 7
            await store.set_options({BN_DEPTH: {"levels": 2}})
            runtime.wake()

            async def two_levels() -> bool:
                last = await last_depth()
                return last is not None and last["levels"] == 2 and len(last["asks"]) == 2

            await wait_until(two_levels)
            records = await store.connections()
            assert records and records[0]["books"]["synced"] == 1
        finally:
            await runtime.stop()
