"""Simulated Gate.io USDT futures: the ``/v4/ws/usdt`` socket and the order-book snapshot (exchanges.md §2).

Frame parsing and reply shapes are in ``scripts.sim.gate_wire``; private channels (``futures.orders`` …,
per-request ``auth``) and signed REST in ``scripts.sim.gate_private``.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from scripts.sim import gate_wire, tapes
from scripts.sim.conn import SimConnection, int_param, json_response
from scripts.sim.core import SimCore
from scripts.sim.gate_orders import GateOrders
from scripts.sim.gate_private import GatePrivate
from scripts.sim.replay import load_rest_snapshot, start_replay
from scripts.sim.tapes import GATE
from scripts.sim.venue import Venue

__all__ = ["GATE_REST_DEFAULT_LIMIT", "GATE_REST_MAX_LIMIT", "GateVenue"]

GATE_REST_DEFAULT_LIMIT = 10  # Gate's documented default for order_book
GATE_REST_MAX_LIMIT = 1000  # UNVERIFIED upper bound; recorded snapshots hold at most 100 levels


class GateVenue(Venue):
    """Gate.io USDT futures: server pings, one ack per request (§2.4).

    :param ping_interval_s: server protocol ping period (§2.4: Gate pings; period UNVERIFIED).
    :param pong_timeout_s: close a socket when no pong arrives this long after a ping (UNVERIFIED).
    """

    name = GATE
    label = "Gate.io USDT futures"

    def __init__(self, sim: SimCore, *, ping_interval_s: float = 30.0, pong_timeout_s: float = 60.0) -> None:
        super().__init__(sim)
        self.keepalive_s = (ping_interval_s, pong_timeout_s)
        self.private: GatePrivate = GatePrivate(self)
        self.orders: GateOrders = GateOrders(self)

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/v4/ws/usdt", self._ws)
        router.add_get("/api/v4/futures/usdt/order_book", self._h_order_book)
        self.private.add_routes(router)
        self.orders.add_routes(router)

    def urls(self) -> dict[str, str]:
        # ``wss://fx-ws.gateio.ws/v4/ws/usdt`` in production; the REST client appends ``/api/v4/futures/usdt/...``.
        return {"GATEIO_WS_URI": f"{self.sim.base_url}/v4/ws/usdt", "GATEIO_REST_URI": self.sim.http_url}

    def settings(self) -> dict[str, Any]:
        assert self.keepalive_s is not None
        return {"gate_ping_interval_s": self.keepalive_s[0], "gate_pong_timeout_s": self.keepalive_s[1]}

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        return await self.sim._serve(request, self.sim._new_conn(request, GATE, "usdt", "v4"), self.text)

    async def text(self, conn: SimConnection, text: str) -> bool:
        """One Gate client frame (``scripts.sim.gate_wire``); ``>`` client, ``<`` simulator.

        - ``> {"time":1723161256,"id":7,"channel":"futures.trades","event":"subscribe","payload":["BTC_USDT"]}``
          ``< {"time":…,"time_ms":…,"id":7,"channel":"futures.trades","event":"subscribe","error":null,
          "result":{"status":"success"}}`` — one ack per request, then the data of each contract.
        - unknown contract: ``< {…,"error":{"code":2,"message":"unknown contract NOPE_USDT"},"result":{"status":"fail"}}``
          and nothing of that request is subscribed.
        - ``> {"time":…,"channel":"futures.ping"}`` ``< {"time","time_ms","channel":"futures.pong","event":"","result":null}``

        A duplicate subscribe is acked again and not replayed twice (UNVERIFIED for Gate). Private channels
        (``futures.orders`` …) are handled by ``GatePrivate``.
        """
        sim = self.sim
        if await self.private.frame(conn, text):
            return True
        req = gate_wire.parse_request(text, sim._rejects)
        now_ns = time.time_ns()
        if req.kind == "ping":
            if await sim._reply(conn, gate_wire.pong_frame(req, now_ns)):
                sim.stats["pings_answered"] += 1
            return True
        if req.kind in ("subscribe", "unsubscribe"):
            sim.stats[f"{req.kind}_frames"] += 1
        if await self.refused(conn, req, now_ns):
            return True
        started: list[str] = []
        for native in req.natives:
            if req.kind == "subscribe":
                if native not in conn.subscribed:
                    sim._add_sub(conn, native)
                    started.append(native)
            else:
                await sim._remove_sub(conn, native)
        await sim._reply(conn, gate_wire.ack_frame(req, now_ns))
        for native in started:  # after the ack, so it precedes the stream's data
            start_replay(sim, conn, native)
        return True

    async def refused(self, conn: SimConnection, req: gate_wire.GateRequest, now_ns: int) -> bool:
        """Answer a request that carries an error (counted as a subscribe or request error); False when it has none."""
        if req.error is None:
            return False
        self.sim.stats["subscribe_errors" if req.kind == "subscribe" else "request_errors"] += 1
        await self.sim._reply(conn, gate_wire.error_frame(req, now_ns))
        return True

    async def _h_order_book(self, request: web.Request) -> web.Response:
        """``GET /api/v4/futures/usdt/order_book?contract=RDNT_USDT&limit=100&with_id=true`` (exchanges.md §2.5).

        The recorded snapshot ``{"current","update","asks":[{"p","s"}],"bids","id"}`` verbatim, each side
        cut to ``limit`` (default 10), ``id`` only with ``with_id=true``. Unknown contract (or one the
        simulator has no recorded book for, e.g. BTC_USDT): 400 ``{"label":"CONTRACT_NOT_FOUND",...}``.
        """
        sim = self.sim
        sim.stats["rest_requests"] += 1
        sim.stats["rest_gate_order_book"] += 1
        if sim._take_rest_failure():
            body = {"label": "TOO_MANY_REQUESTS", "message": "Request Rate Limit Exceeded"}
            return sim._rest_done(request, GATE, json_response(body, 429))
        contract = request.query.get("contract", "")
        if not contract:
            body = {"label": "MISSING_REQUIRED_PARAM", "message": "Missing required parameter: contract"}
            return sim._rest_done(request, GATE, json_response(body, 400))
        limit = int_param(request.query.get("limit"), GATE_REST_DEFAULT_LIMIT, GATE_REST_MAX_LIMIT)
        if limit is None:
            body = {"label": "INVALID_PARAM_VALUE", "message": "Invalid parameter value: limit"}
            return sim._rest_done(request, GATE, json_response(body, 400))
        snap = await load_rest_snapshot(sim, GATE, contract)
        if snap is None:
            if contract in tapes.GATE_CONTRACTS:
                message = f"Contract {contract} has no recorded order book in the simulator"
            else:
                message = f"Contract {contract} not found"
            body = {"label": "CONTRACT_NOT_FOUND", "message": message}
            return sim._rest_done(request, GATE, json_response(body, 400))
        with_id = request.query.get("with_id", "false").lower() == "true"
        resp = web.Response(text=snap.body(limit, with_id=with_id), content_type="application/json")
        return sim._rest_done(request, GATE, resp)
