"""Gate.io futures v4 adapter: the 2023 cryptofeed capture (socket + REST snapshots), JKorf fixtures, frames."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from control.accounts import Account
from control.topics import TIMEFRAME_MS, Topic
from scripts.tapes import GATE_2023, GATE_2023_HTTP, read_cryptofeed_http, read_cryptofeed_ws, read_jkorf, sample_path
from workers.exchanges.base import Ack, AdapterError, BookUpdate, OutFrame, Parsed, SnapshotRequest, match_request
from workers.exchanges.gateio import GateioAdapter, GateioParser
from workers.exchanges.gateio.private import (
    account_uid,
    order_event,
    position_event,
    rest_signature,
    ws_auth,
    ws_signature,
)
from workers.exchanges.gateio.wire import native_payload

ADAPTER = GateioAdapter()
JKORF = "jkorf-gateio-net"
KLINE_KEYS = [
    "type", "exchange", "symbol", "timeframe", "open_time", "close_time",
    "open", "high", "low", "close", "volume", "closed", "ts_exchange", "ts_received",
]  # fmt: skip
TRADE_KEYS = ["type", "exchange", "symbol", "trade_id", "price", "size", "side", "ts_exchange", "ts_received"]
TICKER_KEYS = [
    "type", "exchange", "symbol", "last", "mark_price", "index_price", "high_24h", "low_24h",
    "volume_24h", "change_pct_24h", "funding_rate", "ts_exchange", "ts_received",
]  # fmt: skip
BOOKTICKER_KEYS = [
    "type", "exchange", "symbol", "bid_price", "bid_size", "ask_price", "ask_size",
    "update_id", "ts_exchange", "ts_received",
]  # fmt: skip


def parser() -> GateioParser:
    return ADAPTER.new_parser()


def push(channel: str, result: Any, time_ms: int = 1_700_000_000_123) -> str:
    return json.dumps(
        {"time": time_ms // 1000, "time_ms": time_ms, "channel": channel, "event": "update", "result": result}
    )


def candle(t: int, close: str, n: str = "1m_BTC_USDT", v: int | str = 3) -> dict[str, Any]:
    return {"t": t, "v": v, "c": close, "h": "110", "l": "90", "o": "100", "n": n}


def trade(size: int | str, **kw: Any) -> dict[str, Any]:
    item = {"size": size, "id": 7, "create_time": 1545136464, "create_time_ms": 1545136464123, "price": "96.4"}
    return {**item, "contract": "ETH_USDT", **kw}


# --- the 2023 capture (cryptofeed GATEIO_FUTURES.*) ---------------------------------------------


def parse_capture() -> list[Parsed]:
    p = parser()
    return [p.parse(raw, int(ts * 1000)) for ts, raw in read_cryptofeed_ws(GATE_2023)]


def test_every_captured_frame_parses() -> None:
    results = parse_capture()
    acks = [a for r in results for a in r.acks]
    books = [b for r in results for b in r.book]
    kinds = Counter(event["type"] for r in results for _, event in r.events)

    assert len(results) == 450
    assert not any(r.unknown or r.error or r.pong for r in results)
    # the 2023 server echoes neither id nor payload: the acks name their channel, for match_request
    assert len(acks) == 22 and {a.request_id for a in acks} == {None} and {a.topic for a in acks} == {None}
    assert Counter(a.channel for a in acks) == {"kline": 10, "depth": 10, "trade": 1, "bookticker": 1}
    assert len(books) == 352
    assert all(type(b.first_id) is int and type(b.last_id) is int and b.first_id <= b.last_id for b in books)
    assert all(not b.snapshot and b.topic == f"gateio:depth:{b.symbol}" for b in books)
    assert kinds == {"bookticker": 75, "kline": 1}


def test_captured_book_updates_chain_without_gaps() -> None:
    books = [b for r in parse_capture() for b in r.book]
    last: dict[str, int] = {}
    links = gaps = 0
    for b in books:
        if b.symbol in last:
            links += 1
            gaps += b.first_id != last[b.symbol] + 1
        last[b.symbol] = b.last_id

    assert len(last) == 10
    assert (links, gaps) == (342, 0)


def test_captured_samples() -> None:
    results = parse_capture()
    [kline] = [e for r in results for _, e in r.events if e["type"] == "kline"]
    first_book = next(b for r in results for b in r.book)
    bbo = next(e for r in results for _, e in r.events if e["type"] == "bookticker")

    assert list(kline) == KLINE_KEYS
    assert kline | {"ts_received": 0} == {
        "type": "kline",
        "exchange": "gateio",
        "symbol": "FRONT_USDT",
        "timeframe": "1m",
        "open_time": 1684930140000,
        "close_time": 1684930199999,
        "open": "0.1701",
        "high": "0.1701",
        "low": "0.1701",
        "close": "0.1701",
        "volume": "0",  # the wire has the int 0
        "closed": False,
        "ts_exchange": 1684930165934,
        "ts_received": 0,
    }
    assert first_book == BookUpdate(
        topic="gateio:depth:RDNT_USDT",
        symbol="RDNT_USDT",
        bids=[],
        asks=[("0.2983", "0")],
        first_id=203083177,
        last_id=203083177,
        ts_exchange=1684930165217,
        ts_received=1684930165403,
    )
    assert list(bbo) == BOOKTICKER_KEYS
    assert bbo | {"ts_received": 0} == {
        "type": "bookticker",
        "exchange": "gateio",
        "symbol": "PHB_USDT",
        "bid_price": "0.7379",
        "bid_size": "814",
        "ask_price": "0.739",
        "ask_size": "677",
        "update_id": "6159967",
        "ts_exchange": 1684930165621,
        "ts_received": 0,
    }


def test_every_captured_rest_snapshot_parses() -> None:
    snapshots = []
    for url, ts, raw in read_cryptofeed_http(GATE_2023_HTTP):
        symbol = url.split("contract=")[1].split("&")[0]
        snapshots.append(ADAPTER.parse_snapshot(symbol, raw.encode(), int(ts * 1000)))

    assert len(snapshots) == 10
    assert all(s.snapshot and s.first_id is None and type(s.last_id) is int for s in snapshots)
    assert all(s.bids and s.asks and all(type(size) is str for _, size in s.bids + s.asks) for s in snapshots)
    rdnt = next(s for s in snapshots if s.symbol == "RDNT_USDT")
    assert rdnt.topic == "gateio:depth:RDNT_USDT"
    assert rdnt.ts_exchange == 1684930166384  # "current":1684930166.384, exactly
    assert rdnt.ts_received == 1684930166535
    assert rdnt.asks[0] == ("0.2974", "803")


def test_captured_snapshots_meet_the_buffered_updates() -> None:
    # exchanges.md §2.5: for 9 of 10 contracts a buffered push covers snapshot.id + 1
    books = [b for r in parse_capture() for b in r.book]
    covered = 0
    for url, _, raw in read_cryptofeed_http(GATE_2023_HTTP):
        symbol = url.split("contract=")[1].split("&")[0]
        base = ADAPTER.parse_snapshot(symbol, raw.encode(), 0).last_id
        covered += any(b.symbol == symbol and (b.first_id or 0) <= base + 1 <= b.last_id for b in books)

    assert covered == 9


# --- JKorf fixture conversations (doc-derived, decimal-string sizes) ------------------------------


def fixture(name: str, direction: str) -> list[str]:
    # Concurrent.txt carries a literal |id| placeholder in its acks
    return [f.raw.replace("|id|", "7") for f in read_jkorf(f"{JKORF}/{name}.txt") if f.direction == direction]


ALL_FIXTURES = sorted(p.stem for p in sample_path(JKORF).glob("*.txt"))


@pytest.mark.parametrize("name", ALL_FIXTURES)
def test_every_fixture_frame_parses(name: str) -> None:
    p = parser()
    for raw in fixture(name, "<"):
        [ack] = p.parse(raw, 0).acks
        assert ack.ok and ack.action == "subscribe" and ack.request_id in (7, -999)
    for raw in fixture(name, "="):
        assert isinstance(p.parse(raw, 0), Parsed)


@pytest.mark.parametrize(
    "name",
    [
        "SubscribeToContractStatsUpdates",
        "SubscribeToOrderBookV2Updates",
        "SubscribeToPositionCloseUpdates",
        "SubscribeToReduceRiskLimitUpdates",
        "SubscribeToTriggerOrderUpdates",
        "SubscribeToUserAutoDeleverageUpdates",
        "SubscribeToUserLiquidationUpdates",
        "SubscribeToUserTradeUpdates",
    ],
)
def test_other_channels_are_unknown(name: str) -> None:
    [raw] = fixture(name, "=")

    assert parser().parse(raw, 0) == Parsed(unknown=True)
    assert ADAPTER.new_parser("main").parse(raw, 0) == Parsed(unknown=True)


def test_fixture_acks_carry_id_and_echoed_topic() -> None:
    [trades] = fixture("SubscribeToTradeUpdates", "<")
    [book] = fixture("SubscribeToBookUpdates", "<")
    [kline] = fixture("SubscribeToKlineUpdates", "<")  # the fixture mislabels it futures.order_book_update
    concurrent = fixture("Concurrent", "<")

    assert parser().parse(trades, 0).acks == [Ack(ok=True, topic="gateio:trade:ETH_USDT", request_id=-999)]
    assert parser().parse(book, 0).acks == [Ack(ok=True, topic="gateio:depth:ETH_USDT", request_id=-999)]
    assert parser().parse(kline, 0).acks == [Ack(ok=True, request_id=-999)]  # "5m" is no contract
    assert [parser().parse(raw, 0).acks[0].topic for raw in concurrent] == [
        "gateio:kline:ETH_USDT:1d",
        "gateio:kline:ETH_USDT:1h",
    ]


def test_kline_fixture() -> None:
    [raw] = fixture("SubscribeToKlineUpdates", "=")
    parsed = parser().parse(raw, 5)
    bar = {
        "type": "kline",
        "exchange": "gateio",
        "symbol": "ETH_USDT",
        "timeframe": "5m",
        "open_time": 1545129300000,
        "close_time": 1545129599999,
        "open": "94.3",
        "high": "96.9",
        "low": "89.5",
        "close": "95.4",
        "volume": "27525555.5",
        "closed": False,
        "ts_exchange": 1542162490123,
        "ts_received": 5,
    }

    # two items with the same t: two updates of one open bar
    assert parsed == Parsed(events=[("gateio:kline:ETH_USDT:5m", bar), ("gateio:kline:ETH_USDT:5m", bar)])


def test_concurrent_fixture_candles_without_fields_are_dropped() -> None:
    p = parser()
    results = [p.parse(raw, 0) for raw in fixture("Concurrent", "=")]

    assert results == [Parsed(unknown=True), Parsed(unknown=True)]
    assert p.incomplete_klines == 2


def test_trades_fixture() -> None:
    [raw] = fixture("SubscribeToTradeUpdates", "=")
    p = parser()
    [(topic, event)] = p.parse(raw, 5).events

    assert topic == "gateio:trade:ETH_USDT"
    assert list(event) == TRADE_KEYS
    assert event == {
        "type": "trade",
        "exchange": "gateio",
        "symbol": "ETH_USDT",
        "trade_id": "27753479",
        "price": "96.4",
        "size": "108.5",
        "side": "sell",
        "ts_exchange": 1545136464123,
        "ts_received": 5,
    }
    assert p.internal_trades == 1  # is_internal: true is still a trade, counted


def test_ticker_fixture() -> None:
    [raw] = fixture("SubscribeToTickerUpdates", "=")
    [(topic, event)] = parser().parse(raw, 5).events

    assert topic == "gateio:ticker:ETH_USDT"
    assert list(event) == TICKER_KEYS
    assert event == {
        "type": "ticker",
        "exchange": "gateio",
        "symbol": "ETH_USDT",
        "last": "118.4",
        "mark_price": "118.35",
        "index_price": "118.36",
        "high_24h": "132.5",
        "low_24h": "99.2",
        "volume_24h": "5526",  # volume_24h_base, not the contract count volume_24h
        "change_pct_24h": "0.77",
        "funding_rate": "-0.000114",
        "ts_exchange": 1541659086123,
        "ts_received": 5,
    }


def test_book_ticker_fixture() -> None:
    [raw] = fixture("SubscribeToBookTickerUpdates", "=")
    [(topic, event)] = parser().parse(raw, 5).events

    assert topic == "gateio:bookticker:ETH_USDT"
    assert (event["bid_price"], event["bid_size"], event["ask_price"], event["ask_size"]) == (
        "54696.6",
        "37000.5",
        "54696.7",
        "47061.2",
    )
    assert (event["update_id"], event["ts_exchange"]) == ("2517661076", 1615366379123)


def test_book_update_fixture() -> None:
    [raw] = fixture("SubscribeToBookUpdates", "=")

    assert parser().parse(raw, 5) == Parsed(
        book=[
            BookUpdate(
                topic="gateio:depth:ETH_USDT",
                symbol="ETH_USDT",
                bids=[("54672.1", "0"), ("54664.5", "58794.5")],
                asks=[("54743.6", "0"), ("54742", "95.2")],
                first_id=2517661101,
                last_id=2517661113,
                ts_exchange=1615366381417,
                ts_received=5,
            )
        ]
    )


# --- frames we send --------------------------------------------------------------------------


def topics(*texts: str) -> list[Topic]:
    return [Topic.parse(t) for t in texts]


def sent(frames: list[Any]) -> list[dict[str, Any]]:
    return [orjson.loads(f.text) for f in frames]


def test_subscribe_frame_shapes() -> None:
    wanted = topics(
        "gateio:kline:BTC_USDT:1m",
        "gateio:trade:BTC_USDT",
        "gateio:depth:BTC_USDT",
        "gateio:trade:ETH_USDT",
        "gateio:kline:ETH_USDT:1w",
        "gateio:ticker:BTC_USDT",
        "gateio:bookticker:BTC_USDT",
        "gateio:trade:SOL_USDT",
        "gateio:depth:ETH_USDT",
    )

    frames = ADAPTER.subscribe_frames(wanted, batch_size=2, first_request_id=41, now_ms=1_700_000_000_999)

    assert sent(frames) == [
        {
            "time": 1700000000,
            "id": 41,
            "channel": "futures.candlesticks",
            "event": "subscribe",
            "payload": ["1m", "BTC_USDT"],
        },
        {
            "time": 1700000000,
            "id": 42,
            "channel": "futures.candlesticks",
            "event": "subscribe",
            "payload": ["7d", "ETH_USDT"],
        },
        {
            "time": 1700000000,
            "id": 43,
            "channel": "futures.trades",
            "event": "subscribe",
            "payload": ["BTC_USDT", "ETH_USDT"],
        },
        {"time": 1700000000, "id": 44, "channel": "futures.trades", "event": "subscribe", "payload": ["SOL_USDT"]},
        {
            "time": 1700000000,
            "id": 45,
            "channel": "futures.order_book_update",
            "event": "subscribe",
            "payload": ["BTC_USDT", "100ms", "100"],
        },
        {
            "time": 1700000000,
            "id": 46,
            "channel": "futures.order_book_update",
            "event": "subscribe",
            "payload": ["ETH_USDT", "100ms", "100"],
        },
        {"time": 1700000000, "id": 47, "channel": "futures.tickers", "event": "subscribe", "payload": ["BTC_USDT"]},
        {"time": 1700000000, "id": 48, "channel": "futures.book_ticker", "event": "subscribe", "payload": ["BTC_USDT"]},
    ]
    assert [f.request_id for f in frames] == list(range(41, 49))
    assert [f.topics for f in frames] == [
        ("gateio:kline:BTC_USDT:1m",),
        ("gateio:kline:ETH_USDT:1w",),
        ("gateio:trade:BTC_USDT", "gateio:trade:ETH_USDT"),
        ("gateio:trade:SOL_USDT",),
        ("gateio:depth:BTC_USDT",),
        ("gateio:depth:ETH_USDT",),
        ("gateio:ticker:BTC_USDT",),
        ("gateio:bookticker:BTC_USDT",),
    ]
    # the JSON key order Gate documents (§2.2)
    assert frames[0].text.startswith('{"time":1700000000,"id":41,"channel":"futures.candlesticks","event":"subscribe"')


def test_unsubscribe_frames_and_default_time() -> None:
    frames = ADAPTER.unsubscribe_frames(topics("gateio:depth:BTC_USDT", "gateio:bookticker:BTC_USDT"), 10, 1)

    assert sent(frames) == [
        {"time": 0, "id": 1, "channel": "futures.order_book_update", "event": "unsubscribe",
         "payload": ["BTC_USDT", "100ms", "100"]},
        {"time": 0, "id": 2, "channel": "futures.book_ticker", "event": "unsubscribe", "payload": ["BTC_USDT"]},
    ]  # fmt: skip


def test_list_frames_respect_the_byte_cap() -> None:
    many = [Topic("gateio", "trade", f"C{i:035d}_USDT") for i in range(400)]

    frames = ADAPTER.subscribe_frames(many, batch_size=1000, first_request_id=999_999, now_ms=1_700_000_000_000)

    assert len(frames) > 1
    assert all(len(f.text.encode()) <= ADAPTER.max_subscribe_frame_bytes for f in frames)
    assert [t for f in frames for t in f.topics] == [str(t) for t in many]
    assert [p for f in sent(frames) for p in f["payload"]] == [t.symbol for t in many]


@pytest.mark.parametrize(("batch_size", "first_id"), [(0, 1), (1, -1), (1, 2**31)])
def test_bad_frame_arguments(batch_size: int, first_id: int) -> None:
    with pytest.raises(ValueError):
        ADAPTER.subscribe_frames(topics("gateio:trade:BTC_USDT"), batch_size, first_id)


def test_ping_frame() -> None:
    assert orjson.loads(ADAPTER.ping_frame(now_ms=1_700_000_000_999) or "") == {
        "time": 1700000000,
        "channel": "futures.ping",
    }
    assert ADAPTER.ping_frame() == '{"time":0,"channel":"futures.ping"}'


@pytest.mark.parametrize(
    ("tf", "native"), [("1m", "1m"), ("5m", "5m"), ("15m", "15m"), ("30m", "30m"), ("1h", "1h"), ("4h", "4h"),
                       ("1d", "1d"), ("1w", "7d")]
)  # fmt: skip
def test_timeframes_both_ways(tf: str, native: str) -> None:
    topic = Topic("gateio", "kline", "BTC_USDT", tf)
    [(_, event)] = (
        parser().parse(push("futures.candlesticks", [candle(1_700_000_000, "1", n=f"{native}_BTC_USDT")]), 0).events
    )

    assert native_payload(topic) == ("futures.candlesticks", [native, "BTC_USDT"])
    assert (event["timeframe"], event["close_time"] - event["open_time"] + 1) == (tf, TIMEFRAME_MS[tf])


def test_weekly_bar_spans_seven_days() -> None:
    [(topic, event)] = (
        parser().parse(push("futures.candlesticks", [candle(1_699_833_600, "1", n="7d_BTC_USDT")]), 0).events
    )

    assert topic == "gateio:kline:BTC_USDT:1w"
    assert event["close_time"] == 1_699_833_600_000 + 7 * 86_400_000 - 1


@pytest.mark.parametrize(
    "topic",
    [
        Topic("gateio", "kline", "BTC_USDT", "2h"),  # not a documented WS interval (§2.5)
        Topic("gateio", "kline", "BTC_USDT", None),
        Topic("gateio", "funding", "BTC_USDT"),
        Topic("bitmart", "kline", "BTCUSDT", "1m"),
    ],
)
def test_validate_rejects(topic: Topic) -> None:
    with pytest.raises(AdapterError):
        ADAPTER.validate(topic)
    with pytest.raises(AdapterError):
        ADAPTER.subscribe_frames([topic], 10, 1)


def test_adapter_data() -> None:
    assert ADAPTER.route(Topic("gateio", "depth", "BTC_USDT")) == "usdt"
    assert ADAPTER.ws_url("wss://fx-ws.gateio.ws/v4/ws/usdt", "usdt") == "wss://fx-ws.gateio.ws/v4/ws/usdt"
    assert ADAPTER.ws_headers == {"X-Gate-Size-Decimal": "1"}
    assert ADAPTER.book_sync.rule == "gate"
    assert ADAPTER.resync_frame(Topic("gateio", "depth", "BTC_USDT")) is None
    assert ADAPTER.snapshot_request("BTC_USDT", 20) == SnapshotRequest(
        "/api/v4/futures/usdt/order_book", {"contract": "BTC_USDT", "limit": "100", "with_id": "true"}
    )


def test_depth_window_is_the_subscribed_level() -> None:
    # order_book_update "level": only updates within it are notified (§2.5; levels 100/50/20); the REST snapshot
    # limit must equal it. So the book is kept over max_depth_levels, the cap of a depth topic's levels.
    _, payload = native_payload(Topic("gateio", "depth", "BTC_USDT"))
    snapshot = ADAPTER.snapshot_request("BTC_USDT", 20)
    assert payload == ["BTC_USDT", "100ms", "100"]
    assert ADAPTER.max_depth_levels == int(payload[2]) == int(snapshot.params["limit"]) == 100  # type: ignore[union-attr]


# --- acks without id (the 2023 capture) ---------------------------------------------------------


def captured_requests() -> tuple[list[OutFrame], dict[int, tuple[str, tuple[str, ...]]]]:
    """Our frames for the capture's 42 subscriptions in its order, and the connection's request table for them."""
    contracts = [json.loads(raw)["payload"][1] for _, raw in sent_capture() if '"futures.candlesticks"' in raw]
    topics = [Topic("gateio", "kline", c, "1m") for c in contracts]
    topics += [Topic("gateio", "trade", c) for c in contracts]
    topics += [Topic("gateio", "depth", c) for c in contracts]
    topics += [Topic("gateio", "bookticker", c) for c in contracts]
    frames = ADAPTER.subscribe_frames(topics, 20, 1)
    return frames, {f.request_id: ("subscribe", f.topics) for f in frames if f.request_id is not None}


def sent_capture() -> list[tuple[float, str]]:
    """The frames the 2023 client sent (``<url> <- <ts>: <json>`` lines)."""
    out = []
    for line in sample_path(GATE_2023).read_text(encoding="utf-8").splitlines():
        head, sep, raw = line.partition(": ")
        if sep and " <- " in head:
            out.append((float(head.rpartition(" ")[2]), raw))
    return out


def test_captured_acks_without_id_match_their_requests_in_order() -> None:
    frames, requests = captured_requests()
    # our frames go out in the capture's order: one per candle/book contract, one list frame per list channel
    assert [json.loads(f.text)["channel"] for f in frames] == [json.loads(raw)["channel"] for _, raw in sent_capture()]
    p = parser()
    matched = []
    for ts, raw in read_cryptofeed_ws(GATE_2023):
        for ack in p.parse(raw, int(ts * 1000)).acks:
            request_id = match_request(ack, requests)
            assert request_id is not None, raw
            matched.append(requests.pop(request_id)[1])

    assert matched == [f.topics for f in frames]  # each of the 22 acks answers the request it followed
    assert requests == {}


def test_idless_refusal_is_tied_to_the_contract_it_names() -> None:
    _, requests = captured_requests()
    # The refusal of the third candle request overtakes the two acks before it; the contract it names decides.
    refusal = (
        '{"time":1684930165,"time_ms":0,"channel":"futures.candlesticks","event":"subscribe",'
        '"error":{"code":2,"message":"unknown contract LIT_USDT"},"result":{"status":"fail"}}'
    )
    recorded_ack = next(raw for _, raw in read_cryptofeed_ws(GATE_2023) if '"futures.candlesticks"' in raw)
    p = parser()
    [refused] = p.parse(refusal, 0).acks
    assert (refused.ok, refused.channel, refused.symbols) == (False, "kline", ("LIT_USDT",))
    assert requests.pop(match_request(refused, requests))[1] == ("gateio:kline:LIT_USDT:1m",)  # type: ignore[arg-type]
    first, second = (requests.pop(match_request(a, requests))[1] for a in 2 * p.parse(recorded_ack, 0).acks)  # type: ignore[arg-type]
    assert (first, second) == (("gateio:kline:DIA_USDT:1m",), ("gateio:kline:RDNT_USDT:1m",))
    # an unsubscribe ack never answers a subscribe request, and an ack of a channel with nothing pending matches none
    unsub = recorded_ack.replace('"subscribe"', '"unsubscribe"')
    assert match_request(p.parse(unsub, 0).acks[0], requests) is None
    assert match_request(Ack(ok=True, channel="ticker"), requests) is None
    assert match_request(Ack(ok=True, request_id=1, channel="kline"), requests) is None  # ids are matched by id


# --- replies, keep-alive, errors -------------------------------------------------------------


def test_error_reply_keeps_the_exchange_text() -> None:
    raw = json.dumps(
        {
            "time": 1,
            "time_ms": 1000,
            "id": 5,
            "channel": "futures.candlesticks",
            "event": "subscribe",
            "payload": ["1m", "BTC_USDT_20220318"],
            "error": {"code": 2, "message": "unknown contract BTC_USDT_20220318"},
            "result": {"status": "fail"},
        }
    )

    assert parser().parse(raw, 0).acks == [
        Ack(
            ok=False,
            topic="gateio:kline:BTC_USDT_20220318:1m",
            request_id=5,
            error="2: unknown contract BTC_USDT_20220318",
        )
    ]


def test_error_reply_without_id_and_payload() -> None:
    raw = '{"time":1,"channel":"futures.trades","event":"subscribe","error":{"code":2,"message":"unknown contract X"}}'

    assert parser().parse(raw, 0).acks == [
        Ack(ok=False, error="2: unknown contract X", channel="trade", symbols=("X",))
    ]


def test_failed_status_without_error_object() -> None:
    raw = '{"time":1,"id":3,"channel":"futures.trades","event":"subscribe","error":null,"result":{"status":"fail"}}'

    [ack] = parser().parse(raw, 0).acks
    assert (ack.ok, ack.request_id, ack.error) == (False, 3, "request failed (status 'fail')")


def test_unsubscribe_ack_with_several_contracts_has_no_topic() -> None:
    raw = json.dumps(
        {"time": 1, "id": 9, "channel": "futures.book_ticker", "event": "unsubscribe",
         "payload": ["BTC_USDT", "ETH_USDT"], "error": None, "result": {"status": "success"}}
    )  # fmt: skip

    assert parser().parse(raw, 0).acks == [Ack(ok=True, action="unsubscribe", request_id=9)]
    # without the id, the echoed contracts are what ties it to its request (match_request)
    no_id = raw.replace('"id": 9, ', "")
    assert parser().parse(no_id, 0).acks == [
        Ack(ok=True, action="unsubscribe", channel="bookticker", symbols=("BTC_USDT", "ETH_USDT"))
    ]
    requests = {1: ("unsubscribe", ("gateio:bookticker:SOL_USDT",)), 2: ("unsubscribe", ("gateio:bookticker:BTC_USDT",
                "gateio:bookticker:ETH_USDT"))}  # fmt: skip
    assert match_request(parser().parse(no_id, 0).acks[0], requests) == 2


def test_pong_upgrade_and_frame_level_errors() -> None:
    p = parser()

    assert p.parse('{"time":1,"time_ms":1001,"channel":"futures.pong","event":"","result":null}', 0) == Parsed(
        pong=True
    )
    # gatews closes and reconnects on any frame with event "upgrade" (§2.4): a reconnect request, not an error
    assert p.parse('{"time":1,"channel":"futures.tickers","event":"upgrade"}', 0) == Parsed(
        reconnect="server asked to reconnect (event upgrade)"
    )
    assert p.parse('{"time":1,"channel":"futures.x","event":"","error":{"code":1,"message":"bad"}}', 0) == Parsed(
        error="1: bad"
    )
    assert p.parse('{"time":1,"channel":"futures.order_book","event":"all","result":{}}', 0) == Parsed(unknown=True)
    assert p.parse("[1,2]", 0) == Parsed(unknown=True)


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"",
        push(
            "futures.trades", [{"size": 1.5, "id": 1, "create_time_ms": 1, "price": "1", "contract": "A_USDT"}]
        ).encode(),
        push("futures.trades", None).encode(),
        push("futures.order_book_update", {"t": 1, "s": "A_USDT", "U": "x", "u": 2, "b": [], "a": []}).encode(),
        push(
            "futures.order_book_update", {"t": 1, "s": "A_USDT", "U": 1, "u": 2, "b": [{"p": "1", "s": 0.5}], "a": []}
        ).encode(),
        push("futures.book_ticker", {"t": 1, "s": "A_USDT"}).encode(),
        push("futures.candlesticks", [candle(1, "1") | {"t": "soon"}]).encode(),
        push("futures.trades", [trade(1, create_time_ms="later")]).encode(),
    ],
)
def test_malformed_frames_raise_value_error(raw: bytes) -> None:
    with pytest.raises(ValueError):
        parser().parse(raw, 0)


# --- klines: close inference ----------------------------------------------------------------


def test_closed_bar_is_inferred_when_a_later_bar_arrives() -> None:
    p = parser()
    p.parse(push("futures.candlesticks", [candle(60, "1")], time_ms=61_000), 1)
    p.parse(push("futures.candlesticks", [candle(60, "2")], time_ms=100_000), 2)
    later = p.parse(push("futures.candlesticks", [candle(120, "3")], time_ms=121_000), 3)
    stale = p.parse(push("futures.candlesticks", [candle(60, "9")], time_ms=122_000), 4)

    [(t1, closed), (t2, opened)] = later.events
    assert t1 == t2 == "gateio:kline:BTC_USDT:1m"
    assert (closed["open_time"], closed["close"], closed["closed"], closed["ts_exchange"], closed["ts_received"]) == (
        60_000,
        "2",
        True,
        100_000,
        3,
    )
    assert (opened["open_time"], opened["close"], opened["closed"]) == (120_000, "3", False)
    assert stale == Parsed() and p.stale_klines == 1


def test_bars_are_sorted_and_topics_independent() -> None:
    p = parser()
    items = [candle(120, "b"), candle(60, "a"), candle(60, "x", n="1m_ETH_USDT")]
    events = p.parse(push("futures.candlesticks", items), 0).events

    assert [(t, e["open_time"], e["closed"]) for t, e in events] == [
        ("gateio:kline:BTC_USDT:1m", 60_000, False),
        ("gateio:kline:ETH_USDT:1m", 60_000, False),
        ("gateio:kline:BTC_USDT:1m", 60_000, True),
        ("gateio:kline:BTC_USDT:1m", 120_000, False),
    ]


def test_emitted_kline_dicts_can_be_mutated_by_the_consumer() -> None:
    p = parser()
    [(_, first)] = p.parse(push("futures.candlesticks", [candle(60, "1")]), 0).events
    first["close"] = "mutated"
    [(_, closed), _] = p.parse(push("futures.candlesticks", [candle(120, "2")]), 0).events

    assert closed["close"] == "1"


def test_intervals_we_never_subscribe_are_unknown() -> None:
    assert parser().parse(push("futures.candlesticks", [candle(60, "1", n="10s_BTC_USDT")]), 0) == Parsed(unknown=True)


def test_kline_without_time_ms_and_string_volume() -> None:
    raw = json.dumps(
        {"time": 1, "channel": "futures.candlesticks", "event": "update", "result": [candle(60, "1", v="2.5")]}
    )
    [(_, event)] = parser().parse(raw, 0).events

    assert (event["volume"], event["ts_exchange"]) == ("2.5", None)


# --- trades, tickers, book ticker, book -------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "side", "abs_size"),
    [(5, "buy", "5"), (-5, "sell", "5"), ("12.5", "buy", "12.5"), ("-0.25", "sell", "0.25"), ("+3", "buy", "3")],
)
def test_trade_side_and_size_from_the_sign(size: int | str, side: str, abs_size: str) -> None:
    [(_, event)] = parser().parse(push("futures.trades", [trade(size)]), 0).events

    assert (event["side"], event["size"]) == (side, abs_size)


@pytest.mark.parametrize(
    ("fields", "ts"),
    [
        ({"create_time_ms": 1545136464123}, 1545136464123),
        ({"create_time_ms": "1545136464123.999"}, 1545136464123),
        ({"create_time_ms": 1545136464123.5}, 1545136464123),
        ({"create_time_ms": None, "create_time": 1545136464}, 1545136464000),
        ({"create_time_ms": None, "create_time": None}, None),
    ],
)
def test_trade_time_is_exact(fields: dict[str, Any], ts: int | None) -> None:
    item = trade(1)
    item.update(fields)
    item = {k: v for k, v in item.items() if v is not None}
    [(_, event)] = parser().parse(push("futures.trades", [item]), 0).events

    assert event["ts_exchange"] == ts


def test_several_trades_in_wire_order() -> None:
    raw = push("futures.trades", [trade(1, id=1), trade(-2, id=2, contract="BTC_USDT")])
    events = parser().parse(raw, 0).events

    assert [(t, e["trade_id"], e["side"]) for t, e in events] == [
        ("gateio:trade:ETH_USDT", "1", "buy"),
        ("gateio:trade:BTC_USDT", "2", "sell"),
    ]


def test_ticker_without_base_volume_and_with_missing_values() -> None:
    raw = push("futures.tickers", [{"contract": "BTC_USDT", "last": "1", "volume_24h": 200, "funding_rate": ""}])
    [(_, event)] = parser().parse(raw, 0).events

    assert (event["volume_24h"], event["funding_rate"], event["mark_price"]) == ("200", None, None)


def test_book_ticker_with_an_empty_side() -> None:
    raw = push("futures.book_ticker", {"t": 5, "u": 9, "s": "BTC_USDT", "b": "", "B": 0, "a": "10", "A": 3})
    [(_, event)] = parser().parse(raw, 0).events

    assert (event["bid_price"], event["bid_size"], event["ask_price"], event["ask_size"]) == (None, None, "10", "3")


def test_full_book_push_is_a_snapshot() -> None:
    result = {"t": 5, "s": "BTC_USDT", "U": 1, "u": 10, "b": [{"p": "1", "s": "2"}], "a": [], "l": "100", "full": True}
    [book] = parser().parse(push("futures.order_book_update", result), 7).book

    assert (book.snapshot, book.first_id, book.last_id, book.bids, book.ts_received) == (True, 1, 10, [("1", "2")], 7)


def test_snapshot_error_bodies_raise_value_error() -> None:
    with pytest.raises(ValueError, match="INVALID_CONTRACT"):
        ADAPTER.parse_snapshot("X_USDT", b'{"label":"INVALID_CONTRACT","message":"no such contract"}', 0)
    with pytest.raises(ValueError):
        ADAPTER.parse_snapshot("X_USDT", b'{"id":1,"bids":[{"p":"1"}],"asks":[]}', 0)
    with pytest.raises(ValueError):
        ADAPTER.parse_snapshot("X_USDT", b"[]", 0)


def test_snapshot_without_current() -> None:
    book = ADAPTER.parse_snapshot("X_USDT", b'{"id":"42","bids":[],"asks":[{"p":"1","s":"0.5"}]}', 9)

    assert (book.last_id, book.ts_exchange, book.asks, book.ts_received) == (42, None, [("1", "0.5")], 9)


# --- private channels (§2.3 auth, §2.6 pushes, §2.7 REST) -------------------------------------------------------------

ORDER_KEYS = [
    "type", "exchange", "account", "symbol", "order_id", "client_order_id", "side", "order_type", "status",
    "status_raw", "price", "size", "filled_size", "avg_fill_price", "reduce_only", "ts_exchange", "ts_received",
    "snapshot",
]  # fmt: skip
POSITION_KEYS = [
    "type", "exchange", "account", "symbol", "side", "mode", "size", "entry_price", "mark_price", "liquidation_price",
    "leverage", "margin_mode", "unrealized_pnl", "ts_exchange", "ts_received", "snapshot",
]  # fmt: skip
BALANCE_KEYS = [
    "type", "exchange", "account", "asset", "balance", "available", "frozen", "ts_exchange", "ts_received", "snapshot",
]  # fmt: skip
#: exchanges.md §2.3 vector: key, secret and the uid ccxt was given.
CREDS = Account("gateio", "main", "gatekey_0123456789abcdef", "gatesecret_fedcba9876543210", uid="123456")
PRIVATE = [Topic.parse(f"gateio:{channel}:main") for channel in ("order", "position", "balance")]
ORDERS_SIGN = (
    "7ea8581ea4ed064655c445ad7d464ee76ecf4f356d321c08d47efb5cb7a29f40"
    "0786abc686338b36545b8f3f6d576dcbf1f8f60f753484a2430fa03ee06b0330"
)


@dataclass(frozen=True)
class BareCreds:
    """A Credentials without ``uid``: Gate's user id travels in ``memo``."""

    exchange: str
    account: str
    api_key: str
    api_secret: str
    memo: str


def private_parser() -> GateioParser:
    return ADAPTER.new_parser("main")


def gate_order(**kw: Any) -> dict[str, Any]:
    base = {
        "contract": "BTC_USDT",
        "create_time_ms": 1700000000000,
        "fill_price": 0,
        "finish_as": "_new",
        "finish_time_ms": 0,
        "id": 42,
        "is_reduce_only": False,
        "left": 10,
        "price": "60000",
        "size": 10,
        "status": "open",
        "text": "web",
        "tif": "gtc",
    }
    return {**base, **kw}


def test_private_subscribe_frame_is_ccxts_frame() -> None:
    # exchanges.md §2.3: ccxt 4.5.90 subscribe_private() with seconds pinned to 1700000000, first request id 1
    [frame] = ADAPTER.subscribe_frames(PRIVATE[:1], 20, 1, now_ms=1_700_000_000_999, creds=CREDS)

    assert frame == OutFrame(
        '{"id":1,"time":1700000000,"channel":"futures.orders","event":"subscribe","auth":{"method":"api_key",'
        f'"KEY":"gatekey_0123456789abcdef","SIGN":"{ORDERS_SIGN}"}},"payload":["123456","!all"]}}',
        ("gateio:order:main",),
        1,
    )


def test_private_frames_payloads_ids_and_signatures() -> None:
    public = Topic("gateio", "trade", "BTC_USDT")
    frames = ADAPTER.subscribe_frames([public, *PRIVATE], 20, 7, now_ms=1_700_000_000_000, creds=CREDS)
    [unsub] = ADAPTER.unsubscribe_frames(PRIVATE[2:], 20, 3, now_ms=1_700_000_000_000, creds=CREDS)
    sent = [json.loads(f.text) for f in frames]

    assert [f.request_id for f in frames] == [7, 8, 9, 10]
    assert [f.topics for f in frames] == [(str(public),), *((str(t),) for t in PRIVATE)]
    assert "auth" not in sent[0]
    assert [(m["channel"], m["payload"]) for m in sent[1:]] == [
        ("futures.orders", ["123456", "!all"]),
        ("futures.positions", ["123456", "!all"]),
        ("futures.balances", ["123456"]),
    ]
    for m in sent[1:]:
        assert m["auth"] == ws_auth(CREDS, m["channel"], "subscribe", 1700000000)
    assert sent[1]["auth"]["SIGN"] == ORDERS_SIGN
    message = json.loads(unsub.text)
    assert (message["event"], message["payload"]) == ("unsubscribe", ["123456"])
    assert message["auth"]["SIGN"] == ws_signature(CREDS.api_secret, "futures.balances", "unsubscribe", 1700000000)


def test_private_frames_refuse_missing_or_foreign_credentials() -> None:
    cases = [
        (None, "need the account's credentials"),
        (Account("gateio", "other", "k", "s3cr3t"), "cannot serve account 'main'"),
        (Account("bitmart", "main", "k", "s3cr3t"), "cannot sign gateio"),
        (Account("gateio", "main", "k", "s3cr3t"), "no uid"),
    ]
    for creds, text in cases:
        with pytest.raises(AdapterError, match=text) as info:
            ADAPTER.subscribe_frames(PRIVATE, 20, 1, creds=creds)
        assert "s3cr3t" not in str(info.value)


def test_uid_falls_back_to_the_memo() -> None:
    creds = BareCreds("gateio", "main", "k", "s", memo="777")

    [frame] = ADAPTER.subscribe_frames(PRIVATE[2:], 20, 1, creds=creds)

    assert account_uid(creds) == "777" and json.loads(frame.text)["payload"] == ["777"]
    assert account_uid(Account("gateio", "main", "k", "s", memo="1", uid="2")) == "2"  # uid wins


def test_private_routes_and_validation() -> None:
    assert ADAPTER.private_channels == {"order", "position", "balance"}
    assert [ADAPTER.route(t) for t in PRIVATE] == ["private:main"] * 3
    assert ADAPTER.ws_url("wss://fx-ws.gateio.ws/v4/ws/usdt", "private:main") == "wss://fx-ws.gateio.ws/v4/ws/usdt"
    for t in PRIVATE:
        ADAPTER.validate(t)
    with pytest.raises(AdapterError):
        ADAPTER.validate(Topic("gateio", "order", "no way"))
    assert ADAPTER.login_frame(CREDS, 1) is None


def test_order_fixture() -> None:
    [ack] = fixture("SubscribeToOrderUpdates", "<")
    [raw] = fixture("SubscribeToOrderUpdates", "=")
    p = private_parser()

    assert p.parse(ack, 0).acks == [Ack(ok=True, topic="gateio:order:main", request_id=-999)]
    [(topic, event)] = p.parse(raw, 5).events
    assert topic == "gateio:order:main"
    assert event == {
        "type": "order",
        "exchange": "gateio",
        "account": "main",
        "symbol": "BTC_USD",
        "order_id": "4872460",
        "client_order_id": None,  # text "-": not a t- id
        "side": "buy",
        "order_type": "limit",
        "status": "filled",
        "status_raw": "finished/filled",
        "price": "40000.4",
        "size": "1.5",
        "filled_size": "1.0",
        "avg_fill_price": "40000.4",
        "reduce_only": False,
        "ts_exchange": 1628736848321,  # finish_time_ms
        "ts_received": 5,
        "snapshot": False,
    }
    assert list(event) == ORDER_KEYS


def test_position_fixture() -> None:
    [ack] = fixture("SubscribeToPositionUpdates", "<")
    [raw] = fixture("SubscribeToPositionUpdates", "=")
    p = private_parser()

    assert p.parse(ack, 0).acks == [Ack(ok=True, topic="gateio:position:main", request_id=-999)]
    assert p.parse(raw, 5) == Parsed(
        events=[
            (
                "gateio:position:main",
                {
                    "type": "position",
                    "exchange": "gateio",
                    "account": "main",
                    "symbol": "BTC_USD",
                    "side": "both",
                    "mode": "one_way",
                    "size": "3.5",
                    "entry_price": "40000.36666661111",
                    "mark_price": None,
                    "liquidation_price": "0.1",
                    "leverage": None,  # leverage 0 (cross) and cross_leverage_limit 0
                    "margin_mode": "cross",
                    "unrealized_pnl": None,
                    "ts_exchange": 1628736848321,
                    "ts_received": 5,
                    "snapshot": False,
                },
            )
        ]
    )
    assert list(p.parse(raw, 5).events[0][1]) == POSITION_KEYS


def test_balance_fixture() -> None:
    [ack] = fixture("SubscribeToBalanceUpdates", "<")
    [raw] = fixture("SubscribeToBalanceUpdates", "=")
    p = private_parser()

    assert p.parse(ack, 0).acks == [Ack(ok=True, topic="gateio:balance:main", request_id=-999)]
    assert p.parse(raw, 5) == Parsed(
        events=[
            (
                "gateio:balance:main",
                {
                    "type": "balance",
                    "exchange": "gateio",
                    "account": "main",
                    "asset": "BTC",
                    "balance": "9.998739899488",
                    "available": None,
                    "frozen": None,
                    "ts_exchange": 1547199246123,
                    "ts_received": 5,
                    "snapshot": False,
                },
            )
        ]
    )
    assert list(p.parse(raw, 5).events[0][1]) == BALANCE_KEYS


@pytest.mark.parametrize("name", ["SubscribeToOrderUpdates", "SubscribeToPositionUpdates", "SubscribeToBalanceUpdates"])
def test_private_fixtures_without_an_account(name: str) -> None:
    [ack] = fixture(name, "<")
    [raw] = fixture(name, "=")

    assert parser().parse(ack, 0).acks == [Ack(ok=True, request_id=-999)]
    assert parser().parse(raw, 0) == Parsed(unknown=True)


def test_private_auth_failure_ack() -> None:
    raw = (
        '{"time":1,"time_ms":1001,"id":3,"channel":"futures.orders","event":"subscribe",'
        '"error":{"code":4,"message":"{\\"label\\":\\"INVALID_KEY\\"}"},"result":{"status":"fail"}}'
    )

    assert private_parser().parse(raw, 0).acks == [
        Ack(ok=False, topic="gateio:order:main", request_id=3, error='4: {"label":"INVALID_KEY"}')
    ]


@pytest.mark.parametrize(
    ("fields", "status", "status_raw", "filled"),
    [
        ({}, "new", "open/_new", "0"),
        ({"status": "open", "finish_as": ""}, "new", "open", "0"),
        ({"left": 4}, "partially_filled", "open/_new", "6"),
        ({"status": "finished", "finish_as": "filled", "left": 0}, "filled", "finished/filled", "10"),
        ({"status": "finished", "finish_as": "cancelled"}, "canceled", "finished/cancelled", "0"),
        ({"status": "finished", "finish_as": "cancelled", "left": 3}, "canceled", "finished/cancelled", "7"),
        ({"status": "finished", "finish_as": "ioc", "left": 3}, "expired", "finished/ioc", "7"),
        ({"status": "finished", "finish_as": "ioc", "left": 0}, "filled", "finished/ioc", "10"),
        ({"status": "finished", "finish_as": "liquidated", "left": 10}, "canceled", "finished/liquidated", "0"),
        ({"status": "finished", "finish_as": "auto_deleveraged", "left": 0}, "filled", "finished/auto_deleveraged",
         "10"),
        ({"status": "finished", "finish_as": "reduce_only"}, "canceled", "finished/reduce_only", "0"),
        ({"status": "finished", "finish_as": "position_closed"}, "canceled", "finished/position_closed", "0"),
        ({"status": "finished", "finish_as": "stp"}, "canceled", "finished/stp", "0"),
        ({"size": "-2.5", "left": "-0.5"}, "partially_filled", "open/_new", "2.0"),
    ],
)  # fmt: skip
def test_order_status_mapping(fields: dict[str, Any], status: str, status_raw: str, filled: str) -> None:
    event = order_event(gate_order(**fields), "main", 0)

    assert (event["status"], event["status_raw"], event["filled_size"]) == (status, status_raw, filled)


def test_order_side_type_and_client_id() -> None:
    sell = order_event(gate_order(size=-10, left=-10, text="t-my-id_1"), "main", 0)
    market = order_event(gate_order(price="0", tif="ioc", size="3", left="0"), "main", 0)
    close = order_event(gate_order(size=0, left=-5), "main", 0)

    assert (sell["side"], sell["size"], sell["client_order_id"]) == ("sell", "10", "t-my-id_1")
    assert sell["order_type"] == "limit"
    assert (market["side"], market["order_type"], market["price"]) == ("buy", "market", "0")
    assert (close["side"], close["size"], close["filled_size"]) == ("sell", "0", "0")
    assert order_event(gate_order(update_time=1700000000555), "main", 0)["ts_exchange"] == 1700000000555
    assert order_event(gate_order(), "main", 0)["ts_exchange"] == 1700000000000  # create_time_ms while open
    with pytest.raises(ValueError):
        order_event(gate_order(size=1.5), "main", 0)  # a float size is refused


@pytest.mark.parametrize(
    ("fields", "side", "mode", "margin_mode", "leverage"),
    [
        ({"mode": "dual_long", "leverage": 10}, "long", "hedge", "isolated", "10"),
        ({"mode": "dual_short", "leverage": "0", "cross_leverage_limit": "25"}, "short", "hedge", "cross", "25"),
        ({"mode": "single", "leverage": 0, "cross_leverage_limit": 0}, "both", "one_way", "cross", None),
        ({}, "both", None, None, None),
    ],
)
def test_position_modes_and_margin(
    fields: dict[str, Any], side: str, mode: str | None, margin_mode: str | None, leverage: str | None
) -> None:
    event = position_event({"contract": "BTC_USDT", "size": -3, **fields}, "main", 0, frame_ms=9)

    assert (event["side"], event["mode"], event["margin_mode"], event["leverage"]) == (
        side,
        mode,
        margin_mode,
        leverage,
    )
    assert (event["size"], event["ts_exchange"]) == ("-3", 9)


def test_private_push_malformed_raises() -> None:
    with pytest.raises(ValueError, match="futures.orders"):
        private_parser().parse(push("futures.orders", [{"contract": "X"}]), 0)


def test_snapshot_requests() -> None:
    orders = ADAPTER.open_orders_request(CREDS, 1_700_000_000_000)
    positions = ADAPTER.positions_request(CREDS, 1_700_000_000_000)

    assert (orders.method, orders.path, orders.params) == ("GET", "/api/v4/futures/usdt/orders", {"status": "open"})
    assert orders.headers == {
        "KEY": "gatekey_0123456789abcdef",
        "Timestamp": "1700000000",
        "SIGN": rest_signature(CREDS.api_secret, "GET", "/api/v4/futures/usdt/orders", "status=open", "", 1700000000),
        "X-Gate-Size-Decimal": "1",
    }
    assert (positions.method, positions.path, positions.params) == ("GET", "/api/v4/futures/usdt/positions", {})
    assert positions.headers["SIGN"] == rest_signature(
        CREDS.api_secret, "GET", "/api/v4/futures/usdt/positions", "", "", "1700000000"
    )


#: REST shapes per the APIv4 FuturesOrder / Position models (sizes as decimal strings: X-Gate-Size-Decimal).
REST_ORDERS = b"""[{"id":15675394,"user":100000,"contract":"BTC_USDT","create_time":1546569968.184,"size":"-6024",
"iceberg":"0","left":"-6000","price":"3765","fill_price":"3765.1","mkfr":"-0.00025","tkfr":"0.00075","tif":"gtc",
"refu":0,"is_reduce_only":true,"is_close":false,"is_liq":false,"text":"t-my-custom-id","status":"open",
"finish_as":""}]"""
REST_POSITIONS = b"""[{"user":10000,"contract":"BTC_USDT","size":"-9440","leverage":"0","risk_limit":"100",
"leverage_max":"100","maintenance_rate":"0.005","value":"2.497143098997","margin":"4.431548146258",
"entry_price":"3779.55","liq_price":"99999999","mark_price":"3780.32","unrealised_pnl":"-0.000507486844",
"realised_pnl":"0.045543982432","history_pnl":"0","last_close_pnl":"0","realised_point":"0","history_point":"0",
"adl_ranking":5,"pending_orders":16,"mode":"single","cross_leverage_limit":"10","update_time":1684994400}]"""


def test_parse_open_orders() -> None:
    assert ADAPTER.parse_open_orders(REST_ORDERS, "main", 3) == [
        (
            "gateio:order:main",
            {
                "type": "order",
                "exchange": "gateio",
                "account": "main",
                "symbol": "BTC_USDT",
                "order_id": "15675394",
                "client_order_id": "t-my-custom-id",
                "side": "sell",
                "order_type": "limit",
                "status": "partially_filled",
                "status_raw": "open",
                "price": "3765",
                "size": "6024",
                "filled_size": "24",
                "avg_fill_price": "3765.1",
                "reduce_only": True,
                "ts_exchange": 1546569968184,  # create_time seconds, converted exactly
                "ts_received": 3,
                "snapshot": True,
            },
        )
    ]


def test_parse_positions() -> None:
    assert ADAPTER.parse_positions(REST_POSITIONS, "main", 3) == [
        (
            "gateio:position:main",
            {
                "type": "position",
                "exchange": "gateio",
                "account": "main",
                "symbol": "BTC_USDT",
                "side": "both",
                "mode": "one_way",
                "size": "-9440",
                "entry_price": "3779.55",
                "mark_price": "3780.32",
                "liquidation_price": "99999999",
                "leverage": "10",
                "margin_mode": "cross",
                "unrealized_pnl": "-0.000507486844",
                "ts_exchange": 1684994400000,
                "ts_received": 3,
                "snapshot": True,
            },
        )
    ]


@pytest.mark.parametrize(
    ("body", "text"),
    [
        (b'{"label":"INVALID_KEY","message":"Invalid key provided"}', "INVALID_KEY: Invalid key provided"),
        (b'{"orders":[]}', "not a list"),
        (b'[{"contract":"BTC_USDT"}]', "malformed"),
    ],
)
def test_rest_snapshot_errors(body: bytes, text: str) -> None:
    with pytest.raises(ValueError, match=text):
        ADAPTER.parse_open_orders(body, "main", 0)
    with pytest.raises(ValueError, match=text):
        ADAPTER.parse_positions(body, "main", 0)
