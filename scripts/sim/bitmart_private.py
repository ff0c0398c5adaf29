"""Simulated BitMart private side: ``/user?protocol=1.1`` login and topics, signed REST snapshots (exchanges.md §1.3, §1.7).

- ``access`` login signed with HMAC-SHA256 over ``f"{ts}#{memo}#bitmart.WebSocket"``, then ``futures/order``,
  ``futures/position``, ``futures/asset:<USDT|BTC|ETH>`` (frames handled by ``BitmartVenue.text``).
- ``GET /contract/private/get-open-orders``, ``/contract/private/position`` with headers
  ``X-BM-KEY``/``X-BM-TIMESTAMP``/``X-BM-SIGN``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import uuid
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from aiohttp import WSCloseCode, web

from scripts.sim import tapes
from scripts.sim.conn import SimConnection, json_response
from scripts.sim.private import PrivateConn, PrivateVenue, SimAccount, mask_key, same_signature
from scripts.sim.tapes import BITMART

if TYPE_CHECKING:
    from scripts.sim.bitmart import BitmartVenue

__all__ = ["BITMART_AUTH_WINDOW_MS", "BITMART_PRIVATE_TOPIC", "BitmartPrivate", "bitmart_sign"]

log = logging.getLogger(__name__)

#: BitMart private topics (§1.7); ``futures/unicast`` is undocumented and not served.
BITMART_PRIVATE_TOPIC = re.compile(r"futures/order|futures/position|futures/asset:(?:USDT|BTC|ETH)")
BITMART_WS_PAYLOAD = "bitmart.WebSocket"
#: §1.3: the login timestamp "expires after 60 s"; accepting the same distance ahead is UNVERIFIED
#: (siebly signs now + 5 s). BitMart REST: 30007 "Within a minute".
BITMART_AUTH_WINDOW_MS = 60_000


def bitmart_sign(secret: str, timestamp: str, memo: str, payload: str = BITMART_WS_PAYLOAD) -> str:
    """Hex HMAC-SHA256 of ``f"{timestamp}#{memo}#{payload}"`` (§1.3: WS login ``bitmart.WebSocket``; REST:
    the query string of a GET or the JSON body of a POST)."""
    return hmac.new(secret.encode(), f"{timestamp}#{memo}#{payload}".encode(), hashlib.sha256).hexdigest()


class BitmartPrivate(PrivateVenue):
    """BitMart logins, private topics and signed REST (see the module docstring)."""

    venue: BitmartVenue

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/user", self._user_ws)
        get = partial(self._h_rest, name="bitmart_open_orders", build=tapes.bitmart_open_orders)
        router.add_get("/contract/private/get-open-orders", get)
        get = partial(self._h_rest, name="bitmart_positions", build=tapes.bitmart_positions)
        router.add_get("/contract/private/position", get)

    def push_targets(self, acct: SimAccount, channel: str, text: str) -> list[tuple[SimConnection, str]]:
        """Sockets logged in with ``acct`` and subscribed to topic ``channel``."""
        return [(c, channel) for c, s in self.side.conns(BITMART) if s.account is acct and channel in c.subscribed]

    async def _user_ws(self, request: web.Request) -> web.WebSocketResponse:
        sim = self.sim
        conn = sim._new_conn(request, BITMART, "user", "user")
        conn._private = PrivateConn()
        return await sim._serve(request, conn, self.venue.text)

    def topic_error(self, conn: SimConnection, topic: object, *, subscribing: bool) -> str | None:
        """None when ``topic`` may be (un)subscribed on this private socket; else the wire error text.

        - a private topic before login: ``futures/order need authenication`` (sic, §1.3).
        - public topics are not served here: ``Invalid channel: not found <topic>`` (UNVERIFIED).
        """
        state = self.side.state(conn)
        if not isinstance(topic, str) or not BITMART_PRIVATE_TOPIC.fullmatch(topic):
            return f"Invalid channel: not found {topic}"
        if state.account is None:
            return f"{topic} need authenication"
        if subscribing and topic in self.sim._rejects:
            return self.sim._rejects[topic] or f"Invalid channel: not found {topic}"
        return None

    def play(self, conn: SimConnection, topic: str) -> None:
        """Play the topic's fixture pushes once (after its ack)."""
        self.side.start_play(conn, topic, tapes.private_frames(BITMART, topic, self.sim._samples_dir))

    async def access(self, conn: SimConnection, args: object) -> bool:
        """``> {"action":"access","args":[key, ts_ms, sign, "web"]}`` ``< {"action":"access","success":true}``.

        Failure: ``< {"action":"access","success":false,"error":"access failed: openapi auth: apiKey <masked>
        failed: openapi auth failed"}`` and the socket is closed (1008; the code is UNVERIFIED).
        """
        sim = self.sim
        state = self.side.state(conn)
        acct, shown = None, "?"
        ok = False
        if isinstance(args, list) and len(args) >= 3 and all(isinstance(a, str) for a in args[:3]):
            key, ts, sign = args[0], args[1], args[2]
            shown = mask_key(key)
            acct = self.side.account(BITMART, key)
            if acct is not None and ts.isdigit() and abs(int(ts) - self.side.now_ms()) <= BITMART_AUTH_WINDOW_MS:
                ok = same_signature(sign, bitmart_sign(acct.api_secret, ts, acct.memo))
        if ok:
            state.account = acct
            sim.stats["logins_ok"] += 1
            log.info("conn %d: bitmart access ok (key=%s)", conn.conn_id, shown)
            await sim._reply(conn, {"action": "access", "success": True})
            return True
        state.account = None
        sim.stats["logins_failed"] += 1
        log.info("conn %d: bitmart access failed (key=%s), closing", conn.conn_id, shown)
        error = f"access failed: openapi auth: apiKey {shown} failed: openapi auth failed"
        await sim._reply(conn, {"action": "access", "success": False, "error": error})
        if sim._dead:
            return True  # a dead peer initiates nothing
        await sim._close(conn, WSCloseCode.POLICY_VIOLATION, b"access failed")
        return False

    async def _h_rest(
        self, request: web.Request, *, name: str, build: Callable[..., list[dict[str, Any]]]
    ) -> web.Response:
        """BitMart ``GET /contract/private/get-open-orders`` | ``/contract/private/position`` [``?symbol=``].

        Headers ``X-BM-KEY``, ``X-BM-TIMESTAMP`` (ms, within 60 s), ``X-BM-SIGN`` = ``bitmart_sign(secret, ts,
        memo, <query string as sent, "" if none>)``. Answer ``{"code":1000,"message":"Ok","data":[…],"trace"}``;
        failures HTTP 401 ``{"code":3000x,"message":…,"trace","data":{}}`` (30001 key empty, 30002 key not
        found, 30004 sign empty, 30005 sign wrong, 30006/30007/30008 timestamp empty/out of range/bad format).
        """
        self.rest_start(name)
        h = request.headers
        key, sign, ts = h.get("X-BM-KEY", ""), h.get("X-BM-SIGN", ""), h.get("X-BM-TIMESTAMP", "")
        acct = self.side.account(BITMART, key)
        failure: tuple[int, str] | None = None
        if not key:
            failure = (30001, "Header X-BM-KEY is empty")
        elif acct is None:
            failure = (30002, "Header X-BM-KEY not found")
        elif not sign:
            failure = (30004, "Header X-BM-SIGN is empty")
        elif not ts:
            failure = (30006, "Header X-BM-TIMESTAMP is empty")
        elif not ts.isdigit():
            failure = (30008, "Header X-BM-TIMESTAMP invalid format")
        elif abs(int(ts) - self.side.now_ms()) > BITMART_AUTH_WINDOW_MS:
            failure = (30007, "Header X-BM-TIMESTAMP range. Within a minute")
        elif not same_signature(sign, bitmart_sign(acct.api_secret, ts, acct.memo, request.rel_url.raw_query_string)):
            failure = (30005, "Header X-BM-SIGN is wrong")
        if failure is not None:
            body = {"code": failure[0], "message": failure[1], "trace": str(uuid.uuid4()), "data": {}}
            return self.auth_failed(request, body, 401)
        data = build(self.sim._samples_dir)
        symbol = request.query.get("symbol")
        if symbol:
            data = [d for d in data if d.get("symbol") == symbol]
        body = {"code": 1000, "message": "Ok", "data": data, "trace": str(uuid.uuid4())}
        return self.sim._rest_done(request, BITMART, json_response(body, 200))
