"""Tape replay: one task per (connection, subscribed stream) plays the stream's tape from its first frame.

Pace: the recorded gaps divided by ``speed``, as fast as the socket drains when ``speed == 0``, or a
fixed ``rate`` frames/s; with ``loop`` the tape restarts when it ends. Targets are computed from a start
time, so sleeps never drift, and a dead/silent pause shifts the schedule instead of bursting afterwards.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from scripts.sim import tapes
from scripts.sim.conn import SimConnection

if TYPE_CHECKING:
    from scripts.sim.core import SimCore

__all__ = ["load_rest_snapshot", "load_tape", "start_replay"]

log = logging.getLogger(__name__)

_MIN_SLEEP_S = 0.001  # gaps shorter than this are sent back to back
_YIELD_EVERY = 64  # frames sent in a burst before yielding to the loop


def start_replay(sim: SimCore, conn: SimConnection, native: str) -> None:
    """Start replaying ``native`` to ``conn`` unless it is playing already, has no tape, or is not delivered there."""
    if native in conn._tasks or tapes.source_of(conn.exchange, native) is None:
        return  # already playing, or a valid stream we have no frames for (stays quiet, like production)
    if not sim.venues[conn.exchange].deliverable(conn, native):
        # e.g. Binance since 2026-04-23: a wrong-route stream is acked and then never delivered (binance_usdm.md §0, §4).
        sim.stats["route_mismatch_silenced"] += 1
        log.info("conn %d: %s acked but not delivered on route %s", conn.conn_id, native, conn.route)
        return
    sim._spawn(conn, native, _replay(sim, conn, native))


async def load_tape(sim: SimCore, conn: SimConnection, native: str) -> tapes.Tape | None:
    """The tape for ``native`` (loaded in a thread on first use); None if absent or unreadable."""
    try:
        return tapes.cached_tape(conn.exchange, native, sim._samples_dir)
    except LookupError:
        try:
            return await asyncio.to_thread(tapes.get_tape, conn.exchange, native, sim._samples_dir)
        except OSError as exc:  # recordings missing: the stream stays quiet, the cause is logged
            sim.stats["tape_errors"] += 1
            log.error("conn %d: cannot load the tape for %s: %s", conn.conn_id, native, exc)
            sim._notify()
            return None


async def load_rest_snapshot(sim: SimCore, exchange: str, symbol: str) -> tapes.RestSnapshot | None:
    """The recorded REST snapshot for ``symbol`` (loaded in a thread on first use), or None."""
    try:
        return tapes.cached_rest_snapshot(exchange, symbol, sim._samples_dir)
    except LookupError:
        return await asyncio.to_thread(tapes.rest_snapshot, exchange, symbol, sim._samples_dir)


async def _replay(sim: SimCore, conn: SimConnection, native: str) -> None:
    """Play one tape to one socket; targets are computed from a start time, so sleeps never drift."""
    tape = await load_tape(sim, conn, native)
    if not tape:
        return
    loop = asyncio.get_running_loop()
    times, frames, n = tape.times_s, tape.frames, len(tape)
    span = times[-1] - times[0]
    cycle_s = max(span + (span / (n - 1) if n > 1 else 0.0), 1.0)
    base, offset, start, i, sent = times[0], 0.0, loop.time(), 0, 0
    venue = sim.venues[conn.exchange]
    wrap = venue.wrap if venue.wraps_frames else None
    while True:
        if i == n:
            if not sim._loop:
                return
            i, offset = 0, offset + cycle_s
        if not sim._data_open.is_set():
            paused_at = loop.time()
            await sim._data_open.wait()
            start += loop.time() - paused_at  # resume the schedule where it stopped, no burst
            continue
        if sim._rate is not None:
            target: float | None = start + sent / sim._rate
        elif sim._speed > 0:
            target = start + (offset + times[i] - base) / sim._speed
        else:
            target = None
        if target is not None and target - loop.time() > _MIN_SLEEP_S:
            await asyncio.sleep(target - loop.time())
            continue  # re-check the dead/silent gate after sleeping
        frame = wrap(conn, native, frames[i]) if wrap is not None else frames[i]
        conn._positions[native] = i  # set before the write: a BitMart request snapshot follows this frame
        if not await sim._send_data(conn, native, frame) or conn._tasks.get(native) is not asyncio.current_task():
            return  # socket gone, or unsubscribed while this frame was being written
        i += 1
        sent += 1
        if sent % _YIELD_EVERY == 0:
            await asyncio.sleep(0)  # bursts must not starve this socket's reader or other streams
