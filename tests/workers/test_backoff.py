"""Backoff policy (redis-py's exponential backoff + equal jitter): growth, cap, jitter bounds, reset (no sleeping)."""

from __future__ import annotations

import random

import pytest

from workers.backoff import Backoff


def test_grows_exponentially_within_equal_jitter_bounds() -> None:
    b = Backoff(0.1, 2.0, rng=random.Random(1))
    ceilings = [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0]
    for n, ceiling in enumerate(ceilings):
        d = b.next_delay()
        assert ceiling / 2 <= d <= ceiling, (n, d)
        assert b.attempts == n + 1


def test_never_below_half_initial_even_with_zero_jitter() -> None:
    class Zero(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return a

    b = Backoff(0.05, 0.5, rng=Zero())
    delays = [b.next_delay() for _ in range(50)]
    assert min(delays) == pytest.approx(0.025)
    assert max(delays) == pytest.approx(0.25)  # cap 0.5, half of it with zero jitter


def test_cap_is_respected_for_long_outages() -> None:
    b = Backoff(1.0, 60.0, rng=random.Random(7))
    delays = [b.next_delay() for _ in range(10_000)]  # no float overflow
    assert max(delays) <= 60.0
    assert min(delays[10:]) >= 30.0


def test_jitter_spreads_clients() -> None:
    delays = {Backoff(1.0, 60.0, rng=random.Random(seed)).next_delay() for seed in range(20)}
    assert len(delays) == 20


def test_reset_starts_over() -> None:
    b = Backoff(0.1, 2.0, rng=random.Random(3))
    for _ in range(6):
        b.next_delay()
    assert b.ceiling() == 2.0
    b.reset()
    assert b.attempts == 0
    assert b.ceiling() == pytest.approx(0.1)
    assert b.next_delay() <= 0.1


def test_schedule_bounds_attempts_in_a_window() -> None:
    """With 0.05 -> 0.5 s, even the shortest draws (ceiling/2 each) allow at most 9 attempts in 1.5 s
    (0.025 + 0.05 + 0.1 + 0.2 + 0.25 x 4 = 1.375 s); the longest draws allow 6. A tight loop would be thousands."""
    b = Backoff(0.05, 0.5, rng=random.Random(0))
    elapsed, attempts = 0.0, 1  # the first attempt is immediate
    while True:
        elapsed += b.ceiling() / 2  # shortest possible delay
        if elapsed > 1.5:
            break
        b.next_delay()
        attempts += 1
    assert attempts == 9


@pytest.mark.parametrize(("initial", "cap"), [(0, 1), (-1, 1), (2, 1)])
def test_rejects_bad_parameters(initial: float, cap: float) -> None:
    with pytest.raises(ValueError):
        Backoff(initial, cap)
