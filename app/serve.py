"""``python -m app.serve``: run the control server under Hypercorn, programmatically.

Why programmatic (stack-notes §3, §4): only here can the shutdown trigger set sse-starlette's
``AppStatus.should_exit``, so open SSE streams send their ``bye`` event and end cleanly instead of being
cut at ``graceful_timeout``. Binds ``CTRL_ADDR``, runs on uvloop (asyncio when uvloop is missing),
access log to stdout, error log to stderr, ``graceful_timeout = DRAIN_TIMEOUT_S``. SIGTERM/SIGINT stop it
gracefully (exit 0). Invalid settings: ``feedplane: <message>`` on stderr and exit code 2.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config
from sse_starlette.sse import AppStatus

from app.main import create_app
from control.settings import Settings, SettingsError

logger = logging.getLogger(__name__)


def hypercorn_config(settings: Settings) -> Config:
    """Hypercorn config for ``settings``: bind CTRL_ADDR, access log on stdout, graceful_timeout in seconds.

    The error log goes through the ``hypercorn.error`` logger, i.e. the root handler that ``main`` sets up.
    """
    return Config.from_mapping(
        {
            "bind": [settings.ctrl_addr],
            "graceful_timeout": settings.drain_timeout_s,
            "accesslog": "-",
            "errorlog": logging.getLogger("hypercorn.error"),  # through the root handler (stderr), logged once
            "loglevel": settings.log_level,
        }
    )


async def run(settings: Settings) -> None:
    """Serve until SIGTERM/SIGINT, then drain: SSE streams get ``bye``, lifespan closes the Redis clients."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def shutdown_trigger() -> None:
        await stop.wait()
        logger.info("shutdown requested; draining connections")
        AppStatus.should_exit = True  # sse-starlette: streams send their farewell and end

    await serve(create_app(settings), hypercorn_config(settings), shutdown_trigger=shutdown_trigger)


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
    except SettingsError as exc:
        print(f"feedplane: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _runner()(run(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
