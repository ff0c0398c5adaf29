"""Worker process logging: one line per record on stdout (supervisord collects it), worker id included.

``configure_logging`` attaches a handler to the ``workers`` and ``control`` loggers (arq configures
its own ``arq`` logger in its CLI), so nothing is printed twice. The handler looks ``sys.stdout`` up
on every record, so it keeps working when the stream is swapped (pytest capture). Idempotent.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

_FORMAT = "%(asctime)s %(levelname)s [%(worker_id)s] %(name)s: %(message)s"
_LOGGERS = ("workers", "control")


class _StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler bound to whatever ``sys.stdout`` is at emit time."""

    def __init__(self, worker_id: str) -> None:
        super().__init__()
        self.worker_id = worker_id

    @property
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, value: Any) -> None:
        pass  # always sys.stdout

    def emit(self, record: logging.LogRecord) -> None:
        record.worker_id = self.worker_id
        super().emit(record)


def configure_logging(worker_id: str, level: str = "INFO") -> None:
    """Log ``workers.*`` and ``control.*`` at ``level`` to stdout, tagged with ``worker_id``."""
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(level)
        for handler in list(logger.handlers):
            if isinstance(handler, _StdoutHandler):
                logger.removeHandler(handler)
        handler = _StdoutHandler(worker_id)
        handler.setFormatter(logging.Formatter(_FORMAT))
        logger.addHandler(handler)
