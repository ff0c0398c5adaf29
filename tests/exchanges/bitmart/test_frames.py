"""BitMart outgoing frames: subscribe/unsubscribe shapes, batching by count and bytes, channel mapping, static facts."""

from __future__ import annotations

import json

import pytest

from control.topics import Topic
from tests.exchanges.bitmart._helpers import ADAPTER, kline_topic
from workers.exchanges.base import AdapterError
from workers.exchanges.bitmart.wire import group_to_topic, native_topic

# --- subscribe frames ---------------------------------------------------------------------------


def test_subscribe_frames_for_ticker_bookticker_and_depth() -> None:
    topics = [Topic("bitmart", c, "BTCUSDT") for c in ("ticker", "bookticker", "depth")]

    [frame] = ADAPTER.subscribe_frames(topics, batch_size=20, first_request_id=1, now_ms=1_700_000_000_000)
    [unsub] = ADAPTER.unsubscribe_frames(topics[2:], batch_size=20, first_request_id=1, now_ms=1)

    assert frame.text == (
        '{"action":"subscribe","args":["futures/ticker:BTCUSDT","futures/bookticker:BTCUSDT",'
        '"futures/depthIncrease50:BTCUSDT@100ms"]}'
    )
    assert frame.topics == ("bitmart:ticker:BTCUSDT", "bitmart:bookticker:BTCUSDT", "bitmart:depth:BTCUSDT")
    assert unsub.text == '{"action":"unsubscribe","args":["futures/depthIncrease50:BTCUSDT@100ms"]}'


@pytest.mark.parametrize(
    ("channel", "native"),
    [
        ("trade", "futures/trade:BTCUSDT"),
        ("ticker", "futures/ticker:BTCUSDT"),
        ("bookticker", "futures/bookticker:BTCUSDT"),
        ("depth", "futures/depthIncrease50:BTCUSDT@100ms"),
    ],
)
def test_channel_mapping_both_ways(channel: str, native: str) -> None:
    topic = Topic("bitmart", channel, "BTCUSDT")

    assert native_topic(topic) == native
    assert group_to_topic(native) == str(topic)
    assert group_to_topic(native.partition("@")[0] + "@200ms") == str(topic)


def test_subscribe_frame_shape() -> None:
    topics = [kline_topic("BTCUSDT", "1h"), Topic("bitmart", "trade", "BTCUSDT")]

    frames = ADAPTER.subscribe_frames(topics, batch_size=20, first_request_id=1)

    assert len(frames) == 1
    assert frames[0].text == '{"action":"subscribe","args":["futures/klineBin1H:BTCUSDT","futures/trade:BTCUSDT"]}'
    assert frames[0].topics == ("bitmart:kline:BTCUSDT:1h", "bitmart:trade:BTCUSDT")
    assert frames[0].request_id is None


def test_unsubscribe_frame_shape() -> None:
    [frame] = ADAPTER.unsubscribe_frames([kline_topic("BTCUSDT", "1w")], batch_size=20, first_request_id=1)

    assert frame.text == '{"action":"unsubscribe","args":["futures/klineBin1W:BTCUSDT"]}'


@pytest.mark.parametrize(("count", "batch_size"), [(120, 50), (120, 100), (7, 3), (1, 1)])
def test_subscribe_frames_split_by_count_and_bytes(count: int, batch_size: int) -> None:
    tfs = ["1m", "5m", "15m", "30m", "1h", "2h", "4h", "1d", "1w"]
    topics = [kline_topic(f"LONGNAME{i:03d}USDT", tfs[i % len(tfs)]) for i in range(count)]

    frames = ADAPTER.subscribe_frames(topics, batch_size=batch_size, first_request_id=1)

    assert all(len(f.text.encode()) <= 2000 for f in frames)
    assert all(len(f.topics) <= batch_size for f in frames)
    assert [t for f in frames for t in f.topics] == [str(t) for t in topics]
    for f in frames:  # each frame's args are exactly its topics
        assert json.loads(f.text)["args"] == [native_topic(Topic.parse(t)) for t in f.topics]


def test_byte_limit_splits_before_batch_size() -> None:
    topics = [kline_topic(f"LONGNAME{i:03d}USDT", "15m") for i in range(100)]

    frames = ADAPTER.subscribe_frames(topics, batch_size=100, first_request_id=1)

    assert len(frames) > 1
    assert all(len(f.text.encode()) <= 2000 for f in frames)
    # greedy: one more topic (its quoted name plus a comma) would not have fit in any frame but the last
    one_more = len(json.dumps(native_topic(topics[0]))) + 1
    assert all(len(f.text.encode()) + one_more > 2000 for f in frames[:-1])
    assert all(len(f.topics) < 100 for f in frames)


def test_subscribe_frames_argument_errors() -> None:
    with pytest.raises(ValueError):
        ADAPTER.subscribe_frames([kline_topic("BTCUSDT", "1m")], batch_size=0, first_request_id=1)
    with pytest.raises(AdapterError):
        ADAPTER.subscribe_frames([Topic("bitmart", "funding", "BTCUSDT")], batch_size=1, first_request_id=1)
    assert ADAPTER.subscribe_frames([], batch_size=10, first_request_id=1) == []


def test_validate_and_static_facts() -> None:
    ADAPTER.validate(kline_topic("BTCUSDT", "1w"))
    for channel in ("trade", "ticker", "bookticker", "depth"):
        ADAPTER.validate(Topic("bitmart", channel, "BTCUSDT"))
    with pytest.raises(AdapterError):
        ADAPTER.validate(Topic("bitmart", "funding", "BTCUSDT"))
    with pytest.raises(AdapterError):
        ADAPTER.validate(kline_topic("BTCUSDT", "3m"))
    with pytest.raises(AdapterError):
        ADAPTER.validate(Topic("binanceusdm", "trade", "BTCUSDT"))
    assert ADAPTER.route(kline_topic("BTCUSDT", "1m")) == "public"
    url = "wss://openapi-ws-v2.bitmart.com/api?protocol=1.1"
    assert ADAPTER.ws_url(url, "public") == url
    assert ADAPTER.ping_frame() == ADAPTER.ping_frame(now_ms=5) == '{"action":"ping"}' and ADAPTER.app_ping is True
    assert ADAPTER.channels == {"kline", "trade", "ticker", "bookticker", "depth"}
    assert ADAPTER.ws_headers == {}
    assert (ADAPTER.max_topics_per_connection, ADAPTER.max_subscribe_frame_bytes, ADAPTER.min_send_interval_ms) == (
        100,
        2000,
        0,
    )
