"""`@flow(retries=N)`: a retried attempt resumes after the task calls the failed one
completed, as a crashed run does (it called them all again: a charge made twice);
`retry_resumes=False` calls every task on each attempt."""

from __future__ import annotations

from collections import Counter
from typing import Any

from eventflow import flow, task
from eventflow._store import _schema as schema
from tests._store import flow_runs, rows, sync

CALLS: Counter[str] = Counter()


@task
def reserve(order: str) -> dict[str, str]:
    CALLS["reserve"] += 1
    return {"reservation": f"r-{order}"}


@task
def charge(reservation: dict[str, str]) -> int:
    CALLS["charge"] += 1
    return 42


@task
def notify(amount: int) -> str:
    CALLS["notify"] += 1
    if CALLS["notify"] == 1:
        raise RuntimeError("mail server down")
    return f"sent {amount}"


def checkout(order: str) -> str:
    return notify(charge(reserve(order)))


async def _task_runs(url: str, flow_name: str) -> list[dict[str, Any]]:
    [run] = await flow_runs(url, flow_name=flow_name)
    found = await rows(url, schema.task_runs, schema.task_runs.c.flow_run_id == run["id"])
    return sorted(found, key=lambda t: t["created_at"])


def test_a_flow_retry_resumes_after_the_completed_tasks(any_default_store: str) -> None:
    CALLS.clear()
    resuming = flow(name="checkout-resumes", retries=2)(checkout)
    assert resuming("o1") == "sent 42"
    assert CALLS == {"reserve": 1, "charge": 1, "notify": 2}  # no second charge
    tasks = sync(_task_runs(any_default_store, "checkout-resumes"))
    shown = [(t["task_name"], t["state_name"], t["position"]) for t in tasks]
    assert shown == [
        ("reserve", "Completed", 0),
        ("charge", "Completed", 1),
        ("notify", "Failed", 2),
        ("reserve", "Reused", 0),  # the second attempt, positions from 0 again
        ("charge", "Reused", 1),
        ("notify", "Completed", 2),
    ]
    assert tasks[3]["reused_from"] == tasks[0]["id"] and tasks[4]["reused_from"] == tasks[1]["id"]
    [run] = sync(flow_runs(any_default_store, flow_name="checkout-resumes"))
    assert (run["state_type"], run["run_count"]) == ("COMPLETED", 2)


def test_a_flow_retry_reuses_the_first_attempts_results_on_the_third(
    any_default_store: str,
) -> None:
    """What the second attempt reused, the third reuses too (linked to where it was made)."""
    CALLS.clear()
    attempts = Counter[str]()

    @task
    def fragile(amount: int) -> int:
        attempts["fragile"] += 1
        if attempts["fragile"] < 3:
            raise RuntimeError("not yet")
        return amount

    @flow(name="checkout-thrice", retries=2)
    def thrice(order: str) -> int:
        return fragile(charge(reserve(order)))

    assert thrice("o1") == 42
    assert CALLS == {"reserve": 1, "charge": 1} and attempts == {"fragile": 3}
    tasks = sync(_task_runs(any_default_store, "checkout-thrice"))
    reused = [t for t in tasks if t["state_name"] == "Reused"]
    assert [t["task_name"] for t in reused] == ["reserve", "charge"] * 2
    assert {t["reused_from"] for t in reused} == {tasks[0]["id"], tasks[1]["id"]}


def test_retry_resumes_false_calls_every_task_on_each_attempt(any_default_store: str) -> None:
    CALLS.clear()
    anew = flow(name="checkout-anew", retries=2, retry_resumes=False)(checkout)
    assert anew("o1") == "sent 42"
    assert CALLS == {"reserve": 2, "charge": 2, "notify": 2}
    tasks = sync(_task_runs(any_default_store, "checkout-anew"))
    assert all(t["reused_from"] is None for t in tasks)
