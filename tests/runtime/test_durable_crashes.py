"""Durable steps: a worker SIGKILLed mid-flow; the next one resumes each run after its
completed tasks (real worker processes, broker and stores)."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from eventflow._store import _schema as schema
from tests._kafka import Kafka, create_topic, produce, wait_until
from tests._services import Postgres
from tests._store import rows
from tests.runtime._workers import Worker, completed_count, delivery_report
from tests.runtime.test_kafka_delivery import orders

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]

APP = "tests/apps/durable_worker.py:app"
CHARGING = {"sync": "charge", "async": "charge_async", "map": "charge_part"}


@pytest.fixture(autouse=True)
def no_worker_outlives_its_test() -> Iterator[None]:
    yield
    Worker.kill_all()


async def _store_rows(url: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return await rows(url, schema.flow_runs), await rows(url, schema.task_runs)


def _order_of(run: dict[str, Any]) -> str:
    return str(orjson.loads(run["event_payload"])["id"])


async def _run_crash(
    kafka: Kafka, url: str, tmp_path: Path, form: str, total: int, **extra: str
) -> dict[str, Any]:
    """Kill the worker while many runs are in `ship`, restart it, let it finish."""
    topic, group = f"t-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    await create_topic(kafka.bootstrap, topic, 4)
    await produce(kafka.bootstrap, topic, orders(total, keys=total))
    charges = tmp_path / "charges.txt"
    env = {
        "EVENTFLOW_DATABASE_URL": url,
        "EVENTFLOW_WORKER_LEASE": "3",
        "EVENTFLOW_COMMIT_INTERVAL": "0.2",
        "BOOTSTRAP": kafka.bootstrap,
        "TOPIC": topic,
        "GROUP": group,
        "CHARGES": str(charges),
        "FLOW": form,
        "MAX_IN_FLIGHT": "100",
        **extra,
    }
    # odd-numbered orders stay in `ship` for a minute: the kill lands while they are there
    slow = {"SHIP_SECONDS": "0.05", "SLOW_SHIP_SECONDS": "60"}
    worker = Worker({**env, **slow}, tmp_path / "worker.log", app=APP)
    await wait_until(lambda: _in_ship(url, CHARGING[form], 50), timeout=120, interval=0.1)
    worker.kill()

    # what had durably happened at the kill: the task runs it stored
    runs, tasks = await _store_rows(url)
    run_order = {r["id"]: _order_of(r) for r in runs}
    completed_before = {run_order[r["id"]] for r in runs if r["state_type"] == "COMPLETED"}
    charged_before = {
        _charged(t, run_order)
        for t in tasks
        if t["task_name"] == CHARGING[form] and t["state_type"] == "COMPLETED"
    }

    worker = Worker({**env, "SHIP_SECONDS": "0.05"}, tmp_path / "worker.log", app=APP)
    await wait_until(lambda: _at_least(url, total), timeout=180, interval=0.5)
    await wait_until(lambda: _settled(url), timeout=60, interval=0.5)
    assert worker.terminate() == 0
    runs, tasks = await _store_rows(url)
    return {
        "charges": Counter(charges.read_text().split()),
        "runs": runs,
        "tasks": tasks,
        "run_order": {r["id"]: _order_of(r) for r in runs},
        "completed_before": completed_before,
        "charged_before": charged_before,
        "report": await delivery_report(url),
    }


def _charged(task_run: dict[str, Any], run_order: dict[str, str]) -> str:
    """The line a charge task run wrote: its order id, or for `charge_part` its result."""
    if task_run["task_name"] == "charge_part":
        return str(orjson.loads(task_run["result"]))
    return run_order[task_run["flow_run_id"]]


def _check(result: dict[str, Any], form: str, total: int, charges_per_order: int) -> None:
    report = result["report"]
    assert report["completed_positions"] == total and report["duplicates"] == [], report
    charges: Counter[str] = result["charges"]
    assert len(charges) == total * charges_per_order  # every charge happened
    # every charge whose task run had COMPLETED durably before the kill happened once
    charged_before: set[str] = result["charged_before"]
    assert all(charges[line] == 1 for line in charged_before), {
        line: charges[line] for line in charged_before if charges[line] != 1
    }
    interrupted = {line.split(":")[0] for line in charged_before} - result["completed_before"]
    assert interrupted, "the kill hit no run between its charge and its end"
    # ... because the resumed run reused the charge: linked to the crashed run
    run_order, runs = result["run_order"], result["runs"]
    final = {run_order[r["id"]]: r for r in runs if r["state_type"] == "COMPLETED"}
    crashed = {r["id"] for r in runs if r["state_type"] == "CRASHED"}
    reused = Counter(
        run_order[t["flow_run_id"]]
        for t in result["tasks"]
        if t["state_name"] == "Reused" and t["task_name"] == CHARGING[form]
    )
    for order in interrupted:
        assert final[order]["resumed_from"] in crashed
        assert reused[order] >= 1, order
    sources = {t["id"]: t for t in result["tasks"]}
    for task_run in result["tasks"]:
        if task_run["reused_from"] is not None:
            source = sources[task_run["reused_from"]]
            assert source["state_type"] == "COMPLETED" and source["result"] is not None


@pytest.mark.slow(25)
async def test_a_killed_sync_flow_resumes_after_its_completed_tasks(
    kafka: Kafka, database_url: str, tmp_path: Path
) -> None:
    result = await _run_crash(kafka, database_url, tmp_path, "sync", 2000)
    _check(result, "sync", 2000, 1)


@pytest.mark.slow(25)
async def test_a_killed_async_flow_resumes_after_its_completed_tasks(
    kafka: Kafka, sqlite_url: str, tmp_path: Path
) -> None:
    # with a flow control too: its runs take the controlled path to the engine
    result = await _run_crash(kafka, sqlite_url, tmp_path, "async", 2000, CONCURRENCY="300")
    _check(result, "async", 2000, 1)


@pytest.mark.slow(25)
@pytest.mark.postgres
async def test_a_killed_map_and_submit_flow_resumes_after_its_completed_tasks(
    kafka: Kafka, postgres: Postgres, tmp_path: Path
) -> None:
    result = await _run_crash(kafka, postgres.create_database(), tmp_path, "map", 2000)
    _check(result, "map", 2000, 2)


async def _at_least(url: str, count: int) -> bool:
    try:
        return await completed_count(url) >= count
    except Exception:  # the worker may not have created the schema yet
        return False


async def _in_ship(url: str, charging: str, count: int) -> bool:
    """At least `count` runs have stored their charge and not ended, and `count` have ended."""
    try:
        runs, tasks = await _store_rows(url)
    except Exception:  # the worker may not have created the schema yet
        return False
    completed = {r["id"] for r in runs if r["state_type"] == "COMPLETED"}
    charged = {
        t["flow_run_id"]
        for t in tasks
        if t["task_name"] == charging and t["state_type"] == "COMPLETED"
    }
    return len(completed) >= count and len(charged - completed) >= count


async def _settled(url: str) -> bool:
    states = (await delivery_report(url))["states"]
    return not (states["RUNNING"] or states["RETRYING"] or states["PENDING"])
