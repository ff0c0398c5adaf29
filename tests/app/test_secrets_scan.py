"""No secret anywhere: every endpoint exercised (failures included) on a real Hypercorn, then every log record
(caplog at DEBUG), every line as the JSON formatter writes it (``LOG_FORMAT=json``), every access-log line, every
response and every Redis key/value is searched for each secret and each 8-character piece of one. Also: the
redaction filter and the sanitised access-log atoms (JSON lines whose context carries a secret:
tests/control/test_logging_config.py)."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Callable, Iterator
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
from starlette.testclient import TestClient

from app.main import create_app
from app.serve import ACCESS_LOG_FORMAT, RedactingAccessLogger, hypercorn_config
from control import keys
from control.accounts import secret_values
from control.redact import MASK, install_redaction, uninstall_redaction
from control.settings import Settings
from tests.app._logs import LineHandler, json_handler

PIECE = 8  # no substring of a secret this long may appear anywhere


def tok(prefix: str) -> str:
    return f"{prefix}{secrets.token_urlsafe(24)}"


@dataclass
class World:
    settings: Settings
    control: str
    read: str
    alice: str  # account token for bitmart:alice
    carol_key: str  # POST /accounts
    carol_secret: str
    carol_memo: str
    secrets: list[str] = field(default_factory=list)


@pytest.fixture
def world(make_settings: Callable[..., Settings], tmp_path: Path) -> World:
    control, read, alice, file_read = tok("C"), tok("R"), tok("A"), tok("F")
    env = {
        "BITMART_API_KEY": tok("bk"), "BITMART_API_SECRET": tok("bs"), "BITMART_API_MEMO": tok("bm"),
        "BINANCE_API_KEY": tok("nk"), "BINANCE_API_SECRET": tok("ns"),
        "GATEIO_API_KEY": tok("gk"), "GATEIO_API_SECRET": tok("gs"),
        "FEEDPLANE_SECRET_KEY": Fernet.generate_key().decode(),
    }  # fmt: skip
    doc = {
        "accounts": [{"exchange": "bitmart", "account": "alice", "api_key": tok("ak"), "api_secret": tok("as"),
                      "memo": tok("am")},
                     {"exchange": "gateio", "account": "g1", "api_key": tok("gk"), "api_secret": tok("gs"),
                      "uid": "90817263"}],
        "tokens": [{"token": alice, "accounts": ["bitmart:alice"]}, {"token": file_read, "scopes": ["read"]}],
    }  # fmt: skip
    path = tmp_path / "accounts.json"
    path.write_bytes(orjson.dumps(doc))
    os.chmod(path, 0o600)
    settings = make_settings(CONTROL_TOKEN=control, READ_TOKEN=read, ACCOUNTS_FILE=str(path),
                             RATE_LIMIT_AUTH_FAIL_PER_MIN="3", MAX_BODY_BYTES="4096", **env)  # fmt: skip
    w = World(settings, control, read, alice, tok("ck"), tok("cs"), tok("cm"))
    file_values = [v for a in doc["accounts"] for k, v in a.items() if k in ("api_key", "api_secret", "memo")]
    w.secrets = [control, read, alice, file_read, *env.values(), *file_values, w.carol_key, w.carol_secret,
                 w.carol_memo]  # fmt: skip
    assert secret_values(settings) >= set(w.secrets) - {w.carol_key, w.carol_secret, w.carol_memo}
    return w


ListHandler = LineHandler


@pytest.fixture
def json_log() -> Iterator[LineHandler]:
    """Every record of the root logger, as JSON lines."""
    handler = json_handler()
    root = logging.getLogger()
    root.addHandler(handler)
    yield handler
    root.removeHandler(handler)


@pytest.fixture
def access_log() -> Iterator[tuple[logging.Logger, ListHandler]]:
    logger = logging.getLogger("test.feedplane.access")
    handler = ListHandler()
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, handler
    logger.removeHandler(handler)


@pytest.fixture
async def server(world: World, access_log: Any, redis: Redis) -> AsyncIterator[str]:
    """The app under Hypercorn configured by app.serve (access-log format and logger class), on a free port."""
    config = hypercorn_config(world.settings)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    config.bind = [f"fd://{sock.detach()}"]
    config.accesslog = access_log[0]
    stop = asyncio.Event()

    async def trigger() -> None:
        await stop.wait()
        AppStatus.should_exit = True

    task = asyncio.create_task(serve(create_app(world.settings), config, shutdown_trigger=trigger))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        AppStatus.should_exit = False


async def dump_redis(r: Redis) -> str:
    """Every key and value, all types (arq job payloads included), as one text."""
    parts: list[bytes] = []
    for key in await r.keys("*"):
        kind = (await r.type(key)).decode()
        parts.append(key)
        if kind == "string":
            parts.append(await r.get(key))
        elif kind == "hash":
            parts.extend(b for kv in (await r.hgetall(key)).items() for b in kv)
        elif kind == "list":
            parts.extend(await r.lrange(key, 0, -1))
        elif kind == "set":
            parts.extend(await r.smembers(key))
        elif kind == "zset":
            parts.extend(m for m, _ in await r.zrange(key, 0, -1, withscores=True))
        elif kind == "stream":
            parts.extend(b for _, fields in await r.xrange(key) for kv in fields.items() for b in kv)
        else:  # pragma: no cover - a new type must be dumped too
            raise AssertionError(f"dump {kind} ({key!r})")
    return b"\n".join(parts).decode("latin-1")


def assert_no_secret(corpus: dict[str, str], secret_list: list[str]) -> None:
    for value in secret_list:
        for i in range(len(value) - PIECE + 1):
            piece = value[i : i + PIECE]
            for where, text in corpus.items():
                assert piece not in text, f"{PIECE} characters of a secret found in {where}"


class Client:
    """aiohttp wrapper that records every response (status, headers, body) for the scan."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session, self.base = session, base
        self.seen: list[str] = []

    async def req(self, method: str, path: str, token: str | None = None, **kwargs: Any) -> int:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        headers.update(kwargs.pop("headers", {}))
        async with self.session.request(method, self.base + path, headers=headers, **kwargs) as resp:
            body = await resp.read()
            self.seen.append(f"{resp.status} {dict(resp.headers)} {body.decode('latin-1')}")
            return resp.status

    async def sse(self, path: str, token: str | None = None) -> int:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.session.get(self.base + path, headers=headers) as resp:
            text = b""
            if resp.status == 200:
                async with asyncio.timeout(5):
                    while b"event: ready" not in text:
                        text += await resp.content.readline()
            else:
                text = await resp.read()
            self.seen.append(f"{resp.status} {dict(resp.headers)} {text.decode('latin-1')}")
            return resp.status


async def exercise(c: Client, w: World, redis: Redis) -> None:
    """Every endpoint, happy and failing, secrets in bodies, headers and query strings."""
    json = {"content-type": "application/json"}
    carol = {"exchange": "bitmart", "account": "carol", "api_key": w.carol_key, "api_secret": w.carol_secret,
             "memo": w.carol_memo}  # fmt: skip
    await redis.xadd(keys.event_stream("bitmart:order:alice"), {keys.STREAM_FIELD: b'{"type":"order","id":"1"}'})
    expected = [
        (200, "GET", "/help", w.read, {}), (200, "GET", "/help?format=json", w.control, {}),
        (200, "GET", "/status", w.read, {}),
        (202, "POST", "/klines/subscribe", w.control, {"json": {"symbol": "BTCUSDT", "tfs": ["1m"]}}),
        (202, "POST", "/trades/subscribe?wait=0.1", w.control, {"json": {"symbol": "BTCUSDT"}}),
        (202, "POST", "/ticker/subscribe", w.control, {"json": {"symbol": "BTCUSDT", "exchange": "binanceusdm"}}),
        (202, "POST", "/bookticker/subscribe", w.control, {"json": {"symbol": "BTC_USDT", "exchange": "gateio"}}),
        (202, "POST", "/depth/subscribe", w.control, {"json": {"symbol": "BTCUSDT", "levels": 5}}),
        (200, "POST", "/depth/unsubscribe", w.control, {"json": {"symbol": "BTCUSDT"}}),
        (200, "POST", "/klines/unsubscribe", w.control, {"json": {"symbol": "BTCUSDT", "tfs": ["1m"]}}),
        (200, "POST", "/trades/unsubscribe", w.control, {"json": {"symbol": "BTCUSDT"}}),
        (200, "POST", "/ticker/unsubscribe", w.control, {"json": {"symbol": "BTCUSDT", "exchange": "binanceusdm"}}),
        (200, "POST", "/bookticker/unsubscribe", w.control, {"json": {"symbol": "BTC_USDT", "exchange": "gateio"}}),
        (202, "POST", "/orders/subscribe", w.control, {"json": {"account": "alice"}}),
        (202, "POST", "/balances/subscribe?wait=0.1", w.control, {"json": {"exchange": "gateio", "account": "g1"}}),
        (202, "POST", "/positions/subscribe", w.control, {}),
        (400, "POST", "/orders/subscribe", w.control, {"json": {"account": "nobody"}}),
        (200, "POST", "/positions/unsubscribe", w.control, {"json": {"account": "alice"}}),
        (200, "POST", "/stop", w.control, {}), (200, "POST", "/start", w.control, {}),
        (201, "POST", "/accounts", w.control, {"json": carol}),
        (200, "POST", "/accounts", w.control, {"json": carol}),
        (200, "GET", "/accounts", w.control, {}),
        (400, "POST", "/accounts", w.control, {"json": {**carol, "account": "bad name!"}}),
        (400, "POST", "/accounts", w.control, {"json": {**carol, "api_secret": [w.carol_secret]}}),
        (400, "POST", "/accounts", w.control, {"json": {**carol, "api_secret": w.carol_secret + " x"}}),
        (400, "POST", "/accounts", w.control, {"json": {**carol, "api_key": w.carol_secret * 40}}),
        (400, "POST", "/accounts", w.control, {"json": {**carol, "extra": w.carol_secret}}),
        (400, "POST", "/accounts", w.control,
         {"data": b'{"api_secret": "' + w.carol_secret.encode() + b'", oops', "headers": json}),
        (409, "POST", "/accounts", w.control, {"json": {**carol, "account": "default"}}),
        (413, "POST", "/accounts", w.control, {"json": {**carol, "memo": w.carol_secret * 200}}),
        (413, "POST", "/accounts", w.control,
         {"data": _chunks(orjson.dumps({**carol, "memo": w.carol_memo * 300})), "headers": json}),
        (403, "POST", "/stop", w.read, {}), (403, "POST", "/accounts", w.read, {"json": carol}),
        (403, "GET", "/status", w.alice, {}),
        (400, "POST", f"/stop?access_token={w.control}", None, {}),
        (400, "GET", f"/status?access_token={w.read}", None, {}),
        (409, "DELETE", "/accounts/bitmart/default", w.control, {}),
        (409, "DELETE", "/accounts/bitmart/alice", w.control, {}),
        (200, "DELETE", "/accounts/bitmart/carol", w.control, {}),
        (404, "DELETE", "/accounts/bitmart/carol", w.control, {}),
        (404, "GET", "/nope", w.read, {}), (405, "GET", "/stop", w.control, {}),
    ]  # fmt: skip
    for status, method, path, token, kwargs in expected:
        assert await c.req(method, path, token, **kwargs) == status, (method, path)
    assert await c.req("POST", "/accounts", w.control, json={**carol, "account": "erin"}) == 201  # stays in Redis
    assert await c.sse(f"/sse/orders/alice?access_token={w.alice}&backlog=5") == 200
    assert await c.sse("/sse/balances/alice", w.control) == 200
    assert await c.sse("/sse?topic=bitmart:trade:BTCUSDT&backlog=1", w.read) == 200
    assert await c.sse(f"/sse/trades/BTCUSDT?access_token={w.control}") == 200
    assert await c.sse("/sse/orders/bob", w.alice) == 403
    assert await c.sse("/sse/positions/alice", w.read) == 403
    # last: failed authentication (the address is locked out after 3)
    for token in (tok("guess"), w.read[:-1] + "x", None):
        assert await c.req("GET", "/status", token) == 401
    assert await c.req("GET", "/status", w.read) == 429
    assert await c.sse(f"/sse/trades/BTCUSDT?access_token={w.read}") == 429


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(data), 1000):
        yield data[i : i + 1000]


@pytest.mark.parametrize("redaction", ["raw", "redacted"])
async def test_no_secret_in_logs_responses_or_redis(
    world: World, server: str, access_log: Any, redis: Redis, redis_bytes: Redis, caplog: pytest.LogCaptureFixture,
    redaction: str, json_log: LineHandler,
) -> None:  # fmt: skip
    """``raw``: the code itself writes no secret anywhere. ``redacted``: as app.serve runs it (filter installed)."""
    caplog.set_level(logging.DEBUG)
    if redaction == "redacted":
        install_redaction(secret_values(world.settings))
    try:
        # a new connection per request: after a 413 the server drops the connection with the unread body
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            client = Client(session, server)
            await exercise(client, world, redis)
    finally:
        uninstall_redaction()
    await asyncio.sleep(0.1)  # the access log line of the last response
    handler = access_log[1]
    records = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''} {r.stack_info or ''}" for r in caplog.records)
    corpus = {
        "log records": records,
        "formatted logs": caplog.text,
        "access log": "\n".join(handler.lines),
        "json logs": "\n".join(json_log.lines),
        "responses": "\n".join(client.seen),
        "redis": await dump_redis(redis_bytes),
    }
    assert_no_secret(corpus, world.secrets)
    # the scan looked at real material
    assert "rejected invalid token" in records and "account bitmart:carol added (key" in records
    parsed = [orjson.loads(line) for line in json_log.lines]  # every line is one JSON object
    assert any("rejected invalid token" in p["message"] and p["role"] == "api" and p["request_id"] for p in parsed)
    assert any('"GET /sse/orders/alice 1.1" ' in line for line in handler.lines)  # status "-": client left
    assert any('"POST /stop 1.1" 400' in line for line in handler.lines)
    assert not any("access_token" in line for line in handler.lines)
    assert sum(" 413 " in line for line in handler.lines) == 2 and sum(" 429 " in line for line in handler.lines) == 2
    assert "bitmart:erin" in corpus["redis"] and "sealed" in corpus["redis"]
    assert any(k.startswith(("arq:", keys.ARQ_QUEUE)) for k in corpus["redis"].split("\n"))  # job payloads too


# -- redaction filter ------------------------------------------------------------------------------------


@pytest.fixture
def redaction() -> Iterator[None]:
    uninstall_redaction()
    yield
    uninstall_redaction()


def test_install_redaction_masks_messages_args_and_tracebacks(
    redaction: None, caplog: pytest.LogCaptureFixture
) -> None:
    secret, other, short = tok("s"), tok("o"), "abc1234"
    install_redaction([secret, short, ""])
    log = logging.getLogger("test.redact")
    caplog.set_level(logging.DEBUG)
    log.warning("token %s and %r", secret, {"k": "x" + secret + "y"})
    log.info("dict style %(v)s", {"v": secret})
    try:
        raise RuntimeError(f"failed with {secret}")
    except RuntimeError:
        log.exception("boom")
    log.debug("stack", stack_info=True, extra={"whatever": 1})
    install_redaction([other])  # adds to the installed filter
    log.error("later %s %s", other, short)
    text = caplog.text + "".join(r.getMessage() for r in caplog.records)
    assert secret[:PIECE] not in text and other not in text
    assert f"token {MASK} and {{'k': 'x{MASK}y'}}" in text and f"dict style {MASK}" in text
    assert f"RuntimeError: failed with {MASK}" in text
    assert f"later {MASK} abc1234" in text  # shorter than 8 characters: left alone


def test_redaction_reaches_loggers_that_do_not_propagate(redaction: None) -> None:
    secret = tok("np")
    log = logging.getLogger("test.redact.isolated")
    handler = ListHandler()
    log.addHandler(handler)
    log.propagate = False
    try:
        install_redaction([secret])
        log.warning("value=%s", secret)
    finally:
        log.removeHandler(handler)
    assert handler.lines == [f"value={MASK}"]


def test_internal_error_trace_is_redacted(
    world: World, redis: Redis, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, redaction: None
) -> None:
    install_redaction(secret_values(world.settings))
    app = create_app(world.settings)
    api_secret = world.settings.env_credentials("bitmart")["api_secret"]
    with TestClient(app, raise_server_exceptions=False) as client:

        async def boom(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError(f"exchange said no to {api_secret}")

        monkeypatch.setattr(app.state.dispatcher, "subscribe", boom)
        resp = client.post("/trades/subscribe", json={"symbol": "BTCUSDT"},
                           headers={"Authorization": f"Bearer {world.control}"})  # fmt: skip
    assert resp.status_code == 500 and api_secret not in resp.text
    assert "unhandled error" in caplog.text and f"exchange said no to {MASK}" in caplog.text
    assert api_secret[:PIECE] not in caplog.text


async def test_access_log_atoms_are_sanitised(world: World) -> None:
    """Even a format that asks for the query string, the Authorization header or an env var leaks nothing."""
    lines = ListHandler()
    sink = logging.getLogger("test.feedplane.access.atoms")
    sink.addHandler(lines)
    sink.setLevel(logging.INFO)
    sink.propagate = False
    os.environ["FEEDPLANE_TEST_ATOM_SECRET"] = world.control
    try:
        config = Config()
        config.accesslog = sink
        config.access_log_format = ('%(R)s|%(Uq)s|%(q)s|%({authorization}i)s|%({cookie}i)s|%({referer}i)s|'
                                    '%({feedplane_test_atom_secret}e)s')  # fmt: skip
        config.logger_class = RedactingAccessLogger
        scope = {"type": "http", "http_version": "1.1", "method": "GET", "scheme": "http", "path": "/sse/orders/a",
                 "query_string": f"backlog=1&access_token={world.alice}".encode(), "client": ("127.0.0.1", 1),
                 "headers": [(b"authorization", f"Bearer {world.read}".encode()),
                             (b"cookie", b"s=" + world.read.encode()),
                             (b"referer", f"http://x/?access_token={world.alice}".encode())]}  # fmt: skip
        await config.log.access(scope, {"status": 200, "headers": []}, 0.01)  # type: ignore[arg-type]
    finally:
        del os.environ["FEEDPLANE_TEST_ATOM_SECRET"]
        sink.removeHandler(lines)
    [line] = lines.lines
    assert line == (f"GET /sse/orders/a?backlog=1&access_token={MASK} 1.1|/sse/orders/a?backlog=1&access_token={MASK}|"
                    f"backlog=1&access_token={MASK}|{MASK}|{MASK}|http://x/?access_token={MASK}|-")  # fmt: skip
    assert '"%(m)s %(U)s %(H)s"' in ACCESS_LOG_FORMAT  # path without the query string
    assert not any(atom in ACCESS_LOG_FORMAT for atom in ("%(r)s", "%(R)s", "%(q)s", "%(Uq)s", "}i)s", "}e)s"))
