"""``/ws`` protocol against a real Hypercorn and a real Redis: connected, acks with states, events with cursors,
gap pass-through, INVALID_SUBSCRIPTION for topics nobody streams, ``ensure``, unsubscribe, resume by ``since``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
from redis.asyncio import Redis

from control import keys
from control.store import ControlStore
from tests.app.ws._ws import BASE_MS, KLINE, TRADE, desire, open_ws, xadd_range

Start = Callable[..., Any]


async def test_spec_subscribe_acks_states_then_events_with_cursors(start_server: Start, session: aiohttp.ClientSession,
                                                                   redis: Redis) -> None:  # fmt: skip
    await desire(redis, KLINE, state="active")
    await desire(redis, TRADE)  # no worker state yet: pending
    server = await start_server()
    ws = await open_ws(session, server)
    connected = await ws.next()
    assert connected["type"] == "connected" and connected["limits"]["subscriptions"] == 50
    await ws.send({"type": "subscribe", "id": "c1", "channel": "candles", "instruments": ["sseappusdt"],
                   "exchange": "bitmart", "parameters": {"timeframe": "1m"}})  # fmt: skip
    ack = await ws.next()
    assert ack["type"] == "subscribed" and ack["id"] == "c1" and ack["channel"] == "candles"
    assert [(s["topic"], s["state"], s["cursor"]) for s in ack["subscriptions"]] == [(KLINE, "active", "0-0")]
    await ws.send({"type": "subscribe", "id": 2, "channel": "ticks", "instruments": ["SSEAPPUSDT"]})  # ticks = trades
    ack = await ws.next()
    assert [(s["topic"], s["state"]) for s in ack["subscriptions"]] == [(TRADE, "pending")]
    await xadd_range(redis, KLINE, 0, 2)
    await xadd_range(redis, TRADE, 2, 1)
    gap = {"type": "gap", "topic": TRADE, "reason": "reconnect", "since": BASE_MS, "until": None}
    await redis.xadd(keys.event_stream(TRADE), {keys.STREAM_FIELD: orjson.dumps(gap)}, id=f"{BASE_MS + 3}-0")
    got = await ws.events(4)
    assert [(m["type"], m["topic"], m["cursor"]) for m in got] == [
        ("kline", KLINE, f"{BASE_MS}-0"), ("kline", KLINE, f"{BASE_MS + 1}-0"),
        ("trade", TRADE, f"{BASE_MS + 2}-0"), ("gap", TRADE, f"{BASE_MS + 3}-0"),
    ]  # fmt: skip
    assert got[2]["data"]["price"] == "102.25" and got[2]["data"]["size"] == "0.001"  # decimal strings kept
    assert got[3]["data"] == gap
    await ws.ws.close()


async def test_topic_nobody_streams_is_invalid_and_desired_state_is_untouched(
    start_server: Start, session: aiohttp.ClientSession, redis: Redis
) -> None:
    await desire(redis, KLINE)
    server = await start_server()
    ws = await open_ws(session, server)
    await ws.until("connected")
    await ws.send({"type": "subscribe", "id": "x", "topics": [KLINE, TRADE]})
    error = await ws.next()
    assert error["type"] == "error" and error["id"] == "x"
    assert error["error"]["code"] == "INVALID_SUBSCRIPTION" and error["error"]["topics"] == [TRADE]
    assert "POST /trades/subscribe" in error["error"]["message"] and "ensure" in error["error"]["message"]
    assert isinstance(error["error"]["timestamp"], int)
    ack = await ws.next()  # the streamed one is still subscribed
    assert [s["topic"] for s in ack["subscriptions"]] == [KLINE]
    assert set(await ControlStore(redis).desired()) == {KLINE}


async def test_ensure_works_like_post_subscribe(start_server: Start, session: aiohttp.ClientSession,
                                                redis: Redis) -> None:  # fmt: skip
    server = await start_server()
    ws = await open_ws(session, server)
    await ws.until("connected")
    await ws.send({"type": "subscribe", "channel": "orderbook", "instruments": ["SSEAPPUSDT"], "ensure": True,
                   "parameters": {"depth": 10}})  # fmt: skip
    ack = await ws.next()
    topic = "bitmart:depth:SSEAPPUSDT"
    assert ack["type"] == "subscribed" and ack["subscriptions"][0] == {"topic": topic, "state": "pending",
                                                                       "error": None, "cursor": "0-0"}  # fmt: skip
    store = ControlStore(redis)
    assert set(await store.desired()) == {topic}
    assert (await store.options())[topic] == {"levels": 10}


async def test_since_replays_from_the_stream_then_live_without_duplicates(
    start_server: Start, session: aiohttp.ClientSession, redis: Redis
) -> None:
    await desire(redis, TRADE, state="active")
    ids = await xadd_range(redis, TRADE, 0, 10)
    server = await start_server()
    ws = await open_ws(session, server)
    await ws.until("connected")
    await ws.send({"type": "subscribe", "topics": [TRADE], "since": ids[4]})
    ack = await ws.next()
    assert ack["subscriptions"][0]["cursor"] == ids[4]
    replayed = await ws.events(5)
    assert [m["cursor"] for m in replayed] == ids[5:]
    live = await xadd_range(redis, TRADE, 10, 3)
    assert [m["cursor"] for m in await ws.events(3)] == live
    # a second subscribe of the same topic is acknowledged again, not replayed
    await ws.send({"type": "subscribe", "id": "again", "topics": [TRADE], "since": ids[0]})
    again = await ws.next()
    assert again["id"] == "again" and again["subscriptions"][0]["cursor"] == live[-1]
    more = await xadd_range(redis, TRADE, 13, 1)
    assert [m["cursor"] for m in await ws.events(1)] == more


async def test_trimmed_cursor_gets_a_gap_first(start_server: Start, session: aiohttp.ClientSession,
                                               redis: Redis) -> None:  # fmt: skip
    await desire(redis, TRADE, state="active")
    ids = await xadd_range(redis, TRADE, 0, 10)
    await redis.xtrim(keys.event_stream(TRADE), maxlen=3, approximate=False)
    server = await start_server()
    ws = await open_ws(session, server)
    await ws.until("connected")
    await ws.send({"type": "subscribe", "topics": [TRADE], "since": {TRADE: ids[1]}})
    await ws.until("subscribed")
    gap = await ws.next()
    assert gap["type"] == "gap" and gap["data"]["reason"] == "retention" and gap["data"]["topic"] == TRADE
    assert [m["cursor"] for m in await ws.events(3)] == ids[7:]


async def test_unsubscribe_stops_events_and_keeps_desired_state(
    start_server: Start, session: aiohttp.ClientSession, redis: Redis
) -> None:
    await desire(redis, KLINE, TRADE, state="active")
    server = await start_server()
    ws = await open_ws(session, server)
    await ws.until("connected")
    await ws.send({"type": "subscribe", "topics": [KLINE, TRADE]})
    await ws.until("subscribed")
    await ws.send({"type": "unsubscribe", "id": "u", "topics": [KLINE, "bitmart:trade:NOPEUSDT"]})
    unsub = await ws.next()
    assert unsub == {"type": "unsubscribed", "id": "u", "topics": [KLINE], "not_subscribed": ["bitmart:trade:NOPEUSDT"],
                     "timestamp": unsub["timestamp"]}  # fmt: skip
    await xadd_range(redis, KLINE, 0, 1)
    trade = await xadd_range(redis, TRADE, 1, 1)
    assert [(m["topic"], m["cursor"]) for m in await ws.events(1)] == [(TRADE, trade[0])]
    assert set(await ControlStore(redis).desired()) == {KLINE, TRADE}


async def test_bad_messages_answer_invalid_subscription_and_keep_the_connection(
    start_server: Start, session: aiohttp.ClientSession, redis: Redis
) -> None:
    server = await start_server()
    ws = await open_ws(session, server)
    await ws.until("connected")
    bad: list[Any] = [
        b"not json", [1], {"type": "subscribe"}, {"type": "subscribe", "channel": "candles", "instruments": ["BTC USDT"]},
        {"type": "subscribe", "channel": "weather", "instruments": ["X"]}, {"type": "nope", "id": 7},
        {"type": "subscribe", "topics": [TRADE], "since": "yesterday"},
        {"type": "subscribe", "channel": "candles", "instruments": ["BTCUSDT"], "parameters": {"timeframe": "3m"}},
    ]  # fmt: skip
    for message in bad:
        await ws.ws.send_bytes(message if isinstance(message, bytes) else orjson.dumps(message))
        error = await ws.next()
        assert error["type"] == "error" and error["error"]["code"] == "INVALID_SUBSCRIPTION", (message, error)
        assert error["error"]["details"], error
    await ws.send({"type": "ping", "id": 1})
    assert (await ws.next())["type"] == "pong"
