"""Retry delay arithmetic (pure logic)."""

from __future__ import annotations

import pytest

from eventflow import ConfigurationError, exponential_backoff
from eventflow._retries import RetryPolicy


def test_a_number_a_list_and_a_callable() -> None:
    assert [RetryPolicy.build(3, 2).delay(n) for n in range(3)] == [2, 2, 2]
    assert [RetryPolicy.build(4, [1, 5]).delay(n) for n in range(4)] == [1, 5, 5, 5]
    policy = RetryPolicy.build(4, exponential_backoff(backoff_factor=0.5))
    assert [policy.delay(n) for n in range(4)] == [0.5, 1, 2, 4]


def test_jitter_really_applies_within_its_bounds() -> None:
    policy = RetryPolicy.build(3, 10, retry_jitter_factor=0.5)
    delays = [policy.delay(0) for _ in range(500)]
    assert all(10 <= d <= 15 for d in delays)
    assert len({round(d, 6) for d in delays}) > 400  # not a constant
    assert max(delays) > 14 and min(delays) < 11


@pytest.mark.parametrize(
    ("retries", "delay", "jitter"), [(-1, 0, None), (1, -1, None), (1, 1, -0.1)]
)
def test_bad_options_are_configuration_errors(
    retries: int, delay: float, jitter: float | None
) -> None:
    with pytest.raises(ConfigurationError):
        RetryPolicy.build(retries, delay, jitter)
