"""Retry delays: a number, a list whose last value repeats, or a callable."""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeAlias

from ._errors import ConfigurationError

RetryDelay: TypeAlias = float | Sequence[float] | Callable[[int], float | Sequence[float]]


def exponential_backoff(backoff_factor: float) -> Callable[[int], list[float]]:
    """Delays of `backoff_factor * 2**n` for n = 0, 1, 2, ... (Prefect's helper)."""

    def delays(retries: int) -> list[float]:
        return [backoff_factor * 2**n for n in range(max(retries, 1))]

    return delays


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When and how long to wait before another attempt of a run."""

    retries: int = 0
    delays: tuple[float, ...] = (0.0,)
    jitter_factor: float | None = None
    condition: Callable[..., bool] | None = None

    @classmethod
    def build(
        cls,
        retries: int | None,
        retry_delay_seconds: RetryDelay | None,
        retry_jitter_factor: float | None = None,
        retry_condition_fn: Callable[..., bool] | None = None,
    ) -> RetryPolicy:
        retries = retries or 0
        if retries < 0:
            raise ConfigurationError(f"retries must be >= 0, not {retries}")
        if retry_jitter_factor is not None and retry_jitter_factor < 0:
            raise ConfigurationError("retry_jitter_factor must be >= 0")
        delays = _delays(retry_delay_seconds, retries)
        if any(d < 0 for d in delays):
            raise ConfigurationError(f"retry delays must be >= 0, not {list(delays)}")
        return cls(retries, delays, retry_jitter_factor, retry_condition_fn)

    def delay(self, retry_number: int) -> float:
        """Seconds to wait before retry `retry_number` (0 for the first retry).

        With a jitter factor `j` the delay is drawn uniformly from
        `[d, d * (1 + j)]`: never shorter than asked, at most `j` longer.
        """
        base = self.delays[min(retry_number, len(self.delays) - 1)]
        if self.jitter_factor:
            return base + random.uniform(0, base * self.jitter_factor)
        return base


def _delays(value: RetryDelay | None, retries: int) -> tuple[float, ...]:
    if value is None:
        return (0.0,)
    if callable(value):
        value = value(retries)
    if isinstance(value, (int, float)):
        return (float(value),)
    try:
        delays = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigurationError(
            "retry_delay_seconds must be seconds: a number, a list of numbers or a callable"
            f" returning one, not {value!r}"
        ) from None
    return delays or (0.0,)


def positive_seconds(option: str, value: float | timedelta | None) -> float | None:
    """An option given in seconds (a number or a `timedelta`): None, or checked to be > 0.

    Checked when a flow or task is defined, not when a run first needs it.
    """
    if value is None:
        return None
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise ConfigurationError(
            f"{option} must be a number of seconds or a timedelta, not {value!r}"
        )
    if seconds <= 0:
        raise ConfigurationError(f"{option} must be more than 0 seconds, not {value!r}")
    return seconds


_MAX_RETRY_AFTER = 3600.0


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays after consecutive failures: `initial * factor**n`, capped at `maximum`.

    Each delay is drawn uniformly from `[d * (1 - jitter), d]`, so sources that
    failed together do not retry together.
    """

    initial: float = 1.0
    maximum: float = 60.0
    factor: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.initial <= 0 or self.maximum < self.initial or self.factor < 1:
            raise ConfigurationError("Backoff needs 0 < initial <= maximum and factor >= 1")
        if not 0 <= self.jitter <= 1:
            raise ConfigurationError("Backoff jitter must be within [0, 1]")

    def delay(self, failures: int) -> float:
        """The delay after `failures` consecutive failures (1 for the first)."""
        exponent = min(max(failures - 1, 0), 64)
        base = min(self.initial * self.factor**exponent, self.maximum)
        return base * (1 - self.jitter * random.random())
