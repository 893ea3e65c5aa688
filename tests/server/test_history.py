"""Chart buckets: the size chosen from the range, and empty buckets filled (pure logic)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from eventflow._server._history import bucket_size, buckets


@pytest.mark.parametrize(
    ("range_seconds", "size"),
    [(60, 1), (600, 5), (3600, 30), (6 * 3600, 300), (86400, 900), (7 * 86400, 3 * 3600)],
)
def test_bucket_size_keeps_at_most_120_buckets(range_seconds: float, size: int) -> None:
    assert bucket_size(range_seconds) == size
    assert range_seconds / size <= 120


def test_bucket_size_beyond_a_day_per_bucket() -> None:
    assert bucket_size(365 * 86400) == 4 * 86400


def test_buckets_cover_the_range_with_rates() -> None:
    since = datetime(2026, 1, 1, 12, 0, 5, tzinfo=UTC)
    until = since + timedelta(seconds=40)
    start = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC).timestamp()
    counts = [(start + 10, "COMPLETED", 3), (start + 10, "FAILED", 1), (start + 30, "CRASHED", 2)]
    result = buckets(counts, since=since, until=until, size=10)
    assert [b.start.second for b in result] == [0, 10, 20, 30, 40]
    assert [b.total for b in result] == [0, 4, 0, 2, 0]
    assert [b.failure_rate for b in result] == [None, 0.25, None, 1.0, None]
    assert result[1].throughput_per_second == 0.4
    assert result[1].counts == {"COMPLETED": 3, "FAILED": 1}
