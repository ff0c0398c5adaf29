"""Log capture helpers: a handler that keeps formatted lines, and one formatting them as ``LOG_FORMAT=json`` does."""

from __future__ import annotations

import logging

from control.logging_config import FORMATTERS, JSON_FORMAT, ContextFilter


class LineHandler(logging.Handler):
    """Keeps every formatted line in ``lines``."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def json_handler(role: str = "api", worker_id: str | None = None) -> LineHandler:
    """A ``LineHandler`` with the JSON formatter and the context filter of ``control.logging_config``."""
    handler = LineHandler()
    spec = dict(FORMATTERS["json"])
    handler.setFormatter(spec.pop("()")(JSON_FORMAT, **spec))
    handler.addFilter(ContextFilter(role=role, worker_id=worker_id))
    return handler
