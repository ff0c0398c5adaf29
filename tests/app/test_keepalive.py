"""Keep-alive clients survive early rejections: real ``python -m app.serve`` (Hypercorn) + one ``httpx2.Client``.

Each early-rejection path answers before the route reads the request body. Hypercorn 0.18 then closes the TCP
connection after a response that did not say ``Connection: close``, whenever the rest of the body had not arrived
yet (a race). The next request on that keep-alive connection fails with "Server disconnected without sending a
response" (issue 10, defect 6). Per path: ROUNDS x (rejected request, then ``GET /status``) on one client; counted
are transport failures and the local ports used (one port = the connection was kept and reused throughout).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest
from redis import Redis
from starlette.types import Message, Receive, Scope, Send

from app.keepalive import DrainUnreadBody
from app.ratelimit import CONTROL
from control import keys

REPO = Path(__file__).resolve().parents[2]
ROUNDS = 300
CONTROL_TOKEN = "ctl-" + "k" * 28
READ_TOKEN = "read-" + "r" * 27
BODY_3K = b'{"topics": ["bitmart:trade:BTCUSDT"], "pad": "' + b"x" * 3000 + b'"}'
OVER_LIMIT = b"x" * 70_000  # over the default MAX_BODY_BYTES (65536), under the drain bound (1 MiB)
HUGE = b"x" * (2 << 20)  # over the drain bound: answered with Connection: close
_ENV_PREFIXES = ("CTRL_", "SSE_", "SUBSCRIBE_", "RATE_LIMIT_", "MAX_BODY", "CONTROL_TOKEN", "READ_TOKEN", "ACCOUNTS_")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(log: Path, redis_url: str, **extra: str) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(_ENV_PREFIXES)}
    env.update(PYTHONUNBUFFERED="1", LOG_LEVEL="INFO", CTRL_ADDR=f"127.0.0.1:{port}", REDIS_URL=redis_url)
    env.update(CONTROL_TOKEN=CONTROL_TOKEN, READ_TOKEN=READ_TOKEN, **extra)
    with log.open("wb") as err:  # the child keeps its own descriptor; a file never blocks it like a full pipe
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.serve"], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=err
        )
    return proc, f"http://127.0.0.1:{port}"


def _wait_running(proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30  # bounded poll on the child's log: "Running on" = lifespan done, socket bound
    while b"Running on" not in log.read_bytes():
        assert proc.poll() is None, f"server exited: {log.read_text()}"
        assert time.monotonic() < deadline, f"server not listening after 30 s: {log.read_text()}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[dict[str, str]]:
    """Base URLs of two servers: ``secured`` (tokens, no rate limits) and ``limited`` (1 control request/min)."""
    logs = tmp_path_factory.mktemp("keepalive")
    no_limits = {"RATE_LIMIT_CONTROL_PER_MIN": "0", "RATE_LIMIT_READ_PER_MIN": "0", "RATE_LIMIT_AUTH_FAIL_PER_MIN": "0"}
    started = {
        "secured": _start(logs / "secured.log", redis_url, **no_limits),
        "limited": _start(logs / "limited.log", redis_url, **{**no_limits, "RATE_LIMIT_CONTROL_PER_MIN": "1"}),
    }
    try:
        for name, (proc, _) in started.items():
            _wait_running(proc, logs / f"{name}.log")
        yield {name: url for name, (_, url) in started.items()}
    finally:
        for proc, _ in started.values():
            proc.terminate()
        for proc, _ in started.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _chunked(body: bytes) -> Iterable[bytes]:
    """A generator body: httpx sends it with Transfer-Encoding: chunked (no Content-Length)."""
    for i in range(0, len(body), 1024):
        yield body[i : i + 1024]


@dataclass(frozen=True)
class Case:
    server: str
    method: str
    path: str
    token: str | None
    body: bytes
    status: int
    closes: bool = False  # the answer must say Connection: close (the body is beyond the drain bound)
    chunked: bool = False
    rounds: int = ROUNDS
    warmup: bool = False


CASES = {
    "bad_query": Case("secured", "POST", "/ticker/subscribe?wait=999", CONTROL_TOKEN, BODY_3K, 400),
    "bad_query_chunked": Case("secured", "POST", "/ticker/subscribe?wait=999", CONTROL_TOKEN, BODY_3K, 400,
                              chunked=True),
    "missing_token": Case("secured", "POST", "/ticker/subscribe", None, BODY_3K, 401),
    "invalid_token": Case("secured", "POST", "/ticker/subscribe", "not-a-valid-token-000000", BODY_3K, 401),
    "insufficient_scope": Case("secured", "POST", "/ticker/subscribe", READ_TOKEN, BODY_3K, 403),
    "rate_limited": Case("limited", "POST", "/ticker/subscribe", CONTROL_TOKEN, BODY_3K, 429, warmup=True),
    "body_too_large": Case("secured", "POST", "/ticker/subscribe", CONTROL_TOKEN, OVER_LIMIT, 413),
    "body_too_large_chunked": Case("secured", "POST", "/ticker/subscribe", CONTROL_TOKEN, OVER_LIMIT, 413,
                                   chunked=True),
    "body_beyond_drain_bound": Case("secured", "POST", "/ticker/subscribe", CONTROL_TOKEN, HUGE, 413, closes=True,
                                    rounds=30),
    "unknown_route": Case("secured", "POST", "/no/such/route", CONTROL_TOKEN, BODY_3K, 404),
    "method_not_allowed": Case("secured", "PUT", "/status", CONTROL_TOKEN, BODY_3K, 405),
}  # fmt: skip


def _send(
    client: httpx2.Client, method: str, path: str, content: bytes | Iterable[bytes] | None, headers: dict[str, str]
) -> tuple[int, int, bool]:
    """(status, local port of the connection used, whether the answer said Connection: close)."""
    with client.stream(method, path, content=content, headers={**headers, "Content-Type": "application/json"}) as r:
        port = r.extensions["network_stream"].get_extra_info("client_addr")[1]  # read while the socket is open
        r.read()
    return r.status_code, int(port), r.headers.get("connection", "").lower() == "close"


@pytest.mark.integration
@pytest.mark.parametrize("name", list(CASES))
def test_keep_alive_connection_survives_early_rejection(servers: dict[str, str], redis_url: str, name: str) -> None:
    case = CASES[name]
    auth = {"Authorization": f"Bearer {case.token}"} if case.token else {}
    failures: list[str] = []
    statuses: dict[int, int] = {}
    ports: set[int] = set()
    kept_alive_but_closed = 0
    with httpx2.Client(base_url=servers[case.server], timeout=30) as client:
        if case.warmup:  # a fresh window, then spend its one allowed control request: every counted one is refused
            with Redis.from_url(redis_url) as redis:
                redis.delete(keys.rate_limit(CONTROL, "env:control"))
            client.request(case.method, case.path, content=case.body, headers=auth)
        for _ in range(case.rounds):
            content = _chunked(case.body) if case.chunked else case.body
            try:
                status, port, closes = _send(client, case.method, case.path, content, auth)
            except httpx2.TransportError as exc:
                failures.append(f"{case.method} {case.path}: {exc!r}")
                continue
            statuses[status] = statuses.get(status, 0) + 1
            kept_alive_but_closed += case.closes and not closes
            ports.add(port)
            try:
                status, port, _ = _send(client, "GET", "/status", None, {"Authorization": f"Bearer {CONTROL_TOKEN}"})
            except httpx2.TransportError as exc:
                failures.append(f"GET /status: {exc!r}")
                continue
            assert status == 200
            ports.add(port)
    print(f"{name}: {case.rounds} rounds, {len(failures)} failures, {len(ports)} connections, statuses {statuses}")
    assert failures == [], f"{len(failures)} of {case.rounds} rounds failed, e.g. {failures[:2]}"
    assert statuses == {case.status: case.rounds}
    if case.closes:
        assert kept_alive_but_closed == 0  # every such answer said Connection: close before the server closed
    else:
        assert len(ports) == 1, f"the server dropped the keep-alive connection: {len(ports)} connections used"


# DrainUnreadBody alone, with a scripted ASGI receive: the bounds and the edge cases, fast.


class _Client:
    """Scripted ASGI receive: ``chunks`` as http.request messages, then ``end`` (None = block, like a stalled
    client); records what was sent."""

    def __init__(self, chunks: list[bytes], end: str | None = "more_body=False") -> None:
        self.messages: list[Message] = [{"type": "http.request", "body": c, "more_body": True} for c in chunks]
        if end == "more_body=False":
            self.messages.append({"type": "http.request", "body": b"", "more_body": False})
        elif end == "disconnect":
            self.messages.append({"type": "http.disconnect"})
        self.received = 0
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        if self.received == len(self.messages):
            await asyncio.Event().wait()  # nothing more comes (a stalled client; after the body: no disconnect yet)
        self.received += 1
        return self.messages[self.received - 1]

    async def send(self, message: Message) -> None:
        self.sent.append(message)


async def _early_answer(scope: Scope, receive: Receive, send: Send) -> None:
    """An app that answers without reading the body (like a 400 for a bad query)."""
    await send({"type": "http.response.start", "status": 400, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"no", "more_body": False})


async def _run(app: DrainUnreadBody, client: _Client, headers: dict[str, str]) -> None:
    raw = [(k.encode(), v.encode()) for k, v in headers.items()]
    await app({"type": "http", "method": "POST", "path": "/", "headers": raw}, client.receive, client.send)


def _closes(client: _Client) -> bool:
    return (b"connection", b"close") in client.sent[0]["headers"]


async def test_drain_reads_the_rest_of_the_body_before_the_answer_starts() -> None:
    client = _Client([b"a" * 100, b"b" * 100])
    await _run(DrainUnreadBody(_early_answer, max_bytes=1000), client, {"content-length": "200"})
    assert client.received == 3  # both chunks and the end of the body, before the answer
    assert [m["type"] for m in client.sent] == ["http.response.start", "http.response.body"]
    assert not _closes(client)


async def test_drain_declared_body_over_the_bound_closes_without_reading() -> None:
    client = _Client([b"a" * 100])
    await _run(DrainUnreadBody(_early_answer, max_bytes=50), client, {"content-length": "100"})
    assert client.received == 0
    assert _closes(client)


async def test_drain_chunked_body_longer_than_the_bound_closes() -> None:
    client = _Client([b"a" * 40, b"b" * 40, b"c" * 40])
    await _run(DrainUnreadBody(_early_answer, max_bytes=50), client, {"transfer-encoding": "chunked"})
    assert client.received == 2  # stopped as soon as the bound was passed
    assert _closes(client)


async def test_drain_stalled_body_answers_with_close_after_the_timeout() -> None:
    client = _Client([b"a" * 10], end=None)
    async with asyncio.timeout(5):
        await _run(DrainUnreadBody(_early_answer, max_bytes=1000, timeout_s=0.2), client, {"content-length": "100"})
    assert _closes(client)


async def test_drain_keeps_a_disconnect_for_the_app_and_skips_bodiless_requests() -> None:
    seen: list[str] = []

    async def answer_then_listen(scope: Scope, receive: Receive, send: Send) -> None:
        await _early_answer(scope, receive, send)
        seen.append((await receive())["type"])  # the drain swallowed the disconnect: the app still gets one

    client = _Client([b"a" * 10], end="disconnect")
    await _run(DrainUnreadBody(answer_then_listen, max_bytes=1000), client, {"content-length": "100"})
    assert seen == ["http.disconnect"] and not _closes(client)
    client = _Client([])  # GET without a body: passed through, the drain never reads
    await _run(DrainUnreadBody(_early_answer, max_bytes=1000), client, {})
    assert client.received == 0 and not _closes(client)
