"""``GET /ws``: the WebSocket fan-out endpoint (``app.ws`` package docstring has the protocol).

The handshake is always accepted, so that a refused client can read why: a refusal is the spec's error event
(``UNAUTHORIZED``, ``RATE_LIMITED``) followed by close code 1008 (``CONNECTION_LOST`` and 1013 when Redis cannot
check the limits). An accepted client first gets ``{"type":"connected","connection_id","protocol","limits",
"timestamp"}``. ``?batch=0`` asks for one message per frame (default: several queued events share a frame
as a JSON array).
"""

from __future__ import annotations

import itertools
import logging
import os

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from app.errors import now_ms
from app.ws import protocol as p
from app.ws.access import Refused, Registry, admit
from app.ws.connection import CLOSE_POLICY, CLOSE_TRY_LATER, Connection, Limits
from app.ws.session import Session

logger = logging.getLogger(__name__)

_ids = itertools.count(1)


async def ws_endpoint(websocket: WebSocket) -> None:
    """Serve one ``/ws`` client until it leaves or is closed."""
    state = websocket.app.state
    settings = state.settings
    try:
        access = await admit(websocket.scope, state.authenticator, state.limiter, state.trusted_networks)
        registry: Registry = state.ws_registry
        registry.add(access)
    except Refused as exc:
        await websocket.accept()
        await websocket.send_text(p.error(exc.code, exc.message, now_ms()))
        await websocket.close(CLOSE_TRY_LATER if exc.code == p.CONNECTION_LOST else CLOSE_POLICY, exc.code)
        return
    try:
        await websocket.accept()
        batch = websocket.query_params.get("batch", "1") not in ("0", "false")
        limits = Limits.from_settings(settings, batch)
        conn_id = f"{os.getpid()}-{next(_ids)}"
        conn = Connection(websocket, limits, conn_id)
        session = Session(websocket, conn, access, state.hub, state.sse_redis)
        conn.on_text = session.handle
        conn.on_close = registry.note_close
        connected = {
            "type": "connected", "connection_id": conn_id, "protocol": p.PROTOCOL, "batch": batch,
            "limits": {"subscriptions": limits.subscriptions_max, "heartbeat_s": limits.heartbeat_s,
                       "idle_timeout_s": limits.idle_timeout_s, "send_queue": limits.send_queue_max},
            "timestamp": now_ms(),
        }  # fmt: skip
        conn.send_control(p.dumps(connected))
        logger.debug("ws %s: connected from %s (%s)", conn_id, access.address, access.token_id or "open")
        registry.watch(id(conn), conn.shutdown)
        try:
            await conn.run()
        finally:
            registry.unwatch(id(conn))
            session.close()
    finally:
        registry.remove(access)


ROUTES = [WebSocketRoute("/ws", ws_endpoint, name="ws")]
