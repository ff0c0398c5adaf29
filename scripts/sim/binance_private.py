"""Simulated Binance USD-M user data and signed REST snapshots (binance_usdm.md §7, §8).

- ``POST/PUT/DELETE /fapi/v1/listenKey`` (header ``X-MBX-APIKEY``), sockets ``/private/ws?listenKey=K[&events=E1/E2]``
  and ``/private/ws/K``; the key lapses after ``listen_key_ttl_s`` (``listenKeyExpired``).
- ``GET /fapi/v1/openOrders``, ``/fapi/v2/positionRisk`` signed with HMAC-SHA256 over the query string.
- Control: ``POST /_sim/expire_listen_key`` ``{"api_key"}``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import string
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import orjson
from aiohttp import web

from scripts.sim import tapes
from scripts.sim.conn import SimConnection, json_response, read_json_body
from scripts.sim.private import PrivateConn, PrivateVenue, SimAccount, mask_listen_key, safe_path, same_signature
from scripts.sim.tapes import BINANCE, BINANCE_USER_STREAM

if TYPE_CHECKING:
    from scripts.sim.binance import BinanceVenue

__all__ = ["BINANCE_DEFAULT_RECV_WINDOW_MS", "BINANCE_MAX_RECV_WINDOW_MS", "BinancePrivate", "binance_sign"]

log = logging.getLogger(__name__)

BINANCE_DEFAULT_RECV_WINDOW_MS = 5000  # §8
BINANCE_MAX_RECV_WINDOW_MS = 60_000  # recvWindow above this is refused (-1131; text UNVERIFIED)
LISTEN_KEY_CHARS = 64
_LISTEN_KEY_ALPHABET = string.ascii_letters + string.digits


def binance_sign(secret: str, payload: str) -> str:
    """Hex HMAC-SHA256 of ``payload`` (the query string without ``signature``, plus any body; binance_usdm.md §8)."""
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


class BinancePrivate(PrivateVenue):
    """Listen keys, user-data sockets and signed REST for Binance USD-M.

    :param listen_key_ttl_s: listenKey validity (§7: 60 min); each POST/PUT restarts it. Measured on the
        monotonic clock (``set_clock`` does not move it); on lapse the key's sockets get ``listenKeyExpired``.
    """

    venue: BinanceVenue

    def __init__(self, venue: BinanceVenue, *, listen_key_ttl_s: float) -> None:
        if listen_key_ttl_s <= 0:
            raise ValueError("listen_key_ttl_s must be > 0")
        super().__init__(venue)
        self._ttl_s = listen_key_ttl_s
        self._listen_keys: dict[str, SimAccount] = {}

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/private/ws", self._ws)
        router.add_get("/private/ws/{listen_key}", self._ws)
        for method in ("POST", "PUT", "DELETE"):
            router.add_route(method, "/fapi/v1/listenKey", self._h_listen_key)
        get = partial(self._h_rest, name="binance_open_orders", build=tapes.binance_open_orders)
        router.add_get("/fapi/v1/openOrders", get)
        get = partial(self._h_rest, name="binance_position_risk", build=tapes.binance_position_risk)
        router.add_get("/fapi/v2/positionRisk", get)
        router.add_post("/_sim/expire_listen_key", self._h_expire)

    def push_targets(self, acct: SimAccount, channel: str, text: str) -> list[tuple[SimConnection, str]]:
        """The account's user-data sockets whose key is live and whose ``events=`` filter admits the frame's ``e``."""
        event = None
        try:
            parsed = orjson.loads(text)
            event = parsed.get("e") if isinstance(parsed, dict) else None
        except orjson.JSONDecodeError:
            pass
        return [
            (conn, BINANCE_USER_STREAM)
            for conn, state in self.side.conns(BINANCE)
            if state.account is acct and state.listen_key is not None and not state.stream_closed
            and (state.events is None or event in state.events)
        ]  # fmt: skip

    def on_account_removed(self, acct: SimAccount) -> None:
        self._drop_listen_key(acct)

    def close(self) -> None:
        for acct in self._listen_keys.values():
            if acct._ttl_handle is not None:
                acct._ttl_handle.cancel()
                acct._ttl_handle = None

    def status(self) -> dict[str, Any]:
        return {"listen_key_ttl_s": self._ttl_s}

    # ------------------------------------------------------------------ user-data sockets (§7)

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        """``/private/ws/<listenKey>`` or ``/private/ws?listenKey=<k>[&events=E1/E2]``.

        A bogus or missing key still completes the handshake and then sends nothing (§7 probe note).
        A live key: the account's fixture events are replayed once, then ``push_private`` frames.
        Client frames get the market-socket handling (§4); streams are never delivered here.
        """
        sim = self.sim
        key = request.match_info.get("listen_key") or request.query.get("listenKey", "")
        conn = sim._new_conn(request, BINANCE, "private", "ws")
        if key:
            conn.path = request.path_qs.replace(key, mask_listen_key(key))
        state = conn._private = PrivateConn()
        events = request.query.get("events")
        if events:
            state.events = frozenset(e for e in events.split("/") if e)
        acct = self._listen_keys.get(key) if key else None
        if acct is not None and self._key_live(acct):
            state.account, state.listen_key = acct, key
        else:
            sim.stats["bogus_listen_key_sockets"] += 1
        return await sim._serve(request, conn, self.venue.text)

    def on_open(self, conn: SimConnection) -> None:
        """Start a live-key socket's fixture replay (called once the socket is registered)."""
        state = conn._private
        if not isinstance(state, PrivateConn) or state.listen_key is None:
            return
        frames = tapes.private_frames(BINANCE, BINANCE_USER_STREAM, self.sim._samples_dir)
        if state.events is not None:
            frames = tuple(f for f in frames if orjson.loads(f).get("e") in state.events)
        self.sim._add_sub(conn, BINANCE_USER_STREAM)
        self.side.start_play(conn, BINANCE_USER_STREAM, frames)

    def _key_live(self, acct: SimAccount) -> bool:
        return acct.listen_key is not None and time.monotonic() < acct.listen_key_deadline

    def _arm(self, acct: SimAccount) -> None:
        loop = asyncio.get_running_loop()
        if acct._ttl_handle is not None:
            acct._ttl_handle.cancel()
        acct.listen_key_deadline = time.monotonic() + self._ttl_s
        acct._ttl_handle = loop.call_later(self._ttl_s, self._ttl_lapsed, acct, acct.listen_key)

    def _ttl_lapsed(self, acct: SimAccount, key: str | None) -> None:
        acct._ttl_handle = None
        if key is not None and acct.listen_key == key:
            task = asyncio.create_task(self._expire(acct), name="sim-listen-key-expiry")
            self.sim._tasks.add(task)
            task.add_done_callback(self.sim._tasks.discard)

    def _drop_listen_key(self, acct: SimAccount) -> str | None:
        """Forget the account's key; its sockets stay open and fall silent. Returns the key."""
        key, acct.listen_key = acct.listen_key, None
        if acct._ttl_handle is not None:
            acct._ttl_handle.cancel()
            acct._ttl_handle = None
        if key is None:
            return None
        self._listen_keys.pop(key, None)
        for _, state in self.side.conns(BINANCE):
            if state.listen_key == key:
                state.stream_closed = True
        self.sim._notify()
        return key

    async def expire_listen_key(self, api_key: str) -> int:
        """Expire the account's listen key now: each of its sockets gets ``{"e":"listenKeyExpired","E":<ms>,
        "listenKey":K}`` and then stays open but silent (§7); PUT answers -1125 and POST makes a new key.
        Returns how many sockets were told (0 when no key is active). Unknown account: KeyError."""
        return await self._expire(self.side.require(BINANCE, api_key))

    async def _expire(self, acct: SimAccount) -> int:
        sim = self.sim
        conns = [c for c, s in self.side.conns(BINANCE) if s.listen_key == acct.listen_key and not s.stream_closed]
        key = self._drop_listen_key(acct)
        if key is None:
            return 0
        sim.stats["listen_keys_expired"] += 1
        log.info("listen key of %s expired (%d socket(s))", acct.masked, len(conns))
        frame = orjson.dumps({"e": "listenKeyExpired", "E": self.side.now_ms(), "listenKey": key}).decode()
        told = 0
        for conn in conns:
            if sim._dead:
                sim.stats["replies_withheld_dead"] += 1
            elif await sim._send_data(conn, BINANCE_USER_STREAM, frame):
                told += 1
        return told

    async def _h_expire(self, request: web.Request) -> web.Response:
        body = await read_json_body(request)
        try:
            told = await self.expire_listen_key(str(body.get("api_key", "")))
        except KeyError:
            raise web.HTTPNotFound(text="no such account") from None
        return json_response({"notified": told})

    # ------------------------------------------------------------------ REST (§7, §8)

    async def _h_listen_key(self, request: web.Request) -> web.Response:
        """``POST|PUT|DELETE /fapi/v1/listenKey`` with ``X-MBX-APIKEY`` (no signature, no parameters; §7).

        POST: ``{"listenKey": K}`` — the active key again (extended) or a new 64-character one. PUT:
        extends, ``{"listenKey": K}``; no active key: 400 ``-1125``. DELETE: ``{}``, the key's sockets fall
        silent (whether Binance closes them is UNVERIFIED). No header: 401 ``-2014`` (UNVERIFIED); unknown
        key: 401 ``-2015``.
        """
        self.rest_start("listen_key")
        api_key = request.headers.get("X-MBX-APIKEY", "")
        acct = self.side.account(BINANCE, api_key)
        if not api_key:
            resp = json_response({"code": -2014, "msg": "API-key format invalid."}, 401)
        elif acct is None:
            resp = json_response({"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."}, 401)
        elif request.method == "POST":
            if not self._key_live(acct):
                self._drop_listen_key(acct)
                acct.listen_key = "".join(secrets.choice(_LISTEN_KEY_ALPHABET) for _ in range(LISTEN_KEY_CHARS))
                self._listen_keys[acct.listen_key] = acct
            self._arm(acct)
            resp = json_response({"listenKey": acct.listen_key}, 200)
        elif request.method == "PUT":
            if self._key_live(acct):
                self._arm(acct)
                resp = json_response({"listenKey": acct.listen_key}, 200)
            else:
                resp = json_response({"code": -1125, "msg": "This listenKey does not exist."}, 400)
        else:
            self._drop_listen_key(acct)
            resp = json_response({}, 200)
        return self.sim._rest_done(request, BINANCE, resp, path_qs=request.path)

    async def authenticate(self, request: web.Request) -> tuple[SimAccount, dict[str, str]] | web.Response:
        """Check a signed call (§8): ``X-MBX-APIKEY`` known, else 401 ``-2015``; the hex HMAC-SHA256 ``signature``
        (in the query or the form body) over totalParams = the query string exactly as sent, then the body, each
        less the ``signature`` parameter: mismatch 400 ``-1022``; missing timestamp/signature 400 ``-1102``;
        recvWindow over 60000 400 ``-1131``; ``timestamp >= now + 1000`` or ``now - timestamp > recvWindow`` 400
        ``-1021`` (against the simulator clock). Returns ``(account, params)`` (query and body merged) or the answer
        (counted in ``rest_auth_failures``; the logged path hides the signature)."""
        acct = self.side.account(BINANCE, request.headers.get("X-MBX-APIKEY", ""))
        if acct is None:
            body = {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."}
            return self.auth_failed(request, body, 401)
        raw_query = request.rel_url.raw_query_string
        raw_body = (await request.read()).decode("utf-8", "replace") if request.can_read_body else ""
        signatures: list[str] = []
        payload = ""
        for raw in (raw_query, raw_body):
            parts = raw.split("&") if raw else []
            signatures += [p.partition("=")[2] for p in parts if p.startswith("signature=")]
            payload += "&".join(p for p in parts if not p.startswith("signature="))
        params: dict[str, str] = {**request.query}
        if raw_body:
            params |= {k: v for k, v in parse_qsl(raw_body, keep_blank_values=True)}

        def missing(param: str) -> dict[str, Any]:
            return {"code": -1102, "msg": f"Mandatory parameter '{param}' was not sent, was empty/null, or malformed."}

        ts_text, window_text = params.get("timestamp", ""), params.get("recvWindow", str(BINANCE_DEFAULT_RECV_WINDOW_MS))
        if not ts_text.isdigit():
            return self.auth_failed(request, missing("timestamp"), 400)
        if len(signatures) != 1 or not signatures[0]:
            return self.auth_failed(request, missing("signature"), 400)
        if not same_signature(signatures[0], binance_sign(acct.api_secret, payload)):
            body = {"code": -1022, "msg": "Signature for this request is not valid."}
            return self.auth_failed(request, body, 400)
        if not window_text.isdigit() or int(window_text) > BINANCE_MAX_RECV_WINDOW_MS:
            body = {"code": -1131, "msg": "recvWindow must be less than 60000"}
            return self.auth_failed(request, body, 400)
        now, ts = self.side.now_ms(), int(ts_text)
        if ts >= now + 1000:
            body = {"code": -1021, "msg": "Timestamp for this request was 1000ms ahead of the server's time."}
            return self.auth_failed(request, body, 400)
        if now - ts > int(window_text):
            body = {"code": -1021, "msg": "Timestamp for this request is outside of the recvWindow."}
            return self.auth_failed(request, body, 400)
        params.pop("signature", None)
        return acct, params

    async def _h_rest(
        self, request: web.Request, *, name: str, build: Callable[..., list[dict[str, Any]]]
    ) -> web.Response:
        """Binance ``GET /fapi/v1/openOrders`` | ``/fapi/v2/positionRisk`` ``?[symbol=…&]recvWindow=…&timestamp=…&signature=…``
        (signed as ``authenticate``). Fixture data, unless the account has traded on the simulator: then its own
        open orders and positions (``BinanceOrders``). ``positionRisk?symbol=`` of a symbol the engine trades is
        always the engine's one-way position (flat before any trade)."""
        self.rest_start(name)
        auth = await self.authenticate(request)
        if isinstance(auth, web.Response):
            return auth
        acct, params = auth
        orders = self.venue.orders
        symbol = params.get("symbol")
        if orders.active(acct):
            data = orders.open_orders(acct) if name == "binance_open_orders" else orders.position_risk(acct)
        elif name != "binance_open_orders" and symbol is not None and orders.trades(symbol):
            # One symbol the engine trades: its one-way (BOTH) position, as the engine will take orders for it;
            # the fixture positions are a hedge-mode recording and stay for the all-symbols snapshot only.
            data = orders.position_risk(acct, [symbol])
        else:
            data = build(self.sim._samples_dir)
        if symbol:
            data = [d for d in data if d.get("symbol") == symbol]
        return self.sim._rest_done(request, BINANCE, json_response(data, 200), path_qs=safe_path(request))
