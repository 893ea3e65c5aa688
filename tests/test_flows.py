"""The programming model, end to end against a real store."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from datetime import timedelta
from typing import Any

import pydantic
import pytest

from eventflow import (
    ConfigurationError,
    MissingContextError,
    ParameterValidationError,
    State,
    StateType,
    SyncInAsyncError,
    TaskFuture,
    UpstreamFailedError,
    flow,
    get_run_logger,
    task,
    unmapped,
)
from eventflow._store import _schema as schema
from eventflow._threads import running_loop
from tests._store import flow_runs, rows, run_detail, sync


class Order(pydantic.BaseModel):
    id: str
    customer_id: str
    amount: int


@task(retries=2, retry_delay_seconds=0)
def fetch_customer(customer_id: str) -> dict[str, str]:
    return {"id": customer_id, "name": f"customer {customer_id}"}


@task
def load(order: Order, customer: dict[str, str]) -> str:
    return f"{order.id}:{customer['name']}"


@flow(name="process-order")
def process_order(order: Order, min_amount: int = 20) -> str:
    customer = fetch_customer.submit(order.customer_id)
    if order.amount < min_amount:
        get_run_logger().info("skipping small order %s", order.id)
        return "skipped"
    load(order, customer)
    return "loaded"


def test_direct_call_of_a_sync_flow_is_one_tracked_run(any_default_store: str) -> None:
    order = Order(id="o1", customer_id="c1", amount=50)
    state = process_order(order, return_state=True)
    assert state.is_completed() and state.result() == "loaded"

    detail = sync(run_detail(any_default_store, state.run_id))
    assert detail["flow_name"] == "process-order"
    assert detail["state_type"] == "COMPLETED"
    assert detail["result"] == '"loaded"'
    assert {t["name"]: t["state_type"] for t in detail["task_runs"]} == {
        "fetch_customer-0": "COMPLETED",
        "load-0": "COMPLETED",
    }
    # the future passed to load() is a data edge between the two task runs
    ids = {t["name"]: t["id"] for t in detail["task_runs"]}
    assert [(e["upstream_id"], e["downstream_id"], e["kind"]) for e in detail["edges"]] == [
        (ids["fetch_customer-0"], ids["load-0"], "data")
    ]


def test_branches_take_ordinary_if_else(default_store: str) -> None:
    assert process_order(Order(id="o2", customer_id="c2", amount=5)) == "skipped"
    runs = sync(flow_runs(default_store))
    detail = sync(run_detail(default_store, runs[0]["id"]))
    assert [t["task_name"] for t in detail["task_runs"]] == ["fetch_customer"]
    assert [entry["message"] for entry in detail["logs"]] == ["skipping small order o2"]


async def test_async_flow_with_async_tasks(any_default_store: str) -> None:
    @task(retries=1)
    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return x * 2

    @flow
    async def pipeline(x: int) -> int:
        doubled = await double(x)
        future = double.submit(doubled)
        return await future

    assert await pipeline(3) == 12
    (run,) = await flow_runs(any_default_store)
    assert run["flow_name"] == "pipeline"  # underscores become dashes only when present
    assert run["state_type"] == "COMPLETED"
    detail = await run_detail(any_default_store, run["id"])
    assert [t["state_type"] for t in detail["task_runs"]] == ["COMPLETED", "COMPLETED"]


def test_decorators_with_and_without_parentheses(default_store: str) -> None:
    @task
    def plain() -> int:
        return 1

    @task()
    def called() -> int:
        return 2

    @flow()
    def flow_called() -> int:
        return plain() + called()

    @flow
    def flow_plain() -> int:
        return flow_called()

    assert flow_plain() == 3
    names = sorted(r["flow_name"] for r in sync(flow_runs(default_store)))
    assert names == ["flow-called", "flow-plain"]


def test_sync_user_code_never_runs_on_an_event_loop(default_store: str) -> None:
    seen: dict[str, Any] = {}

    @task
    def where_task() -> None:
        seen["task_loop"] = running_loop()
        seen["task_thread"] = threading.current_thread().name

    @flow
    def where_flow() -> None:
        seen["flow_loop"] = running_loop()
        seen["flow_thread"] = threading.current_thread().name
        where_task()

    where_flow()
    assert seen["flow_loop"] is None and seen["task_loop"] is None
    assert seen["flow_thread"].startswith("eventflow-sync-flows")
    assert seen["task_thread"].startswith("eventflow-sync-tasks")  # never waits behind flows


async def test_sync_task_submitted_from_async_flow_runs_off_the_loop(default_store: str) -> None:
    @task
    def blocking() -> bool:
        time.sleep(0.01)
        return running_loop() is None

    @flow
    async def mixed() -> bool:
        return await blocking.submit()

    assert await mixed() is True


def test_async_task_called_from_a_sync_flow(default_store: str) -> None:
    @task
    async def fetch(x: int) -> int:
        await asyncio.sleep(0)
        return x + 1

    @flow
    def sync_flow() -> int:
        return fetch(1) + fetch.submit(2).result()

    assert sync_flow() == 5


# -- parameters ------------------------------------------------------------------------


def test_parameters_are_validated_and_coerced(default_store: str) -> None:
    @flow
    def typed(count: int, ratio: float = 0.5) -> tuple[int, float]:
        return count, ratio

    assert typed("5") == (5, 0.5)  # type: ignore[arg-type]
    assert typed(count="7", ratio="1.5") == (7, 1.5)  # type: ignore[arg-type]
    run = max(sync(flow_runs(default_store)), key=lambda r: r["created_at"])
    assert run["parameters"] == '{"count":7,"ratio":1.5}'


def test_invalid_parameters_fail_the_run_without_calling_the_flow(default_store: str) -> None:
    called = []

    @flow
    def typed(count: int) -> None:
        called.append(count)

    with pytest.raises(ParameterValidationError, match="count"):
        typed("not a number")  # type: ignore[arg-type]
    state = typed("nope", return_state=True)  # type: ignore[arg-type]
    assert state.type is StateType.FAILED
    assert isinstance(state.data, ParameterValidationError)
    assert called == []
    runs = sync(flow_runs(default_store))
    assert [r["state_type"] for r in runs] == ["FAILED", "FAILED"]
    assert all("invalid parameters for flow typed" in r["error"] for r in runs)
    assert all(r["run_count"] == 0 for r in runs)


def test_unknown_and_missing_arguments_are_validation_errors(default_store: str) -> None:
    @flow
    def one(a: int) -> int:
        return a

    with pytest.raises(ParameterValidationError):
        one()  # type: ignore[call-arg]
    with pytest.raises(ParameterValidationError):
        one(1, b=2)  # type: ignore[call-arg]


def test_validate_parameters_false_passes_values_through(default_store: str) -> None:
    @flow(validate_parameters=False)
    def raw(count: int) -> Any:
        return count

    assert raw("5") == "5"  # type: ignore[arg-type]


def test_event_json_validates_into_a_model_parameter_or_keywords(default_store: str) -> None:
    @flow
    def by_model(order: Order, min_amount: int = 20) -> None: ...

    @flow
    def by_keywords(customer_id: str, amount: int) -> None: ...

    parameters = by_model.validate_json(b'{"id": "o1", "customer_id": "c1", "amount": "30"}')
    assert parameters == {"order": Order(id="o1", customer_id="c1", amount=30), "min_amount": 20}
    parameters = by_keywords.validate_json(b'{"customer_id": "c1", "amount": 3, "extra": true}')
    assert parameters == {"customer_id": "c1", "amount": 3}
    with pytest.raises(ParameterValidationError, match="amount"):
        by_keywords.validate_json(b'{"customer_id": "c1"}')
    with pytest.raises(ParameterValidationError, match="Invalid JSON"):
        by_keywords.validate_json(b"\xff{not json")


# -- states and failures --------------------------------------------------------------


def test_a_flow_that_raises_is_failed(default_store: str) -> None:
    @flow
    def broken() -> None:
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        broken()
    state = broken(return_state=True)
    assert state.type is StateType.FAILED and state.name == "Failed"
    assert state.message == "ValueError: bad input"
    assert {r["error"] for r in sync(flow_runs(default_store))} == {"ValueError: bad input"}


def test_a_failed_task_raises_where_its_result_is_used(default_store: str) -> None:
    @task
    def explode() -> int:
        raise KeyError("missing")

    @flow
    def uses_result() -> str:
        future = explode.submit()
        state = future.wait()
        assert state.is_failed()
        with pytest.raises(KeyError):
            future.result()
        assert future.result(raise_on_failure=False).args == ("missing",)
        explode()  # a direct call raises here and fails the flow
        return "unreachable"

    state = uses_result(return_state=True)
    assert state.is_failed() and isinstance(state.data, KeyError)
    detail = sync(run_detail(default_store, state.run_id))
    assert [t["state_type"] for t in detail["task_runs"]] == ["FAILED", "FAILED"]


def test_task_return_state(default_store: str) -> None:
    @task
    def fine() -> int:
        return 1

    @flow
    def get_state() -> State:
        return fine(return_state=True)  # type: ignore[call-arg,no-any-return]

    state = get_state()
    assert state.is_completed() and state.result() == 1 and state.run_id


def test_task_called_outside_a_flow_is_the_plain_function() -> None:
    @task
    def add(a: int, b: int) -> int:
        return a + b

    assert add(1, 2) == 3
    with pytest.raises(MissingContextError):
        add.submit(1, 2)


# -- retries and timeouts -------------------------------------------------------------


def test_task_retries_wait_their_delay_and_count_attempts(default_store: str) -> None:
    attempts: list[float] = []

    @task(retries=3, retry_delay_seconds=[0.05, 0.1])
    def flaky() -> str:
        attempts.append(time.monotonic())
        if len(attempts) < 4:
            raise ConnectionError("try again")
        return "ok"

    @flow
    def retrying() -> str:
        return flaky()

    state = retrying(return_state=True)
    assert state.result() == "ok"
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    # the list's last value repeats: 0.05, 0.1, 0.1
    assert [round(g, 2) >= d for g, d in zip(gaps, [0.05, 0.1, 0.1], strict=True)] == [True] * 3
    detail = sync(run_detail(default_store, state.run_id))
    (task_run,) = detail["task_runs"]
    assert task_run["run_count"] == 4 and task_run["state_type"] == "COMPLETED"


def test_exhausted_retries_fail_with_the_last_error(default_store: str) -> None:
    calls = []

    @task(retries=2)
    def always_fails() -> None:
        calls.append(1)
        raise RuntimeError(f"attempt {len(calls)}")

    @flow
    def f() -> None:
        always_fails()

    state = f(return_state=True)
    assert state.is_failed() and str(state.data) == "attempt 3"
    assert len(calls) == 3


def test_retry_condition_fn_can_refuse_a_retry(default_store: str) -> None:
    calls = []

    def only_connection_errors(task: Any, task_run: Any, state: State) -> bool:
        return isinstance(state.data, ConnectionError)

    @task(retries=5, retry_condition_fn=only_connection_errors)
    def picky() -> None:
        calls.append(1)
        raise (ConnectionError if len(calls) == 1 else ValueError)("x")

    @flow
    def f() -> None:
        picky()

    assert f(return_state=True).is_failed()
    assert len(calls) == 2


async def test_retries_wait_without_blocking_other_runs(default_store: str) -> None:
    """Other runs start and finish while one waits out a long retry delay (no timing:
    a delay that blocked them would let the waiting run finish first)."""
    failed_once = asyncio.Event()

    @task(retries=1, retry_delay_seconds=30)
    async def slow_retry(n: int) -> int:
        if n == 0 and not failed_once.is_set():
            failed_once.set()
            raise ConnectionError("once")
        return n

    @flow
    async def f(n: int) -> int:
        return await slow_retry(n)

    waiting = asyncio.ensure_future(f(0))
    await asyncio.wait_for(failed_once.wait(), 30)  # its retry delay has begun
    others = [await f(n) for n in range(1, 6)]
    assert others == [1, 2, 3, 4, 5]
    assert not waiting.done()  # still in its delay
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_async_task_timeout_is_a_retryable_timed_out_failure(default_store: str) -> None:
    attempts = []

    @task(timeout_seconds=0.05, retries=1)
    async def sometimes_slow() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            await asyncio.sleep(5)
        return "fast"

    @task(timeout_seconds=0.05)
    async def always_slow() -> None:
        await asyncio.sleep(5)

    @flow
    async def f() -> tuple[str, State]:
        return await sometimes_slow(), await always_slow(return_state=True)  # type: ignore[call-arg]

    result, timed_out = await f()
    assert result == "fast" and len(attempts) == 2
    assert timed_out.type is StateType.FAILED and timed_out.name == "TimedOut"
    assert "exceeded its timeout of 0.05s" in (timed_out.message or "")


def test_sync_task_timeout(default_store: str) -> None:
    @task(timeout_seconds=0.05)
    def sleepy() -> None:
        time.sleep(0.5)

    @flow
    def f() -> State:
        return sleepy(return_state=True)  # type: ignore[call-arg,no-any-return]

    state = f()
    assert state.name == "TimedOut"


async def test_flow_retries_and_timeout(default_store: str) -> None:
    calls = []

    @flow(retries=2, retry_delay_seconds=0.01, timeout_seconds=0.1)
    async def f() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("first")
        if len(calls) == 2:
            await asyncio.sleep(1)
        return len(calls)

    state = await f(return_state=True)  # type: ignore[call-arg]
    assert state.result() == 3
    (run,) = await flow_runs(default_store)
    assert run["run_count"] == 3 and run["state_type"] == "COMPLETED"


# -- futures --------------------------------------------------------------------------


def test_wait_for_orders_without_data_and_records_an_edge(default_store: str) -> None:
    order: list[str] = []

    @task
    def first() -> None:
        time.sleep(0.05)
        order.append("first")

    @task
    def second() -> None:
        order.append("second")

    @flow
    def f() -> str:
        a = first.submit()
        b = second.submit(wait_for=[a])
        b.wait()
        return a.task_run_id

    state = f(return_state=True)
    assert order == ["first", "second"]
    detail = sync(run_detail(default_store, state.run_id))
    assert [(e["upstream_id"], e["kind"]) for e in detail["edges"]] == [
        (state.result(), "wait_for")
    ]


def test_upstream_failure_means_the_downstream_task_does_not_run(default_store: str) -> None:
    ran = []

    @task
    def broken() -> int:
        raise ValueError("no")

    @task
    def downstream(x: int) -> None:
        ran.append(x)

    @flow
    def f() -> State:
        return downstream.submit(broken.submit()).wait()

    state = f()
    assert state.name == "NotReady" and isinstance(state.data, UpstreamFailedError)
    assert ran == []


def test_map_submits_one_run_per_element(default_store: str) -> None:
    @task
    def scale(x: int, factor: int) -> int:
        return x * factor

    @task
    def total(values: list[int]) -> int:
        return sum(values)

    @flow
    def f() -> int:
        futures = scale.map([1, 2, 3], unmapped(10))
        return total(futures)

    state = f(return_state=True)
    assert state.result() == 60
    detail = sync(run_detail(default_store, state.run_id))
    assert len(detail["task_runs"]) == 4
    assert sorted(e["kind"] for e in detail["edges"]) == ["data", "data", "data"]


def test_futures_the_flow_forgot_are_finished_before_it_ends(default_store: str) -> None:
    @task
    def slow() -> None:
        time.sleep(0.1)

    @flow
    def forgetful() -> str:
        slow.submit()
        return "returned at once"

    state = forgetful(return_state=True)
    detail = sync(run_detail(default_store, state.run_id))
    (task_run,) = detail["task_runs"]
    assert task_run["state_type"] == "COMPLETED"
    assert detail["ended_at"] >= task_run["ended_at"]


async def test_future_wait_on_its_own_loop_is_a_clear_error(default_store: str) -> None:
    @task
    async def quick() -> int:
        return 1

    @flow
    async def f() -> None:
        future: TaskFuture[int] = quick.submit()
        with pytest.raises(SyncInAsyncError, match="await future"):
            future.wait()
        assert (await future.wait_async()).is_completed()

    await f()


# -- names, hooks, logs ---------------------------------------------------------------


def test_run_name_templates(default_store: str) -> None:
    @task(task_run_name="fetch-{customer_id}")
    def fetch(customer_id: str) -> None: ...

    @flow(flow_run_name="orders-for-{customer_id}")
    def f(customer_id: str) -> None:
        fetch(customer_id)

    state = f("c42", return_state=True)
    detail = sync(run_detail(default_store, state.run_id))
    assert detail["name"] == "orders-for-c42"
    assert [t["name"] for t in detail["task_runs"]] == ["fetch-c42"]


def test_hooks_see_the_final_state(default_store: str) -> None:
    seen: list[tuple[str, str, str]] = []

    def record(kind: str) -> Any:
        def hook(obj: Any, run: Any, state: State) -> None:
            seen.append((kind, obj.name, state.name))

        return hook

    @task(on_completion=[record("task-done")], on_failure=[record("task-failed")])
    def maybe(fail: bool) -> None:
        if fail:
            raise ValueError

    @flow(on_completion=[record("flow-done")], on_failure=[record("flow-failed")])
    def f(fail: bool) -> None:
        maybe(fail)

    f(False)
    f(True, return_state=True)
    assert seen == [
        ("task-done", "maybe", "Completed"),
        ("flow-done", "f", "Completed"),
        ("task-failed", "maybe", "Failed"),
        ("flow-failed", "f", "Failed"),
    ]


async def test_a_cancelled_flow_run_is_crashed_and_calls_on_crashed(default_store: str) -> None:
    started = asyncio.Event()
    crashed: list[str] = []

    @flow(on_crashed=[lambda f, run, state: crashed.append(state.name)])
    async def endless() -> None:
        started.set()
        await asyncio.sleep(60)

    running = asyncio.ensure_future(endless())
    await started.wait()
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert crashed == ["Crashed"]


def test_run_logger_writes_stdout_and_the_store(
    default_store: str, capfd: pytest.CaptureFixture[str]
) -> None:
    @task
    def noisy() -> None:
        get_run_logger().warning("from the task")

    @flow
    def f() -> None:
        get_run_logger().info("from the flow")
        noisy()

    state = f(return_state=True)
    detail = sync(run_detail(default_store, state.run_id))
    logs = [(entry["level"], entry["message"], entry["task_run_id"]) for entry in detail["logs"]]
    (task_run,) = detail["task_runs"]
    assert logs == [(20, "from the flow", None), (30, "from the task", task_run["id"])]
    assert "from the flow" in capfd.readouterr().out


def test_log_prints_sends_print_to_the_run_logger(default_store: str) -> None:
    @flow(log_prints=True)
    def chatty() -> None:
        print("hello", "world")

    @flow
    def quiet() -> None:
        print("not stored")

    state = chatty(return_state=True)
    quiet()
    detail = sync(run_detail(default_store, state.run_id))
    assert [entry["message"] for entry in detail["logs"]] == ["hello world"]
    assert len(sync(rows(default_store, schema.logs))) == 1


def test_get_run_logger_outside_a_run_is_a_clear_error() -> None:
    with pytest.raises(MissingContextError, match="outside a flow run"):
        get_run_logger()


def test_subflows_record_their_parent(default_store: str) -> None:
    @flow
    def child(x: int) -> int:
        return x + 1

    @flow
    def parent() -> int:
        return child(1) + child(2)

    state = parent(return_state=True)
    children = sync(flow_runs(default_store, parent_flow_run_id=state.run_id))
    assert state.result() == 5 and len(children) == 2


@pytest.mark.parametrize(
    ("define", "message"),
    [
        (lambda: task(timeout_seconds=-1)(_double), "timeout_seconds must be more than 0"),
        (lambda: flow(timeout_seconds=0)(_double), "timeout_seconds must be more than 0"),
        (lambda: task(cache_expiration="1h")(_double), "cache_expiration must be a number"),
        (lambda: task(retry_delay_seconds="x", retries=1)(_double), "retry_delay_seconds must"),
    ],
)
def test_a_bad_option_is_refused_when_the_task_or_flow_is_defined(
    define: Any, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        define()


def test_durations_are_seconds_or_timedeltas() -> None:
    assert task(cache_expiration=3600)(_double).cache_expiration == timedelta(hours=1)
    minute = timedelta(minutes=1)
    assert task(cache_expiration=minute)(_double).cache_expiration == minute
    assert task(timeout_seconds=2)(_double).timeout_seconds == 2.0


def _double(x: int) -> int:
    return 2 * x
