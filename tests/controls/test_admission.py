"""The admission gate's bookkeeping (pure logic: a fake clock, no broker, no store)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from eventflow._runtime._control_options import (
    Controls,
    Rate,
    evaluate_key,
    evaluate_priority,
    key_getter,
)
from eventflow._runtime._limits import Admission, AdmissionAbandoned, TokenBucket
from eventflow._store._idempotency import stored_key


def controls(**options: object) -> Controls:
    built = Controls.build(**options)  # type: ignore[arg-type]
    assert built is not None
    return built


def test_key_paths_and_callables() -> None:
    doc = {"customer_id": "c1", "order": {"customer_id": 7, "amount": 3.5}}
    assert evaluate_key(key_getter("customer_id"), doc) == "c1"
    assert evaluate_key(key_getter("order.customer_id"), doc) == "7"
    assert evaluate_key(key_getter("order.missing"), doc) is None
    assert evaluate_key(key_getter("customer_id.deeper"), doc) is None
    assert evaluate_key(key_getter(lambda d: d["order"]["amount"] * 2), doc) == "7.0"
    assert evaluate_key(key_getter(lambda d: d["nope"]), doc) is None  # a failing key: no key
    assert evaluate_key(key_getter("customer_id"), None) is None  # not JSON
    assert evaluate_priority(key_getter("order.amount"), doc) == 3.5
    assert evaluate_priority(key_getter("customer_id"), doc) == 0.0  # not a number
    for bad in ("", "a..b", ".a"):
        with pytest.raises(ValueError, match="dotted path"):
            key_getter(bad)


def test_long_idempotency_keys_are_stored_by_their_hash() -> None:
    assert stored_key("order-1") == "order-1"
    long = "x" * 201
    assert stored_key(long).startswith("sha256:") and len(stored_key(long)) == 71
    assert stored_key(long) != stored_key("y" * 201)


def test_rates_parse_and_validate() -> None:
    assert Rate.parse("100/s") == Rate(100, 1)
    assert Rate.parse("30/m") == Rate(30, 60)
    assert Rate.parse(" 5 / h ") == Rate(5, 3600)
    assert str(Rate.parse("2.5/s")) == "2.5/s"
    for bad in ("100", "0/s", "10/d", "x/s"):
        with pytest.raises(ValueError, match="rate limit"):
            Rate.parse(bad)


def test_options_are_validated() -> None:
    assert Controls.build() is None
    with pytest.raises(ValueError, match="concurrency must be"):
        Controls.build(concurrency=0)
    with pytest.raises(ValueError, match="needs concurrency"):
        Controls.build(concurrency_key="k")
    with pytest.raises(ValueError, match="needs rate_limit"):
        Controls.build(rate_limit_key="k")
    with pytest.raises(ValueError, match="priority orders"):
        Controls.build(priority="p")
    with pytest.raises(ValueError, match="positive"):
        Controls.build(idempotency_key="id", idempotency_window=timedelta(0))
    assert controls(idempotency_key="id", idempotency_window=90).idempotency_window == 90
    with pytest.raises(ValueError, match="debounce must be positive"):
        Controls.build(debounce=0)
    with pytest.raises(ValueError, match="needs debounce"):
        Controls.build(debounce_key="k")
    with pytest.raises(ValueError, match="cannot be combined"):
        Controls.build(batch_size=10, concurrency=2)
    with pytest.raises(ValueError, match="batch_size must be"):
        Controls.build(batch_size=0)
    with pytest.raises(ValueError, match="singleton_mode"):
        Controls.build(singleton_key="k", singleton_mode="drop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="singleton_key cannot"):
        Controls.build(singleton_key="k", debounce=1)
    with pytest.raises(ValueError, match="go together"):
        Controls.build(cancel_on="cancel")


def test_token_bucket_bursts_then_refills() -> None:
    bucket = TokenBucket(Rate(2, 1), now=0.0)
    assert bucket.take(0.0) and bucket.take(0.0)
    assert not bucket.take(0.0)
    assert bucket.wait(0.0) == pytest.approx(0.5)
    assert not bucket.take(0.4)
    assert bucket.take(0.5)
    assert bucket.full(10.0) and bucket.tokens == 2  # never more than the burst


async def test_concurrency_per_key_and_priority_among_the_waiting() -> None:
    gate = Admission(controls(concurrency=1, concurrency_key="k", priority="p"))
    first = gate.ticket("a", None, priority=0)
    assert gate.offer(first)
    other_key = gate.ticket("b", None)
    assert gate.offer(other_key)  # a waiting key does not block another
    waiting = [gate.ticket("a", None, priority=p) for p in (1, 5, 3, 5)]
    assert not any(gate.offer(t) for t in waiting)
    assert gate.waiting["concurrency"] == 4
    started: list[int] = []
    for _ in waiting:
        gate.release(first if not started else waiting[started[-1]])
        granted = [i for i, t in enumerate(waiting) if t.granted]
        assert len(granted) == 1
        started.append(granted[0])
    assert started == [1, 3, 2, 0]  # priority 5 (arrival order), 3, then 1
    assert gate.waiting["concurrency"] == 0
    assert all(t.waited_for == ["concurrency"] for t in waiting)


async def test_rate_limit_waits_on_a_timer_and_abandon_stops_waiting() -> None:
    now = [0.0]
    gate = Admission(controls(rate_limit="20/s"), clock=lambda: now[0])
    burst = [gate.ticket(None, None) for _ in range(20)]
    assert all(gate.offer(t) for t in burst)
    late = gate.ticket(None, None)
    assert not gate.offer(late)
    assert gate.waiting["rate_limit"] == 1 and late.waited_for == ["rate_limit"]
    now[0] = 0.05  # one token's worth: the timer (50 ms) grants it
    await asyncio.wait_for(gate.wait(late), 5)
    assert late.granted and gate.waiting["rate_limit"] == 0
    stuck = gate.ticket(None, None)
    assert not gate.offer(stuck)
    assert gate.abandon(lambda _t: True) == 1
    with pytest.raises(AdmissionAbandoned):
        await gate.wait(stuck)
    assert gate.waiting["rate_limit"] == 0
    gate.close()
