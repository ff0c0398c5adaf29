"""Gate.io futures: the frames we send, timeframes, validation and static adapter data."""

from __future__ import annotations

import orjson
import pytest

from control.topics import TIMEFRAME_MS, Topic
from tests.exchanges.gateio._helpers import ADAPTER, candle, parser, push, sent, topics
from workers.exchanges.base import AdapterError, SnapshotRequest
from workers.exchanges.gateio.wire import native_payload


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
