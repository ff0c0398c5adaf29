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
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from cryptography.fernet import Fernet
from hypercorn.asyncio import serve
from hypercorn.config import Config
from redis.asyncio import Redis
from sse_starlette.sse import AppStatus

import workers.runtime as runtime_module
from app.main import create_app
from control import keys
from control.accounts import Account, put_api_account
from control.redact import uninstall_redaction
from control.settings import Settings
from control.store import ControlStore
from scripts.simulator import ExchangeSimulator
from workers.runtime import WorkerRuntime

pytestmark = pytest.mark.timeout(60)

PIECE = 8  # no substring of a secret this long may appear in logs or Redis


def tok(prefix: str) -> str:
    return f"{prefix}{secrets.token_urlsafe(18)}"


@dataclass
class Acct:
    exchange: str
    name: str
    api_key: str
    api_secret: str
    memo: str = ""  # BitMart memo
    uid: str = ""  # Gate user id (not a secret)

    @property
    def secrets(self) -> list[str]:
        return [s for s in (self.api_key, self.api_secret, self.memo) if s]

    def topic(self, channel: str) -> str:
        return f"{self.exchange}:{channel}:{self.name}"


@dataclass
class World:
    sim: ExchangeSimulator
    accounts: dict[str, Acct]
    accounts_file: str
    control_token: str
    tokens: dict[str, str]  # account name -> SSE token listing only that account
    secrets: list[str] = field(default_factory=list)


@pytest.fixture
async def sim() -> AsyncIterator[ExchangeSimulator]:
    async with ExchangeSimulator() as simulator:
        yield simulator


@pytest.fixture
def world(sim: ExchangeSimulator, tmp_path: Path) -> World:
    accounts = {
        "alice": Acct("bitmart", "alice", tok("ak"), tok("as"), memo=tok("am")),
        "bob": Acct("bitmart", "bob", tok("bk"), tok("bs"), memo=tok("bm")),
        "mallory": Acct("bitmart", "mallory", tok("mk"), tok("ms"), memo=tok("mm")),
        "carol": Acct("binanceusdm", "carol", tok("ck"), tok("cs")),
        "dave": Acct("gateio", "dave", tok("dk"), tok("ds"), uid="90817263"),
    }
    for a in accounts.values():
        secret = a.api_secret if a.name != "mallory" else tok("other")  # mallory's file secret is wrong
        sim.add_account(a.exchange, a.api_key, secret, a.memo or a.uid)
    tokens = {name: tok(f"t{name}") for name in ("alice", "bob")}
    control = tok("ctl")
    doc = {
        "accounts": [
            {"exchange": a.exchange, "account": a.name, "api_key": a.api_key, "api_secret": a.api_secret,
             "memo": a.memo, "uid": a.uid}
            for a in accounts.values()
        ],
        "tokens": [{"token": control, "scopes": ["control"]},
                   *({"token": t, "accounts": [f"bitmart:{n}"]} for n, t in tokens.items())],
    }  # fmt: skip
    path = tmp_path / "accounts.json"
    path.write_bytes(orjson.dumps(doc))
    os.chmod(path, 0o600)
    w = World(sim, accounts, str(path), control, tokens)
    w.secrets = [s for a in accounts.values() for s in a.secrets] + [control, *tokens.values()]
    return w


@pytest.fixture
def make_env(world: World, redis_url: str) -> Callable[..., dict[str, str]]:
    sim = world.sim

    def factory(**overrides: str) -> dict[str, str]:
        env = {
            "REDIS_URL": redis_url,
            "ACCOUNTS_FILE": world.accounts_file,
            "BITMART_PUBLIC_WS_URI": sim.bitmart_public_url,
            "BITMART_PRIVATE_WS_URI": sim.bitmart_private_url,
            "BITMART_REST_URI": sim.bitmart_rest_url,
            "BINANCE_USDM_WS_URI": sim.binance_base_url,
            "BINANCE_USDM_REST_URI": sim.binance_rest_url,
            "GATEIO_WS_URI": sim.gate_ws_url,
            "GATEIO_REST_URI": sim.gate_rest_url,
            "HEARTBEAT_INTERVAL_S": "0.2",
            "LEASE_TTL_S": "1",
            "SUBSCRIBE_DELAY_MS": "10",
            "PING_INTERVAL_S": "5",
            "RECONNECT_DELAY_S": "0.05",
            "RECONNECT_MAX_DELAY_S": "0.5",
            "DRAIN_TIMEOUT_S": "2",
            "RATE_LIMIT_CONTROL_PER_MIN": "0",
            "RATE_LIMIT_SSE_PER_MIN": "0",
            "CTRL_ADDR": "127.0.0.1:18090",
        }
        env.update(overrides)
        return env

    return factory


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture(autouse=True)
def redaction_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[set[str]]]:
    """Record what the runtime hands to ``install_redaction`` instead of installing it: the logs checked here are
    what the code writes."""
    calls: list[set[str]] = []
    monkeypatch.setattr(runtime_module, "install_redaction", lambda values: calls.append(set(values)))
    yield calls
    uninstall_redaction()


@pytest.fixture
async def runtimes(
    make_settings: Callable[..., Settings], redis: Redis, redis_bytes: Redis, session: aiohttp.ClientSession
) -> AsyncIterator[Callable[..., Awaitable[WorkerRuntime]]]:
    started: list[WorkerRuntime] = []

    async def factory(env: dict[str, str], worker_id: str = "w1") -> WorkerRuntime:
        rt = WorkerRuntime(make_settings(**env), worker_id=worker_id, redis=redis, redis_bytes=redis_bytes,
                           session=session)  # fmt: skip
        started.append(rt)
        await rt.start()
        return rt

    yield factory
    for rt in started:
        await rt.stop(drain=True)


async def wait_until(check: Callable[[], Awaitable[Any]], timeout: float = 10.0, what: str = "condition") -> Any:
    """Re-evaluate ``await check()`` every 20 ms until truthy; returns it (see the module docstring)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s (last: {value!r})")
        await asyncio.sleep(0.02)


async def subscribe(redis: Redis, *topics: str) -> None:
    store = ControlStore(redis)
    await store.add_desired(list(topics), 1)
    await store.notify("plan")


async def unsubscribe(redis: Redis, *topics: str) -> None:
    store = ControlStore(redis)
    await store.remove_desired(list(topics))
    await store.notify("plan")


async def states(redis: Redis, topics: list[str]) -> dict[str, dict[str, Any]]:
    raw = await redis.hmget(keys.SUB_STATE, topics)
    return {t: orjson.loads(v) if v else {} for t, v in zip(topics, raw)}


async def wait_states(redis: Redis, topics: list[str], state: str, timeout: float = 10.0) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        found = await states(redis, topics)
        return found if all(s.get("state") == state for s in found.values()) else None

    result: dict[str, Any] = await wait_until(check, timeout, f"{topics} {state}")
    return result


async def events(redis_bytes: Redis, topic: str) -> list[tuple[str, dict[str, Any]]]:
    """(stream id, event) of every entry of ``topic``'s stream, oldest first."""
    entries = await redis_bytes.xrange(keys.event_stream(topic))
    return [(sid.decode(), orjson.loads(fields[keys.STREAM_FIELD.encode()])) for sid, fields in entries]


async def redis_dump(redis_bytes: Redis) -> str:
    """Every key and value of the test database as text."""
    out = []
    for key in await redis_bytes.keys("*"):
        kind = (await redis_bytes.type(key)).decode()
        if kind == "string":
            value: Any = await redis_bytes.get(key)
        elif kind == "hash":
            value = await redis_bytes.hgetall(key)
        elif kind == "stream":
            value = await redis_bytes.xrange(key)
        elif kind == "zset":
            value = await redis_bytes.zrange(key, 0, -1)
        elif kind == "list":
            value = await redis_bytes.lrange(key, 0, -1)
        else:
            value = await redis_bytes.smembers(key)
        out.append(f"{key!r} {value!r}")
    return "\n".join(out)


async def assert_no_secrets(
    redis_bytes: Redis, caplog: pytest.LogCaptureFixture, values: list[str], listen_keys: list[str] = ()  # type: ignore[assignment]
) -> None:
    """No secret (nor any PIECE-character piece of one) in a log record or in Redis."""
    logs = "\n".join(f"{r.getMessage()} {r.exc_text or ''} {r.stack_info or ''}" for r in caplog.records)
    dump = await redis_dump(redis_bytes)
    assert caplog.records, "no log record captured: the check would prove nothing"
    for value in [*values, *listen_keys]:
        pieces = {value[i : i + PIECE] for i in range(len(value) - PIECE + 1)}
        for where, text in (("logs", logs), ("redis", dump)):
            for piece in pieces:
                assert piece not in text, f"{PIECE} characters of a secret found in {where}"


def sim_listen_key(sim: ExchangeSimulator, api_key: str) -> str | None:
    """The simulator's active listenKey of a Binance account (its private state: the test needs the secret)."""
    acct = sim._private._accounts.get(("binanceusdm", api_key))
    return acct.listen_key if acct is not None else None


def bitmart_order_push(order_id: str, symbol: str = "BTCUSDT", state: int = 2, action: int = 2) -> dict[str, Any]:
    """A ``futures/order`` push (exchanges.md §1.7) of one limit buy."""
    order = {"order_id": order_id, "client_order_id": f"c{order_id}", "price": "60000.1", "size": "3",
             "symbol": symbol, "state": state, "side": 1, "type": "limit", "leverage": "5", "open_type": "cross",
             "deal_avg_price": "0", "deal_size": "0", "create_time": 1700000000000, "update_time": 1700000000001,
             "position_mode": "hedge_mode"}  # fmt: skip
    return {"group": "futures/order", "data": [{"action": action, "order": order}]}


def user_conns(sim: ExchangeSimulator, exchange: str, route: str) -> list[Any]:
    return [c for c in sim.connections if c.exchange == exchange and c.route == route]


# -- (1) two BitMart accounts side by side, down to SSE --------------------------------------------------


@dataclass
class Server:
    url: str
    stop_event: asyncio.Event
    task: asyncio.Task[None]


@pytest.fixture
async def app_server(make_settings: Callable[..., Settings]) -> AsyncIterator[Callable[..., Awaitable[Server]]]:
    """Factory: a real Hypercorn serving ``create_app`` for the given env (as tests/app/test_sse.py runs it)."""
    servers: list[Server] = []

    async def start(env: dict[str, str]) -> Server:
        app = create_app(make_settings(**env))
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        port = sock.getsockname()[1]
        config = Config()
        config.bind = [f"fd://{sock.detach()}"]
        config.graceful_timeout = 2
        config.accesslog = None
        stop_event = asyncio.Event()

        async def trigger() -> None:
            await stop_event.wait()
            AppStatus.should_exit = True

        server = Server(f"http://127.0.0.1:{port}", stop_event,
                        asyncio.create_task(serve(app, config, shutdown_trigger=trigger)))  # fmt: skip
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop_event.set()
        await asyncio.wait_for(server.task, 10)
    AppStatus.should_exit = False


async def next_sse_event(resp: aiohttp.ClientResponse, timeout_s: float = 10.0) -> dict[str, str]:
    event: dict[str, str] = {}
    async with asyncio.timeout(timeout_s):
        while True:
            line = (await resp.content.readline()).decode().rstrip("\r\n")
            if not line:
                if event:
                    return event
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            event[name] = value.removeprefix(" ")


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


async def _async(value: Any) -> Any:
    return value


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


# -- pieces: Retry-After on private REST, data activating a pending topic -------------------------------------


class Recorder:
    """Publisher stand-in: keeps what is published and the states set."""

    congested = False

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.states: dict[str, dict[str, Any]] = {}

    def publish(self, topic: str, event: dict[str, Any], conn_id: str | None = None) -> None:
        self.events.append((topic, event))

    def set_state(self, topic: str, record: dict[str, Any], conn_id: str | None = None) -> None:
        self.states[topic] = record

    async def room(self) -> None:
        return None


@pytest.mark.parametrize("status", [429, 418])
async def test_private_snapshot_honours_retry_after(status: int, session: aiohttp.ClientSession) -> None:
    """A rate-limited snapshot call waits the server's Retry-After (longer than its own backoff) before retrying."""
    from aiohttp import web

    from workers.exchanges import REGISTRY
    from workers.private import PrivateSession

    calls: list[float] = []
    loop = asyncio.get_running_loop()

    async def open_orders(request: web.Request) -> web.Response:
        calls.append(loop.time())
        if len(calls) == 1:
            return web.json_response({"code": 30013, "message": "rate limited"}, status=status,
                                     headers={"Retry-After": "0.4"})  # fmt: skip
        order = bitmart_order_push("R-1")["data"][0]["order"]
        return web.json_response({"code": 1000, "message": "Ok", "data": [order], "trace": "t"})

    app = web.Application()
    app.router.add_get("/contract/private/get-open-orders", open_orders)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    recorder = Recorder()
    account = Account("bitmart", "x", tok("k"), tok("s"), memo=tok("m"))
    private = PrivateSession(account=account, adapter=REGISTRY["bitmart"], session=session, publisher=recorder,  # type: ignore[arg-type]
                             ws_base_url="ws://unused", rest_base_url=f"http://127.0.0.1:{port}",
                             retry_initial_s=0.01, retry_max_s=0.05)  # fmt: skip
    private.bind("c1", lambda topic: True)
    try:
        private.want_snapshot("bitmart:order:x")
        await wait_until(lambda: _async(any(e.get("order_id") == "R-1" for _, e in recorder.events)),
                         what="the snapshot after the 429")  # fmt: skip
    finally:
        await private.close()
        await runner.cleanup()
    assert len(calls) == 2 and calls[1] - calls[0] >= 0.4
    assert [e["type"] for _, e in recorder.events] == ["gap", "order"]
    assert recorder.events[0][1]["reason"] == "subscribe" and recorder.events[1][1]["snapshot"] is True
    assert private.stats["rest_failures"] == 1 and f"HTTP {status}" in (private.last_error or "")


class _NoAckParser:
    """Wraps a real parser and drops every ack (an older Gate server that echoes no request id)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def parse(self, raw: str | bytes, ts_received_ms: int) -> Any:
        parsed = self.inner.parse(raw, ts_received_ms)
        parsed.acks = []
        return parsed


class _NoAckAdapter:
    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def new_parser(self) -> _NoAckParser:
        return _NoAckParser(self._inner.new_parser())


async def test_data_event_activates_a_pending_topic(
    make_settings: Callable[..., Settings], session: aiohttp.ClientSession
) -> None:
    from control.topics import Topic
    from workers.connection import ExchangeConnection
    from workers.exchanges import REGISTRY

    async with ExchangeSimulator(rate=50.0, loop=True) as simulator:
        recorder = Recorder()
        topic = Topic.parse("gateio:trade:BTC_USDT")
        conn = ExchangeConnection(conn_id="g1", adapter=_NoAckAdapter(REGISTRY["gateio"]), url=simulator.gate_ws_url,  # type: ignore[arg-type]
                                  settings=make_settings(SUBSCRIBE_DELAY_MS="0"), session=session,
                                  publisher=recorder)  # type: ignore[arg-type]  # fmt: skip
        conn.set_topics([topic])
        task = asyncio.create_task(conn.run())
        try:
            await wait_until(lambda: _async(recorder.states.get(str(topic), {}).get("state") == "active"),
                             what="active without an ack")  # fmt: skip
        finally:
            await conn.stop(timeout_s=2.0)
            await task
    assert any(t == str(topic) and e["type"] == "trade" for t, e in recorder.events)


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
