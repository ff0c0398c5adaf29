"""A light pub/sub clock for the ingest benchmarks: one raw socket, hiredis's reply parser, arrival stamps.

It subscribes to one channel and, per ``recv`` from the socket, stamps ``time.time_ns()`` on every message that
recv completed; nothing is decoded while measuring but Feedplane's rare ``gap`` events. When ``--count`` events are
accounted for (arrived, or announced lost by a gap event's ``dropped``) (or on SIGTERM / after
``--timeout-s``) it parses the payloads (JSON, the trade id under ``--id-field``) and writes two int64 arrays to
``--out``: ids then stamps (the file holds ``2 * messages`` int64 values). A message without that id gets -1.

Run as a child process: ``python -m scripts.benchkit.subscriber --port P --channel C --count N --id-field F --out
FILE``; prints ``ready`` once subscribed, then one JSON line when done.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import time
from array import array
from typing import Any

import hiredis
import orjson

_stop = False
#: How a Feedplane gap event's JSON starts (``workers.publish_queue``: ``{"type": "gap", ..., "dropped": n}``).
_GAP = b'{"type":"gap"'


def _on_term(_signum: int, _frame: Any) -> None:
    global _stop
    _stop = True


def command(*parts: str) -> bytes:
    """One RESP command."""
    out = [f"*{len(parts)}\r\n".encode()]
    for part in parts:
        raw = part.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


def listen(port: int, channel: str, count: int, timeout_s: float, sharded: bool = False) -> tuple[list[bytes], array]:
    """Subscribe (``sharded``: SSUBSCRIBE, on the cluster node serving ``channel``), print ``ready``, collect up to
    ``count`` messages; returns their payloads and arrival stamps."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.sendall(command("SSUBSCRIBE" if sharded else "SUBSCRIBE", channel))
    kind = b"smessage" if sharded else b"message"
    reader = hiredis.Reader()
    while (reply := reader.gets()) is False:
        reader.feed(sock.recv(65536))
    print("ready", flush=True)
    payloads: list[bytes] = []
    stamps = array("q")
    sock.settimeout(0.25)
    recv, feed, gets, now, append, stamp = sock.recv, reader.feed, reader.gets, time.time_ns, payloads.append, stamps.append
    deadline = time.monotonic() + timeout_s
    accounted = 0  # events arrived, plus the events gap events announce as lost
    while accounted < count and not _stop and time.monotonic() < deadline:
        try:
            data = recv(1 << 20)
        except TimeoutError:
            continue
        t = now()
        if not data:
            break
        feed(data)
        while (reply := gets()) is not False:
            if reply[0] == kind:
                payload = reply[2]
                append(payload)
                stamp(t)
                accounted += int(orjson.loads(payload).get("dropped") or 0) if payload.startswith(_GAP) else 1
    sock.close()
    return payloads, stamps


def trade_ids(payloads: list[bytes], id_field: str) -> array:
    """The trade id in each JSON payload (-1 when missing or not an integer)."""
    ids = array("q")
    for raw in payloads:
        try:
            ids.append(int(orjson.loads(raw)[id_field]))
        except (KeyError, TypeError, ValueError, orjson.JSONDecodeError):
            ids.append(-1)
    return ids


def main(argv: list[str] | None = None) -> int:
    """Child-process entry point (see the module docstring)."""
    p = argparse.ArgumentParser(description="benchmark pub/sub clock (raw socket + hiredis)")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--channel", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--id-field", required=True)
    p.add_argument("--timeout-s", type=float, default=600.0)
    p.add_argument("--out", required=True)
    p.add_argument("--sharded", action="store_true", help="SSUBSCRIBE (a Redis Cluster node)")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, _on_term)
    payloads, stamps = listen(args.port, args.channel, args.count, args.timeout_s, args.sharded)
    ids = trade_ids(payloads, args.id_field)
    with open(args.out, "wb") as fh:
        fh.write(ids.tobytes() + stamps.tobytes())
    print(orjson.dumps({"messages": len(payloads)}).decode(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
