"""How far behind the exchange one connection is: read lag (frames waiting in the socket) plus write lag (events
waiting in the publisher), for its status record (``ExchangeConnection.status``: ``lag_ms`` and ``lag``).

Under saturation a worker falls behind in two places, and nothing else shows it:

- *read*: the exchange keeps sending while the reader is busy, so frames wait in the kernel's receive buffer (up
  to several MB on Linux; the reader's own aiohttp buffer holds at most a few frames more). ``read_lag_ms`` =
  bytes waiting (``FIONREAD`` on the socket) / the rate the reader consumed bytes since the previous sample. With
  TLS or compressed frames the waiting bytes are wire bytes and the rate counts decoded frame bytes, so it is an
  estimate (within the compression ratio); on plain sockets it is the time the reader needs to drain what waits.
  While bytes wait and the reader consumed none over the last sampling window, the read lag is the time since
  it was last seen consuming.
- *write*: events the worker parsed but Redis has not taken yet (``Publisher.stats["oldest_queued_age_ms"]``: the
  age of the oldest unwritten event, the batch in flight included). The queue is the worker's, shared by its
  connections, so this part is the same for all of them.

``lag_ms`` = read lag + write lag (ms, int): about how long a frame the exchange sends now takes to reach Redis,
beyond the network. Computed when the status record is built (each status tick), never on the hot path: the
reader only adds each frame's length to ``bytes_read``.
"""

from __future__ import annotations

import array
import fcntl
import socket
import termios
from typing import Any

__all__ = ["ReadLag", "socket_backlog", "socket_of"]


def socket_backlog(sock: Any) -> int | None:
    """Bytes received by the kernel and not read yet on ``sock`` (anything with ``fileno()``); None when unknown
    (no socket, closed, not a stream socket)."""
    if sock is None:
        return None
    try:
        fd = sock.fileno()
        if fd < 0:
            return None
        buf = array.array("i", [0])
        fcntl.ioctl(fd, termios.FIONREAD, buf)
        return int(buf[0])
    except (OSError, ValueError, AttributeError):
        return None


class ReadLag:
    """The read side of one connection's lag (see the module docstring). ``bytes_read`` is bumped by the reader
    per frame; ``sample`` is called when the status record is built."""

    __slots__ = ("_bytes_then", "_progress_at", "_rate", "_seen", "_then", "bytes_read")

    def __init__(self) -> None:
        self.bytes_read = 0
        self._then: float | None = None
        self._bytes_then = 0
        self._rate = 0.0  # bytes/s consumed by the reader over the last window of at least 50 ms
        self._seen = 0  # bytes_read at the last sample, and when it last changed
        self._progress_at: float | None = None

    def sample(self, waiting: int | None, now: float) -> dict[str, Any]:
        """``{"read_backlog_bytes", "read_rate_bps", "read_lag_ms"}`` at monotonic time ``now`` (seconds).

        ``waiting``: ``socket_backlog`` of the current socket (None: no socket, nothing waits). While bytes wait and
        the reader consumed none over the last window, the read lag is the time since it was last seen consuming."""
        if self.bytes_read != self._seen or self._progress_at is None:
            self._seen, self._progress_at = self.bytes_read, now
        if self._then is None or now - self._then >= 0.05:
            if self._then is not None:
                self._rate = (self.bytes_read - self._bytes_then) / (now - self._then)
            self._then, self._bytes_then = now, self.bytes_read
        waiting = waiting or 0
        if waiting == 0:
            lag_ms = 0
        elif self._rate > 0:
            lag_ms = int(waiting / self._rate * 1000)
        else:
            lag_ms = int((now - self._progress_at) * 1000)
        return {"read_backlog_bytes": waiting, "read_rate_bps": int(self._rate), "read_lag_ms": lag_ms}

    def record(self, ws: Any, publisher_stats: dict[str, Any], now: float) -> dict[str, Any]:
        """The status record's ``lag_ms`` (int: read + write lag) and ``lag`` (its parts) for the connection's
        current socket ``ws`` (None between sockets) and its publisher's ``stats``, at monotonic ``now``."""
        read = self.sample(socket_backlog(socket_of(ws)), now)
        write_ms = int(publisher_stats.get("oldest_queued_age_ms") or 0)
        return {"lag_ms": read["read_lag_ms"] + write_ms, "lag": {**read, "write_lag_ms": write_ms}}


def socket_of(ws: Any) -> socket.socket | None:
    """The OS socket under an aiohttp WebSocket (None when closed or unknown)."""
    if ws is None or getattr(ws, "closed", True):
        return None
    sock: socket.socket | None = ws.get_extra_info("socket")
    return sock
