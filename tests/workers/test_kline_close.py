"""``KlineCloser`` with the recorded/fixture BitMart and Gate kline frames through the real parsers: a clock set
relative to the recorded times, the event loop's timers. The live counterpart (a real local WebSocket server, the
real Redis) is ``test_kline_close_ws.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from control.settings import Settings
from scripts.tapes import BITMART_FIXTURES, GATE_2023, read_cryptofeed_ws, read_jkorf
from workers.exchanges import get_adapter
from workers.exchanges.base import FrameParser
from workers.kline_close import KlineCloser
from workers.stitch import CatchUp, order_key

pytestmark = pytest.mark.timeout(30)

#: Allowed lateness of a close behind its deadline (a loaded 2-core test machine).
TOLERANCE_MS = 700


class ShiftedClock:
    """Epoch seconds that start at ``start`` and run with the event loop's clock (a recorded time, replayed now)."""

    def __init__(self, start: float) -> None:
        self.offset = start - asyncio.get_running_loop().time()

    def __call__(self) -> float:
        return self.offset + asyncio.get_running_loop().time()


class Emitted:
    """What a closer published through its ``emit``, awaitable."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._poke = asyncio.Event()

    def __call__(self, topic: str, event: dict[str, Any]) -> None:
        self.events.append((topic, event))
        self._poke.set()

    async def wait(self, n: int = 1, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.events) < n:
                self._poke.clear()
                await self._poke.wait()


def closing(
    exchange: str, clock: Callable[[], float], grace_ms: int, topics: set[str]
) -> tuple[KlineCloser, FrameParser, Emitted]:
    emitted = Emitted()
    closer = KlineCloser(active=not get_adapter(exchange).kline_closed_flag, grace_ms=grace_ms, emit=emitted,
                         wanted=topics.__contains__, clock=clock)  # fmt: skip
    return closer, closer.wrap(get_adapter(exchange).new_parser()), emitted


def recorded_gate_candle() -> tuple[float, str]:
    """The 2023 Gate capture's only candle frame: FRONT_USDT 1m, ``v`` 0 (a quiet market), sent 12:09:25.934 UTC
    for the bar 12:09:00-12:09:59.999 (exchanges.md §2.5); no next bar came before the capture ended."""
    [(ts, raw)] = [(ts, raw) for ts, raw in read_cryptofeed_ws(GATE_2023) if "futures.candlesticks" in raw
                   and '"update"' in raw]  # fmt: skip
    return ts, raw


def retimed(raw: str, time_ms: int) -> str:
    """The recorded Gate frame as sent at ``time_ms`` (its frame time, which the closer takes as the exchange's
    clock); every other field as recorded."""
    return orjson.dumps({**orjson.loads(raw), "time": time_ms // 1000, "time_ms": time_ms}).decode()


def jkorf_push(name: str, tag: str = "") -> dict[str, Any]:
    [frame] = [f for f in read_jkorf(f"{BITMART_FIXTURES}/{name}") if f.direction == "=" and f.tag == tag]
    return orjson.loads(frame.raw)


def with_items(push: dict[str, Any], *items: dict[str, Any]) -> str:
    """``push`` (a BitMart kline frame) with other ``items`` (derived frames: later pushes of the same stream)."""
    return orjson.dumps({**push, "data": {**push["data"], "items": list(items)}}).decode()


def test_default_grace_is_1500_ms() -> None:
    assert Settings().kline_close_grace_ms == 1500
    assert Settings.from_env({"KLINE_CLOSE_GRACE_MS": "250"}).kline_close_grace_ms == 250


async def test_recorded_gate_quiet_bar_is_closed_at_its_deadline_with_the_last_values() -> None:
    _, recorded = recorded_gate_candle()
    grace = Settings().kline_close_grace_ms
    deadline_ms = 1684930199999 + grace
    raw = retimed(recorded, deadline_ms - 150)  # deadlines are on the exchange's clock: the frame's time
    clock = ShiftedClock((deadline_ms - 150) / 1000)  # the frame arrives 150 ms before its bar's deadline
    topic = "gateio:kline:FRONT_USDT:1m"
    closer, parser, emitted = closing("gateio", clock, grace, {topic})

    [(_, forming)] = parser.parse(raw, int(clock() * 1000)).events
    assert forming["closed"] is False and emitted.events == []
    await emitted.wait()

    [(name, closed)] = emitted.events
    assert name == topic
    assert closed == {**forming, "closed": True, "ts_received": closed["ts_received"]}  # the last values, closed
    assert deadline_ms - 1 <= closed["ts_received"] <= deadline_ms + TOLERANCE_MS  # a timer may fire <1 ms early
    assert "correction" not in closed
    assert parser.parse(raw, int(clock() * 1000)).events == []  # the same bar again: not closed a second time
    assert (closer.timer_closes, closer.repeats, closer.corrections) == (1, 1, 0)


async def test_recorded_gate_bar_seen_after_its_deadline_goes_out_closed_once() -> None:
    """Subscribing in a quiet market gets the last bar, possibly long over (here: 2023): it is final as it is."""
    _, recorded = recorded_gate_candle()
    topic = "gateio:kline:FRONT_USDT:1m"
    closer, parser, emitted = closing("gateio", time.time, 1500, {topic})
    now_ms = int(time.time() * 1000)
    raw = retimed(recorded, now_ms)  # the last bar, sent now

    [(_, event)] = parser.parse(raw, now_ms).events
    assert event["closed"] is True and event["close"] == "0.1701" and "correction" not in event
    assert parser.parse(raw, now_ms + 1).events == []
    assert emitted.events == [] and closer.status()["forming"] == 0


async def test_bitmart_fixture_bar_closed_on_time_then_the_next_bar_does_not_close_it_again() -> None:
    push = jkorf_push("Klines.txt")  # ETHUSDT 1D, ts 1721030401 (the fixture's real-looking frame)
    [item] = push["data"]["items"]
    close_time = item["ts"] * 1000 + 86_400_000 - 1
    clock = ShiftedClock((close_time + 1500 - 100) / 1000)
    topic = "bitmart:kline:ETHUSDT:1d"
    closer, parser, emitted = closing("bitmart", clock, 1500, {topic})

    assert [e["closed"] for _, e in parser.parse(orjson.dumps(push), 1).events] == [False]
    await emitted.wait()
    assert [(e["close"], e["closed"]) for _, e in emitted.events] == [("3352.2", True)]

    next_bar = {**item, "ts": item["ts"] + 86_400, "o": "3352.2", "c": "3360"}
    out = parser.parse(with_items(push, next_bar), 2).events  # the parser closes the first bar again: dropped
    assert [(e["open_time"], e["close"], e["closed"]) for _, e in out] == [(next_bar["ts"] * 1000, "3360", False)]
    assert (closer.timer_closes, closer.repeats, closer.corrections) == (1, 1, 0)


async def test_bitmart_fixture_bar_updated_after_its_close_is_one_correction() -> None:
    push = jkorf_push("Concurrent.txt", "1")  # ETHUSDT 1H
    [item] = push["data"]["items"]
    close_time = item["ts"] * 1000 + 3_600_000 - 1
    clock = ShiftedClock((close_time + 200 - 50) / 1000)
    topic = "bitmart:kline:ETHUSDT:1h"
    closer, parser, emitted = closing("bitmart", clock, 200, {topic})
    parser.parse(orjson.dumps(push), 1)
    await emitted.wait()

    late = {**item, "c": "3350", "l": "3330"}  # a trade near the end, pushed with the next bar in one frame
    next_bar = {**item, "ts": item["ts"] + 3600, "o": "3350", "c": "3351"}
    out = [(e["open_time"] // 1000, e["close"], e["closed"], e.get("correction"))
           for _, e in parser.parse(with_items(push, late, next_bar), 2).events]  # fmt: skip
    assert out == [(item["ts"], "3350", True, True), (next_bar["ts"], "3351", False, None)]
    assert (closer.timer_closes, closer.repeats, closer.corrections) == (1, 1, 1)
    assert len(emitted.events) == 1


async def test_the_next_bar_before_the_deadline_closes_as_before_and_cancels_the_timer() -> None:
    push = jkorf_push("Concurrent.txt", "1")
    [item] = push["data"]["items"]
    clock = ShiftedClock(item["ts"] + 60)  # mid-bar
    topic = "bitmart:kline:ETHUSDT:1h"
    closer, parser, emitted = closing("bitmart", clock, 1500, {topic})
    parser.parse(orjson.dumps(push), 1)
    [timer] = closer._timers.values()
    out = parser.parse(with_items(push, {**item, "ts": item["ts"] + 3600}), 2).events
    assert [(e["open_time"] // 1000, e["closed"]) for _, e in out] == [(item["ts"], True), (item["ts"] + 3600, False)]
    assert timer.cancelled() and len(closer._timers) == 1  # the first bar's timer gone, the next bar's armed
    assert emitted.events == []


async def test_unsubscribe_and_disconnect_cancel_the_timers() -> None:
    push = jkorf_push("Concurrent.txt", "1")
    [item] = push["data"]["items"]
    topics = {"bitmart:kline:ETHUSDT:1h"}
    clock = ShiftedClock(item["ts"] + 60)
    closer, parser, _ = closing("bitmart", clock, 1500, topics)
    parser.parse(orjson.dumps(push), 1)
    [timer] = closer._timers.values()
    closer.retain(set())
    assert timer.cancelled() and closer.status()["forming"] == 0

    parser.parse(orjson.dumps(push), 2)
    [timer] = closer._timers.values()
    closer.reset()
    assert timer.cancelled() and not closer._timers

    topics.clear()  # a frame of a topic no longer desired (its unsubscribe in flight): not tracked
    assert [e["closed"] for _, e in parser.parse(orjson.dumps(push), 3).events] == [False]
    assert not closer._timers


async def test_a_final_bar_is_not_closed_again_after_a_reconnect() -> None:
    push = jkorf_push("Klines.txt")
    [item] = push["data"]["items"]
    topic = "bitmart:kline:ETHUSDT:1d"
    closer, parser, _ = closing("bitmart", time.time, 1500, {topic})
    now_ms = int(time.time() * 1000)
    closer.observe(now_ms, now_ms)  # the exchange's clock is known (e.g. a trade just now): the 2024 bar is over
    assert [e["closed"] for _, e in parser.parse(orjson.dumps(push), 1).events] == [True]
    closer.reset()  # the socket dropped
    fresh = closer.wrap(get_adapter("bitmart").new_parser())  # the next socket re-sends the bar
    assert fresh.parse(orjson.dumps(push), 2).events == []
    changed = fresh.parse(with_items(push, {**item, "c": "3353"}), 3).events
    assert [(e["close"], e["closed"], e["correction"]) for _, e in changed] == [("3353", True, True)]


def test_binance_is_left_alone() -> None:
    parser = get_adapter("binanceusdm").new_parser()
    closer = KlineCloser(active=not get_adapter("binanceusdm").kline_closed_flag, grace_ms=1500,
                         emit=lambda t, e: None, wanted=lambda t: True, clock=time.time)  # fmt: skip
    assert closer.wrap(parser) is parser
    assert not get_adapter("bitmart").kline_closed_flag and not get_adapter("gateio").kline_closed_flag


def test_catch_up_after_a_handover_keeps_one_closed_bar() -> None:
    """A quiet Gate bar closed by the old socket (the marker); the new socket got the bar re-sent with a newer
    exchange time and closed it itself: neither the re-sent update nor its close goes out after the marker."""
    bar = {"type": "kline", "exchange": "gateio", "symbol": "FRONT_USDT", "timeframe": "1m",
           "open_time": 1684930140000, "close_time": 1684930199999, "open": "0.1701", "high": "0.1701",
           "low": "0.1701", "close": "0.1701", "volume": "0", "closed": False, "ts_exchange": 1684930165934,
           "ts_received": 1}  # fmt: skip
    catchup = CatchUp({**bar, "closed": True})
    resent = {**bar, "ts_exchange": 1684930290000, "ts_received": 2}
    assert catchup.admit(resent) == (False, False)
    assert catchup.admit({**resent, "closed": True}) == (False, True)
    assert order_key(bar) < order_key({**bar, "closed": True}) < order_key({**bar, "open_time": 1684930200000})
    assert CatchUp(bar).admit({**bar, "close": "2", "ts_exchange": 1684930165999}) == (True, True)
