"""workers.logutil.RateLimitedLog: one line per period, the rest counted and reported with the next line."""

from __future__ import annotations

import logging

import pytest

from workers.logutil import RateLimitedLog


def test_one_line_per_period_with_the_suppressed_count(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    limited = RateLimitedLog(logging.getLogger("workers.test"), every_s=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="workers.test"):
        assert limited.warning("%s: bad frame %r", "c1", b"x")
        for _ in range(3):
            now[0] += 3.0
            assert not limited.warning("%s: bad frame %r", "c1", b"y")
        now[0] += 1.0  # 10 s after the first line
        assert limited.warning("%s: bad frame %r", "c1", b"z")
    assert [r.getMessage() for r in caplog.records] == [
        "c1: bad frame b'x' (0 similar suppressed)",
        "c1: bad frame b'z' (3 similar suppressed)",
    ]
    assert all(r.levelno == logging.WARNING for r in caplog.records)
