"""The one logging configuration of every Feedplane process (``logging.config.dictConfig``), plain text.

Two callers, one shape::

    control server (app.serve)   the root logger -> stderr, ``TEXT_FORMAT``; hypercorn and sse-starlette propagate
    worker (workers.settings)    the ``workers``, ``control`` and ``arq`` loggers -> stdout, ``WORKER_FORMAT`` (worker
                                 id in every line); arq's own handler is replaced, so nothing is printed twice

Formats (``fmt=``, from ``LOG_FORMAT``): ``text`` (the formats above) or ``json``, one JSON object per line
(python-json-logger) with ``time, level, logger, message`` and the context below, e.g.::

    {"time": "2026-12-06 21:40:01,123", "level": "INFO", "logger": "workers.jobs", "message": "...",
     "role": "worker", "worker_id": "host-00", "request_id": "8f0c...", "conn_id": "bitmart:public:0"}

Context (``ContextFilter``): every record gets ``role`` (``api``/``worker``), ``worker_id``, and, where they
apply, ``request_id`` (``request_id_var``: set by the control server per request and by a worker while it runs a
job enqueued by that request), ``conn_id`` (``conn_id_var``: set in a connection's tasks) and ``topic``
(``extra={"topic": ...}`` or ``topic_var``). A value passed with ``extra=`` wins over the context variable. In
text lines the ones that are set follow the message: ``... message  request_id=8f0c conn_id=bitmart:public:0``;
in JSON lines absent ones are left out.

Secrets: ``control.redact.install_redaction`` masks record messages when they are created; both formatters also
mask the final line with the installed redactor, so a context value (a client-chosen request id) cannot carry a
secret out either.

The handler looks its stream (``sys.stdout``/``sys.stderr``) up on every record, so it keeps working when the
stream is swapped (pytest capture). Calling ``configure_logging`` again replaces the handlers it installed.
"""

from __future__ import annotations

import logging
import logging.config
import sys
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from typing import Any, TextIO

from pythonjsonlogger.json import JsonFormatter

from control.redact import current_redactor

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s%(context)s"
WORKER_FORMAT = "%(asctime)s %(levelname)s [%(worker_id)s] %(name)s: %(message)s%(context)s"
JSON_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
#: JSON keys for logging's attribute names.
JSON_RENAME = {"asctime": "time", "levelname": "level", "name": "logger"}
#: Context attributes every record gets (``ContextFilter``), in the order text lines show them.
CONTEXT_FIELDS = ("request_id", "conn_id", "topic")

#: The control server's request id (``X-Request-ID``) while a request or the job it enqueued is handled.
request_id_var: ContextVar[str | None] = ContextVar("feedplane_request_id", default=None)
#: The exchange connection whose task logs (``workers.connection``).
conn_id_var: ContextVar[str | None] = ContextVar("feedplane_conn_id", default=None)
#: The topic being handled, where one applies.
topic_var: ContextVar[str | None] = ContextVar("feedplane_topic", default=None)
_VARS = {"request_id": request_id_var, "conn_id": conn_id_var, "topic": topic_var}


class RedactingTextFormatter(logging.Formatter):
    """``logging.Formatter`` whose whole line goes through the installed redactor (``control.redact``)."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        redactor = current_redactor()
        return redactor.redact(line) if redactor is not None else line


class RedactingJsonFormatter(JsonFormatter):
    """python-json-logger's formatter: ``JSON_RENAME``d keys, None-valued context left out, the line redacted."""

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in log_data.items() if v is not None and k != "context"}

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        redactor = current_redactor()
        return redactor.redact(line) if redactor is not None else line


#: Formatter factories by ``fmt`` name (dictConfig "formatters" entries minus the format string).
FORMATTERS: dict[str, dict[str, Any]] = {
    "text": {"()": RedactingTextFormatter},
    "json": {"()": RedactingJsonFormatter, "rename_fields": JSON_RENAME},
}


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


class ContextFilter(logging.Filter):
    """Sets ``role``, ``worker_id``, ``request_id``, ``conn_id``, ``topic`` and ``context`` (the text suffix) on
    every record (see the module docstring); never drops one."""

    def __init__(self, role: str = "", worker_id: str | None = None) -> None:
        super().__init__()
        self.role = role or None
        self.worker_id = worker_id

    def filter(self, record: logging.LogRecord) -> bool:
        record.role = self.role
        record.worker_id = self.worker_id
        parts = []
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is None:
                value = _VARS[name].get()
                setattr(record, name, value)
            if value is not None:
                parts.append(f"{name}={value}")
        record.context = "  " + " ".join(parts) if parts else ""
        return True


#: The earlier name (worker id only); kept for callers of the text-only version.
WorkerIdFilter = ContextFilter


def logging_config(
    *,
    level: str,
    loggers: Sequence[str] = (),
    stream: str = "stderr",
    worker_id: str | None = None,
    levels: Mapping[str, str | int] | None = None,
    fmt: str = "text",
    role: str = "",
) -> dict[str, Any]:
    """The dictConfig dict: one handler on ``stream`` attached to ``loggers`` (the root logger when empty).

    ``worker_id`` adds it to every line (``WORKER_FORMAT``); ``levels`` sets other loggers' levels only (no
    handlers, e.g. ``{"sse_starlette": "INFO"}``). Loggers not named keep working (existing loggers stay enabled).
    ``fmt``: ``text`` or ``json`` (``LOG_FORMAT``); ``role``: ``api`` or ``worker`` (a field of every record).
    Raises KeyError for another ``fmt``.
    """
    handler: dict[str, Any] = {"()": CurrentStreamHandler, "stream_name": stream, "formatter": fmt,
                               "filters": ["context"]}  # fmt: skip
    filters: dict[str, Any] = {"context": {"()": ContextFilter, "role": role, "worker_id": worker_id}}
    target = {"level": level, "handlers": ["feedplane"]}
    text_format = WORKER_FORMAT if worker_id is not None else TEXT_FORMAT
    config: dict[str, Any] = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {fmt: {**FORMATTERS[fmt], "format": JSON_FORMAT if fmt == "json" else text_format}},
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
