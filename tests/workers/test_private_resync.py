"""Private streams end to end, re-syncing (issue #3): BitMart re-login, the Binance listenKey lifecycle and a
refused keepalive, Gate.io's signed subscribe; each ends with ``assert_no_secrets`` (see ``test_private.py``)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from redis.asyncio import Redis

from control import keys

from . import _private_world as pw
from ._private_world import (
    World,
    _async,
    assert_no_secrets,
    events,
    sim_listen_key,
    subscribe,
    unsubscribe,
    user_conns,
    wait_states,
    wait_until,
)

pytestmark = pytest.mark.timeout(60)

# the shared fixtures, registered in this module (redaction_calls is autouse)
sim, world, make_env, session, redaction_calls, runtimes, app_server = (pw.sim, pw.world, pw.make_env, pw.session,
                                                                         pw.redaction_calls, pw.runtimes, pw.app_server)  # fmt: skip


# -- (3) BitMart: re-login before resubscribing, then gap + REST snapshot -------------------------------------


async def test_bitmart_relogin_before_resubscribe_with_gap_and_snapshot(
    world: World, make_env: Callable[..., dict[str, str]], runtimes: Any, redis: Redis, redis_bytes: Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.DEBUG)
    sim, alice = world.sim, world.accounts["alice"]
    rt = await runtimes(make_env())
    topics = [alice.topic("order"), alice.topic("position")]
    await subscribe(redis, *topics)
    await wait_states(redis, topics, "active")

    async def snapshot_after(topic: str, reason: str, after: str = "0-0") -> list[dict[str, Any]] | None:
        """The gap with ``reason`` after stream id ``after`` and the snapshot events that followed it."""
        found = [(sid, e) for sid, e in await events(redis_bytes, topic) if sid > after]
        gaps = [i for i, (_, e) in enumerate(found) if e["type"] == "gap" and e["reason"] == reason]
        if not gaps:
            return None
        tail = [e for _, e in found[gaps[-1] + 1 :] if e.get("snapshot") is True]
        return tail or None

    first = await wait_until(lambda: snapshot_after(alice.topic("order"), "subscribe"), what="first snapshot")
    assert all(e["type"] == "order" and e["account"] == "alice" for e in first)
    assert await wait_until(lambda: snapshot_after(alice.topic("position"), "subscribe"), what="position snapshot")
    last_ids = {t: (await events(redis_bytes, t))[-1][0] for t in topics}
    rest_before = sum(1 for r in sim.rest_requests if r.path_qs.startswith("/contract/private/get-open-orders"))
    received_before = len(sim.received)

    assert await sim.drop_connections("bitmart") == 1
    await wait_until(lambda: _async(sim.stats["logins_ok"] == 2), what="second login")
    await wait_states(redis, topics, "active")
    for topic in topics:
        snap = await wait_until(lambda t=topic: snapshot_after(t, "reconnect", last_ids[t]), what=f"{topic} re-sync")
        assert all(e["snapshot"] is True and e["account"] == "alice" for e in snap)
        gap = next(e for sid, e in await events(redis_bytes, topic) if sid > last_ids[topic] and e["type"] == "gap")
        assert gap == {"type": "gap", "topic": topic, "reason": "reconnect", "since": gap["since"], "until": None}
        assert isinstance(gap["since"], int)
    rest_after = sum(1 for r in sim.rest_requests if r.path_qs.startswith("/contract/private/get-open-orders"))
    assert rest_after == rest_before + 1

    # on the new socket, the login came first and every subscribe after its ack
    [conn] = user_conns(sim, "bitmart", "user")
    frames = [orjson.loads(f.text) for f in sim.received[received_before:] if f.conn_id == conn.conn_id]
    actions = [f.get("action") for f in frames if f.get("action") != "ping"]
    assert actions[0] == "access" and "subscribe" in actions and actions.index("subscribe") > 0
    assert sorted(a for f in frames if f.get("action") == "subscribe" for a in f["args"]) == [
        "futures/order", "futures/position"]  # fmt: skip
    [held] = rt._held.values()
    assert held.conn.reconnects == 1
    await assert_no_secrets(redis_bytes, caplog, world.secrets)


# -- (4) Binance USD-M: listenKey lifecycle ---------------------------------------------------------------


def binance_order_update(order_id: int) -> dict[str, Any]:
    """An ``ORDER_TRADE_UPDATE`` (binance_usdm.md §7) of a new limit order."""
    return {"e": "ORDER_TRADE_UPDATE", "E": 1700000000100, "T": 1700000000099,
            "o": {"s": "BTCUSDT", "c": f"cli-{order_id}", "S": "SELL", "o": "LIMIT", "f": "GTC", "q": "0.010",
                  "p": "61000.5", "ap": "0", "sp": "0", "x": "NEW", "X": "NEW", "i": order_id, "l": "0", "z": "0",
                  "L": "0", "n": "0", "N": "USDT", "T": 1700000000099, "t": 0, "b": "0", "a": "610.005", "m": False,
                  "R": False, "wt": "CONTRACT_PRICE", "ot": "LIMIT", "ps": "BOTH", "cp": False, "rp": "0",
                  "pP": False, "si": 0, "ss": 0, "V": "NONE", "pm": "NONE", "gtd": 0}}  # fmt: skip


async def test_binance_listen_key_lifecycle(
    world: World, make_env: Callable[..., dict[str, str]], runtimes: Any, redis: Redis, redis_bytes: Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.DEBUG)
    sim, carol = world.sim, world.accounts["carol"]
    rt = await runtimes(make_env(LISTEN_KEY_KEEPALIVE_S="0.3"))
    topics = [carol.topic(ch) for ch in ("order", "position", "balance")]
    await subscribe(redis, *topics)
    await wait_states(redis, topics, "active")

    def listen_key_calls(method: str) -> int:
        return sum(1 for r in sim.rest_requests if r.path_qs == "/fapi/v1/listenKey" and r.method == method)

    assert listen_key_calls("POST") == 1
    first_key = sim_listen_key(sim, carol.api_key)
    assert first_key is not None
    [sock] = user_conns(sim, "binanceusdm", "private")
    assert sock.path.startswith("/private/ws?listenKey=") and first_key not in sock.path  # the sim masks it
    plan_url = orjson.loads((await redis.hgetall(keys.PLAN_CONNS)).popitem()[1])["url"]
    assert plan_url == f"{sim.binance_base_url}/private/ws"  # no key in the plan

    # the fixture events replayed on open + the REST snapshot -> order, position and balance events
    async def kinds(topic: str) -> set[tuple[str, bool | None]]:
        return {(e["type"], e.get("snapshot")) for _, e in await events(redis_bytes, topic)}

    await wait_until(lambda: _has(kinds(topics[0]), {("order", False), ("order", True), ("gap", None)}),
                     what="order events")  # fmt: skip
    await wait_until(lambda: _has(kinds(topics[1]), {("position", False), ("position", True)}), what="positions")
    await wait_until(lambda: _has(kinds(topics[2]), {("balance", False)}), what="balance events")
    await wait_until(lambda: _any_event(redis_bytes, topics[0], order_id="2148719", status="new", trigger_price="750"),
                     what="the replayed resting conditional order (ALGO_UPDATE)")  # fmt: skip
    assert await sim.push_private("binanceusdm", carol.api_key, "ORDER_TRADE_UPDATE", binance_order_update(4242)) == 1
    await wait_until(lambda: _any_event(redis_bytes, topics[0], order_id="4242"), what="pushed order")

    # keepalive PUTs at the configured interval
    await wait_until(lambda: _async(listen_key_calls("PUT") >= 2), what="keepalive PUTs")
    assert sim_listen_key(sim, carol.api_key) == first_key

    # expiry: listenKeyExpired -> new key (POST), new socket, gap + snapshot; never a DELETE
    last_ids = {t: (await events(redis_bytes, t))[-1][0] for t in topics}
    assert await sim.expire_listen_key(carol.api_key) == 1
    await wait_until(lambda: _async(listen_key_calls("POST") == 2), what="a new listenKey")
    second_key = await wait_until(lambda: _async(sim_listen_key(sim, carol.api_key)), what="key")
    assert second_key != first_key
    await wait_until(lambda: _async(len(user_conns(sim, "binanceusdm", "private")) == 1 and
                                    user_conns(sim, "binanceusdm", "private")[0].conn_id != sock.conn_id),
                     what="a new user socket")  # fmt: skip
    for topic in topics:
        async def resynced(t: str = topic) -> bool:
            after = [e for sid, e in await events(redis_bytes, t) if sid > last_ids[t]]
            return any(e["type"] == "gap" and e["reason"] == "listen_key_expired" for e in after) and (
                t.endswith(":balance:carol") or any(e.get("snapshot") is True for e in after))

        await wait_until(resynced, what=f"{topic} re-synced after the expiry")
    [held] = rt._held.values()
    assert held.conn.reconnect_requests == 1 and held.conn.status()["private"]["listen_keys_created"] == 2
    assert listen_key_calls("DELETE") == 0
    assert await sim.push_private("binanceusdm", carol.api_key, "ORDER_TRADE_UPDATE", binance_order_update(4343)) == 1
    await wait_until(lambda: _any_event(redis_bytes, topics[0], order_id="4343"), what="order on the new socket")

    # the account's last private topic goes: the key is closed
    await unsubscribe(redis, topics[0], topics[1])
    await wait_until(lambda: _async(held.conn.status()["topics"] == 1), what="two topics gone from the socket")
    assert listen_key_calls("DELETE") == 0 and rt.held == [held.conn_id]
    await unsubscribe(redis, topics[2])
    await wait_until(lambda: _async(listen_key_calls("DELETE") == 1), what="listenKey DELETE")
    await assert_no_secrets(redis_bytes, caplog, world.secrets, [first_key, second_key])


async def _has(found: Awaitable[set[Any]], wanted: set[Any]) -> bool:
    return wanted <= await found


async def _any_event(redis_bytes: Redis, topic: str, **match: Any) -> bool:
    return any(all(e.get(k) == v for k, v in match.items()) for _, e in await events(redis_bytes, topic))


# -- (5) Gate.io: private subscribe with auth -------------------------------------------------------------


def gate_order_push(order_id: int, uid: str) -> dict[str, Any]:
    """A ``futures.orders`` update (exchanges.md §2.6) of an open buy."""
    order = {"contract": "BTC_USDT", "create_time_ms": 1700000000000, "fill_price": 0, "finish_as": "",
             "finish_time_ms": 0, "iceberg": 0, "id": order_id, "is_close": False, "is_liq": False,
             "is_reduce_only": False, "left": 5, "mkfr": -0.00025, "price": 60000.5, "refr": 0, "refu": 0,
             "size": 5, "status": "open", "text": "t-feedplane", "tif": "gtc", "tkfr": 0.00075, "user": uid,
             "update_time": 1700000000}  # fmt: skip
    return {"time": 1700000000, "time_ms": 1700000000000, "channel": "futures.orders", "event": "update",
            "result": [order]}  # fmt: skip


async def test_gate_private_subscribe_with_auth(
    world: World, make_env: Callable[..., dict[str, str]], runtimes: Any, redis: Redis, redis_bytes: Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.DEBUG)
    sim, dave = world.sim, world.accounts["dave"]
    await runtimes(make_env())
    topics = [dave.topic("order"), dave.topic("position")]
    await subscribe(redis, *topics)
    await wait_states(redis, topics, "active")
    subscribes = [orjson.loads(f.text) for f in sim.received if f.exchange == "gateio" and '"subscribe"' in f.text]
    assert {s["channel"] for s in subscribes} == {"futures.orders", "futures.positions"}
    for frame in subscribes:
        assert frame["auth"]["method"] == "api_key" and frame["auth"]["KEY"] == dave.api_key
        assert len(frame["auth"]["SIGN"]) == 128 and frame["payload"] == [dave.uid, "!all"]
    assert sim.stats["gate_auth_failures"] == 0
    await wait_until(lambda: _has(_kinds(redis_bytes, topics[0]), {("gap", None), ("order", False)}),
                     what="gate order events")  # fmt: skip
    await wait_until(lambda: _async(any(r.path_qs.startswith("/api/v4/futures/usdt/orders?status=open") and
                                        r.status == 200 for r in sim.rest_requests)), what="open orders")  # fmt: skip
    await wait_until(lambda: _async(any(r.path_qs.startswith("/api/v4/futures/usdt/positions") and r.status == 200
                                        for r in sim.rest_requests)), what="positions snapshot")  # fmt: skip
    assert await sim.push_private("gateio", dave.api_key, "futures.orders", gate_order_push(991, dave.uid)) == 1
    await wait_until(lambda: _any_event(redis_bytes, topics[0], order_id="991"), what="pushed gate order")
    [event] = [e for _, e in await events(redis_bytes, topics[0]) if e.get("order_id") == "991"]
    assert event["account"] == "dave" and event["exchange"] == "gateio" and event["status"] == "new"
    await assert_no_secrets(redis_bytes, caplog, world.secrets)


async def _kinds(redis_bytes: Redis, topic: str) -> set[tuple[str, bool | None]]:
    return {(e["type"], e.get("snapshot")) for _, e in await events(redis_bytes, topic)}


async def test_binance_keepalive_refused_gets_a_new_key(
    world: World, make_env: Callable[..., dict[str, str]], runtimes: Any, redis: Redis, redis_bytes: Redis,
    session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """Another client DELETEs the account's key (binance_usdm.md §7: one key per account): the next keepalive gets
    -1125, so the socket is replaced with a new key and the topics are re-synced (gap + snapshot)."""
    caplog.set_level(logging.DEBUG)
    sim, carol = world.sim, world.accounts["carol"]
    await runtimes(make_env(LISTEN_KEY_KEEPALIVE_S="0.2"))
    topic = carol.topic("order")
    await subscribe(redis, topic)
    await wait_states(redis, [topic], "active")
    first_key = sim_listen_key(sim, carol.api_key)
    async with session.delete(f"{sim.binance_rest_url}/fapi/v1/listenKey",
                              headers={"X-MBX-APIKEY": carol.api_key}) as resp:  # fmt: skip
        assert resp.status == 200
    assert sim_listen_key(sim, carol.api_key) is None
    await wait_until(lambda: _async(any(r.method == "PUT" and r.status == 400 for r in sim.rest_requests)),
                     what="a refused keepalive")  # fmt: skip
    second_key = await wait_until(lambda: _async(sim_listen_key(sim, carol.api_key)), what="a new key")
    assert second_key != first_key

    async def resynced() -> bool:
        found = await events(redis_bytes, topic)
        gaps = [i for i, (_, e) in enumerate(found) if e["type"] == "gap" and e["reason"] == "listen_key_expired"]
        return bool(gaps) and any(e.get("snapshot") is True for _, e in found[gaps[-1] :])

    await wait_until(resynced, what="gap + snapshot after the refused keepalive")
    assert await sim.push_private("binanceusdm", carol.api_key, "ORDER_TRADE_UPDATE", binance_order_update(77)) == 1
    await wait_until(lambda: _any_event(redis_bytes, topic, order_id="77"), what="order on the new key's socket")
    await assert_no_secrets(redis_bytes, caplog, world.secrets, [k for k in (first_key, second_key) if k])

