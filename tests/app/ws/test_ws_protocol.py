"""``app.ws.protocol`` and the shared event texts, without a server: channel mapping, ``since``, messages."""

from __future__ import annotations

import orjson
import pytest
from marshmallow import ValidationError

from app.sse_hub import Entry
from app.ws import protocol as p
from app.ws.feed import Chunks, EventTexts


def parse(message: dict[str, object]) -> p.Request:
    kind, _, request = p.parse_message(orjson.dumps(message), "bitmart")
    assert request is not None and request.kind == kind
    return request


def test_spec_channels_map_to_feedplane_topics() -> None:
    assert parse({"type": "subscribe", "channel": "candles", "instruments": ["btcusdt", "ETHUSDT"],
                  "parameters": {"timeframe": "5m"}}).topics == ["bitmart:kline:BTCUSDT:5m", "bitmart:kline:ETHUSDT:5m"]  # fmt: skip
    assert parse({"type": "subscribe", "channel": "candles", "instruments": ["BTCUSDT"]}).topics == [
        "bitmart:kline:BTCUSDT:1m"]  # fmt: skip
    for channel in ("trades", "ticks", "trade"):
        assert parse({"type": "subscribe", "channel": channel, "instruments": ["BTCUSDT"], "exchange": "binanceusdm"}
                     ).topics == ["binanceusdm:trade:BTCUSDT"]  # fmt: skip
    book = parse({"type": "subscribe", "channel": "orderbook", "instruments": ["BTC_USDT"], "exchange": "gate",
                  "parameters": {"depth": 20}})  # fmt: skip
    assert book.topics == ["gateio:depth:BTC_USDT"] and book.options == {"levels": 20}
    assert parse({"type": "subscribe", "channel": "bookticker", "instruments": ["BTCUSDT"]}).topics == [
        "bitmart:bookticker:BTCUSDT"]  # fmt: skip
    assert parse({"type": "unsubscribe", "channel": "positions", "parameters": {"account": "alice"}}).topics == [
        "bitmart:position:alice"]  # fmt: skip
    assert parse({"type": "subscribe", "channel": "balances"}).topics == ["bitmart:balance:default"]
    assert parse({"type": "subscribe", "topics": ["bitmart:trade:BTCUSDT", "bitmart:trade:BTCUSDT"]}).topics == [
        "bitmart:trade:BTCUSDT"]  # fmt: skip


def test_since_per_topic_or_one_for_one_topic() -> None:
    one = parse({"type": "subscribe", "topics": ["bitmart:trade:BTCUSDT"], "since": "5-1", "id": "a"})
    assert one.since == {"bitmart:trade:BTCUSDT": (5, 1)} and one.id == "a"
    two = ["bitmart:trade:BTCUSDT", "bitmart:trade:ETHUSDT"]
    assert parse({"type": "subscribe", "topics": two, "since": {two[1]: "7-0"}}).since == {two[1]: (7, 0)}
    for bad in ("5-1", {"bitmart:trade:XRPUSDT": "1-0"}, {two[0]: "x"}, {two[0]: 5}, 12):
        with pytest.raises(ValidationError) as exc:
            parse({"type": "subscribe", "topics": two, "since": bad})
        assert "since" in exc.value.normalized_messages()


@pytest.mark.parametrize("message", [
    {"type": "subscribe", "channel": "candles", "topics": ["bitmart:trade:BTCUSDT"]},
    {"type": "subscribe", "topics": ["bitmart:trade:BTCUSDT"], "exchange": "bitmart"},
    {"type": "subscribe", "channel": "orders", "instruments": ["BTCUSDT"]},
    {"type": "subscribe", "channel": "trades", "instruments": ["BTCUSDT"], "extra": 1},
    {"type": "subscribe", "channel": "trades", "instruments": ["BTCUSDT"], "exchange": "kraken"},
    {"type": "subscribe", "channel": "trades", "instruments": ["BTCUSDT"], "id": True},
    {"type": "subscribe", "channel": "orderbook", "instruments": ["BTCUSDT"], "parameters": {"depth": 0}},
])  # fmt: skip
def test_invalid_messages(message: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        parse(message)


def test_event_text_splices_the_raw_event_and_the_cache_checks_the_bytes() -> None:
    data = b'{"type":"trade","price":"0.000010000","size":"1E-8"}'
    entry = Entry((5, 0), "5-0", "bitmart:trade:BTCUSDT", "trade", data)
    text = p.event_text(entry)
    assert orjson.loads(text) == {"type": "trade", "topic": "bitmart:trade:BTCUSDT", "cursor": "5-0",
                                  "data": orjson.loads(data)}  # fmt: skip
    assert '"price":"0.000010000","size":"1E-8"' in text  # the worker's bytes, not re-encoded
    texts = EventTexts(size=2)
    assert texts.text(entry) is texts.text(entry)  # built once for the entry the hub hands every client
    reused = entry._replace(event="gap", data=b'{"type":"gap","topic":"x"}')  # same id, stream recreated
    assert orjson.loads(texts.text(reused))["type"] == "gap" and orjson.loads(texts.text(entry))["type"] == "trade"


def test_chunks_are_joined_once_per_run_and_split_by_count() -> None:
    topic = "bitmart:trade:BTCUSDT"
    run = [Entry((i, 0), f"{i}-0", topic, "trade", b'{"type":"trade","i":%d}' % i) for i in range(1, 1203)]
    chunks = Chunks()
    items = chunks.items(topic, run)
    assert [(n, cursor) for _, _, cursor, n in items] == [(500, "500-0"), (500, "1000-0"), (202, "1202-0")]
    assert [orjson.loads(f"[{text}]")[0]["cursor"] for text, *_ in items] == ["1-0", "501-0", "1001-0"]
    again = chunks.items(topic, run)  # another client of the same hub run: the same text objects
    assert all(a[0] is b[0] for a, b in zip(items, again))
    lagging = chunks.items(topic, run[700:])  # a client behind gets its own chunks, right content
    assert sum(n for *_, n in lagging) == 502 and orjson.loads(f"[{lagging[0][0]}]")[0]["cursor"] == "701-0"
    assert chunks.items(topic, run[:1]) == [(p.event_text(run[0]), topic, "1-0", 1)]
