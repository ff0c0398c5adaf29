"""``python -m app.serve``: run the control server under Hypercorn, programmatically.

Why programmatic (stack-notes §3, §4): only here can the shutdown trigger set sse-starlette's
``AppStatus.should_exit`` (the process-wide flag ``app.sse_stream`` watches), so open SSE streams send their
``bye`` event and end cleanly instead of being cut at ``graceful_timeout``. ``CTRL_REUSE_PORT=1`` binds with
SO_REUSEPORT so several processes share CTRL_ADDR (docs/load-balancer.md); the listen backlog is 4096. Binds ``CTRL_ADDR``, runs on uvloop (asyncio when uvloop is missing),
access log to stdout, error log to stderr, ``graceful_timeout = DRAIN_TIMEOUT_S``. SIGTERM/SIGINT stop it
gracefully (exit 0). Invalid settings: ``feedplane: <message>`` on stderr and exit code 2. That includes
ACCOUNTS_FILE problems and a non-loopback CTRL_ADDR without any token (``feedplane: CTRL_ADDR: 0.0.0.0:8089
is not a loopback address; refusing to serve without CONTROL_TOKEN/READ_TOKEN ...``).

Secrets stay out of the logs. ``control.redact.install_redaction`` masks every configured token, API key and
secret in every log record. The access log line is ``ACCESS_LOG_FORMAT``, whose request line has no query
string (an SSE or ``/ws`` ``?token=`` would be in it). ``RedactingAccessLogger`` also masks ``token``/``access_token`` values
and the Authorization/Cookie headers in every access-log atom, and drops the environment atoms, so a changed
format cannot leak them either.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import signal
import socket
import sys
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config
from hypercorn.logging import Logger as HypercornLogger
from hypercorn.typing import ResponseSummary, WWWScope
from sse_starlette.sse import AppStatus
from starlette.types import ASGIApp

from app.main import create_app
from control.accounts import secret_values
from control.logging_config import configure_logging
from control.redact import MASK, install_redaction
from control.settings import Settings, SettingsError

logger = logging.getLogger(__name__)

#: Hypercorn's default line, with the request line spelled out as method, path (no query string), protocol.
ACCESS_LOG_FORMAT = '%(h)s %(l)s %(l)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s "%(f)s" "%(a)s"'
_TOKEN_IN_QUERY = re.compile(r"(?i)(\b(?:access_)?token=)[^&\s\"]*")
#: listen(2) backlog of CTRL_ADDR (the kernel caps it at net.core.somaxconn).
LISTEN_BACKLOG = 4096
#: gc.set_threshold of the control server (CPython's default: 700, 10, 10); see ``tune_gc``.
GC_THRESHOLDS = (100_000, 50, 100)
_SECRET_HEADER_ATOMS = ("{authorization}i", "{proxy-authorization}i", "{cookie}i", "{x-api-key}i")


class RedactingAccessLogger(HypercornLogger):
    """Hypercorn's logger with sanitised access-log atoms (see module docstring)."""

    def atoms(self, request: WWWScope, response: ResponseSummary | None, request_time: float) -> Mapping[str, str]:
        """Hypercorn's atoms minus environment values; access_token values and secret headers masked."""
        atoms: Any = super().atoms(request, response, request_time)
        for name in [k for k in atoms if isinstance(k, str) and k.endswith("}e")]:
            del atoms[name]  # %({NAME}e)s would print any environment variable, CONTROL_TOKEN included
        for name in _SECRET_HEADER_ATOMS:
            if name in atoms:
                atoms[name] = MASK
        for name, value in list(atoms.items()):
            if isinstance(value, str) and "token=" in value.lower():
                atoms[name] = _TOKEN_IN_QUERY.sub(r"\1" + MASK, value)
        return atoms  # type: ignore[no-any-return]


def hypercorn_config(settings: Settings) -> Config:
    """Hypercorn config for ``settings``: bind CTRL_ADDR, access log on stdout, graceful_timeout in seconds.

    The error log goes through the ``hypercorn.error`` logger, i.e. the root handler that ``main`` sets up.
    """
    config = Config.from_mapping(
        {
            "bind": [settings.ctrl_addr],
            "graceful_timeout": settings.drain_timeout_s,
            # text: hypercorn's own stdout handler; json: through the one handler, as a JSON line like the rest
            "accesslog": logging.getLogger("hypercorn.access") if settings.log_format == "json" else "-",
            "access_log_format": ACCESS_LOG_FORMAT,
            "errorlog": logging.getLogger("hypercorn.error"),  # through the root handler (stderr), logged once
            "loglevel": settings.log_level,
            # 1,000 clients connecting at once: hypercorn's default (100) makes the kernel drop SYNs, which the
            # clients retry after 1 s, 3 s, ... (capped by net.core.somaxconn)
            "backlog": LISTEN_BACKLOG,
        }
    )
    config.logger_class = RedactingAccessLogger
    if settings.ctrl_reuse_port:
        config.bind = [f"fd://{reuse_port_socket(settings.ctrl_host, settings.ctrl_port).detach()}"]
    return config


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` with SO_REUSEPORT (and SO_REUSEADDR), not yet listening.

    Several processes binding the same address this way share it: the kernel spreads new connections over
    them (CTRL_REUSE_PORT=1 with supervisord ``numprocs``). Raises OSError when the address is taken without it.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


async def run(settings: Settings, app: ASGIApp | None = None) -> None:
    """Serve ``app`` (default ``create_app(settings)``) until SIGTERM/SIGINT, then drain: SSE streams get
    ``bye``, lifespan closes the Redis clients."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def shutdown_trigger() -> None:
        await stop.wait()
        logger.info("shutdown requested; draining connections")
        AppStatus.should_exit = True  # app.sse_stream: streams send their farewell and end

    await serve(app or create_app(settings), hypercorn_config(settings), shutdown_trigger=shutdown_trigger)  # type: ignore[arg-type]


def tune_gc() -> None:
    """Fewer cyclic-GC passes for a server holding many long-lived objects (measured, README "SSE fan-out").

    With 10,000 SSE connections the heap holds ~1 M long-lived objects; CPython's default thresholds (700, 10,
    10) ran full collections over all of them while the hub woke 10,000 streams, and py-spy put 55% of the
    server's samples there: delay p50 2-3 s. Thresholds ``GC_THRESHOLDS`` gave p50 0.4 s on the same run;
    ``gc.freeze()`` also moves everything allocated at start-up (imports, app) out of every later scan.
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _runner() -> Callable[[Coroutine[Any, Any, None]], None]:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run
    return uvloop.run


def main(environ: dict[str, str] | None = None) -> int:
    """Entry point; returns the process exit code (0 after a graceful stop, 2 for invalid settings)."""
    try:
        settings = Settings.from_env(environ)
        app = create_app(settings)  # refuses a non-loopback CTRL_ADDR without tokens
    except SettingsError as exc:
        print(f"feedplane: {exc}", file=sys.stderr)
        return 2
    install_redaction(secret_values(settings))
    # sse-starlette logs every chunk it sends at DEBUG: private order/position/balance data stays out of the logs
    quiet = max(logging.INFO, logging.getLevelNamesMapping()[settings.log_level])
    configure_logging(level=settings.log_level, stream="stderr", levels={"sse_starlette": quiet},
                      fmt=settings.log_format, role="api")  # fmt: skip
    if app.state.auth_open:
        logger.info("auth: open mode (no tokens configured, %s is loopback); no rate limits", settings.ctrl_addr)
    else:
        logger.info("auth: tokens required on every endpoint; rate limits on")
    tune_gc()
    _runner()(run(settings, app))
    return 0


if __name__ == "__main__":
    sys.exit(main())
