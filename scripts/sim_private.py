"""Private (user-data) side of the exchange simulator: accounts, logins, user streams, signed REST snapshots.

``scripts.simulator.ExchangeSimulator`` owns one ``PrivateSide``; its public methods (``add_account``,
``push_private``, ``expire_listen_key``, ``set_clock``) delegate here. Served on the simulator's port:

- BitMart private socket ``/user?protocol=1.1`` (exchanges.md §1.3, §1.7): ``access`` login signed with
  HMAC-SHA256 over ``f"{ts}#{memo}#bitmart.WebSocket"``, then ``futures/order``, ``futures/position``,
  ``futures/asset:<USDT|BTC|ETH>``.
- Binance USD-M user data (binance_usdm.md §7): ``POST/PUT/DELETE /fapi/v1/listenKey`` (header
  ``X-MBX-APIKEY``), sockets ``/private/ws?listenKey=K[&events=E1/E2]`` and ``/private/ws/K``.
- Gate.io private channels on ``/v4/ws/usdt`` (exchanges.md §2.3, §2.6): ``futures.orders``,
  ``futures.positions``, ``futures.balances`` with a per-request ``auth`` (HMAC-SHA512).
- Signed REST snapshots: BitMart ``GET /contract/private/get-open-orders``, ``/contract/private/position``
  (headers ``X-BM-KEY``/``X-BM-TIMESTAMP``/``X-BM-SIGN``); Binance ``GET /fapi/v1/openOrders``,
  ``/fapi/v2/positionRisk`` (binance_usdm.md §8); Gate ``GET /api/v4/futures/usdt/orders?status=…``,
  ``/api/v4/futures/usdt/positions`` (headers ``KEY``/``Timestamp``/``SIGN``, exchanges.md §2.7).
- Control: ``POST /_sim/accounts`` ``{"exchange","api_key","api_secret","memo"}`` (memo = BitMart API
  memo, Gate uid), ``DELETE /_sim/accounts`` ``{"exchange","api_key"}``, ``POST /_sim/push_private``
  ``{"exchange","api_key","channel","frame"}``, ``POST /_sim/expire_listen_key`` ``{"api_key"}``,
  ``POST /_sim/clock?ms=<epoch ms>`` (``DELETE`` restores the real clock).

Data: the private fixture frames of ``scripts.sim_tapes.private_frames`` (JKorf BitMart/Gate, nautilus
Binance), played once per subscription (never looped), and REST bodies built from the same fixtures.
``push_private`` injects any frame to one account's live sockets.

Secrets (API secrets, memos, listen keys) live in memory only: never logged, never in ``status()``,
``rest_requests`` or connection paths (keys show as ``mask_key``). Every timestamp check uses the
simulator clock (``set_clock``), so the references' fixed test vectors (ts 1700000000000) can be replayed.
Facts marked UNVERIFIED are choices where the references say nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import secrets
import string
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import WSCloseCode, web

from scripts import sim_gate, sim_tapes
from scripts.sim_tapes import BINANCE, BINANCE_USER_STREAM, BITMART, GATE

if TYPE_CHECKING:
    from scripts.simulator import ExchangeSimulator, SimConnection

__all__ = [
    "BITMART_PRIVATE_TOPIC",
    "EXCHANGES",
    "GATE_PRIVATE_CHANNELS",
    "PrivateConn",
    "PrivateSide",
    "SimAccount",
    "binance_sign",
    "bitmart_sign",
    "gate_rest_sign",
    "gate_ws_sign",
    "mask_key",
]

log = logging.getLogger(__name__)

EXCHANGES = (BITMART, BINANCE, GATE)
#: BitMart private topics (§1.7); ``futures/unicast`` is undocumented and not served.
BITMART_PRIVATE_TOPIC = re.compile(r"futures/order|futures/position|futures/asset:(?:USDT|BTC|ETH)")
BITMART_WS_PAYLOAD = "bitmart.WebSocket"
#: §1.3: the login timestamp "expires after 60 s"; accepting the same distance ahead is UNVERIFIED
#: (siebly signs now + 5 s). BitMart REST: 30007 "Within a minute".
BITMART_AUTH_WINDOW_MS = 60_000
GATE_PRIVATE_CHANNELS = frozenset({"futures.orders", "futures.positions", "futures.balances"})
GATE_REST_WINDOW_S = 60.0  # §2.7: Timestamp within 60 s of server time
BINANCE_DEFAULT_RECV_WINDOW_MS = 5000  # §8
BINANCE_MAX_RECV_WINDOW_MS = 60_000  # recvWindow above this is refused (-1131; text UNVERIFIED)
LISTEN_KEY_CHARS = 64
_LISTEN_KEY_ALPHABET = string.ascii_letters + string.digits
_EMPTY_SHA512 = hashlib.sha512(b"").hexdigest()


# ---------------------------------------------------------------------- signing (the real recipes)


def mask_key(api_key: str) -> str:
    """Non-secret display of an API key: first 4 characters, ``…``, 8 hex of its sha256 (as ``control.accounts``)."""
    return f"{api_key[:4]}…{hashlib.sha256(api_key.encode()).hexdigest()[:8]}"


def _mask_listen_key(listen_key: str) -> str:
    return f"{listen_key[:4]}…"


def bitmart_sign(secret: str, timestamp: str, memo: str, payload: str = BITMART_WS_PAYLOAD) -> str:
    """Hex HMAC-SHA256 of ``f"{timestamp}#{memo}#{payload}"`` (§1.3: WS login ``bitmart.WebSocket``; REST:
    the query string of a GET or the JSON body of a POST)."""
    return hmac.new(secret.encode(), f"{timestamp}#{memo}#{payload}".encode(), hashlib.sha256).hexdigest()


def binance_sign(secret: str, payload: str) -> str:
    """Hex HMAC-SHA256 of ``payload`` (the query string without ``signature``, plus any body; binance_usdm.md §8)."""
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def gate_ws_sign(secret: str, channel: str, event: str, time_s: str) -> str:
    """Hex HMAC-SHA512 of ``f"channel={channel}&event={event}&time={time_s}"`` (§2.3)."""
    message = f"channel={channel}&event={event}&time={time_s}"
    return hmac.new(secret.encode(), message.encode(), hashlib.sha512).hexdigest()


def gate_rest_sign(secret: str, method: str, path: str, query: str, body: bytes, timestamp: str) -> str:
    """Hex HMAC-SHA512 of ``METHOD\\nPATH\\nQUERY\\nhex(SHA512(body))\\nTIMESTAMP`` (§2.7)."""
    body_hash = hashlib.sha512(body).hexdigest() if body else _EMPTY_SHA512
    message = f"{method.upper()}\n{path}\n{query}\n{body_hash}\n{timestamp}"
    return hmac.new(secret.encode(), message.encode(), hashlib.sha512).hexdigest()


def _same(given: str, expected: str) -> bool:
    """Constant-time compare of a hex signature; case-insensitive (whether exchanges accept upper case is UNVERIFIED)."""
    return hmac.compare_digest(given.lower().encode(), expected.encode())


# ---------------------------------------------------------------------- state


@dataclass(eq=False)
class SimAccount:
    """One account the simulator knows. ``repr`` shows the exchange and the masked key only."""

    exchange: str
    api_key: str = field(repr=False)
    api_secret: str = field(repr=False)
    memo: str = field(default="", repr=False)  # BitMart API memo; Gate uid
    masked: str = ""
    listen_key: str | None = field(default=None, repr=False)  # Binance: the active key
    listen_key_deadline: float = field(default=0.0, repr=False)  # time.monotonic() when it lapses
    _ttl_handle: asyncio.TimerHandle | None = field(default=None, repr=False)


@dataclass(eq=False)
class PrivateConn:
    """Private state of one socket (``SimConnection._private``).

    ``account``: BitMart logged-in account / Binance listen-key owner. ``listen_key``: the key the Binance
    socket was opened with (None: bogus or absent). ``stream_closed``: Binance key expired or deleted —
    the socket stays open and silent. ``events``: Binance ``events=`` filter. ``gate``: Gate native ->
    account whose ``auth`` subscribed it.
    """

    account: SimAccount | None = None
    listen_key: str | None = None
    stream_closed: bool = False
    events: frozenset[str] | None = None
    gate: dict[str, SimAccount] = field(default_factory=dict)


class PrivateSide:
    """Accounts, private sockets and signed REST for one ``ExchangeSimulator`` (see the module docstring)."""

    def __init__(self, sim: ExchangeSimulator, *, listen_key_ttl_s: float) -> None:
        if listen_key_ttl_s <= 0:
            raise ValueError("listen_key_ttl_s must be > 0")
        self._sim = sim
        self._ttl_s = listen_key_ttl_s
        self._accounts: dict[tuple[str, str], SimAccount] = {}
        self._listen_keys: dict[str, SimAccount] = {}
        self._clock_offset_ms = 0

    # ------------------------------------------------------------------ accounts, clock, status

    def add_account(self, exchange: str, api_key: str, api_secret: str, memo: str = "") -> SimAccount:
        """Register (or update in place) an account; ``memo`` is the BitMart memo or the Gate uid."""
        if exchange not in EXCHANGES:
            raise ValueError(f"exchange must be one of {', '.join(EXCHANGES)}")
        if not isinstance(api_key, str) or not isinstance(api_secret, str) or not isinstance(memo, str):
            raise TypeError("api_key, api_secret and memo must be strings")
        if not api_key or not api_secret:
            raise ValueError("api_key and api_secret must not be empty")
        acct = self._accounts.get((exchange, api_key))
        if acct is None:
            acct = self._accounts[(exchange, api_key)] = SimAccount(exchange, api_key, api_secret, memo)
            acct.masked = mask_key(api_key)
        else:
            acct.api_secret, acct.memo = api_secret, memo
        log.info("account added: %s key=%s", exchange, acct.masked)
        self._sim._notify()
        return acct

    def remove_account(self, exchange: str, api_key: str) -> bool:
        """Forget an account (its listen key goes too: those sockets fall silent); False if unknown.

        Sockets already logged in or subscribed with it keep what they have (whether an exchange cuts
        them on key revocation is UNVERIFIED); ``push_private`` can no longer reach them.
        """
        acct = self._accounts.pop((exchange, api_key), None)
        if acct is None:
            return False
        self._drop_listen_key(acct)
        log.info("account removed: %s key=%s", exchange, acct.masked)
        self._sim._notify()
        return True

    def _account(self, exchange: str, api_key: object) -> SimAccount | None:
        return self._accounts.get((exchange, api_key)) if isinstance(api_key, str) else None

    def _require(self, exchange: str, api_key: str) -> SimAccount:
        acct = self._account(exchange, api_key)
        if acct is None:
            raise KeyError(f"no {exchange} account with key {mask_key(api_key)}")
        return acct

    def set_clock(self, epoch_ms: int | None) -> None:
        """Make the simulator clock read ``epoch_ms`` now and run on from there; None: the real clock."""
        self._clock_offset_ms = 0 if epoch_ms is None else epoch_ms - time.time_ns() // 1_000_000

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000 + self._clock_offset_ms

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "accounts": [
                {
                    "exchange": a.exchange,
                    "key": a.masked,
                    "memo_set": bool(a.memo),
                    "listen_key": _mask_listen_key(a.listen_key) if a.listen_key else None,
                    "listen_key_ttl_left_s": round(a.listen_key_deadline - now, 3) if a.listen_key else None,
                }
                for a in self._accounts.values()
            ],
            "listen_key_ttl_s": self._ttl_s,
            "clock_offset_ms": self._clock_offset_ms,
        }

    def close(self) -> None:
        """Cancel the listen-key timers (the simulator is stopping)."""
        for acct in self._accounts.values():
            if acct._ttl_handle is not None:
                acct._ttl_handle.cancel()
                acct._ttl_handle = None

    @staticmethod
    def state(conn: SimConnection) -> PrivateConn:
        if conn._private is None:
            conn._private = PrivateConn()
        state: PrivateConn = conn._private
        return state

    # ------------------------------------------------------------------ pushes

    def _start_play(self, conn: SimConnection, native: str, frames: Sequence[str]) -> None:
        if frames and native not in conn._tasks:
            self._sim._spawn(conn, native, self._play(conn, native, frames))

    async def _play(self, conn: SimConnection, native: str, frames: Sequence[str]) -> None:
        """Send fixture frames once, in order; paused while dead or silent (never looped)."""
        sim, state = self._sim, self.state(conn)
        for frame in frames:
            while not sim._data_open.is_set():
                await sim._data_open.wait()
            if state.stream_closed:
                return
            if not await sim._send_data(conn, native, frame) or conn._tasks.get(native) is not asyncio.current_task():
                return

    async def push(self, exchange: str, api_key: str, channel: str, frame: str | dict[str, Any] | list[Any]) -> int:
        """Send ``frame`` (text or JSON-able) to the live sockets of one account; returns how many got it.

        BitMart: sockets logged in with the key and subscribed to topic ``channel``
        (``futures/order``, ``futures/asset:USDT``…). Gate: sockets where the account subscribed
        ``channel`` (``futures.orders``…). Binance: the account's user-data sockets whose key is still
        live (``channel`` is informational; a socket's ``events=`` filter applies to the frame's ``e``).
        While dead or silent nothing is sent (counted in ``private_pushes_withheld``). Unknown account:
        KeyError.
        """
        acct = self._require(exchange, api_key)
        sim = self._sim
        text = frame if isinstance(frame, str) else orjson.dumps(frame).decode()
        event = None
        if exchange == BINANCE:
            try:
                parsed = orjson.loads(text)
                event = parsed.get("e") if isinstance(parsed, dict) else None
            except orjson.JSONDecodeError:
                pass
        targets: list[tuple[SimConnection, str]] = []
        for conn in sim.connections:
            state = conn._private
            if conn.exchange != exchange or not isinstance(state, PrivateConn):
                continue
            if exchange == BITMART:
                if state.account is acct and channel in conn.subscribed:
                    targets.append((conn, channel))
            elif exchange == BINANCE:
                live = state.account is acct and state.listen_key is not None and not state.stream_closed
                if live and (state.events is None or event in state.events):
                    targets.append((conn, BINANCE_USER_STREAM))
            else:
                native = next((n for n, a in state.gate.items() if a is acct and n.startswith(channel + ":")), None)
                if native is not None:
                    targets.append((conn, native))
        if not sim._data_open.is_set():
            sim.stats["private_pushes_withheld"] += len(targets)
            return 0
        sent = 0
        for conn, native in targets:
            if await sim._send_data(conn, native, text):
                sent += 1
        sim.stats["private_pushes"] += sent
        return sent

    # ------------------------------------------------------------------ BitMart /user (§1.3, §1.7)

    async def bitmart_user_ws(self, request: web.Request) -> web.WebSocketResponse:
        sim = self._sim
        conn = sim._new_conn(request, BITMART, "user", "user")
        conn._private = PrivateConn()
        return await sim._serve(request, conn, sim._bitmart_text)

    async def bitmart_user_frame(self, conn: SimConnection, action: object, args: object, text: str) -> bool:
        """``access``, ``subscribe``, ``unsubscribe`` on the private socket (pings are answered before this).

        - ``> {"action":"access","args":[key, ts_ms, sign, "web"]}`` ``< {"action":"access","success":true}``;
          failure ``< {"action":"access","success":false,"error":"access failed: openapi auth: apiKey <masked>
          failed: openapi auth failed"}`` and the socket is closed (1008; the code is UNVERIFIED).
        - a private topic before login: ``{"action":"subscribe","group":"futures/order","success":false,
          "error":"futures/order need authenication"}`` (sic, §1.3).
        - public topics are not served here: ``Invalid channel: not found <topic>`` (UNVERIFIED).
        """
        sim = self._sim
        if action == "access":
            return await self._bitmart_access(conn, args)
        if action not in ("subscribe", "unsubscribe") or not isinstance(args, list):
            await sim._reply(conn, {"success": False, "error": f"Invalid message: {text}"})
            return True
        sim.stats[f"{action}_frames"] += 1
        state = self.state(conn)
        echo = {"action": action, "args": args}
        started: list[str] = []
        for topic in args:
            if not isinstance(topic, str) or not BITMART_PRIVATE_TOPIC.fullmatch(topic):
                error: str | None = f"Invalid channel: not found {topic}"
            elif state.account is None:
                error = f"{topic} need authenication"
            elif action == "subscribe" and topic in sim._rejects:
                error = sim._rejects[topic] or f"Invalid channel: not found {topic}"
            else:
                error = None
            if error is not None:
                sim.stats[f"{action}_errors"] += 1
                await sim._reply(conn, {"action": action, "group": topic, "success": False, "error": error})
                continue
            assert isinstance(topic, str)
            if action == "subscribe":
                if topic not in conn.subscribed:
                    sim._add_sub(conn, topic)
                    started.append(topic)
            else:
                await sim._remove_sub(conn, topic)
            await sim._reply(conn, {"action": action, "group": topic, "success": True, "request": echo})
        for topic in started:  # after the acks
            self._start_play(conn, topic, sim_tapes.private_frames(BITMART, topic, sim._samples_dir))
        return True

    async def _bitmart_access(self, conn: SimConnection, args: object) -> bool:
        sim = self._sim
        state = self.state(conn)
        acct, shown = None, "?"
        ok = False
        if isinstance(args, list) and len(args) >= 3 and all(isinstance(a, str) for a in args[:3]):
            key, ts, sign = args[0], args[1], args[2]
            shown = mask_key(key)
            acct = self._account(BITMART, key)
            if acct is not None and ts.isdigit() and abs(int(ts) - self.now_ms()) <= BITMART_AUTH_WINDOW_MS:
                ok = _same(sign, bitmart_sign(acct.api_secret, ts, acct.memo))
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

    # ------------------------------------------------------------------ Binance user data (§7)

    async def binance_private_ws(self, request: web.Request) -> web.WebSocketResponse:
        """``/private/ws/<listenKey>`` or ``/private/ws?listenKey=<k>[&events=E1/E2]``.

        A bogus or missing key still completes the handshake and then sends nothing (§7 probe note).
        A live key: the account's fixture events are replayed once, then ``push_private`` frames.
        Client frames get the market-socket handling (§4); streams are never delivered here.
        """
        sim = self._sim
        key = request.match_info.get("listen_key") or request.query.get("listenKey", "")
        conn = sim._new_conn(request, BINANCE, "private", "ws")
        if key:
            conn.path = request.path_qs.replace(key, _mask_listen_key(key))
        state = conn._private = PrivateConn()
        events = request.query.get("events")
        if events:
            state.events = frozenset(e for e in events.split("/") if e)
        acct = self._listen_keys.get(key) if key else None
        if acct is not None and self._key_live(acct):
            state.account, state.listen_key = acct, key
        else:
            sim.stats["bogus_listen_key_sockets"] += 1
        return await sim._serve(request, conn, sim._binance_text)

    def on_open(self, conn: SimConnection) -> None:
        """Start a live-key Binance socket's fixture replay (called once the socket is registered)."""
        state = conn._private
        if conn.exchange != BINANCE or not isinstance(state, PrivateConn) or state.listen_key is None:
            return
        frames = sim_tapes.private_frames(BINANCE, BINANCE_USER_STREAM, self._sim._samples_dir)
        if state.events is not None:
            frames = tuple(f for f in frames if orjson.loads(f).get("e") in state.events)
        self._sim._add_sub(conn, BINANCE_USER_STREAM)
        self._start_play(conn, BINANCE_USER_STREAM, frames)

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
            self._sim._tasks.add(task)
            task.add_done_callback(self._sim._tasks.discard)

    def _drop_listen_key(self, acct: SimAccount) -> str | None:
        """Forget the account's key; its sockets stay open and fall silent. Returns the key."""
        key, acct.listen_key = acct.listen_key, None
        if acct._ttl_handle is not None:
            acct._ttl_handle.cancel()
            acct._ttl_handle = None
        if key is None:
            return None
        self._listen_keys.pop(key, None)
        for conn in self._sim.connections:
            state = conn._private
            if isinstance(state, PrivateConn) and state.listen_key == key:
                state.stream_closed = True
        self._sim._notify()
        return key

    async def expire_listen_key(self, api_key: str) -> int:
        """Expire the account's listen key now: each of its sockets gets ``{"e":"listenKeyExpired","E":<ms>,
        "listenKey":K}`` and then stays open but silent (§7); PUT answers -1125 and POST makes a new key.
        Returns how many sockets were told (0 when no key is active). Unknown account: KeyError."""
        return await self._expire(self._require(BINANCE, api_key))

    async def _expire(self, acct: SimAccount) -> int:
        sim = self._sim
        conns = [
            c
            for c in sim.connections
            if isinstance(c._private, PrivateConn)
            and c._private.listen_key == acct.listen_key
            and not c._private.stream_closed
        ]
        key = self._drop_listen_key(acct)
        if key is None:
            return 0
        sim.stats["listen_keys_expired"] += 1
        log.info("listen key of %s expired (%d socket(s))", acct.masked, len(conns))
        frame = orjson.dumps({"e": "listenKeyExpired", "E": self.now_ms(), "listenKey": key}).decode()
        told = 0
        for conn in conns:
            if sim._dead:
                sim.stats["replies_withheld_dead"] += 1
            elif await sim._send_data(conn, BINANCE_USER_STREAM, frame):
                told += 1
        return told

    async def _h_listen_key(self, request: web.Request) -> web.Response:
        """``POST|PUT|DELETE /fapi/v1/listenKey`` with ``X-MBX-APIKEY`` (no signature, no parameters; §7).

        POST: ``{"listenKey": K}`` — the active key again (extended) or a new 64-character one. PUT:
        extends, ``{"listenKey": K}``; no active key: 400 ``-1125``. DELETE: ``{}``, the key's sockets fall
        silent (whether Binance closes them is UNVERIFIED). No header: 401 ``-2014`` (UNVERIFIED); unknown
        key: 401 ``-2015``.
        """
        sim = self._sim
        sim.stats["rest_requests"] += 1
        sim.stats["rest_listen_key"] += 1
        api_key = request.headers.get("X-MBX-APIKEY", "")
        acct = self._account(BINANCE, api_key)
        if not api_key:
            resp = sim._json_status({"code": -2014, "msg": "API-key format invalid."}, 401)
        elif acct is None:
            resp = sim._json_status({"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."}, 401)
        elif request.method == "POST":
            if not self._key_live(acct):
                self._drop_listen_key(acct)
                acct.listen_key = "".join(secrets.choice(_LISTEN_KEY_ALPHABET) for _ in range(LISTEN_KEY_CHARS))
                self._listen_keys[acct.listen_key] = acct
            self._arm(acct)
            resp = sim._json_status({"listenKey": acct.listen_key}, 200)
        elif request.method == "PUT":
            if self._key_live(acct):
                self._arm(acct)
                resp = sim._json_status({"listenKey": acct.listen_key}, 200)
            else:
                resp = sim._json_status({"code": -1125, "msg": "This listenKey does not exist."}, 400)
        else:
            self._drop_listen_key(acct)
            resp = sim._json_status({}, 200)
        return sim._rest_done(request, BINANCE, resp, path_qs=request.path)

    # ------------------------------------------------------------------ Gate private channels (§2.3, §2.6)

    async def gate_frame(self, conn: SimConnection, text: str) -> bool:
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
        sim = self._sim
        channel, event = str(raw["channel"]), raw.get("event")
        req = sim_gate.GateRequest("invalid", channel=channel, id=raw.get("id"), id_sent="id" in raw)
        native, acct = "", None
        if event not in ("subscribe", "unsubscribe"):
            req.event = event if isinstance(event, str) else ""
            req.error = (1, f"invalid argument struct: unknown event {event!r}")
        else:
            req.kind = req.event = event
            sim.stats[f"{event}_frames"] += 1
            acct, req.error = self._gate_auth(raw, channel, event)
            if req.error is None:
                assert acct is not None
                native, req.error = self._gate_native(raw.get("payload"), channel, acct)
            if req.error is None and event == "subscribe" and native in sim._rejects:
                req.error = (2, sim._rejects[native] or f"invalid argument: {native} rejected")
        now_ns = time.time_ns()
        if req.error is not None:
            sim.stats["subscribe_errors" if req.kind == "subscribe" else "request_errors"] += 1
            await sim._reply(conn, sim_gate.error_frame(req, now_ns))
            return True
        assert acct is not None
        state = self.state(conn)
        started = False
        if event == "subscribe":
            state.gate[native] = acct
            if native not in conn.subscribed:
                sim._add_sub(conn, native)
                started = True
        else:
            state.gate.pop(native, None)
            await sim._remove_sub(conn, native)
        await sim._reply(conn, sim_gate.ack_frame(req, now_ns))
        if started:
            self._start_play(conn, native, self._gate_frames(channel, native))
        return True

    def _gate_auth(self, raw: dict[str, Any], channel: str, event: str) -> tuple[SimAccount | None, Any]:
        auth, t = raw.get("auth"), raw.get("time")
        acct = None
        if isinstance(auth, dict) and auth.get("method") == "api_key":
            acct = self._account(GATE, auth.get("KEY"))
        sign = auth.get("SIGN") if isinstance(auth, dict) else None
        time_s = str(t) if isinstance(t, int) and not isinstance(t, bool) else t if isinstance(t, str) else None
        if acct is None or not isinstance(sign, str) or time_s is None:
            ok = False
        else:
            ok = _same(sign, gate_ws_sign(acct.api_secret, channel, event, time_s))
        if not ok:
            self._sim.stats["gate_auth_failures"] += 1
            label = orjson.dumps({"label": "INVALID_KEY", "message": "Invalid key provided"}).decode()
            return None, (4, label)
        return acct, None

    @staticmethod
    def _gate_native(payload: object, channel: str, acct: SimAccount) -> tuple[str, tuple[int, str] | None]:
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
        if target != "!all" and target not in sim_tapes.GATE_CONTRACTS:
            return "", (2, f"unknown contract {target}")
        return f"{channel}:{items[0]}:{target}", None

    def _gate_frames(self, channel: str, native: str) -> tuple[str, ...]:
        frames = sim_tapes.private_frames(GATE, channel, self._sim._samples_dir)
        target = native.split(":")[2] if native.count(":") == 2 else "!all"
        if target == "!all":
            return frames
        return tuple(f for f in frames if any(r.get("contract") == target for r in orjson.loads(f)["result"]))

    # ------------------------------------------------------------------ signed REST snapshots

    def _rest_start(self, name: str) -> None:
        self._sim.stats["rest_requests"] += 1
        self._sim.stats[f"rest_{name}"] += 1

    def _auth_failed(self, request: web.Request, exchange: str, body: Any, status: int) -> web.Response:
        self._sim.stats["rest_auth_failures"] += 1
        return self._sim._rest_done(
            request, exchange, self._sim._json_status(body, status), path_qs=_safe_path(request)
        )

    async def _h_bitmart(
        self, request: web.Request, *, name: str, build: Callable[..., list[dict[str, Any]]]
    ) -> web.Response:
        """BitMart ``GET /contract/private/get-open-orders`` | ``/contract/private/position`` [``?symbol=``].

        Headers ``X-BM-KEY``, ``X-BM-TIMESTAMP`` (ms, within 60 s), ``X-BM-SIGN`` = ``bitmart_sign(secret, ts,
        memo, <query string as sent, "" if none>)``. Answer ``{"code":1000,"message":"Ok","data":[…],"trace"}``;
        failures HTTP 401 ``{"code":3000x,"message":…,"trace","data":{}}`` (30001 key empty, 30002 key not
        found, 30004 sign empty, 30005 sign wrong, 30006/30007/30008 timestamp empty/out of range/bad format).
        """
        self._rest_start(name)
        h = request.headers
        key, sign, ts = h.get("X-BM-KEY", ""), h.get("X-BM-SIGN", ""), h.get("X-BM-TIMESTAMP", "")
        acct = self._account(BITMART, key)
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
        elif abs(int(ts) - self.now_ms()) > BITMART_AUTH_WINDOW_MS:
            failure = (30007, "Header X-BM-TIMESTAMP range. Within a minute")
        elif not _same(sign, bitmart_sign(acct.api_secret, ts, acct.memo, request.rel_url.raw_query_string)):
            failure = (30005, "Header X-BM-SIGN is wrong")
        if failure is not None:
            body = {"code": failure[0], "message": failure[1], "trace": str(uuid.uuid4()), "data": {}}
            return self._auth_failed(request, BITMART, body, 401)
        data = build(self._sim._samples_dir)
        symbol = request.query.get("symbol")
        if symbol:
            data = [d for d in data if d.get("symbol") == symbol]
        body = {"code": 1000, "message": "Ok", "data": data, "trace": str(uuid.uuid4())}
        return self._sim._rest_done(request, BITMART, self._sim._json_status(body, 200))

    async def _h_binance(
        self, request: web.Request, *, name: str, build: Callable[..., list[dict[str, Any]]]
    ) -> web.Response:
        """Binance ``GET /fapi/v1/openOrders`` | ``/fapi/v2/positionRisk`` ``?[symbol=…&]recvWindow=…&timestamp=…&signature=…``.

        ``X-MBX-APIKEY`` unknown: 401 ``-2015``. The signature is checked over the query string exactly as
        sent, less the ``signature`` parameter: mismatch 400 ``-1022``; missing timestamp/signature 400
        ``-1102``; recvWindow over 60000 400 ``-1131``; ``timestamp >= now + 1000`` or ``now - timestamp >
        recvWindow`` 400 ``-1021`` (§8, against the simulator clock). The logged path hides the signature.
        """
        self._rest_start(name)
        acct = self._account(BINANCE, request.headers.get("X-MBX-APIKEY", ""))
        if acct is None:
            body = {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."}
            return self._auth_failed(request, BINANCE, body, 401)
        raw = request.rel_url.raw_query_string
        parts = raw.split("&") if raw else []
        signatures = [p.partition("=")[2] for p in parts if p.startswith("signature=")]
        payload = "&".join(p for p in parts if not p.startswith("signature="))
        query = request.query

        def missing(param: str) -> dict[str, Any]:
            return {"code": -1102, "msg": f"Mandatory parameter '{param}' was not sent, was empty/null, or malformed."}

        ts_text, window_text = query.get("timestamp", ""), query.get("recvWindow", str(BINANCE_DEFAULT_RECV_WINDOW_MS))
        if not ts_text.isdigit():
            return self._auth_failed(request, BINANCE, missing("timestamp"), 400)
        if len(signatures) != 1 or not signatures[0]:
            return self._auth_failed(request, BINANCE, missing("signature"), 400)
        if not _same(signatures[0], binance_sign(acct.api_secret, payload)):
            body = {"code": -1022, "msg": "Signature for this request is not valid."}
            return self._auth_failed(request, BINANCE, body, 400)
        if not window_text.isdigit() or int(window_text) > BINANCE_MAX_RECV_WINDOW_MS:
            body = {"code": -1131, "msg": "recvWindow must be less than 60000"}
            return self._auth_failed(request, BINANCE, body, 400)
        now, ts = self.now_ms(), int(ts_text)
        if ts >= now + 1000:
            body = {"code": -1021, "msg": "Timestamp for this request was 1000ms ahead of the server's time."}
            return self._auth_failed(request, BINANCE, body, 400)
        if now - ts > int(window_text):
            body = {"code": -1021, "msg": "Timestamp for this request is outside of the recvWindow."}
            return self._auth_failed(request, BINANCE, body, 400)
        data = build(self._sim._samples_dir)
        symbol = query.get("symbol")
        if symbol:
            data = [d for d in data if d.get("symbol") == symbol]
        resp = self._sim._json_status(data, 200)
        return self._sim._rest_done(request, BINANCE, resp, path_qs=_safe_path(request))

    async def _h_gate(self, request: web.Request, *, name: str) -> web.Response:
        """Gate ``GET /api/v4/futures/usdt/orders?status=open|finished[&contract=C]`` | ``/api/v4/futures/usdt/positions``.

        Headers ``KEY``, ``Timestamp`` (s, within 60 s), ``SIGN`` = ``gate_rest_sign(secret, "GET", path,
        <query as sent>, b"", <Timestamp header text>)``. Failures HTTP 401: unknown key
        ``{"label":"INVALID_KEY","message":"Invalid key provided"}``, bad or missing SIGN/Timestamp
        ``{"label":"INVALID_SIGNATURE","message":"Signature mismatch"}``, stale ``{"label":"REQUEST_EXPIRED",
        …}`` (texts other than the brief's UNVERIFIED). ``status`` missing: 400 ``MISSING_REQUIRED_PARAM``.
        """
        self._rest_start(name)
        h = request.headers
        acct = self._account(GATE, h.get("KEY", ""))
        if acct is None:
            return self._auth_failed(request, GATE, {"label": "INVALID_KEY", "message": "Invalid key provided"}, 401)
        ts, sign = h.get("Timestamp", ""), h.get("SIGN", "")
        try:
            ts_s = float(ts)
        except ValueError:
            ts_s = None
        body = await request.read()
        bad_sign = {"label": "INVALID_SIGNATURE", "message": "Signature mismatch"}
        if ts_s is None or not sign:
            return self._auth_failed(request, GATE, bad_sign, 401)
        if abs(ts_s - self.now_ms() / 1000) > GATE_REST_WINDOW_S:
            stale = {"label": "REQUEST_EXPIRED", "message": "gap between request Timestamp and server time exceeds 60"}
            return self._auth_failed(request, GATE, stale, 401)
        expected = gate_rest_sign(acct.api_secret, request.method, request.path, request.rel_url.query_string, body, ts)
        if not _same(sign, expected):
            return self._auth_failed(request, GATE, bad_sign, 401)
        sim = self._sim
        if name == "gate_orders":
            status = request.query.get("status")
            if status is None:
                resp = sim._json_status(
                    {"label": "MISSING_REQUIRED_PARAM", "message": "Missing required parameter: status"}, 400
                )
                return sim._rest_done(request, GATE, resp)
            if status not in ("open", "finished"):
                resp = sim._json_status(
                    {"label": "INVALID_PARAM_VALUE", "message": "Invalid parameter value: status"}, 400
                )
                return sim._rest_done(request, GATE, resp)
            data = sim_tapes.gate_orders(status, sim._samples_dir)
        else:
            data = sim_tapes.gate_positions(sim._samples_dir)
        contract = request.query.get("contract")
        if contract:
            data = [d for d in data if d.get("contract") == contract]
        return sim._rest_done(request, GATE, sim._json_status(data, 200))

    # ------------------------------------------------------------------ HTTP control

    @staticmethod
    async def _json_body(request: web.Request) -> dict[str, Any]:
        if not request.can_read_body:
            return dict(request.query)
        try:
            body = await request.json(loads=orjson.loads)
        except (orjson.JSONDecodeError, ValueError):
            raise web.HTTPBadRequest(text="body must be a JSON object") from None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text="body must be a JSON object")
        return body

    async def _h_accounts_post(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        memo = body.get("memo", body.get("uid", ""))
        try:
            acct = self.add_account(body.get("exchange", ""), body.get("api_key", ""), body.get("api_secret", ""), memo)
        except (TypeError, ValueError) as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        return self._sim._json({"account": {"exchange": acct.exchange, "key": acct.masked}})

    async def _h_accounts_delete(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        return self._sim._json(
            {"removed": self.remove_account(str(body.get("exchange", "")), str(body.get("api_key", "")))}
        )

    async def _h_push(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        try:
            sent = await self.push(
                str(body.get("exchange", "")),
                str(body.get("api_key", "")),
                str(body.get("channel", "")),
                body.get("frame", {}),
            )
        except KeyError:
            raise web.HTTPNotFound(text="no such account") from None
        return self._sim._json({"sent": sent})

    async def _h_expire(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        try:
            told = await self.expire_listen_key(str(body.get("api_key", "")))
        except KeyError:
            raise web.HTTPNotFound(text="no such account") from None
        return self._sim._json({"notified": told})

    async def _h_clock(self, request: web.Request) -> web.Response:
        if request.method == "DELETE":
            self.set_clock(None)
        else:
            ms = request.query.get("ms", "")
            if not ms.isdigit():
                raise web.HTTPBadRequest(text="ms must be epoch milliseconds")
            self.set_clock(int(ms))
        return self._sim._json({"now_ms": self.now_ms(), "clock_offset_ms": self._clock_offset_ms})

    def add_routes(self, r: web.UrlDispatcher) -> None:
        r.add_get("/user", self.bitmart_user_ws)
        r.add_get("/private/ws", self.binance_private_ws)
        r.add_get("/private/ws/{listen_key}", self.binance_private_ws)
        for method in ("POST", "PUT", "DELETE"):
            r.add_route(method, "/fapi/v1/listenKey", self._h_listen_key)
        b, n, g = self._h_bitmart, self._h_binance, self._h_gate
        r.add_get("/contract/private/get-open-orders", _bind(b, "bitmart_open_orders", sim_tapes.bitmart_open_orders))
        r.add_get("/contract/private/position", _bind(b, "bitmart_positions", sim_tapes.bitmart_positions))
        r.add_get("/fapi/v1/openOrders", _bind(n, "binance_open_orders", sim_tapes.binance_open_orders))
        r.add_get("/fapi/v2/positionRisk", _bind(n, "binance_position_risk", sim_tapes.binance_position_risk))
        r.add_get("/api/v4/futures/usdt/orders", _bind(g, "gate_orders"))
        r.add_get("/api/v4/futures/usdt/positions", _bind(g, "gate_positions"))
        r.add_post("/_sim/accounts", self._h_accounts_post)
        r.add_delete("/_sim/accounts", self._h_accounts_delete)
        r.add_post("/_sim/push_private", self._h_push)
        r.add_post("/_sim/expire_listen_key", self._h_expire)
        r.add_post("/_sim/clock", self._h_clock)
        r.add_delete("/_sim/clock", self._h_clock)


def _bind(handler: Callable[..., Any], name: str, build: Callable[..., Any] | None = None) -> Callable[..., Any]:
    async def bound(request: web.Request) -> web.Response:
        if build is None:
            return await handler(request, name=name)  # type: ignore[no-any-return]
        return await handler(request, name=name, build=build)  # type: ignore[no-any-return]

    return bound


def _safe_path(request: web.Request) -> str:
    """``path?query`` for the request log, with a Binance ``signature`` value replaced by ``***``."""
    raw = request.rel_url.raw_query_string
    if not raw:
        return request.path
    parts = ["signature=***" if p.startswith("signature=") else p for p in raw.split("&")]
    return f"{request.path}?{'&'.join(parts)}"
