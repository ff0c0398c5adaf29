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

from control import keys
from control.redis_client import make_redis
from tests.app.test_sse import (  # noqa: F401  (start_server, session: fixtures)
    BASE_MS,
    KLINE,
    TRADE,
    connect,
    payload,
    session,
    start_server,
    xadd_many,
)
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
    ready, before = await sse.until("ready")
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
