"""Simulated Binance USD-M market sockets and depth snapshot (binance_usdm.md §1-§6).

Sockets: ``/public/{ws,stream}``, ``/market/{ws,stream}``, legacy ``/ws``, ``/stream``; streams may also be given
in the URL: ``/<route>/ws/<s1>/<s2>`` or ``/<route>/stream?streams=<s1>/<s2>`` (§1). REST: ``GET
/fapi/v1/depth?symbol=S&limit=N`` (§6). User data (listenKey, ``/private/ws``) is in ``scripts.sim.binance_private``.
"""

from __future__ import annotations

import logging
import re
import time
from functools import partial
from typing import Any

import orjson
from aiohttp import WSCloseCode, web

from scripts.sim.binance_orders import BinanceOrders
from scripts.sim.binance_private import BinancePrivate
from scripts.sim.conn import SimConnection, int_param, json_response
from scripts.sim.core import SimCore
from scripts.sim.replay import load_rest_snapshot, start_replay
from scripts.sim.tapes import BINANCE
from scripts.sim.venue import Venue

__all__ = ["BINANCE_MAX_MSGS_PER_S", "BINANCE_MAX_STREAMS", "BINANCE_REST_MAX_LIMIT", "BinanceVenue",
           "binance_stream_class"]  # fmt: skip

log = logging.getLogger(__name__)

BINANCE_MAX_STREAMS = 1024  # binance_usdm.md §3
BINANCE_MAX_MSGS_PER_S = 10  # §3: more than 10 client messages per second disconnects
#: Binance REST depth ``limit`` bounds (the documented values are 5..1000; others are accepted and cut).
BINANCE_REST_MAX_LIMIT = 1000
_SYMBOL = re.compile(r"[a-z0-9]+(?:_(?:perpetual|current_quarter|next_quarter))?")
_KLINE_IV = r"(?:1m|3m|5m|15m|30m|1h|2h|4h|6h|8h|12h|1d|3d|1w|1M)"
# §2 route table; @trade is undocumented and treated as /public, @depth@0ms appears in the 2024 capture.
_PUBLIC_KIND = re.compile(r"bookTicker|trade|depth(?:5|10|20)?(?:@(?:0|100|500)ms)?|rpiDepth@500ms")
_MARKET_KIND = re.compile(
    rf"aggTrade|kline_{_KLINE_IV}|continuousKline_{_KLINE_IV}|markPrice(?:@1s)?|miniTicker|ticker"
    r"|forceOrder|compositeIndex|assetIndex"
)
_ALL_MARKET = {
    "!bookTicker": "public",
    "!markPrice@arr": "market",
    "!markPrice@arr@1s": "market",
    "!miniTicker@arr": "market",
    "!ticker@arr": "market",
    "!forceOrder@arr": "market",
    "!contractInfo": "market",
    "!assetIndex@arr": "market",
    "tradingSession": "market",
}


def binance_stream_class(stream: str) -> str | None:
    """``"public"`` or ``"market"`` for a well-formed Binance stream name (binance_usdm.md §2), else None.

    Symbols must be lower case (§1; whether upper case is accepted live is UNVERIFIED).
    """
    if stream in _ALL_MARKET:
        return _ALL_MARKET[stream]
    symbol, sep, kind = stream.partition("@")
    if not sep or not _SYMBOL.fullmatch(symbol):
        return None
    if _PUBLIC_KIND.fullmatch(kind):
        return "public"
    if _MARKET_KIND.fullmatch(kind):
        return "market"
    return None


class BinanceVenue(Venue):
    """Binance USD-M: server pings (§3), JSON-RPC style requests (§4), routed streams (§0, §2).

    :param ping_interval_s: server protocol ping period (§3: 3 min).
    :param pong_timeout_s: close when no pong arrives this long after a ping (§3: 10 min).
    :param listen_key_ttl_s: listenKey validity (§7: 60 min), see ``BinancePrivate``.
    """

    name = BINANCE
    label = "Binance USD-M"
    wraps_frames = True

    def __init__(
        self,
        sim: SimCore,
        *,
        ping_interval_s: float = 180.0,
        pong_timeout_s: float = 600.0,
        listen_key_ttl_s: float = 3600.0,
    ) -> None:
        super().__init__(sim)
        self.keepalive_s = (ping_interval_s, pong_timeout_s)
        self.private: BinancePrivate = BinancePrivate(self, listen_key_ttl_s=listen_key_ttl_s)
        self.orders: BinanceOrders = BinanceOrders(self)

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/fapi/v1/depth", self._h_depth)
        for prefix, route in (("/public", "public"), ("/market", "market"), ("", "legacy")):
            for mode in ("ws", "stream"):
                handler = partial(self._ws, route=route, mode=mode)
                router.add_get(f"{prefix}/{mode}", handler)
                if mode == "ws":
                    router.add_get(f"{prefix}/ws/{{streams:.+}}", handler)
        self.private.add_routes(router)
        self.orders.add_routes(router)

    def urls(self) -> dict[str, str]:
        # The client appends ``/market/stream``, ``/public/ws`` ... and ``/fapi/v1/depth?...``.
        return {"BINANCE_USDM_WS_URI": self.sim.base_url, "BINANCE_USDM_REST_URI": self.sim.http_url}

    def settings(self) -> dict[str, Any]:
        assert self.keepalive_s is not None
        return {"binance_ping_interval_s": self.keepalive_s[0], "binance_pong_timeout_s": self.keepalive_s[1]}

    async def _ws(self, request: web.Request, *, route: str, mode: str) -> web.WebSocketResponse:
        conn = self.sim._new_conn(request, BINANCE, route, mode)
        conn.combined = mode == "stream"
        url_streams = request.match_info.get("streams", "").split("/")
        if mode == "stream":
            url_streams = request.query.get("streams", "").split("/")
        conn._url_streams = [s for s in url_streams if s]
        return await self.sim._serve(request, conn, self.text)

    def on_open(self, conn: SimConnection) -> None:
        """Start a user-data replay; subscribe the streams named in the URL (no ack is sent for these)."""
        self.private.on_open(conn)
        for stream in conn._url_streams:
            if binance_stream_class(stream) is None or stream in self.sim._rejects:
                log.info("conn %d: ignoring URL stream %r (invalid or rejected)", conn.conn_id, stream)
                continue
            if stream not in conn.subscribed:
                self.sim._add_sub(conn, stream)
                start_replay(self.sim, conn, stream)

    def deliverable(self, conn: SimConnection, native: str) -> bool:
        """/market carries market-class streams; /public and legacy /ws, /stream only public-class (§0, §2);
        /private none (user data only)."""
        if conn.route == "private":
            return False
        wanted = "market" if conn.route == "market" else "public"
        return binance_stream_class(native) == wanted

    def wrap(self, conn: SimConnection, native: str, payload: str) -> str:
        # Stream names passed validation (no quotes), so plain concatenation is valid JSON and keeps
        # the recorded payload byte-identical.
        return '{"stream":"' + native + '","data":' + payload + "}" if conn.combined else payload

    async def text(self, conn: SimConnection, text: str) -> bool:
        """One Binance client frame (binance_usdm.md §3, §4); ``>`` client, ``<`` simulator.

        - ``> {"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":1}`` ``< {"result":null,"id":1}``
        - ``> {"method":"LIST_SUBSCRIPTIONS","id":2}`` ``< {"result":["btcusdt@trade"],"id":2}``
        - ``> {"method":"SUBSCRIBE","params":["btcusdt@nope"],"id":3}``
          ``< {"error":{"code":2,"msg":"Invalid request: invalid stream"},"id":3}``
        - bad id: code 2 ``request ID must be an unsigned integer`` with the id as sent; bad JSON: code 3, id null.
        - the 11th frame within one second: close 1008.
        """
        sim = self.sim
        now = time.monotonic()
        times = conn._msg_times
        times.append(now)
        while now - times[0] >= 1.0:
            times.popleft()
        if len(times) > BINANCE_MAX_MSGS_PER_S and not sim._dead:
            sim.stats["rate_limit_closes"] += 1
            log.info("conn %d: %d frames within 1 s, closing with 1008", conn.conn_id, len(times))
            await sim._close(conn, WSCloseCode.POLICY_VIOLATION, b"Too many requests")
            return False
        reply, started = await self._request(conn, text)
        if "error" in reply:
            sim.stats["request_errors"] += 1
        await sim._reply(conn, reply)
        for stream in started:
            start_replay(sim, conn, stream)
        return True

    async def _request(self, conn: SimConnection, text: str) -> tuple[dict[str, Any], list[str]]:
        """Apply one request; returns (reply, streams whose replay starts after the reply)."""

        def error(code: int, msg: str, rid: Any) -> tuple[dict[str, Any], list[str]]:
            return {"error": {"code": code, "msg": msg}, "id": rid}, []

        try:
            req = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            return error(3, f"Invalid JSON: {exc}", None)
        if not isinstance(req, dict):
            return error(3, "Invalid JSON: expected an object", None)  # exact text UNVERIFIED
        rid = req.get("id")
        if not isinstance(rid, int) or isinstance(rid, bool) or not 0 <= rid < 1 << 64:
            return error(2, "Invalid request: request ID must be an unsigned integer", rid)
        method, params = req.get("method"), req.get("params", [])
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            self.sim.stats[f"{method.lower()}_frames"] += 1
            if not isinstance(params, list) or any(
                not isinstance(s, str) or binance_stream_class(s) is None for s in params
            ):
                return error(2, "Invalid request: invalid stream", rid)
            if method == "UNSUBSCRIBE":
                for stream in params:
                    await self.sim._remove_sub(conn, stream)
                return {"result": None, "id": rid}, []
            for stream in params:
                if stream in self.sim._rejects:
                    return error(2, self.sim._rejects[stream] or "Invalid request: invalid stream", rid)
            new = [s for s in dict.fromkeys(params) if s not in conn.subscribed]
            if len(conn.subscribed) + len(new) > BINANCE_MAX_STREAMS:
                # Behaviour above 1024 is undocumented (§3); a code-2 error is our choice.
                return error(2, f"Invalid request: too many streams (max {BINANCE_MAX_STREAMS})", rid)
            for stream in new:
                self.sim._add_sub(conn, stream)
            return {"result": None, "id": rid}, new
        if method == "LIST_SUBSCRIPTIONS":
            return {"result": list(conn._order), "id": rid}, []
        if method in ("SET_PROPERTY", "GET_PROPERTY"):  # only "combined" exists (§4)
            if not isinstance(params, list) or not params or params[0] != "combined":
                return error(0, "Unknown property", rid)
            if method == "GET_PROPERTY":
                return {"result": conn.combined, "id": rid}, []
            if len(params) != 2 or not isinstance(params[1], bool):
                return error(1, "Invalid value type: expected Boolean", rid)
            conn.combined = params[1]
            return {"result": None, "id": rid}, []
        return error(2, f"Invalid request: unknown method {method!r}", rid)  # text UNVERIFIED

    async def _h_depth(self, request: web.Request) -> web.Response:
        """``GET /fapi/v1/depth?symbol=BTCUSDT&limit=1000`` -> the recorded snapshot (binance_usdm.md §6).

        Verbatim ``{"lastUpdateId","E","T","bids","asks"}``, each side cut to ``limit`` (default 500).
        Unknown symbol: 400 ``{"code":-1121,"msg":"Invalid symbol."}``. The symbol is matched upper-cased
        (whether Binance accepts lower case is UNVERIFIED). Limit outside 1..1000 or not an integer:
        400 ``{"code":-1130,...}`` (text UNVERIFIED).
        """
        sim = self.sim
        sim.stats["rest_requests"] += 1
        sim.stats["rest_binance_depth"] += 1
        if sim._take_rest_failure():
            msg = "Too many requests; current limit is 2400 requests per minute. (simulated by fail_rest)"
            resp = json_response({"code": -1003, "msg": msg}, 429, {"Retry-After": "1"})
            return sim._rest_done(request, BINANCE, resp)
        symbol = request.query.get("symbol", "")
        if not symbol:
            msg = "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."
            return sim._rest_done(request, BINANCE, json_response({"code": -1102, "msg": msg}, 400))
        limit = int_param(request.query.get("limit"), 500, BINANCE_REST_MAX_LIMIT)
        if limit is None:
            msg = "Data sent for parameter 'limit' is not valid."
            return sim._rest_done(request, BINANCE, json_response({"code": -1130, "msg": msg}, 400))
        snap = await load_rest_snapshot(sim, BINANCE, symbol.upper())
        if snap is None:
            resp = json_response({"code": -1121, "msg": "Invalid symbol."}, 400)
            return sim._rest_done(request, BINANCE, resp)
        resp = web.Response(text=snap.body(limit), content_type="application/json")
        return sim._rest_done(request, BINANCE, resp)
