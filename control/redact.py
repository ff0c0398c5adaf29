"""Log redaction: every known secret or token substring in a log record becomes ``***``.

``install_redaction(secrets)`` works process-wide, for the control server and the workers alike. It wraps
the ``logging`` record factory, so every record of every logger is redacted when it is created. That covers
loggers that do not propagate (``hypercorn.access``), handlers added later (pytest's caplog), and third-party
code. The record's message is formatted once and redacted (``msg`` = the result, ``args`` = ()). A traceback
(``exc_info``) is formatted into ``exc_text`` and redacted, and so is ``stack_info``. Calling it again adds
secrets to the same filter.

``RedactingFilter`` is also a plain ``logging.Filter`` that can be attached to a single handler.
Values shorter than ``MIN_SECRET_CHARS`` are ignored: masking every ``"test"`` in the logs would hide
everything and protect nothing.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable
from typing import Any

MASK = "***"
MIN_SECRET_CHARS = 8

_lock = threading.Lock()
_installed: tuple[RedactingFilter, Callable[..., logging.LogRecord]] | None = None


class RedactingFilter(logging.Filter):
    """Rewrites a record so that none of ``secrets`` appears in its message, traceback or stack; never drops it."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        """Also redact ``secrets`` (values shorter than MIN_SECRET_CHARS are skipped)."""
        fresh = {s for s in secrets if isinstance(s, str) and len(s) >= MIN_SECRET_CHARS}
        if not fresh - self._secrets:
            return
        self._secrets |= fresh
        # longest first, so a secret containing another is masked whole
        alternatives = sorted(self._secrets, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(s) for s in alternatives))

    def redact(self, text: str) -> str:
        """``text`` with every secret replaced by ``***``."""
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(MASK, text)

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact ``record`` in place (message formatted once; traceback and stack pre-formatted)."""
        if self._pattern is None:
            return True
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string: redact the parts, the handler reports it
            record.msg = self.redact(str(record.msg))
            record.args = tuple(self.redact(str(a)) for a in record.args) if isinstance(record.args, tuple) else None
        else:
            record.msg, record.args = self.redact(message), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


def install_redaction(secrets: Iterable[str]) -> RedactingFilter:
    """Redact ``secrets`` from every log record created from now on, in this process (see module docstring).

    Idempotent: a second call adds its secrets to the installed filter. Returns the filter.
    """
    global _installed
    with _lock:
        if _installed is not None:
            _installed[0].add(secrets)
            return _installed[0]
        redactor = RedactingFilter(secrets)
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            redactor.filter(record)
            return record

        logging.setLogRecordFactory(factory)
        _installed = (redactor, previous)
        return redactor


def current_redactor() -> RedactingFilter | None:
    """The filter ``install_redaction`` installed in this process, or None (formatters mask whole lines with it)."""
    return _installed[0] if _installed is not None else None


def uninstall_redaction() -> None:
    """Restore the record factory that ``install_redaction`` replaced (tests)."""
    global _installed
    with _lock:
        if _installed is not None:
            logging.setLogRecordFactory(_installed[1])
            _installed = None
