"""Charts' time buckets: a bucket size chosen from the range, and the per-bucket figures."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime

from . import _models as models

BUCKET_SIZES = (
    1,
    5,
    10,
    30,
    60,
    120,
    300,
    600,
    900,
    1800,
    3600,
    3 * 3600,
    6 * 3600,
    12 * 3600,
    86400,
)
"""Round bucket sizes in seconds, smallest first."""

MAX_BUCKETS = 120
FAILURE_STATES = ("FAILED", "CRASHED")


def bucket_size(range_seconds: float, max_buckets: int = MAX_BUCKETS) -> int:
    """The smallest round size that covers the range in at most `max_buckets` buckets."""
    for size in BUCKET_SIZES:
        if range_seconds / size <= max_buckets:
            return size
    return math.ceil(range_seconds / max_buckets / 86400) * 86400


def buckets(
    counts: Iterable[tuple[float, str, int]], *, since: datetime, until: datetime, size: int
) -> list[models.HistoryBucket]:
    """Every bucket from `since` to `until` (empty ones too, so charts have no gaps)."""
    by_start: dict[float, dict[str, int]] = defaultdict(dict)
    for start, state, count in counts:
        by_start[start][state] = by_start[start].get(state, 0) + count
    first = math.floor(since.timestamp() / size) * size
    result: list[models.HistoryBucket] = []
    start = float(first)
    while start < until.timestamp():
        states = by_start.get(start, {})
        total = sum(states.values())
        failed = sum(states.get(s, 0) for s in FAILURE_STATES)
        result.append(
            models.HistoryBucket(
                start=datetime.fromtimestamp(start, UTC),
                counts=states,
                total=total,
                throughput_per_second=total / size,
                failure_rate=failed / total if total else None,
            )
        )
        start += size
    return result
