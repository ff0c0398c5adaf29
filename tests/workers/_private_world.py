"""Shared world of the private-stream tests (issue #3): accounts, fixtures and checks used by
``test_private.py``, ``test_private_resync.py`` and ``test_private_rest.py``.

Waiting: what is checked lives in Redis (written by other tasks) and in the simulator's tables, which send no
notification, so ``wait_until`` re-checks every 20 ms up to a deadline: a bounded wait for a condition.
Test modules take the fixtures by assigning them (``sim, world, ... = pw.sim, pw.world, ...``), which registers
them with pytest in that module only (``redaction_calls`` is autouse there).
"""

from __future__ import annotations

import asyncio
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
from hypercorn.asyncio import serve
from hypercorn.config import Config
from redis.asyncio import Redis
from sse_starlette.sse import AppStatus

import workers.runtime as runtime_module
from app.main import create_app
from control import keys
from control.redact import uninstall_redaction
from control.settings import Settings
from control.store import ControlStore
from scripts.simulator import ExchangeSimulator
from workers.runtime import WorkerRuntime

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


async def _async(value: Any) -> Any:
    return value
