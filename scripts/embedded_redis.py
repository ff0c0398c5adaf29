"""Embedded Redis fallback for ``scripts/run``: fakeredis's TCP server on loopback.

Used only when no Redis answers at ``REDIS_URL`` and no ``redis-server`` is installed. It keeps
everything in memory, is single-threaded Python and much slower than Redis: fine for a demo,
never for production. ``python -m scripts.embedded_redis --port 6379``
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

import fakeredis


def main(argv: list[str] | None = None) -> int:
    """Serve fakeredis on ``--host``/``--port`` until SIGINT/SIGTERM; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6379)
    args = parser.parse_args(argv)
    server = fakeredis.TcpFakeServer((args.host, args.port), server_version=(7, 4))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    print(f"embedded redis (fakeredis) listening on {args.host}:{args.port}", file=sys.stderr, flush=True)
    stop.wait()
    server.shutdown()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
