"""Closing klines on time for exchanges without a closed flag (BitMart, Gate.io futures).

BitMart's ``futures/klineBin*`` and Gate's ``futures.candlesticks`` pushes carry no "bar is final" flag, and they
are sent only when something changed (exchanges.md §1.6, §2.5). The parsers infer a close when a later bar
arrives, which in a quiet market can be minutes late. ``KlineCloser`` (one per ``ExchangeConnection``) bounds
that: the last values seen of each topic's forming bar go out again with ``closed: true`` no later than
``close_time + KLINE_CLOSE_GRACE_MS`` (epoch ms, on the exchange's clock, see below), and from then on that bar
is final:

- the parser's own close when the next bar arrives, or a repeat of the bar (e.g. after a reconnect), with the
  same values is dropped: one closed bar per bar;
- an update of a final bar with other values (a trade pushed later than the grace) goes out as
  ``closed: true, correction: true``; it is the bar's new final state;
- an update for an older bar than the last final one is dropped (``stale``).

A bar first seen after its deadline (a subscribe in a quiet market gets the last bar, long over) goes out as
closed at once, once the exchange's clock is known (below). Before a socket's first clock sample only the host
clock says the bar is over, and a replay or a skewed host makes it say so of every bar: the bar goes out forming
and is closed ``grace_ms`` later, unless a clock sample moves its deadline first, or the bar changes again (the
exchange pushes only on change, so it is still inside the bar: its clock has reached ``open_time``, a sample).

Deadlines are judged on the exchange's clock as this connection sees it, not the host's: the simulator
(``scripts/run --replay``, the e2e and chaos suites) replays 2023/2024 recordings with their original exchange
times, so on the host clock every bar would be past its deadline on arrival (its first update ``closed: true``,
every later one a correction); live, a host clock ahead of the exchange's by more than the grace would turn late
trades into corrections the same way. The closer keeps ``offset_ms`` = host ms - exchange ms, so the exchange's
now is ``host now - offset_ms`` and a bar's deadline in host time is ``close_time + grace + offset_ms``. Samples:

- every frame whose first event (or book update) carries a ``ts_exchange`` (trades, tickers, best bid/ask,
  books, Gate's candlesticks, which carry the frame's time): ``ts_received - ts_exchange``;
- every close the parser makes (a later bar arrived, so the exchange's clock is past the closed bar's
  ``close_time``): host now - (``close_time`` + 1). BitMart klines carry no time at all; this keeps a
  klines-only connection on the exchange's clock from its first change of bar;
- a change of a bar held forming for lack of a sample (above): host now - ``open_time``.

Each sample is the true offset plus the delivery delay, which is never negative, so the estimate is the minimum
sample over the last ``CLOCK_WINDOW_MS`` to twice that (two buckets): a delayed frame or a backlog does not move
it, a clock that really moved is followed within a window, and the exchange's clock is never overestimated, so a
bar is never closed early. Until the first sample, and again after each reconnect (``reset``: the next socket may
reach another server, or after a re-plan another address), the offset is 0: the host clock. Timers are re-armed
when the estimate moves by ``CLOCK_REARM_MS`` or more (a replay at another speed than real time moves it all the
time), at most once per turn of the event loop.

Exchanges with a flag (Binance ``k.x``) declare ``kline_closed_flag = True`` on their adapter and the closer stays
out of the way: ``wrap`` returns their parser unchanged.

Cost: the closer sees a frame only through ``wrap``'s parser, and only kline frames reach ``admit`` (every
frame carries one channel: BitMart's ``group``, Gate's ``channel``). Per frame it reads one ``ts_exchange`` and
compares one sample with the current minimum; per kline update it does a dict update; per new bar it arms one
timer on the event loop's clock (``loop.call_later``; no thread, no polling). Timers are cancelled when a topic
is no longer wanted (``retain``), when the socket drops (``reset``: the forming bars' last values may be missing
updates, and the reconnect's gap event covers them) and when the connection ends.
Closes made by the timer go out through ``emit``, the connection's own publish path (fenced, buffered in
standby, dropped once frozen), like every other event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from workers.exchanges.base import FrameParser, Parsed

Event = dict[str, Any]
#: The clock estimate is the minimum sample of the current bucket and the one before; a bucket lasts this long
#: (host ms). Long enough to hold a sample of low delay, short enough to follow a clock that moved.
CLOCK_WINDOW_MS = 5_000
#: Timers are re-armed when the estimate moved this far (ms) from the one they were armed with.
CLOCK_REARM_MS = 100
_NO_SAMPLE = 1 << 62  # an empty bucket's minimum (ms, beyond any real offset)
#: A bar's values as compared for "the same bar again": open, high, low, close, volume (decimal strings).
Values = tuple[Any, ...]


def _values(bar: Event) -> Values:
    return bar["open"], bar["high"], bar["low"], bar["close"], bar["volume"]


class KlineCloser:
    """Publishes each forming bar as closed by ``close_time + grace_ms``; see the module docstring.

    :param active: False for exchanges that flag closed bars themselves (``adapter.kline_closed_flag``): then
        every method is a no-op and ``wrap`` returns the parser as it is.
    :param grace_ms: ``KLINE_CLOSE_GRACE_MS``, how long after ``close_time`` (ms) the bar is published as closed.
    :param emit: ``emit(topic, event)`` publishes one event the way the connection publishes socket events.
    :param wanted: whether a topic is still desired on this connection (others are neither tracked nor closed).
    :param clock: epoch seconds (the connection's clock, the one ``ts_received`` is taken from); a deadline is
        ``close_time + grace_ms + offset_ms`` ms on that clock, waited for with the event loop's timers.

    ``offset_ms``: the estimate of host ms - exchange ms (module docstring), 0 until the first sample.
    Counters: ``timer_closes`` (bars closed by the deadline, incl. those first seen after it), ``corrections``
    (final bars re-published with other values), ``repeats`` (closed bars or updates dropped as the same final
    bar again), ``stale`` (updates of bars older than the last final one, dropped), ``rearms`` (times the timers
    were re-armed because the estimate moved).
    """

    __slots__ = ("_armed_offset", "_bucket_end", "_bucket_min", "_clock", "_emit", "_final", "_open", "_prev_min",
                 "_provisional", "_rearm_pending", "_timers", "_wanted", "active", "corrections", "grace_ms",
                 "offset_ms", "rearms", "repeats", "stale", "timer_closes")  # fmt: skip

    def __init__(
        self,
        *,
        active: bool,
        grace_ms: int,
        emit: Callable[[str, Event], Any],
        wanted: Callable[[str], bool],
        clock: Callable[[], float],
    ) -> None:
        self.active, self.grace_ms = active, grace_ms
        self._emit, self._wanted, self._clock = emit, wanted, clock
        self._open: dict[str, Event] = {}  # topic -> last update of its forming (not yet final) bar
        self._final: dict[str, tuple[int, Values]] = {}  # topic -> (open_time, values) of its last final bar
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._provisional: set[str] = set()  # forming bars past their deadline on the host clock, no sample yet
        self.timer_closes = self.corrections = self.repeats = self.stale = self.rearms = 0
        self.offset_ms = self._armed_offset = 0  # ms; see _forget_clock
        self._rearm_pending = False  # a _rearm is scheduled (call_soon)
        self._bucket_min = self._prev_min = _NO_SAMPLE  # the least sample of the current / previous bucket (ms)
        self._bucket_end = -_NO_SAMPLE  # host ms at which the current bucket ends

    def wrap(self, parser: FrameParser) -> FrameParser:
        """``parser`` with its kline events passed through ``admit`` (unchanged when the closer is not active)."""
        return _ClosingParser(parser, self) if self.active else parser

    def observe(self, host_ms: int, exchange_ms: int) -> None:
        """One clock sample: a frame received at ``host_ms`` (epoch ms, the connection's clock) told that the
        exchange's clock had reached ``exchange_ms`` (epoch ms). Keeps ``offset_ms`` at the minimum sample of the
        last one to two ``CLOCK_WINDOW_MS`` and re-arms the timers (at the next loop turn) when it moved by
        ``CLOCK_REARM_MS``. Called for most frames: the usual case is one subtraction and two comparisons."""
        sample = host_ms - exchange_ms
        if host_ms < self._bucket_end:
            if sample >= self._bucket_min:
                return
            self._bucket_min = sample
        else:  # a new bucket; the previous one counts unless it ended a whole window ago (a silence)
            self._prev_min = self._bucket_min if host_ms < self._bucket_end + CLOCK_WINDOW_MS else _NO_SAMPLE
            self._bucket_min, self._bucket_end = sample, host_ms + CLOCK_WINDOW_MS
        offset = min(self._prev_min, self._bucket_min)
        if offset == self.offset_ms:
            return
        self.offset_ms = offset
        if self._timers and not self._rearm_pending and abs(offset - self._armed_offset) >= CLOCK_REARM_MS:
            # Once per loop turn at most: a replay faster than real time moves the estimate with every frame.
            self._rearm_pending = True
            asyncio.get_running_loop().call_soon(self._rearm)

    def _rearm(self) -> None:
        """Move every forming bar's timer to its deadline on the current estimate."""
        self._rearm_pending = False
        if not self._timers:
            return
        self.rearms += 1
        self._armed_offset = offset = self.offset_ms
        later = asyncio.get_running_loop().call_later
        now_ms = self._clock() * 1000.0
        for topic, timer in self._timers.items():
            timer.cancel()
            delay_ms = self._open[topic]["close_time"] + self.grace_ms + offset - now_ms
            self._timers[topic] = later(max(delay_ms, 0.0) / 1000.0, self._fire, topic)

    def _forget_clock(self) -> None:
        """Back to the host clock (offset 0) with no samples."""
        self.offset_ms = self._armed_offset = 0
        self._bucket_min = self._prev_min = _NO_SAMPLE
        self._bucket_end = -_NO_SAMPLE

    def admit(self, events: list[tuple[str, Event]]) -> list[tuple[str, Event]]:
        """The events of one parsed frame as they should be published: repeats of final bars removed, late
        updates of final bars turned into corrections, bars already past their deadline closed; timers armed for
        new forming bars. Non-kline events and topics not wanted pass unchanged."""
        out: list[tuple[str, Event]] = []
        for topic, event in events:
            if event.get("type") != "kline" or not self._wanted(topic):
                out.append((topic, event))
                continue
            admitted = self._admit(topic, event, out)
            if admitted is not None:
                out.append((topic, admitted))
        return out

    def _admit(self, topic: str, event: Event, out: list[tuple[str, Event]]) -> Event | None:
        """What to publish for one kline update (None: nothing); a forming bar it supersedes is closed into
        ``out`` first."""
        open_time = event["open_time"]
        if event["closed"]:  # the parser's close: a later bar came, so the exchange's clock is past this one
            self.observe(int(self._clock() * 1000), event["close_time"] + 1)  # now >= receipt: still an upper bound
        final = self._final.get(topic)
        if final is not None and open_time <= final[0]:
            if open_time < final[0]:
                self.stale += 1
                return None
            values = _values(event)
            if values == final[1]:  # the parser's close on the next bar, or the same bar re-sent
                self.repeats += 1
                return None
            self._final[topic] = (open_time, values)
            self.corrections += 1
            return {**event, "closed": True, "correction": True}
        current = self._open.get(topic)
        if current is not None and current["open_time"] != open_time:
            if open_time < current["open_time"]:
                self.stale += 1
                return None
            # A later bar, and the parser did not close the forming one (it always does first on one socket):
            # close it now, as the parser would, rather than leave it open.
            self._forget(topic)
            self._final[topic] = (current["open_time"], _values(current))
            out.append((topic, {**current, "closed": True, "ts_received": event["ts_received"]}))
            current = None
        elif current is not None and topic in self._provisional and _values(event) != _values(current):
            # Changed again: the exchange is still inside this bar, so the host clock that put it past its deadline
            # is wrong; the exchange's clock has at least reached open_time.
            self._provisional.discard(topic)
            self.observe(int(self._clock() * 1000), open_time)
        if event["closed"]:  # the parser's close, before the deadline: final now
            self._forget(topic)
            self._final[topic] = (open_time, _values(event))
            return event
        if current is None:  # a new forming bar: one timer per bar, at its deadline on the exchange's clock
            delay_ms = event["close_time"] + self.grace_ms + self.offset_ms - self._clock() * 1000.0
            if delay_ms <= 0:
                if self._bucket_end > -_NO_SAMPLE:  # already past its deadline: it is final as it is
                    self._final[topic] = (open_time, _values(event))
                    self.timer_closes += 1
                    return {**event, "closed": True}
                self._provisional.add(topic)  # no clock sample yet: wait grace_ms for one (module docstring)
                delay_ms = self.grace_ms
            if not self._timers:
                self._armed_offset = self.offset_ms
            self._timers[topic] = asyncio.get_running_loop().call_later(delay_ms / 1000.0, self._fire, topic)
        self._open[topic] = event
        return event

    def _fire(self, topic: str) -> None:
        """The deadline of ``topic``'s forming bar: publish its last values as the closed bar."""
        self._timers.pop(topic, None)
        self._provisional.discard(topic)
        bar = self._open.pop(topic, None)
        if bar is None or not self._wanted(topic):
            return
        self._final[topic] = (bar["open_time"], _values(bar))
        self.timer_closes += 1
        self._emit(topic, {**bar, "closed": True, "ts_received": int(self._clock() * 1000)})

    def _forget(self, topic: str) -> None:
        self._open.pop(topic, None)
        self._provisional.discard(topic)
        timer = self._timers.pop(topic, None)
        if timer is not None:
            timer.cancel()

    def retain(self, topics: Any) -> None:
        """Forget every topic not in ``topics`` (a container of topic strings), cancelling its timer."""
        for topic in [t for t in self._open if t not in topics]:
            self._forget(topic)
        for topic in [t for t in self._final if t not in topics]:
            del self._final[topic]

    def reset(self) -> None:
        """The socket dropped (or the connection ended): cancel every timer, forget the forming bars and the clock
        estimate (the next socket starts on the host clock until its first sample). The last final bar of each
        topic is kept, so a bar re-sent by the next socket is not closed a second time."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._open.clear()
        self._provisional.clear()
        self._forget_clock()

    def status(self) -> dict[str, int]:
        """Counters for the connection's status record."""
        return {"timer_closes": self.timer_closes, "corrections": self.corrections, "repeats": self.repeats,
                "stale": self.stale, "forming": len(self._open), "rearms": self.rearms,
                "clock_offset_ms": self.offset_ms}  # fmt: skip


class _ClosingParser:
    """A connection's parser with its kline events passed through ``KlineCloser.admit``."""

    __slots__ = ("_closer", "_parse")

    def __init__(self, parser: FrameParser, closer: KlineCloser) -> None:
        self._parse, self._closer = parser.parse, closer

    def parse(self, raw: str | bytes, ts_received_ms: int) -> Parsed:
        parsed = self._parse(raw, ts_received_ms)
        events = parsed.events
        closer = self._closer
        if events:
            first = events[0][1]
            ts_exchange = first.get("ts_exchange")
            # A clock sample, taken before the frame's own klines are judged. ``observe``'s usual case (no new
            # minimum, same bucket) is tested here: no call for most frames.
            if ts_exchange is not None and (
                ts_received_ms >= closer._bucket_end or ts_received_ms - ts_exchange < closer._bucket_min
            ):
                closer.observe(ts_received_ms, ts_exchange)
            if first.get("type") == "kline":  # one channel per frame: no kline, no work
                parsed.events = closer.admit(events)
        elif parsed.book:
            ts_exchange = parsed.book[0].ts_exchange
            if ts_exchange is not None:
                closer.observe(ts_received_ms, ts_exchange)
        return parsed
