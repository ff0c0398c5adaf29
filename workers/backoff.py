"""Reconnect/retry delays: redis-py's capped exponential backoff with "equal jitter", plus the state callers need.

Delay ``n`` (0-based) is drawn from ``[d/2, d]`` with ``d = min(max_s, initial_s * 2**n)``: redis-py's
``ExponentialBackoff`` gives ``d`` and the draw is ``EqualJitterBackoff``'s, so it grows quickly, never exceeds
``max_s``, and never drops below ``initial_s / 2`` — a failing peer can never put us in a tight loop, and many
clients do not retry in lock step. redis-py's policies are stateless (``compute(failures)``) and draw from the
process-wide ``random``; ``Backoff`` adds what the callers need: the attempt count, ``reset()`` after a success,
an exponent bound for long outages, and an injectable RNG (seeded in tests). Pure: it never sleeps.
"""

from __future__ import annotations

import random

from redis.backoff import ExponentialBackoff

#: 2**64 times any sane initial delay is far past any cap, and a float never overflows.
_MAX_EXPONENT = 64


class Backoff:
    """Delays in seconds for consecutive failed attempts; ``reset()`` after a success.

    :param initial_s: base delay of the first attempt (seconds, > 0).
    :param max_s: cap on the un-jittered delay (seconds, >= ``initial_s``).
    :param rng: randomness source (inject a seeded ``random.Random`` in tests).
    :raises ValueError: on a non-positive ``initial_s`` or ``max_s < initial_s``.
    """

    __slots__ = ("_attempts", "_policy", "_rng", "initial_s", "max_s")

    def __init__(self, initial_s: float, max_s: float, rng: random.Random | None = None) -> None:
        if not initial_s > 0:
            raise ValueError(f"initial_s must be > 0, got {initial_s}")
        if max_s < initial_s:
            raise ValueError(f"max_s ({max_s}) must be >= initial_s ({initial_s})")
        self.initial_s = initial_s
        self.max_s = max_s
        self._policy = ExponentialBackoff(cap=max_s, base=initial_s)
        self._rng = rng if rng is not None else random.Random()
        self._attempts = 0

    @property
    def attempts(self) -> int:
        """Delays handed out since construction or the last ``reset()``."""
        return self._attempts

    def ceiling(self) -> float:
        """The un-jittered delay the next ``next_delay()`` draws from (seconds)."""
        return float(self._policy.compute(min(self._attempts, _MAX_EXPONENT)))

    def next_delay(self) -> float:
        """The delay before the next attempt (seconds), in ``[ceiling/2, ceiling]``; counts an attempt."""
        half = self.ceiling() / 2
        self._attempts += 1
        return half + self._rng.uniform(0.0, half)  # EqualJitterBackoff's draw, from our own RNG

    def reset(self) -> None:
        """Start over from ``initial_s`` (call once a connection has proven healthy)."""
        self._attempts = 0
