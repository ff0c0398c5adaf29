"""Simulated BitMart futures v2 public socket ``/api?protocol=1.1`` (exchanges.md §1.1-§1.6).

The private socket ``/user?protocol=1.1`` speaks the same frame protocol and is served by the same
handler; its login, topics and signed REST are in ``scripts.sim.bitmart_private``.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable

import orjson
from aiohttp import WSCloseCode, web

from scripts.sim import tapes
from scripts.sim.bitmart_private import BitmartPrivate
from scripts.sim.conn import SimConnection
from scripts.sim.core import SimCore
from scripts.sim.replay import load_tape, start_replay
from scripts.sim.tapes import BITMART
from scripts.sim.venue import Venue

__all__ = ["BITMART_MAX_FRAME_BYTES", "BitmartVenue"]

log = logging.getLogger(__name__)

#: §1.5: a 2,186-byte subscribe frame was closed with 1009 and a 2,020-byte one accepted; the
#: exact cut is UNVERIFIED, 2,048 is assumed and applied to every client text frame.
BITMART_MAX_FRAME_BYTES = 2048
_TOPIC = re.compile(
    r"futures/(?:klineBin(?:1m|5m|15m|30m|1H|2H|4H|1D|1W)|trade|ticker|bookticker):([A-Z0-9]+)"
    r"|futures/depthIncrease(?:5|20|50):([A-Z0-9]+)(?:@(?:100|200)ms)?"
)
_ALL_TICKERS = "futures/ticker"  # the all-contracts ticker channel (§1.6)
_DEPTH_INCREASE = "futures/depthIncrease"


class BitmartVenue(Venue):
    """BitMart futures: the client pings (``{"action":"ping"}``), one ack per topic, 1009 above 2 KiB."""

    name = BITMART
    label = "BitMart futures v2"

    def __init__(self, sim: SimCore, **options: float) -> None:
        super().__init__(sim, **options)
        self.private: BitmartPrivate = BitmartPrivate(self)

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/api", self._ws)
        self.private.add_routes(router)

    def urls(self) -> dict[str, str]:
        return {
            "BITMART_PUBLIC_WS_URI": f"{self.sim.base_url}/api?protocol=1.1",
            # BitMart private socket (login, orders, positions, assets; exchanges.md §1.3).
            "BITMART_PRIVATE_WS_URI": f"{self.sim.base_url}/user?protocol=1.1",
            # Futures REST base: the client appends ``/contract/private/get-open-orders`` and so on.
            "BITMART_REST_URI": self.sim.http_url,
        }

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        return await self.sim._serve(request, self.sim._new_conn(request, BITMART, "api", "api"), self.text)

    def _topic_error(self, conn: SimConnection, topic: object, *, subscribing: bool) -> str | None:
        """None if ``topic`` is a served channel; else the §1.4 wire error text.

        Served: ``futures/klineBin<tf>``, ``trade``, ``ticker``, ``bookticker`` ``:<SYM>``, the
        all-contracts ``futures/ticker``, and ``futures/depthIncrease{5,20,50}:<SYM>[@100ms|@200ms]``,
        for SYM in ``tapes.BITMART_SYMBOLS``.
        """
        if not isinstance(topic, str):
            return f"Invalid channel: not found {topic}"
        if subscribing and topic in self.sim._rejects:
            return self.sim._rejects[topic] or f"Invalid channel: not found {topic}"
        if topic == _ALL_TICKERS:
            return None
        m = _TOPIC.fullmatch(topic)
        if m is None or (m.group(1) or m.group(2)) not in tapes.BITMART_SYMBOLS:
            return f"Invalid channel: not found {topic}"
        return None

    async def _request(self, conn: SimConnection, topic: object) -> None:
        """``{"action":"request","args":[<depthIncrease topic>]}`` -> a fresh ``type:"snapshot"`` push (§1.6).

        The snapshot is the top-N book after the last frame this connection's replay of ``topic`` wrote
        (or the tape's first frame when it is not playing), with that frame's ``version``: the replay's
        next update is ``version + 1``. It is a data push (``sent_data``; withheld while dead or
        silent). Any other topic gets ``success:false`` (what BitMart answers there is UNVERIFIED).
        """
        sim = self.sim
        sim.stats["bitmart_requests"] += 1
        error = self._topic_error(conn, topic, subscribing=False)
        if error is None and not str(topic).startswith(_DEPTH_INCREASE):
            error = f"Invalid channel: request not supported for {topic}"
        tape = None if error is not None else await load_tape(sim, conn, str(topic))
        if tape is None:
            sim.stats["request_errors"] += 1
            msg = error or f"Invalid channel: not found {topic}"
            await sim._reply(conn, {"action": "request", "group": topic, "success": False, "error": msg})
            return
        native = str(topic)
        if not sim._data_open.is_set():
            sim.stats["replies_withheld_dead" if sim._dead else "requests_withheld_silent"] += 1
            return
        frame = tapes.bitmart_depth_snapshot(tape, conn._positions.get(native, 0))
        await sim._send_data(conn, native, frame)

    async def text(self, conn: SimConnection, text: str) -> bool:
        """One BitMart client frame (exchanges.md §1.2, §1.4, §1.5); ``>`` client, ``<`` simulator.

        - ``> {"action":"subscribe","args":["futures/trade:BTCUSDT"]}``
          ``< {"action":"subscribe","group":"futures/trade:BTCUSDT","success":true,"request":{...as sent}}``
          (one ack per topic; unknown topic: ``"success":false,"error":"Invalid channel: not found <topic>"``)
        - ``> {"action":"ping"}`` ``< {"group":"System","data":"pong+<uuid4>"}``
        - ``> {"action":"request","args":["futures/depthIncrease50:BTCUSDT@100ms"]}`` ``<`` a snapshot push
          (``_request``)
        - ``> hello`` ``< {"success":false,"error":"Invalid message: message must be JSON: hello"}``
        - any frame over ``BITMART_MAX_FRAME_BYTES``: close 1009.

        On the private socket (route ``user``): ``access`` (login) and the private topics instead of
        ``request`` and the public ones (``BitmartPrivate``).
        """
        sim = self.sim
        size = len(text.encode())
        if size > BITMART_MAX_FRAME_BYTES and not sim._dead:
            sim.stats["oversize_closes"] += 1
            log.info("conn %d: %d-byte frame, closing with 1009", conn.conn_id, size)
            await sim._close(conn, WSCloseCode.MESSAGE_TOO_BIG, b"message too big")
            return False
        try:
            req = orjson.loads(text)
        except orjson.JSONDecodeError:
            await sim._reply(conn, {"success": False, "error": f"Invalid message: message must be JSON: {text}"})
            return True
        action = req.get("action") if isinstance(req, dict) else None
        args = req.get("args") if isinstance(req, dict) else None
        if action == "ping":
            if await sim._reply(conn, {"group": "System", "data": f"pong+{uuid.uuid4()}"}):
                sim.stats["pings_answered"] += 1
            return True
        user = conn.route == "user"  # the private socket: login and private topics only
        if user and action == "access":
            return await self.private.access(conn, args)
        if not user and action == "request" and isinstance(args, list):
            for topic in args:
                await self._request(conn, topic)
            return True
        if action not in ("subscribe", "unsubscribe") or not isinstance(args, list):
            # Shape for JSON that is not a valid request: UNVERIFIED (reuses the non-JSON error shape).
            await sim._reply(conn, {"success": False, "error": f"Invalid message: {text}"})
            return True
        error_of: Callable[..., str | None] = self.private.topic_error if user else self._topic_error
        started = await self._apply(conn, action, args, error_of)
        for topic in started:  # after the acks, so an ack always precedes its stream's data
            if user:
                self.private.play(conn, topic)
            else:
                start_replay(sim, conn, topic)
        return True

    async def _apply(
        self, conn: SimConnection, action: str, args: list[object], error_of: Callable[..., str | None]
    ) -> list[str]:
        """Subscribe/unsubscribe each topic with one ack each (§1.4); returns the topics newly subscribed."""
        sim = self.sim
        sim.stats[f"{action}_frames"] += 1
        echo = {"action": action, "args": args}
        started: list[str] = []
        for topic in args:
            error = error_of(conn, topic, subscribing=action == "subscribe")
            if error is not None:
                sim.stats[f"{action}_errors"] += 1
                await sim._reply(conn, {"action": action, "group": topic, "success": False, "error": error})
                continue
            assert isinstance(topic, str)  # error_of refuses anything else
            if action == "subscribe":
                if topic not in conn.subscribed:  # a duplicate is acked again but not replayed twice
                    sim._add_sub(conn, topic)
                    started.append(topic)
            else:
                await sim._remove_sub(conn, topic)
            await sim._reply(conn, {"action": action, "group": topic, "success": True, "request": echo})
        return started
