"""The polling sources' pure logic: backoff delays, Retry-After, paths into a body."""

from __future__ import annotations

import email.utils

import pytest

from connectors._polling import Backoff, parse_retry_after
from connectors.http import at_path, content_hash
from eventflow import ConfigurationError


def test_backoff_grows_exponentially_up_to_its_cap_with_jitter_below_the_base() -> None:
    exact = Backoff(initial=0.5, maximum=3.0, factor=2.0, jitter=0)
    assert [exact.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    jittered = Backoff(initial=1.0, maximum=8.0, factor=2.0, jitter=0.5)
    delays = [jittered.delay(3) for _ in range(200)]
    assert all(2.0 <= d <= 4.0 for d in delays)
    assert len(set(delays)) > 100  # spread, so sources that failed together do not retry together
    assert Backoff(initial=1, maximum=10).delay(10_000) <= 10  # no overflow after long outages


def test_backoff_rejects_nonsense() -> None:
    with pytest.raises(ConfigurationError):
        Backoff(initial=0)
    with pytest.raises(ConfigurationError):
        Backoff(initial=2, maximum=1)
    with pytest.raises(ConfigurationError):
        Backoff(jitter=1.5)


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 1.5 ") == 1.5
    now = 1_800_000_000.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(date, now=now) == pytest.approx(30.0)
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0
    assert parse_retry_after("999999") == 3600.0  # capped
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_paths_reach_into_objects_and_lists() -> None:
    body = {"data": {"orders": [{"id": "a", "customer": {"id": 7}}]}, "next": None}
    assert at_path(body, "data.orders.0.customer.id") == 7
    assert at_path(body, "data.orders.-1.id") == "a"
    assert at_path(body, "next") is None
    missing = at_path(body, "data.nope")
    assert missing is at_path(body, "data.orders.5")  # the same "missing" marker
    assert missing is not None


def test_content_hash_ignores_key_order() -> None:
    assert content_hash({"a": 1, "b": [1, 2]}) == content_hash({"b": [1, 2], "a": 1})
    assert content_hash({"a": 1}) != content_hash({"a": 2})
