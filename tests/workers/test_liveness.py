"""workers.liveness: a held reader's time is credited to the peer; the hold is bounded by its budget."""

from __future__ import annotations

import asyncio
import math

from workers.liveness import Liveness, hold_budget_s


class _Publisher:
    """Stand-in for ``Publisher.congested``/``room()``: room comes when the test sets it."""

    def __init__(self) -> None:
        self.has_room = asyncio.Event()

    @property
    def congested(self) -> bool:
        return not self.has_room.is_set()

    async def room(self) -> None:
        await self.has_room.wait()


def test_budget_is_half_the_tighter_keepalive_bound() -> None:
    assert hold_budget_s(15.0, 10.0) == 5.0  # the defaults
    assert hold_budget_s(0.2, 0.3) == 0.1


async def test_time_held_is_not_silence_and_is_credited_to_the_peer() -> None:
    loop = asyncio.get_running_loop()
    live = Liveness(budget_s=5.0)
    start = loop.time()
    live.opened(start - 1.0)  # last frame 1 s ago
    live.active_at = start - 1.0
    pub = _Publisher()
    task = asyncio.create_task(live.hold(pub, loop.time()))
    await asyncio.sleep(0)  # the hold has begun
    assert live.holding
    assert live.silence(loop.time() + 100) == 0.0 and live.quiet(loop.time() + 100) == 0.0
    assert live.dead_at(2.0) == math.inf and live.quiet_at(2.0) == math.inf
    loop.call_later(0.2, pub.has_room.set)
    assert await task is True  # room came within the budget
    held = live.held_s
    assert 0.15 <= held < 1.0
    assert live.after_hold and not live.holding
    # the silence is what it was before the hold (1 s), plus only the time since the hold ended
    assert 0.95 <= live.silence(loop.time()) <= 1.2
    assert 0.95 <= live.quiet(loop.time()) <= 1.2
    live.frame(loop.time())
    assert not live.after_hold and live.holds == 1


async def test_hold_gives_up_after_its_budget() -> None:
    loop = asyncio.get_running_loop()
    live = Liveness(budget_s=0.05)
    live.opened(loop.time())
    t0 = loop.time()
    assert await live.hold(_Publisher(), t0) is False  # never any room: the caller sheds
    assert 0.04 <= loop.time() - t0 < 1.0
    live.start_shedding("c1")
    live.shed += 3
    assert live.status() == {"holds": 1, "held_s": round(live.held_s, 3), "sheds": 1, "shed": 3, "shedding": True}
    live.stop_shedding("c1")
    live.opened(loop.time())  # a new socket starts clean; the counters stay
    assert not live.shedding and not live.after_hold and live.sheds == 1
