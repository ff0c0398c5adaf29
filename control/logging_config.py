"""The one logging configuration of every Feedplane process (``logging.config.dictConfig``), plain text.

Two callers, one shape::

    control server (app.serve)   the root logger -> stderr, ``TEXT_FORMAT``; hypercorn and sse-starlette propagate
    worker (workers.settings)    the ``workers`` and ``control`` loggers -> stdout, ``WORKER_FORMAT`` (worker id in
                                 every line); arq configures its own ``arq`` logger, so nothing is printed twice

The handler looks its stream (``sys.stdout``/``sys.stderr``) up on every record, so it keeps working when the
stream is swapped (pytest capture). Calling ``configure_logging`` again replaces the handlers it installed.
Another output format (JSON lines) is one more entry in ``FORMATTERS`` and a ``fmt=`` value.
"""

from __future__ import annotations

import logging
import logging.config
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
WORKER_FORMAT = "%(asctime)s %(levelname)s [%(worker_id)s] %(name)s: %(message)s"
#: Formatter factories by ``fmt`` name (dictConfig "formatters" entries minus the format string).
FORMATTERS: dict[str, dict[str, Any]] = {"text": {}}


class CurrentStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler bound to whatever ``sys.<stream_name>`` is at emit time (``stdout`` or ``stderr``)."""

    def __init__(self, stream_name: str = "stderr") -> None:
        super().__init__()
        self.stream_name = stream_name

    @property
    def stream(self) -> TextIO:
        stream: TextIO = getattr(sys, self.stream_name)
        return stream

    @stream.setter
    def stream(self, value: Any) -> None:
        pass  # always the current sys stream


class WorkerIdFilter(logging.Filter):
    """Sets ``record.worker_id`` (for ``WORKER_FORMAT``); never drops a record."""

    def __init__(self, worker_id: str) -> None:
        super().__init__()
        self.worker_id = worker_id

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker_id = self.worker_id
        return True


def logging_config(
    *,
    level: str,
    loggers: Sequence[str] = (),
    stream: str = "stderr",
    worker_id: str | None = None,
    levels: Mapping[str, str | int] | None = None,
    fmt: str = "text",
) -> dict[str, Any]:
    """The dictConfig dict: one handler on ``stream`` attached to ``loggers`` (the root logger when empty).

    ``worker_id`` adds it to every line (``WORKER_FORMAT``); ``levels`` sets other loggers' levels only (no
    handlers, e.g. ``{"sse_starlette": "INFO"}``). Loggers not named keep working (existing loggers stay enabled).
    """
    handler: dict[str, Any] = {"()": CurrentStreamHandler, "stream_name": stream, "formatter": fmt}
    filters: dict[str, Any] = {}
    if worker_id is not None:
        filters["worker_id"] = {"()": WorkerIdFilter, "worker_id": worker_id}
        handler["filters"] = ["worker_id"]
    target = {"level": level, "handlers": ["feedplane"]}
    config: dict[str, Any] = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {fmt: {**FORMATTERS[fmt], "format": WORKER_FORMAT if worker_id is not None else TEXT_FORMAT}},
        "filters": filters,
        "handlers": {"feedplane": handler},
        "loggers": {name: dict(target) for name in loggers},
    }
    for name, value in (levels or {}).items():
        config["loggers"][name] = {"level": value}
    if not loggers:
        config["root"] = target
    return config


def configure_logging(**kwargs: Any) -> None:
    """Apply ``logging_config(**kwargs)`` (same keyword arguments)."""
    logging.config.dictConfig(logging_config(**kwargs))
