"""Fixtures of the control-server tests: the JSON API clients (open, with accounts), the auth clients (secured by
tokens, open mode), and the in-process SSE server with its aiohttp session."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Callable, Iterator
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
from control.settings import Settings
from tests.app._api import BM_ENV
from tests.app._auth import CONTROL, READ, write_secrets
from tests.app._sse import Server


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(CTRL_ADDR="127.0.0.1:18089", MAX_BODY_BYTES="8192", STALL_TIMEOUT_S="60")


@pytest.fixture
def client(settings: Settings, redis: Redis) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture
def account_settings(make_settings: Callable[..., Settings], tmp_path: Path) -> Settings:
    """bitmart:default from the environment, binanceusdm:alice and gateio:g1 from ACCOUNTS_FILE, POST /accounts on."""
    doc = {"accounts": [
        {"exchange": "binanceusdm", "account": "alice", "api_key": "alice-key-0123456789", "api_secret": "alice-s-01234"},
        {"exchange": "gate", "account": "g1", "api_key": "g1-key-0123456789", "api_secret": "g1-s-0123456789",
         "uid": 90817263},
    ]}  # fmt: skip
    path = tmp_path / "accounts.json"
    path.write_bytes(orjson.dumps(doc))
    os.chmod(path, 0o600)
    return make_settings(CTRL_ADDR="127.0.0.1:18089", ACCOUNTS_FILE=str(path),
                         FEEDPLANE_SECRET_KEY=Fernet.generate_key().decode(), **BM_ENV)  # fmt: skip


@pytest.fixture
def account_client(account_settings: Settings, redis: Redis) -> Iterator[TestClient]:
    with TestClient(create_app(account_settings)) as c:
        yield c


@pytest.fixture
def secured_settings(make_settings: Callable[..., Settings], tmp_path: Path) -> Settings:
    # limits off: the matrix makes many requests from one address; tests/app/test_ratelimit.py covers limits
    return make_settings(CONTROL_TOKEN=CONTROL, READ_TOKEN=READ, ACCOUNTS_FILE=write_secrets(tmp_path),
                         RATE_LIMIT_CONTROL_PER_MIN="0", RATE_LIMIT_READ_PER_MIN="0", RATE_LIMIT_SSE_PER_MIN="0",
                         RATE_LIMIT_AUTH_FAIL_PER_MIN="0")  # fmt: skip


@pytest.fixture
def secured(secured_settings: Settings, redis: Redis) -> Iterator[TestClient]:
    with TestClient(create_app(secured_settings)) as client:
        yield client


@pytest.fixture
def open_client(make_settings: Callable[..., Settings], redis: Redis) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(CTRL_ADDR="127.0.0.1:18089"))) as client:
        yield client


@pytest.fixture
async def start_server(make_settings: Callable[..., Settings], redis: Redis) -> AsyncIterator[Callable[..., Any]]:
    """Factory: ``await start_server(**env)`` -> Server on 127.0.0.1:<free port> (socket bound before serving)."""
    servers: list[Server] = []

    async def start(**env: str) -> Server:
        app = create_app(make_settings(**env))
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)  # connections queue in the backlog until hypercorn accepts: no readiness race
        port = sock.getsockname()[1]
        config = Config()
        config.bind = [f"fd://{sock.detach()}"]
        config.graceful_timeout = 5
        stop_event = asyncio.Event()

        async def trigger() -> None:
            await stop_event.wait()
            AppStatus.should_exit = True

        task = asyncio.create_task(serve(app, config, shutdown_trigger=trigger))
        server = Server(app, f"http://127.0.0.1:{port}", stop_event, task)
        servers.append(server)
        async with aiohttp.ClientSession() as s, s.get(f"{server.url}/help") as resp:  # waits for lifespan startup
            assert resp.status in (200, 401)  # 401: secured by tokens (the answer still means it serves)
        return server

    try:
        yield start
    finally:
        for server in servers:
            if not server.task.done():
                await server.stop()
        AppStatus.should_exit = False  # process-global; nothing else resets it


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s
