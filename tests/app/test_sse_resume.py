"""SSE resume edge cases (issue 10, defect 7): every cursor either resumes exactly or is told why it cannot.

Real Hypercorn + real Redis, as in ``test_sse``. The cursor is opaque here: tests only replay ids the server
sent (or ids a client might plausibly send: an old bare stream id, garbage, a far-future id).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from redis.asyncio import Redis
from sse_starlette.sse import AppStatus

from app import sse_cursor
from control import keys
from control.redis_client import make_redis
from tests.app._sse import BASE_MS, KLINE, TRADE, connect, payload, xadd_many
from tests.e2e.harness import RedisServer, poll, redis_server

OTHER_TRADE = "bitmart:trade:SSEOTHERUSDT"


def datas(events: list[dict[str, str]]) -> list[str]:
    return [e["data"] for e in events]


def gaps(events: list[dict[str, str]]) -> list[dict[str, Any]]:
    return [orjson.loads(e["data"]) for e in events if e.get("event") == "gap"]


# -- stream recreated -------------------------------------------------------------------------------------


@dataclass
class Target:
    """Where the test writes, and how it loses the stream: ``deleted`` (DEL) or ``restarted`` (in-memory redis)."""

    how: str
    client: Redis
    server: RedisServer | None
    env: dict[str, str]

    async def recreate(self) -> None:
        if self.server is None:
            await self.client.delete(keys.event_stream(TRADE))
        else:
            self.server.kill()
            await self.server.astart()


@pytest.fixture(params=["deleted", "restarted"])
async def target(request: pytest.FixtureRequest, redis_bytes: Redis, tmp_path: Path) -> AsyncIterator[Target]:
    if request.param == "deleted":
        yield Target("deleted", redis_bytes, None, {})
        return
    with redis_server(tmp_path / "redis", persistent=False) as server:  # a restart comes back empty
        client = make_redis(server.url(), decode=False)
        yield Target("restarted", client, server, {"REDIS_URL": server.url()})
        await client.aclose()


async def test_resume_after_stream_recreated_announces_stream_reset(
    start_server: Any, session: aiohttp.ClientSession, target: Target
) -> None:
    """The client saw trades 0..20; 49 more were written, then the stream was lost and recreated."""
    server = await start_server(**target.env)
    url = f"{server.url}/sse?topic={TRADE}"
    sse = await connect(session, url)
    await sse.until("ready")
    await xadd_many(target.client, [(TRADE, i) for i in range(70)])
    seen = await sse.take(21)
    cursor = seen[-1]["id"]
    await sse.close()
    await server.hub.wait_for_subscribers(0, timeout_s=5)

    await target.recreate()
    await xadd_many(target.client, [(TRADE, i) for i in range(100, 105)])

    async def answers() -> bool:  # after a restart the server's pool may need one failed call to reconnect
        async with session.get(f"{server.url}/status") as resp:
            return resp.status == 200

    await poll(answers, 10, "the control server reading the restarted redis")
    again = await connect(session, url, last_event_id=cursor)
    _, events = await again.until("ready")
    assert gaps(events) == [{"type": "gap", "topic": TRADE, "reason": "stream_reset",
                             "since": BASE_MS + 20, "until": BASE_MS + 100}]  # fmt: skip
    assert events[0]["event"] == "gap"  # announced before the catch-up
    assert datas(events[1:]) == [payload(TRADE, i).decode() for i in range(100, 105)]
    await again.close()


async def test_resume_of_a_never_trimmed_stream_has_no_gap(
    start_server: Any, session: aiohttp.ClientSession, redis: Redis
) -> None:
    """A cursor taken while the streams were empty (``ready`` before any entry) resumes with everything."""
    server = await start_server()
    url = f"{server.url}/sse?topic={KLINE}&topic={TRADE}"
    sse = await connect(session, url)
    ready = await sse.next()
    assert ready is not None and ready["event"] == "ready"
    await sse.close()
    await server.hub.wait_for_subscribers(0, timeout_s=5)
    await xadd_many(redis, [(KLINE, 0), (TRADE, 1), (KLINE, 2)])
    again = await connect(session, url, last_event_id=ready["id"])
    _, events = await again.until("ready")
    assert datas(events) == [payload(t, i).decode() for t, i in [(KLINE, 0), (TRADE, 1), (KLINE, 2)]]
    await again.close()


# -- cursors that cannot be used: start live, say so -------------------------------------------------------


async def test_future_cursor_starts_live_with_invalid_cursor_gap(
    start_server: Any, session: aiohttp.ClientSession, redis: Redis
) -> None:
    server = await start_server()
    await xadd_many(redis, [(TRADE, i) for i in range(5)])
    sse = await connect(session, f"{server.url}/sse?topic={TRADE}", last_event_id="9999999999999-0")
    _, before = await sse.until("ready")
    assert gaps(before) == [{"type": "gap", "topic": TRADE, "reason": "invalid_cursor", "since": None, "until": None}]
    assert len(before) == 1  # live: no catch-up of the entries already there
    await xadd_many(redis, [(TRADE, 5)])
    event = await sse.next()
    assert event is not None and event["data"] == payload(TRADE, 5).decode()
    await sse.close()


@pytest.mark.parametrize(
    ("query", "header"),
    [
        (f"topic={TRADE}", "abc"),
        (f"topic={TRADE}", "1-x"),
        (f"topic={KLINE}&topic={TRADE}", "1-0"),  # one id for two topics
        (f"topic={KLINE}&topic={TRADE}", "abc,1-0"),
        (f"topic={TRADE}&last_event_id=1-x", None),
    ],
)
async def test_malformed_cursor_starts_live_with_invalid_cursor_gap(
    start_server: Any, session: aiohttp.ClientSession, redis: Redis, query: str, header: str | None
) -> None:
    """A 400 would end a browser's EventSource for good: the stream starts live and says why instead."""
    server = await start_server()
    topics = [KLINE, TRADE] if KLINE in query else [TRADE]
    await xadd_many(redis, [(TRADE, 0)])
    sse = await connect(session, f"{server.url}/sse?{query}", last_event_id=header)
    _, before = await sse.until("ready")
    assert gaps(before) == [{"type": "gap", "topic": t, "reason": "invalid_cursor", "since": None, "until": None}
                            for t in topics]  # fmt: skip
    assert len(before) == len(topics)
    await xadd_many(redis, [(TRADE, 1)])
    event = await sse.next()
    assert event is not None and event["data"] == payload(TRADE, 1).decode()
    # the id the server now sends is a good cursor: resuming from it loses and repeats nothing
    await xadd_many(redis, [(TRADE, 2)])
    await sse.close()
    await server.hub.wait_for_subscribers(0, timeout_s=5)
    again = await connect(session, f"{server.url}/sse?{query.split('&last_event_id')[0]}", last_event_id=event["id"])
    _, events = await again.until("ready")
    assert datas(events) == [payload(TRADE, 2).decode()]
    await again.close()


# -- cursor tied to the topic set ---------------------------------------------------------------------------


async def test_same_topics_in_another_order_resume_exactly(
    start_server: Any, session: aiohttp.ClientSession, redis: Redis
) -> None:
    server = await start_server()
    sse = await connect(session, f"{server.url}/sse?topic={KLINE}&topic={TRADE}")
    await sse.until("ready")
    items = [(KLINE, i) for i in range(10)] + [(TRADE, i) for i in range(10, 20)]
    await xadd_many(redis, items)
    seen = await sse.take(20)
    assert datas(seen) == [payload(t, i).decode() for t, i in items]
    await sse.close()
    await server.hub.wait_for_subscribers(0, timeout_s=5)

    more = [(KLINE, 20), (TRADE, 21)]
    await xadd_many(redis, more)
    again = await connect(session, f"{server.url}/sse?topic={TRADE}&topic={KLINE}", last_event_id=seen[-1]["id"])
    _, events = await again.until("ready")
    assert datas(events) == [payload(t, i).decode() for t, i in more]  # nothing repeated, nothing missed
    await again.close()


async def test_cursor_of_another_topic_set_is_refused_with_a_gap(
    start_server: Any, session: aiohttp.ClientSession, redis: Redis
) -> None:
    server = await start_server()
    sse = await connect(session, f"{server.url}/sse?topic={KLINE}&topic={TRADE}")
    await sse.until("ready")
    await xadd_many(redis, [(KLINE, 0), (TRADE, 1)])
    seen = await sse.take(2)
    await sse.close()
    await server.hub.wait_for_subscribers(0, timeout_s=5)
    await xadd_many(redis, [(OTHER_TRADE, 2)])

    other = await connect(session, f"{server.url}/sse?topic={KLINE}&topic={OTHER_TRADE}", last_event_id=seen[-1]["id"])
    _, before = await other.until("ready")
    assert gaps(before) == [{"type": "gap", "topic": t, "reason": "invalid_cursor", "since": None, "until": None}
                            for t in (KLINE, OTHER_TRADE)]  # fmt: skip
    assert len(before) == 2  # started live: OTHER_TRADE's entry is not replayed from a foreign cursor
    await other.close()


async def test_cursor_ahead_of_restored_stream_resets_to_its_end(
    start_server: Any, session: aiohttp.ClientSession, redis: Redis
) -> None:
    """Redis came back with older data (a snapshot): the stream ends before the cursor. Announce it, and send
    every entry added from now on, even one whose id is below the cursor."""
    server = await start_server()
    sse = await connect(session, f"{server.url}/sse?topic={TRADE}")
    await sse.until("ready")
    await xadd_many(redis, [(TRADE, i) for i in range(10)])
    seen = await sse.take(10)
    await sse.close()
    await server.hub.wait_for_subscribers(0, timeout_s=5)
    await redis.delete(keys.event_stream(TRADE))
    await xadd_many(redis, [(TRADE, i) for i in range(5)])  # the restored data: entries 0..4

    again = await connect(session, f"{server.url}/sse?topic={TRADE}", last_event_id=seen[-1]["id"])
    _, before = await again.until("ready")
    assert gaps(before) == [{"type": "gap", "topic": TRADE, "reason": "stream_reset", "since": BASE_MS + 9,
                             "until": None}]  # fmt: skip
    assert len(before) == 1  # 0..4 were seen before the loss: not repeated
    await xadd_many(redis, [(TRADE, 6)])
    event = await again.next()
    assert event is not None and event["data"] == payload(TRADE, 6).decode()
    await again.close()


async def test_only_the_topic_with_a_future_id_starts_live(
    start_server: Any, session: aiohttp.ClientSession, redis: Redis
) -> None:
    server = await start_server()
    await xadd_many(redis, [(KLINE, 0), (TRADE, 1), (KLINE, 2), (TRADE, 3)])
    cursor = sse_cursor.fingerprint([KLINE, TRADE]) + f":{BASE_MS}-0,9999999999999-0"  # sorted: kline, trade
    sse = await connect(session, f"{server.url}/sse?topic={TRADE}&topic={KLINE}", last_event_id=cursor)
    _, before = await sse.until("ready")
    assert gaps(before) == [{"type": "gap", "topic": TRADE, "reason": "invalid_cursor", "since": None, "until": None}]
    assert datas(before[1:]) == [payload(KLINE, 2).decode()]  # the kline topic resumed exactly
    await sse.close()


async def test_unusable_cursor_with_backlog_starts_like_a_new_client(
    start_server: Any, session: aiohttp.ClientSession, redis: Redis
) -> None:
    server = await start_server()
    await xadd_many(redis, [(TRADE, i) for i in range(5)])
    sse = await connect(session, f"{server.url}/sse?topic={TRADE}&backlog=2", last_event_id="not-a-cursor")
    _, before = await sse.until("ready")
    assert [e["event"] for e in before] == ["gap", "trade", "trade"]
    assert datas(before[1:]) == [payload(TRADE, i).decode() for i in (3, 4)]
    await sse.close()


# -- judge: the decision table, on XINFO STREAM replies as Redis 7 gives them ---------------------------------


def _info(first: int | None, last_gen: int, added: int | None, length: int, max_deleted: int = 0) -> dict[str, Any]:
    info: dict[str, Any] = {
        "length": length,
        "first-entry": (f"{first}-0".encode(), {}) if first is not None else None,
        "last-generated-id": f"{last_gen}-0".encode(),
        "max-deleted-entry-id": f"{max_deleted}-0".encode(),
    }
    if added is not None:
        info["entries-added"] = added
    return info


def _at(ms: int | None) -> list[Any]:
    return [(f"{ms}-0".encode(), {})] if ms is not None else []


NOW = 2_000_000_000_000


@pytest.mark.parametrize(
    ("cursor", "info", "at", "expected"),
    [
        ((15, 0), _info(10, 20, 11, 11), _at(15), ((15, 0), None, None)),  # still there
        ((20, 0), _info(10, 20, 11, 11), _at(20), ((20, 0), None, None)),  # the last entry: live
        ((5, 0), _info(10, 20, 30, 11), _at(10), ((5, 0), "retention", 10)),  # trimmed past it
        ((5, 0), _info(10, 20, None, 11), _at(10), ((5, 0), "retention", 10)),  # Redis < 7: as before
        ((5, 0), _info(10, 20, 11, 11), _at(10), ((5, 0), "stream_reset", 10)),  # nothing ever deleted here
        ((15, 0), _info(10, 20, 11, 11), _at(16), ((15, 0), "stream_reset", 16)),  # between entries, no XDEL
        ((15, 0), _info(10, 20, 12, 11, max_deleted=16), _at(17), ((15, 0), "retention", 17)),  # XDEL after it
        ((30, 0), _info(10, 20, 11, 11), [], ((20, 0), "stream_reset", None)),  # ahead: restored older data
        ((NOW + 1, 0), _info(10, 20, 11, 11), [], ((20, 0), "invalid_cursor", None)),  # in the future
        ((5, 0), None, [], ((0, 0), "stream_reset", None)),  # the stream is gone
        ((NOW + 1, 0), None, [], ((0, 0), "invalid_cursor", None)),
        ((0, 0), None, [], ((0, 0), None, None)),  # empty then, nothing now
        ((0, 0), _info(10, 20, 11, 11), _at(10), ((0, 0), None, None)),  # empty then, all kept
        ((0, 0), _info(10, 20, 30, 11), _at(10), ((0, 0), "retention", 10)),  # empty then, some trimmed since
    ],
)
def test_judge(cursor: tuple[int, int], info: Any, at: list[Any], expected: Any) -> None:
    assert sse_cursor.judge(cursor, info, at, NOW) == expected


async def test_cursor_survives_a_control_server_restart(
    start_server: Any, session: aiohttp.ClientSession, redis: Redis
) -> None:
    first = await start_server()
    url = "/sse?topic={}&topic={}"
    sse = await connect(session, first.url + url.format(KLINE, TRADE))
    await sse.until("ready")
    await xadd_many(redis, [(KLINE, 0), (TRADE, 1)])
    seen = await sse.take(2)
    await first.stop()
    AppStatus.should_exit = False  # process-global: the next server in this process is not shutting down
    await xadd_many(redis, [(TRADE, 2), (KLINE, 3)])
    second = await start_server()
    again = await connect(session, second.url + url.format(TRADE, KLINE), last_event_id=seen[-1]["id"])
    _, events = await again.until("ready")
    assert datas(events) == [payload(t, i).decode() for t, i in [(TRADE, 2), (KLINE, 3)]]
    await again.close()
