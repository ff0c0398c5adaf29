"""Private streams end to end (issue #3): WorkerRuntime + simulator (private side) + real Redis (+ the app for SSE).

Accounts come from an owner-only ACCOUNTS_FILE (and POST /accounts' Redis records); the simulator knows the same
keys. Every scenario ends with ``assert_no_secrets``: no API key, secret, memo or listenKey (nor any 8-character
piece of one) in any log record (caplog at DEBUG, with the runtime's redaction filter kept out, so this checks what
the code writes, not what the filter hides) or anywhere in the Redis test database.

Waiting: what is checked lives in Redis (written by other tasks) and in the simulator's tables, which send no
notification, so ``wait_until`` re-checks every 20 ms up to a deadline: a bounded wait for a condition. The one
fixed wait is in the no-storm test, which must watch a time window to show that nothing happens in it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from cryptography.fernet import Fernet
from redis.asyncio import Redis

from control.accounts import Account, put_api_account
from control.store import ControlStore

from . import _private_world as pw
from ._private_world import (
    World,
    _async,
    assert_no_secrets,
    bitmart_order_push,
    events,
    next_sse_event,
    states,
    subscribe,
    tok,
    user_conns,
    wait_states,
    wait_until,
)

pytestmark = pytest.mark.timeout(60)

# the shared fixtures, registered in this module (redaction_calls is autouse)
sim, world, make_env, session, redaction_calls, runtimes, app_server = (pw.sim, pw.world, pw.make_env, pw.session,
                                                                         pw.redaction_calls, pw.runtimes, pw.app_server)  # fmt: skip


# -- (1) two BitMart accounts side by side, down to SSE --------------------------------------------------


async def test_two_bitmart_accounts_side_by_side(
    world: World, make_env: Callable[..., dict[str, str]], runtimes: Any, app_server: Any, redis: Redis,
    redis_bytes: Redis, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture,
    redaction_calls: list[set[str]],
) -> None:  # fmt: skip
    caplog.set_level(logging.DEBUG)
    sim, alice, bob = world.sim, world.accounts["alice"], world.accounts["bob"]
    env = make_env()
    server = await app_server(env)
    await runtimes(env)
    control = {"Authorization": f"Bearer {world.control_token}"}
    for path in ("/orders/subscribe", "/positions/subscribe"):
        for who in (alice, bob):
            async with session.post(f"{server.url}{path}", json={"account": who.name}, headers=control) as resp:
                assert resp.status == 202, await resp.text()
    async with session.post(f"{server.url}/orders/subscribe", json={"account": "nobody"}, headers=control) as resp:
        assert resp.status == 400 and "unknown account" in await resp.text()
    topics = [a.topic(ch) for a in (alice, bob) for ch in ("order", "position")]
    await wait_states(redis, topics, "active")
    assert set(world.secrets) <= redaction_calls[0]  # every loaded secret (and token) goes to the log filter

    # one logged-in /user socket per account, each carrying its own account's two topics
    socks = await wait_until(lambda: _async(len(user_conns(sim, "bitmart", "user")) == 2 and
                                            user_conns(sim, "bitmart", "user")), what="two /user sockets")  # fmt: skip
    logins = [orjson.loads(f.text)["args"][0] for f in sim.received if '"access"' in f.text]
    assert sorted(logins) == sorted([alice.api_key, bob.api_key])
    assert all(c.subscribed == {"futures/order", "futures/position"} for c in socks)
    plan = {c["route"] for c in (await ControlStore(redis).connections())}
    assert plan == {"private:alice", "private:bob"}

    # SSE: the account's own token streams, the other account's token is refused
    sse = f"{server.url}/sse/orders/alice"
    async with session.get(sse, headers={"Authorization": f"Bearer {world.tokens['bob']}"}) as denied:
        assert denied.status == 403
    async with session.get(sse, headers={"Authorization": f"Bearer {world.tokens['alice']}"}) as stream:
        assert stream.status == 200
        while (await next_sse_event(stream)).get("event") != "ready":
            pass
        assert await sim.push_private("bitmart", alice.api_key, "futures/order", bitmart_order_push("A-777")) == 1
        assert await sim.push_private("bitmart", bob.api_key, "futures/order", bitmart_order_push("B-888")) == 1
        while True:
            event = await next_sse_event(stream)
            data = orjson.loads(event["data"])
            if event.get("event") == "order" and data["order_id"] == "A-777":
                break
            assert data.get("order_id") != "B-888"
    assert data["account"] == "alice" and data["snapshot"] is False and data["price"] == "60000.1"

    async def pushed(topic: str, order_id: str) -> bool:
        return any(e.get("order_id") == order_id for _, e in await events(redis_bytes, topic))

    await wait_until(lambda: pushed(bob.topic("order"), "B-888"), what="bob's order in his stream")
    alice_ids = {e.get("order_id") for _, e in await events(redis_bytes, alice.topic("order"))}
    bob_ids = {e.get("order_id") for _, e in await events(redis_bytes, bob.topic("order"))}
    assert "A-777" in alice_ids and "B-888" not in alice_ids
    assert "B-888" in bob_ids and "A-777" not in bob_ids
    for who in (alice, bob):
        for topic in (who.topic("order"), who.topic("position")):
            for _, e in await events(redis_bytes, topic):
                assert e["topic"] == topic if e["type"] == "gap" else e["account"] == who.name
    await assert_no_secrets(redis_bytes, caplog, world.secrets)


# -- (2) wrong secret: failed with the exchange's reason, no reconnect storm ---------------------------------


async def test_wrong_secret_fails_topics_and_backs_off_at_the_maximum(
    world: World, make_env: Callable[..., dict[str, str]], runtimes: Any, redis: Redis, redis_bytes: Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.DEBUG)
    sim, mallory = world.sim, world.accounts["mallory"]
    rt = await runtimes(make_env(RECONNECT_MAX_DELAY_S="3"))
    topics = [mallory.topic("order"), mallory.topic("position")]
    await subscribe(redis, *topics)
    failed = await wait_states(redis, topics, "failed")
    for record in failed.values():  # the exchange's own text (exchanges.md §1.3), with the key masked
        assert record["error"].startswith("login refused: access failed: openapi auth: apiKey ")
        assert record["error"].endswith("failed: openapi auth failed")
    assert sim.stats["logins_failed"] == 1
    [held] = rt._held.values()
    assert held.conn.connect_attempts == 1

    loop = asyncio.get_running_loop()
    start = loop.time()
    while loop.time() - start < 2.0:  # watch the window: states stay failed, attempts stay few
        await asyncio.sleep(0.1)
        assert all(s["state"] == "failed" for s in (await states(redis, topics)).values())
    assert held.conn.connect_attempts <= 2 and sim.stats["logins_failed"] <= 2
    assert held.conn.status()["state"] == "backoff" or held.conn.connect_attempts == 2
    assert not any('"subscribe"' in f.text for f in sim.received)  # never subscribed without a login
    await assert_no_secrets(redis_bytes, caplog, world.secrets)


async def test_unknown_account_fails_until_it_is_added(
    world: World, make_env: Callable[..., dict[str, str]], runtimes: Any, redis: Redis, redis_bytes: Redis,
    caplog: pytest.LogCaptureFixture, redaction_calls: list[set[str]],
) -> None:  # fmt: skip
    caplog.set_level(logging.DEBUG)
    secret_key = Fernet.generate_key().decode()
    erin = Account("bitmart", "erin", tok("ek"), tok("es"), memo=tok("em"), source="api")
    world.sim.add_account("bitmart", erin.api_key, erin.api_secret, erin.memo)
    await runtimes(make_env(FEEDPLANE_SECRET_KEY=secret_key))
    topic = "bitmart:order:erin"
    await subscribe(redis, topic)
    record = (await wait_states(redis, [topic], "failed"))[topic]
    assert record["error"].startswith("unknown account bitmart:erin")
    await put_api_account(redis, erin, key=secret_key, now_ms=1)  # POST /accounts: sealed record + "accounts" nudge
    await wait_states(redis, [topic], "active")
    assert any({erin.api_key, erin.api_secret, erin.memo} <= call for call in redaction_calls)
    await assert_no_secrets(redis_bytes, caplog, [*world.secrets, erin.api_key, erin.api_secret, erin.memo])



async def test_credentials_that_cannot_sign_fail_their_topics(
    world: World, make_env: Callable[..., dict[str, str]], runtimes: Any, redis: Redis, tmp_path: Path
) -> None:
    """A BitMart account without its memo cannot log in; a Gate account without its uid cannot subscribe: both
    fail at once with the reason, never retried in a loop."""
    doc = orjson.loads(Path(world.accounts_file).read_bytes())
    doc["accounts"] += [
        {"exchange": "bitmart", "account": "nomemo", "api_key": tok("nk"), "api_secret": tok("ns")},
        {"exchange": "gateio", "account": "nouid", "api_key": tok("uk"), "api_secret": tok("us")},
    ]
    path = tmp_path / "more.json"
    path.write_bytes(orjson.dumps(doc))
    os.chmod(path, 0o600)
    rt = await runtimes(make_env(ACCOUNTS_FILE=str(path), RECONNECT_MAX_DELAY_S="5"))
    topics = ["bitmart:order:nomemo", "gateio:order:nouid"]
    await subscribe(redis, *topics)
    failed = await wait_states(redis, topics, "failed")
    assert "no API memo" in failed["bitmart:order:nomemo"]["error"]
    assert "no uid" in failed["gateio:order:nouid"]["error"]
    conns = {h.exchange: h.conn for h in rt._held.values()}
    assert conns["bitmart"].connect_attempts == 1 and conns["bitmart"].status()["state"] == "backoff"
    assert conns["gateio"].connect_attempts == 1 and conns["gateio"].reconnects == 0
