"""Which task calls a resumed run reuses: matched by position among the flow's own calls,
only the unbroken prefix of kept results, and only results that read back as they were
(direct calls over a real SQLite store; the crash tests prove the same through workers)."""

from __future__ import annotations

import logging
from typing import Any

import pydantic
import pytest

from eventflow import flow, task
from eventflow._defaults import default_writer_async
from eventflow._engine import run_flow
from eventflow._states import State
from eventflow._store import _schema as schema
from eventflow._store._results import _plans
from eventflow._store._runstore import SqlRunStore
from tests._store import rows

CALLS: list[str] = []
FAIL = {"now": True}
RESUMED: list[str] = []


class Order(pydantic.BaseModel):
    id: str


@task
def fetch(i: int) -> int:
    CALLS.append(f"fetch {i}")
    return i * 10


@task
def wrapper(i: int) -> int:
    return fetch(i) + 1  # a task called inside a task: no position of its own


@flow(name="nested-calls")
def nested() -> list[int]:
    first, second = fetch(1), wrapper(2)
    if FAIL["now"]:
        raise RuntimeError("boom")
    return [first, second, fetch(3)]


@task
def make_order():  # type: ignore[no-untyped-def]  # no annotation: a model is not plain JSON
    CALLS.append("make_order")
    return Order(id="o1")


@task
def pair():  # type: ignore[no-untyped-def]
    CALLS.append("pair")
    return (1, 2)


@flow(name="unannotated")
def unannotated() -> str:
    order, numbers = make_order(), pair()
    if FAIL["now"]:
        raise RuntimeError("boom")
    return f"{type(order).__name__} {order.id} {type(numbers).__name__}"


@task
def step(name: str) -> str:
    CALLS.append(name)
    return name


@task(persist_result=False)
def unkept(name: str) -> str:
    CALLS.append(name)
    return name


@task
def flaky(name: str) -> str:
    CALLS.append(name)
    if FAIL["now"]:
        raise RuntimeError("boom")
    return name


@flow(name="prefix")
def prefix() -> list[str]:
    first = step("a")
    second = unkept("b")  # completed, not kept: runs again alone
    futures = [flaky.submit("c"), step.submit("d")]  # "c" fails, "d" completes
    return [first, second, *(f.result() for f in futures)]


async def _fail_then_resume(flow_: Any, url: str) -> tuple[State, list[str]]:
    """Run `flow_` until it fails, then once more resuming that run; the calls of the
    second. RESUMED holds the failed run's id."""
    writer = await default_writer_async()
    FAIL["now"] = True
    failed = await run_flow(flow_, writer)
    await writer.flush()
    FAIL["now"] = False
    RESUMED[:] = [failed.run_id or ""]
    CALLS.clear()
    store = SqlRunStore.open(url)
    try:
        resume = await store.run_results(failed.run_id or "")
    finally:
        await store.close()
    state = await run_flow(flow_, writer, resume=resume)
    return state, list(CALLS)


async def test_a_call_inside_a_task_does_not_shift_the_later_positions(default_store: str) -> None:
    state, calls = await _fail_then_resume(nested, default_store)
    # fetch(1) and wrapper(2) are reused; fetch(3) runs: it is not given fetch(2)'s 20
    assert state.is_completed() and state.result() == [10, 21, 30]
    assert calls == ["fetch 3"]


async def test_results_without_a_return_annotation_are_kept_only_as_plain_json(
    default_store: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="eventflow.engine"):
        state, calls = await _fail_then_resume(unannotated, default_store)
    # not kept, so they run again and the flow gets a model and a tuple, not a dict and a list
    assert state.is_completed() and state.result() == "Order o1 tuple"
    assert calls == ["make_order", "pair"]
    said = [r.getMessage() for r in caplog.records if "is not kept" in r.getMessage()]
    assert any("task make_order" in m and "Order is not plain JSON" in m for m in said), said
    assert any("task pair" in m and "tuple is not plain JSON" in m for m in said), said


async def test_from_the_first_call_that_did_not_complete_everything_runs_again(
    default_store: str,
) -> None:
    state, calls = await _fail_then_resume(prefix, default_store)
    assert state.is_completed() and state.result() == ["a", "b", "c", "d"]
    before = await rows(
        default_store, schema.task_runs, schema.task_runs.c.flow_run_id == RESUMED[0]
    )
    assert ("step", "COMPLETED", '"d"') in {
        (t["task_name"], t["state_type"], t["result"]) for t in before
    }
    # "a" is reused; "b" was not kept: it runs alone; "c" did not complete, so it and
    # everything after it run, "d" too, though it completed before
    assert sorted(calls) == ["b", "c", "d"]


def test_an_event_that_crashed_twice_takes_older_results_only_on_the_newer_path() -> None:
    # (event, run id, created at, task run id, task name, position, result)
    first_run = [
        ("e", "run-1", 1.0, "t1-0", "reserve", 0, '"r"'),
        ("e", "run-1", 1.0, "t1-1", "pay", 1, "42"),
        ("e", "run-1", 1.0, "t1-2", "notify", 2, '"sent"'),
    ]
    # the second run reused position 0, took another path at 1, and crashed
    other_path = [
        ("e", "run-2", 2.0, "t2-0", "reserve", 0, '"r"'),
        ("e", "run-2", 2.0, "t2-1", "refund", 1, "-42"),
    ]
    plan = _plans(first_run + other_path, str)["e"]
    assert plan.run_id == "run-2" and plan.limit == 2
    assert {p: k.task_run_id for p, k in plan.results.items()} == {0: "t2-0", 1: "t2-1"}
    # a second run that crashed again after reusing position 0 only: the first run's rest
    plan = _plans([*first_run, ("e", "run-2", 2.0, "t2-0", "reserve", 0, '"r"')], str)["e"]
    assert plan.run_id == "run-2" and plan.limit == 3
    assert {p: k.task_run_id for p, k in plan.results.items()} == {0: "t2-0", 1: "t1-1", 2: "t1-2"}
    # a completed call whose result was not kept runs again alone: the prefix goes on
    unkept = [*first_run[:1], ("e", "run-1", 1.0, "t1-1", "pay", 1, None), *first_run[2:]]
    plan = _plans(unkept, str)["e"]
    assert plan.limit == 3 and sorted(plan.results) == [0, 2]
    assert plan.take(1, "pay", "new") is None and plan.take(2, "notify", "new") is not None
