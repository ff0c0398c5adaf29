"""Kline deadlines on the exchange's clock as the connection sees it (``workers.kline_close``).

The simulator replays 2023/2024 recordings with their original exchange times, and a host clock may be ahead of the
exchange's: judged on the host clock, every bar is past its deadline on arrival (``closed: true`` at once, then one
``correction`` per update). Live: a real ``ExchangeConnection`` against a local WebSocket server (aiohttp) that
replays BitMart or Gate.io trades and kline updates with 2024 exchange times at real pace, into the real Redis.
Pure: the clock estimate (windowed minimum of host - exchange time, reset on reconnect) and the timer re-arm.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from control.topics import Topic
from tests.workers import test_kline_close_ws as ws
from tests.workers.test_kline_close_ws import GRACE_MS, TOLERANCE_MS, TOPICS, bitmart_bar, poll_stream
from workers.exchanges import get_adapter
from workers.kline_close import KlineCloser

# The live test's fixtures (a local exchange, the fenced publisher, a connection to the local exchange).
local, pub, connect = ws.local, ws.pub, ws.connect

pytestmark = pytest.mark.timeout(30)

#: The replayed bar: 2024-08-08 23:54 UTC, the first 1 m bar of the 2024 BTCUSDT recording the simulator replays.
BAR_OPEN_S = 1723161240
CLOSE_TIME = BAR_OPEN_S * 1000 + 59_999
TRADE_TOPICS = {"bitmart": "bitmart:trade:BTCUSDT", "gateio": "gateio:trade:BTC_USDT"}
TICK_S = 0.2  # replay pace: one trade and one kline update per tick while the bar forms


def bitmart_trade(trade_id: int, price: str, exchange_ms: int) -> str:
    """A ``futures/trade:BTCUSDT`` push (§1.6), ``created_at`` RFC 3339 at ``exchange_ms``."""
    created = datetime.fromtimestamp(exchange_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"
    row = {"trade_id": trade_id, "symbol": "BTCUSDT", "deal_price": price, "deal_vol": "1", "way": 1, "m": False,
           "created_at": created}  # fmt: skip
    return json.dumps({"group": "futures/trade:BTCUSDT", "data": [row]})


def gate_trade(trade_id: int, price: str, exchange_ms: int) -> str:
    """A ``futures.trades`` update (§2.5), frame and trade at ``exchange_ms``."""
    row = {"size": 1, "id": trade_id, "create_time": exchange_ms // 1000, "create_time_ms": exchange_ms,
           "price": price, "contract": "BTC_USDT"}  # fmt: skip
    return json.dumps({"time": exchange_ms // 1000, "time_ms": exchange_ms, "channel": "futures.trades",
                       "event": "update", "result": [row]})  # fmt: skip


def gate_candle(open_s: int, close: str, exchange_ms: int) -> str:
    """A ``futures.candlesticks`` update for ``1m_BTC_USDT`` sent at ``exchange_ms`` (the frame's ``time_ms``)."""
    item = {"t": open_s, "v": 7, "c": close, "h": "110", "l": "90", "o": "100", "n": "1m_BTC_USDT"}
    return json.dumps({"time": exchange_ms // 1000, "time_ms": exchange_ms, "channel": "futures.candlesticks",
                       "event": "update", "result": [item]})  # fmt: skip


def replay_frames(exchange: str, trade_id: int, price: str, open_s: int, exchange_ms: int) -> list[str]:
    """One replayed moment: the trade, then the kline update it caused (the simulator derives both from a trade)."""
    if exchange == "bitmart":
        return [bitmart_trade(trade_id, price, exchange_ms), bitmart_bar(open_s, price)]
    return [gate_trade(trade_id, price, exchange_ms), gate_candle(open_s, price, exchange_ms)]


@pytest.mark.parametrize("exchange", ["bitmart", "gateio"])
async def test_replayed_2024_bar_forms_then_closes_once_on_replayed_time(
    exchange: str, local: Any, connect: Any, redis: Redis
) -> None:
    """2024 exchange times at real pace: updates go out ``closed: false`` while the bar forms, then exactly one
    ``closed: true`` at the bar's end (replayed time) + grace, from the timer; the next bar does not close it again
    and nothing is a correction."""
    server = local(exchange)
    await server.start()
    conn = connect(exchange, server.url)
    topic, trades = TOPICS[exchange], TRADE_TOPICS[exchange]
    conn.set_topics([Topic.parse(topic), Topic.parse(trades)])
    await asyncio.wait_for(server.subscribed.wait(), 10)

    start_ms = CLOSE_TIME - 1500  # replayed time at host time host0: the bar ends 1.5 s into the replay
    host0 = time.time() * 1000

    def replayed_now() -> int:
        return int(start_ms + time.time() * 1000 - host0)

    sent: list[str] = []
    trade_id = 1000
    while (now := replayed_now()) <= CLOSE_TIME - 100:  # the bar forms: one trade + kline update per tick
        trade_id += 1
        price = str(100 + trade_id % 7)
        sent.append(price)
        for frame in replay_frames(exchange, trade_id, price, BAR_OPEN_S, now):
            await server.push(frame)
        await asyncio.sleep(TICK_S)
    deadline_host = host0 + CLOSE_TIME + GRACE_MS - start_ms  # host ms when replayed time reaches the deadline
    while replayed_now() < CLOSE_TIME + GRACE_MS + 600:  # trades of the next bar, no kline update yet
        trade_id += 1
        await server.push(replay_frames(exchange, trade_id, "105", BAR_OPEN_S + 60, replayed_now())[0])
        await asyncio.sleep(TICK_S)
    for frame in replay_frames(exchange, trade_id + 1, "106", BAR_OPEN_S + 60, replayed_now()):
        await server.push(frame)  # the next bar: the parser closes the first one again (same values)

    events = await poll_stream(redis, topic, lambda ev: any(e["open_time"] == (BAR_OPEN_S + 60) * 1000 for e in ev),
                               5, "the next bar")  # fmt: skip
    bar = [e for e in events if e["open_time"] == BAR_OPEN_S * 1000]
    first = [(e["close"], e["closed"], e.get("correction", False)) for e in bar]
    print(f"{exchange}: bar updates in the stream {first}")
    assert len(sent) >= 5
    assert first == [(p, False, False) for p in sent] + [(sent[-1], True, False)]
    [closed] = [e for e in events if e["closed"]]
    late_ms = closed["ts_received"] - deadline_host
    print(f"{exchange}: closed {late_ms:.0f} ms after the replayed deadline (grace {GRACE_MS} ms), "
          f"clock offset {conn._klines.offset_ms} ms")  # fmt: skip
    assert -1 <= late_ms <= TOLERANCE_MS  # never early: the estimate never runs ahead of the exchange's clock
    assert [(e["close"], e["closed"]) for e in events if e["open_time"] != BAR_OPEN_S * 1000] == [("106", False)]
    assert (conn._klines.timer_closes, conn._klines.corrections) == (1, 0)
    assert conn.reconnects == 0


# -- the estimate, pure ------------------------------------------------------------------------------------


def closer_for(exchange: str, clock: Any = time.time) -> tuple[KlineCloser, Any, list[tuple[str, Any]]]:
    emitted: list[tuple[str, Any]] = []
    closer = KlineCloser(active=True, grace_ms=1500, emit=lambda t, e: emitted.append((t, e)),
                         wanted=lambda t: True, clock=clock)  # fmt: skip
    return closer, closer.wrap(get_adapter(exchange).new_parser()), emitted


async def test_the_estimate_is_the_least_offset_of_a_window_and_a_reconnect_forgets_it() -> None:
    closer, parser, _ = closer_for("gateio")
    assert closer.offset_ms == 0  # no sample yet: the host clock
    host = 1_800_000_000_000
    exchange_ms = CLOSE_TIME - 30_000
    parser.parse(gate_trade(1, "100", exchange_ms), host + 80)  # delivered 80 ms after the trade (plus the skew)
    assert closer.offset_ms == host - exchange_ms + 80
    parser.parse(gate_trade(2, "100", exchange_ms + 1000), host + 1000 + 30)  # a faster delivery: the new minimum
    parser.parse(gate_trade(3, "100", exchange_ms + 2000), host + 2000 + 900)  # a slow one (a backlog): ignored
    assert closer.offset_ms == host - exchange_ms + 30
    book = {"time": 0, "time_ms": exchange_ms + 3000, "channel": "futures.order_book_update", "event": "update",
            "result": {"t": exchange_ms + 3000, "s": "BTC_USDT", "U": 1, "u": 2, "b": [], "a": []}}  # fmt: skip
    parser.parse(orjson.dumps(book), host + 3000 + 10)  # order-book updates count too
    assert closer.offset_ms == host - exchange_ms + 10
    # The exchange's clock steps 2 s back (or the host's ahead): followed once the old samples are a window old.
    parser.parse(gate_trade(4, "100", exchange_ms + 4000), host + 6000 + 10)
    assert closer.offset_ms == host - exchange_ms + 10
    parser.parse(gate_trade(5, "100", exchange_ms + 10_000), host + 12_000 + 10)
    parser.parse(gate_trade(6, "100", exchange_ms + 16_000), host + 18_000 + 10)
    assert closer.offset_ms == host - exchange_ms + 2000 + 10
    closer.reset()  # a reconnect: the next socket starts on the host clock
    assert closer.offset_ms == 0 and closer.status()["clock_offset_ms"] == 0


async def test_the_timer_follows_the_estimate_when_it_moves() -> None:
    """A bar armed on one estimate; the exchange's clock then shows 1.2 s further on (a replay faster than real
    time, or a sample of lower delay): the timer is re-armed to the new deadline, not left at the old one."""
    closer, parser, emitted = closer_for("gateio")
    host_ms = int(time.time() * 1000)
    deadline_ms = CLOSE_TIME + 1500  # on the exchange's clock
    parser.parse(gate_candle(BAR_OPEN_S, "101", deadline_ms - 1500), host_ms)  # 1.5 s before the deadline
    [timer] = closer._timers.values()
    parser.parse(gate_trade(1, "101", deadline_ms - 300), host_ms)  # the exchange is 1.2 s further than that
    parser.parse(gate_trade(2, "101", deadline_ms - 290), host_ms)  # and further: one re-arm for both
    assert not timer.cancelled()
    await asyncio.sleep(0)  # the re-arm runs at the next turn of the loop
    assert timer.cancelled() and closer.rearms == 1
    async with asyncio.timeout(1.2):  # the old timer would fire 1.5 s after host_ms
        while not emitted:
            await asyncio.sleep(0.01)
    [(_, closed)] = emitted
    assert closed["closed"] is True and closed["close"] == "101"
    assert host_ms + 290 - 1 <= closed["ts_received"] <= host_ms + 290 + TOLERANCE_MS
    assert (closer.timer_closes, closer.corrections) == (1, 0)


async def test_bitmart_klines_alone_follow_the_exchange_clock_from_the_first_change() -> None:
    """BitMart klines carry no time. Replayed 2024 bars on a connection with nothing else: before any clock sample
    the first bar only looks over (host clock), so it goes out forming; its next change tells that the exchange is
    inside it (its clock has reached the bar's open), and the parser's close at the next bar that it is past the
    bar: bars form and close once, from the first."""
    closer, parser, emitted = closer_for("bitmart")
    topic = TOPICS["bitmart"]
    a, b, c = BAR_OPEN_S, BAR_OPEN_S + 60, BAR_OPEN_S + 120

    def sent(frame: str) -> list[tuple[int, str, bool, bool]]:
        out = parser.parse(frame, int(time.time() * 1000)).events
        return [(e["open_time"] // 1000, e["close"], e["closed"], "correction" in e) for t, e in out if t == topic]

    assert sent(bitmart_bar(a, "100")) == [(a, "100", False, False)]  # past its deadline on the host clock only
    assert sent(bitmart_bar(a, "101")) == [(a, "101", False, False)]  # changed: the exchange is inside bar A
    await asyncio.sleep(0)  # the re-arm runs at the next turn of the loop
    [timer] = closer._timers.values()
    assert timer.when() - asyncio.get_running_loop().time() > 50  # A's deadline: about a bar length away
    assert sent(bitmart_bar(a, "101", (b, "102"))) == [
        (a, "101", False, False),
        (a, "101", True, False),
        (b, "102", False, False),
    ]  # the parser's close of A, once
    assert sent(bitmart_bar(b, "103", (c, "104"))) == [(b, "103", False, False), (b, "103", True, False),
                                                      (c, "104", False, False)]  # fmt: skip
    assert len(closer._timers) == 1 and (closer.timer_closes, closer.corrections) == (0, 0) and not emitted


async def test_a_quiet_bar_before_any_clock_sample_is_closed_after_the_grace() -> None:
    """Live, a subscribe in a quiet market: BitMart sends the last bar, long over, and nothing else. With no clock
    sample the host clock is all there is: the bar goes out forming and is closed ``grace_ms`` later."""
    closer, parser, emitted = closer_for("bitmart")
    seen_ms = int(time.time() * 1000)
    [(_, event)] = parser.parse(bitmart_bar(BAR_OPEN_S, "100"), seen_ms).events
    assert event["closed"] is False
    async with asyncio.timeout(1.5 + TOLERANCE_MS / 1000):
        while not emitted:
            await asyncio.sleep(0.02)  # bounded poll on the closer's output (its timer)
    [(_, closed)] = emitted
    assert closed == {**event, "closed": True, "ts_received": closed["ts_received"]}
    assert seen_ms + 1500 - 1 <= closed["ts_received"] <= seen_ms + 1500 + TOLERANCE_MS
    assert (closer.timer_closes, closer.corrections) == (1, 0)
