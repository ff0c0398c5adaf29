"""Helpers of the simulator's order-API tests: signed clients built on the workers' own signing code (so the
simulator's verification is checked against an independent implementation), private sockets, and waits for pushes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp
import orjson
from yarl import URL

from scripts.simulator import ExchangeSimulator
from tests.simulator._helpers import recv, send
from tests.simulator._private import BN_KEY, BN_SECRET, GATE_KEY, GATE_SECRET, GATE_UID, gate_sub
from workers.exchanges.binanceusdm.private import signed_request
from workers.exchanges.gateio.private import rest_headers

GATE_CHANNELS = ("futures.orders", "futures.positions", "futures.balances", "futures.autoorders")


@dataclass(frozen=True)
class Creds:
    exchange: str
    account: str
    api_key: str
    api_secret: str
    memo: str = ""


class GateClient:
    """Signed Gate REST calls (``workers.exchanges.gateio.private.rest_headers``) -> ``(status, json)``."""

    def __init__(self, sim: ExchangeSimulator, session: aiohttp.ClientSession, key: str = GATE_KEY,
                 secret: str = GATE_SECRET) -> None:  # fmt: skip
        self.sim, self.session = sim, session
        self.creds = Creds("gateio", "main", key, secret, GATE_UID)

    async def call(self, method: str, path: str, query: str = "", body: Any = None, *, decimal: bool = True) -> Any:
        """``decimal=False`` drops the adapter's ``X-Gate-Size-Decimal: 1`` (sizes then travel as ints)."""
        data = orjson.dumps(body) if body is not None else b""
        path = f"/api/v4/futures/usdt{path}"
        signed = rest_headers(self.creds, method, path, query, data, self.sim.now_ms())
        if not decimal:
            signed.pop("X-Gate-Size-Decimal", None)
        if body is not None:
            signed["Content-Type"] = "application/json"
        url = URL(f"{self.sim.gate_rest_url}{path}{'?' + query if query else ''}", encoded=True)
        async with self.session.request(method, url, data=data or None, headers=signed) as r:
            return r.status, await r.json()


class BinanceClient:
    """Signed Binance REST calls (``workers.exchanges.binanceusdm.private.signed_request``: query string signed,
    sent as the query) -> ``(status, json)``."""

    def __init__(self, sim: ExchangeSimulator, session: aiohttp.ClientSession, key: str = BN_KEY,
                 secret: str = BN_SECRET) -> None:  # fmt: skip
        self.sim, self.session = sim, session
        self.creds = Creds("binanceusdm", "main", key, secret)

    async def call(self, method: str, path: str, **params: str) -> Any:
        req = signed_request(self.creds, method, path, params, self.sim.now_ms())
        url = URL(f"{self.sim.binance_rest_url}{req.path}?{urlencode(req.params)}", encoded=True)
        async with self.session.request(method, url, headers=req.headers) as r:
            return r.status, await r.json()


async def gate_socket(sim: ExchangeSimulator, session: aiohttp.ClientSession) -> aiohttp.ClientWebSocketResponse:
    """A Gate socket subscribed (signed) to the four private channels of the test account; acks consumed."""
    ws = await session.ws_connect(sim.gate_ws_url)
    sim.set_clock(1_700_000_000_000)  # the subscribe vectors are signed at that time
    for channel in GATE_CHANNELS:
        payload = [GATE_UID] if channel == "futures.balances" else [GATE_UID, "!all"]
        await send(ws, gate_sub(channel, payload))
        while (msg := await recv(ws)).get("event") != "subscribe":
            pass
        assert msg["result"] == {"status": "success"}, msg
    sim.set_clock(None)
    return ws


class Pushes:
    """The private pushes of one socket, read in order; ``next`` returns the first unread push that matches and
    keeps the others for later calls (so a test may read an order's push after its position's)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, since_ms: int = 0) -> None:
        self.ws, self.since_ms = ws, since_ms  # Binance: events with an earlier E (the fixtures) never match
        self.unread: list[dict[str, Any]] = []

    async def next(self, match: Any) -> dict[str, Any]:
        for i, msg in enumerate(self.unread):
            if match(msg):
                return self.unread.pop(i)
        while True:
            msg = await recv(self.ws)
            if match(msg):
                return msg  # type: ignore[no-any-return]
            self.unread.append(msg)

    async def gate(self, channel: str, contract: str = "BTC_USDT", **where: Any) -> dict[str, Any]:
        """The next Gate push of ``channel`` about ``contract`` whose first item has the ``where`` values (the fixture
        pushes, about other contracts, never match)."""

        def match(msg: dict[str, Any]) -> bool:
            if msg.get("channel") != channel or msg.get("event") != "update":
                return False
            item = msg["result"][0]
            if any(item.get(k) != v for k, v in where.items()):
                return False
            return (
                channel == "futures.balances"
                or item.get("contract", item.get("initial", {}).get("contract")) == contract
            )

        return await self.next(match)

    async def binance(self, event: str, symbol: str = "BTCUSDT", **where: Any) -> dict[str, Any]:
        """The next Binance ``event`` about ``symbol`` with ``E`` >= ``since_ms`` (the replayed fixture events are
        older) whose ``o`` has the ``where`` values (``ACCOUNT_UPDATE``: all of its positions of ``symbol``)."""

        def match(msg: dict[str, Any]) -> bool:
            if msg.get("e") != event or not isinstance(msg.get("E"), int) or msg["E"] < self.since_ms:
                return False
            if event == "ACCOUNT_UPDATE":
                return all(p["s"] == symbol for p in msg["a"]["P"])
            o = msg["o"]
            return o["s"] == symbol and all(o.get(k) == v for k, v in where.items())

        return await self.next(match)


async def binance_socket(sim: ExchangeSimulator, session: aiohttp.ClientSession, key: str = BN_KEY) -> Any:
    """A Binance user-data socket of the account, opened with a fresh listen key."""
    async with session.post(f"{sim.binance_rest_url}/fapi/v1/listenKey", headers={"X-MBX-APIKEY": key}) as r:
        listen_key = (await r.json())["listenKey"]
    return await session.ws_connect(f"{sim.binance_base_url}/private/ws?listenKey={listen_key}")
