"""Why an exchange socket ended: the ``reasons`` keys of ``workers.connection.ExchangeConnection`` and the
``reason`` of the gap events announcing the interruption; re-exported by ``workers.connection``."""

from __future__ import annotations

from typing import NamedTuple

from workers.liveness import BACKPRESSURE

DEAD_PEER = "dead_peer"  # no frame (or no PONG) within the keepalive bounds
SILENT_FEED = "silent_feed"  # frames (pongs, acks) but no data while subscribed
CLOSED_BY_PEER = "closed_by_peer"  # a close frame, or the TCP connection reset/aborted
HANDSHAKE_ERROR = "handshake_error"  # the WebSocket upgrade answered with another HTTP status
REFUSED = "refused"  # the upgrade answered 429/418/403: rate limited or banned (Retry-After honoured)
LIFETIME = "lifetime"  # a planned roll ahead of the exchange's connection lifetime (no gap)
CONNECT_FAILED = "connect_failed"  # TCP/TLS connect failed or timed out (exchange unreachable)
EXCHANGE_REQUEST = "exchange_request"  # the exchange asked for a new socket (Gate upgrade, listenKeyExpired)
SEND_FAILED = "send_failed"  # a subscribe/ping frame could not be written
LOGIN_FAILED = "login_failed"  # a private socket's login was refused or not answered
ERROR = "error"  # anything else (a bug, logged with its traceback)
# BACKPRESSURE (workers.liveness): events shed while the publisher was congested, or a socket that ended right
# after the reader held back for it.
REASONS = (DEAD_PEER, SILENT_FEED, CLOSED_BY_PEER, HANDSHAKE_ERROR, REFUSED, LIFETIME, CONNECT_FAILED,
           EXCHANGE_REQUEST, SEND_FAILED, LOGIN_FAILED, ERROR, BACKPRESSURE)  # fmt: skip
#: Gap reason of topics a worker starts serving again after another process (or a pause) left off.
TAKEOVER = "takeover"
#: HTTP statuses of a refused handshake: rate limited (429), IP banned (418, binance_usdm.md §3), forbidden (403).
REFUSED_STATUSES = frozenset({429, 418, 403})
#: Least wait after a 418 (banned) without Retry-After.
BANNED_MIN_DELAY_S = 30.0


class End(NamedTuple):
    """How one socket session ended."""

    kind: str  # one of REASONS, or "stopped"
    text: str
    healthy: bool = False
    retry_after_s: float | None = None
