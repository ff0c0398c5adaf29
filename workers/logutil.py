"""Rate-limited warnings: a flood of the same trouble (malformed frames, failing fetches) logs one line per period.

Used by the connection (``workers.connection``), the order-book keeper (``workers.books``) and the private
sessions (``workers.private``), one ``RateLimitedLog`` per instance, so one noisy socket does not silence another.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

#: Default period: at most one line per this many seconds.
LOG_EVERY_S = 10.0


class RateLimitedLog:
    """At most one WARNING per ``every_s`` through ``logger``; the lines dropped in between are counted and the next
    line that goes out ends with ``(N similar suppressed)``.

    :param logger: where lines go. :param every_s: period in seconds.
    :param clock: monotonic seconds (inject in tests).
    """

    __slots__ = ("_clock", "_key", "_logger", "_next", "_suppressed", "every_s")

    def __init__(
        self, logger: logging.Logger, every_s: float = LOG_EVERY_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._logger, self.every_s, self._clock = logger, every_s, clock
        self._next = 0.0
        self._suppressed = 0
        self._key = ""

    def warning(self, fmt: str, *args: object, topic: str | None = None) -> bool:
        """Log ``fmt % args`` + `` (N similar suppressed)`` unless a line went out less than ``every_s`` ago (then
        count it). ``topic``: the record's ``topic`` field (``control.logging_config``). Returns True when the
        line was logged."""
        return self.log(logging.WARNING, fmt, *args, topic=topic)

    def log(self, level: int, fmt: str, *args: object, key: str = "", topic: str | None = None) -> bool:
        """As ``warning`` at ``level``; a line whose ``key`` (e.g. the error text) differs from the last one logged
        goes out at once: a new kind of trouble is never hidden behind the old one."""
        now = self._clock()
        if now < self._next and key == self._key:
            self._suppressed += 1
            return False
        self._next, self._key = now + self.every_s, key
        suppressed, self._suppressed = self._suppressed, 0
        extra = {"topic": topic} if topic is not None else None
        self._logger.log(level, fmt + " (%d similar suppressed)", *args, suppressed, extra=extra)
        return True
