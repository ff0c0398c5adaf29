"""Reconnect/retry delay policy: capped exponential backoff with "equal jitter" (pure, no sleeping).

Delay ``n`` (0-based) is drawn from ``[d/2, d]`` with ``d = min(max_s, initial_s * factor**n)``,
so it grows quickly, never exceeds ``max_s``, and never drops below ``initial_s / 2`` — a
failing peer can never put us in a tight loop, and many clients do not retry in lock step.
"""

from __future__ import annotations

import random


class Backoff:
    """Delays in seconds for consecutive failed attempts; ``reset()`` after a success.

    :param initial_s: base delay of the first attempt (seconds, > 0).
    :param max_s: cap on the un-jittered delay (seconds, >= ``initial_s``).
    :param factor: growth per attempt (>= 1).
    :param rng: randomness source (inject a seeded ``random.Random`` in tests).
    :raises ValueError: on a non-positive ``initial_s``, ``max_s < initial_s`` or ``factor < 1``.
    """

    __slots__ = ("_attempts", "_rng", "factor", "initial_s", "max_s")

    def __init__(self, initial_s: float, max_s: float, factor: float = 2.0, rng: random.Random | None = None) -> None:
        if not initial_s > 0:
            raise ValueError(f"initial_s must be > 0, got {initial_s}")
        if max_s < initial_s:
            raise ValueError(f"max_s ({max_s}) must be >= initial_s ({initial_s})")
        if factor < 1:
            raise ValueError(f"factor must be >= 1, got {factor}")
        self.initial_s = initial_s
        self.max_s = max_s
        self.factor = factor
        self._rng = rng if rng is not None else random.Random()
        self._attempts = 0

    @property
    def attempts(self) -> int:
        """Delays handed out since construction or the last ``reset()``."""
        return self._attempts

    def ceiling(self) -> float:
        """The un-jittered delay the next ``next_delay()`` draws from (seconds)."""
        # Cap the exponent so a long outage never overflows a float.
        exponent = min(self._attempts, 64)
        return min(self.max_s, self.initial_s * self.factor**exponent)

    def next_delay(self) -> float:
        """The delay before the next attempt (seconds), in ``[ceiling/2, ceiling]``; counts an attempt."""
        d = self.ceiling()
        self._attempts += 1
        return d / 2 + self._rng.uniform(0.0, d / 2)

    def reset(self) -> None:
        """Start over from ``initial_s`` (call once a connection has proven healthy)."""
        self._attempts = 0
