"""Simulated Gate.io private side: channels with per-request auth and signed REST snapshots (exchanges.md §2.3, §2.6, §2.7).

- ``futures.orders``, ``futures.positions``, ``futures.balances`` on ``/v4/ws/usdt`` with an ``auth``
  (HMAC-SHA512 over ``channel=…&event=…&time=…``).
- ``GET /api/v4/futures/usdt/orders?status=…``, ``/api/v4/futures/usdt/positions`` (headers ``KEY``/``Timestamp``/
  ``SIGN``).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from functools import partial
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from scripts.sim import gate_wire, tapes
from scripts.sim.conn import SimConnection, json_response
from scripts.sim.private import PrivateVenue, SimAccount, same_signature
from scripts.sim.tapes import GATE

if TYPE_CHECKING:
    from scripts.sim.gate import GateVenue

__all__ = ["GATE_PRIVATE_CHANNELS", "GATE_REST_WINDOW_S", "GatePrivate", "gate_rest_sign", "gate_ws_sign"]

GATE_PRIVATE_CHANNELS = frozenset({"futures.orders", "futures.positions", "futures.balances", "futures.autoorders"})
GATE_REST_WINDOW_S = 60.0  # §2.7: Timestamp within 60 s of server time
_EMPTY_SHA512 = hashlib.sha512(b"").hexdigest()


def gate_ws_sign(secret: str, channel: str, event: str, time_s: str) -> str:
    """Hex HMAC-SHA512 of ``f"channel={channel}&event={event}&time={time_s}"`` (§2.3)."""
    message = f"channel={channel}&event={event}&time={time_s}"
    return hmac.new(secret.encode(), message.encode(), hashlib.sha512).hexdigest()


def gate_rest_sign(secret: str, method: str, path: str, query: str, body: bytes, timestamp: str) -> str:
    """Hex HMAC-SHA512 of ``METHOD\\nPATH\\nQUERY\\nhex(SHA512(body))\\nTIMESTAMP`` (§2.7)."""
    body_hash = hashlib.sha512(body).hexdigest() if body else _EMPTY_SHA512
    message = f"{method.upper()}\n{path}\n{query}\n{body_hash}\n{timestamp}"
    return hmac.new(secret.encode(), message.encode(), hashlib.sha512).hexdigest()


class GatePrivate(PrivateVenue):
    """Gate private channels and signed REST (see the module docstring)."""

    venue: GateVenue

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/api/v4/futures/usdt/orders", partial(self._h_rest, name="gate_orders"))
        router.add_get("/api/v4/futures/usdt/positions", partial(self._h_rest, name="gate_positions"))

    def push_targets(self, acct: SimAccount, channel: str, text: str) -> list[tuple[SimConnection, str]]:
        """Sockets where ``acct`` subscribed ``channel`` (its first such native on each) for ``!all`` or for a
        contract one of the frame's ``result`` items is about (items without a contract reach every subscription)."""
        contracts: set[str] | None = None
        try:
            msg = orjson.loads(text)
            items = msg.get("result") if isinstance(msg, dict) else None
            if isinstance(items, list):
                contracts = {_contract(i) for i in items if isinstance(i, dict)} - {""}
        except orjson.JSONDecodeError:
            pass
        targets = []
        for conn, state in self.side.conns(GATE):
            for native, owner in state.gate.items():
                parts = native.split(":")
                if owner is not acct or parts[0] != channel:
                    continue
                if len(parts) < 3 or parts[2] == "!all" or not contracts or parts[2] in contracts:
                    targets.append((conn, native))
                    break
        return targets

    async def frame(self, conn: SimConnection, text: str) -> bool:
        """Handle a Gate frame naming a private channel; False (not handled) for anything else.

        - ``> {"time":1700000000,"id":1,"channel":"futures.orders","event":"subscribe","payload":["123456","!all"],
          "auth":{"method":"api_key","KEY":"…","SIGN":"<hex HMAC-SHA512 of channel=…&event=…&time=…>"}}``
          ``<`` the ack, then the channel's fixture pushes.
        - missing/unknown key or a wrong SIGN: ``{"code":4,"message":"{\\"label\\":\\"INVALID_KEY\\",
          \\"message\\":\\"Invalid key provided\\"}"}`` (the §2.4 shape; one label for every auth failure
          is UNVERIFIED). The frame's ``time`` is not range-checked (UNVERIFIED for WS).
        - payload ``[uid, "!all" | contract]`` (balances ``[uid]``, ``[uid, "!all"]`` accepted too); a uid
          other than the account's: code 2 ``invalid argument: user id mismatch`` (text UNVERIFIED);
          an unknown contract: code 2 ``unknown contract <C>``.

        Natives: ``f"{channel}:{uid}:{target}"`` (``futures.orders:123456:!all``), balances
        ``f"futures.balances:{uid}"``. Unsubscribe needs the same auth (signed with ``event=unsubscribe``).
        """
        try:
            raw = orjson.loads(text)
        except orjson.JSONDecodeError:
            return False
        if not isinstance(raw, dict) or raw.get("channel") not in GATE_PRIVATE_CHANNELS:
            return False
        sim = self.sim
        channel, event = str(raw["channel"]), raw.get("event")
        req = gate_wire.GateRequest("invalid", channel=channel, id=raw.get("id"), id_sent="id" in raw)
        native, acct = "", None
        if event not in ("subscribe", "unsubscribe"):
            req.event = event if isinstance(event, str) else ""
            req.error = (1, f"invalid argument struct: unknown event {event!r}")
        else:
            req.kind = req.event = event
            sim.stats[f"{event}_frames"] += 1
            acct, req.error = self._auth(raw, channel, event)
            if req.error is None:
                assert acct is not None
                native, req.error = self._native(raw.get("payload"), channel, acct)
            if req.error is None and event == "subscribe" and native in sim._rejects:
                req.error = (2, sim._rejects[native] or f"invalid argument: {native} rejected")
        now_ns = time.time_ns()
        if await self.venue.refused(conn, req, now_ns):
            return True
        assert acct is not None
        state = self.side.state(conn)
        started = False
        if event == "subscribe":
            state.gate[native] = acct
            if native not in conn.subscribed:
                sim._add_sub(conn, native)
                started = True
        else:
            state.gate.pop(native, None)
            await sim._remove_sub(conn, native)
        await sim._reply(conn, gate_wire.ack_frame(req, now_ns))
        if started:
            self.side.start_play(conn, native, self._frames(channel, native))
        return True

    def _auth(self, raw: dict[str, Any], channel: str, event: str) -> tuple[SimAccount | None, Any]:
        auth, t = raw.get("auth"), raw.get("time")
        acct = None
        if isinstance(auth, dict) and auth.get("method") == "api_key":
            acct = self.side.account(GATE, auth.get("KEY"))
        sign = auth.get("SIGN") if isinstance(auth, dict) else None
        time_s = str(t) if isinstance(t, int) and not isinstance(t, bool) else t if isinstance(t, str) else None
        if acct is None or not isinstance(sign, str) or time_s is None:
            ok = False
        else:
            ok = same_signature(sign, gate_ws_sign(acct.api_secret, channel, event, time_s))
        if not ok:
            self.sim.stats["gate_auth_failures"] += 1
            label = orjson.dumps({"label": "INVALID_KEY", "message": "Invalid key provided"}).decode()
            return None, (4, label)
        return acct, None

    @staticmethod
    def _native(payload: object, channel: str, acct: SimAccount) -> tuple[str, tuple[int, str] | None]:
        if not isinstance(payload, list) or not all(
            isinstance(p, str | int) and not isinstance(p, bool) for p in payload
        ):
            return "", (1, "invalid argument struct: payload must be a list of strings")
        items = [str(p) for p in payload]
        if channel == "futures.balances" and items[1:] in ([], ["!all"]) and items:
            target = None
        elif channel != "futures.balances" and len(items) == 2:
            target = items[1]
        else:
            shape = "[user id]" if channel == "futures.balances" else '[user id, contract or "!all"]'
            return "", (2, f"invalid argument: payload must be {shape}")
        if items[0] != acct.memo:
            return "", (2, "invalid argument: user id mismatch")
        if target is None:
            return f"{channel}:{items[0]}", None
        if target != "!all" and target not in tapes.GATE_CONTRACTS:
            return "", (2, f"unknown contract {target}")
        return f"{channel}:{items[0]}:{target}", None

    def _frames(self, channel: str, native: str) -> tuple[str, ...]:
        frames = tapes.private_frames(GATE, channel, self.sim._samples_dir)
        target = native.split(":")[2] if native.count(":") == 2 else "!all"
        if target == "!all":
            return frames
        return tuple(f for f in frames if any(r.get("contract") == target for r in orjson.loads(f)["result"]))

    async def authenticate(self, request: web.Request) -> tuple[SimAccount, bytes] | web.Response:
        """Check a signed REST call (headers ``KEY``, ``Timestamp`` s within 60 s, ``SIGN`` =
        ``gate_rest_sign(secret, method, path, <query as sent>, body, <Timestamp header text>)``; §2.7).

        Returns ``(account, body bytes)``, or the 401 answer (counted in ``rest_auth_failures``): unknown key
        ``{"label":"INVALID_KEY","message":"Invalid key provided"}``, bad or missing SIGN/Timestamp
        ``{"label":"INVALID_SIGNATURE","message":"Signature mismatch"}``, stale ``{"label":"REQUEST_EXPIRED",…}``.
        """
        h = request.headers
        acct = self.side.account(GATE, h.get("KEY", ""))
        if acct is None:
            return self.auth_failed(request, {"label": "INVALID_KEY", "message": "Invalid key provided"}, 401)
        ts, sign = h.get("Timestamp", ""), h.get("SIGN", "")
        try:
            ts_s = float(ts)
        except ValueError:
            ts_s = None
        body = await request.read()
        bad_sign = {"label": "INVALID_SIGNATURE", "message": "Signature mismatch"}
        if ts_s is None or not sign:
            return self.auth_failed(request, bad_sign, 401)
        if abs(ts_s - self.side.now_ms() / 1000) > GATE_REST_WINDOW_S:
            stale = {"label": "REQUEST_EXPIRED", "message": "gap between request Timestamp and server time exceeds 60"}
            return self.auth_failed(request, stale, 401)
        expected = gate_rest_sign(acct.api_secret, request.method, request.path, request.rel_url.query_string, body, ts)
        if not same_signature(sign, expected):
            return self.auth_failed(request, bad_sign, 401)
        return acct, body

    async def _h_rest(self, request: web.Request, *, name: str) -> web.Response:
        """Gate ``GET /api/v4/futures/usdt/orders?status=open|finished[&contract=C]`` | ``/api/v4/futures/usdt/positions``.

        Headers ``KEY``, ``Timestamp`` (s, within 60 s), ``SIGN`` = ``gate_rest_sign(secret, "GET", path,
        <query as sent>, b"", <Timestamp header text>)``. Failures HTTP 401: unknown key
        ``{"label":"INVALID_KEY","message":"Invalid key provided"}``, bad or missing SIGN/Timestamp
        ``{"label":"INVALID_SIGNATURE","message":"Signature mismatch"}``, stale ``{"label":"REQUEST_EXPIRED",
        …}`` (texts other than the brief's UNVERIFIED). ``status`` missing: 400 ``MISSING_REQUIRED_PARAM``.
        Fixture data, unless the account has traded on the simulator (``GateOrders.list_rest``).
        """
        self.rest_start(name)
        auth = await self.authenticate(request)
        if isinstance(auth, web.Response):
            return auth
        acct, _ = auth
        sim = self.sim
        status = request.query.get("status")
        if name == "gate_orders" and status is None:
            body_ = {"label": "MISSING_REQUIRED_PARAM", "message": "Missing required parameter: status"}
            return sim._rest_done(request, GATE, json_response(body_, 400))
        if name == "gate_orders" and status not in ("open", "finished"):
            body_ = {"label": "INVALID_PARAM_VALUE", "message": "Invalid parameter value: status"}
            return sim._rest_done(request, GATE, json_response(body_, 400))
        orders = self.venue.orders
        if orders.active(acct):  # an account that traded on the simulator gets its own orders and positions
            data = orders.orders_rest(request, acct, status) if status else orders.positions_rest(request, acct)
        elif status:
            data = tapes.gate_orders(status, sim._samples_dir)
        else:
            data = tapes.gate_positions(sim._samples_dir)
        contract = request.query.get("contract")
        if contract:
            data = [d for d in data if d.get("contract") == contract]
        return sim._rest_done(request, GATE, json_response(data, 200))


def _contract(item: dict[str, Any]) -> str:
    """The contract a push item is about (``contract``, or ``initial.contract`` of a price order), else ``""``."""
    initial = item.get("initial")
    contract = item.get("contract", initial.get("contract") if isinstance(initial, dict) else "")
    return contract if isinstance(contract, str) else ""
