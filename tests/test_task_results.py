"""Which task results are kept with their task runs: JSON within the size limit, unless
the task opts out; what is not kept is said once per task."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from eventflow import flow, task
from eventflow._defaults import default_writer_async
from eventflow._results import configure
from eventflow._store import _schema as schema
from tests._store import rows


@task
def small() -> dict[str, int]:
    return {"a": 1}


@task
def large() -> str:
    return "x" * 100


@task
def opaque() -> object:
    return object()


@task
def loose() -> Any:
    return (1, 2)  # would come back a list


@task
def vague() -> object:
    return (3, 4)


@task(persist_result=False)
def secret() -> str:
    return "s3cret"


@flow(name="results")
def results() -> None:
    for _ in range(2):
        small()
        large()
        opaque()
        loose()
        vague()
        secret()


@pytest.fixture
def limit_of_50_bytes() -> Iterator[None]:
    configure(True, 50)
    yield
    configure(True, 100_000)


async def test_what_is_kept(
    default_store: str, limit_of_50_bytes: None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="eventflow.engine"):
        results()
    await (await default_writer_async()).flush()
    kept: dict[str, set[Any]] = {}
    for task_run in await rows(default_store, schema.task_runs):
        kept.setdefault(task_run["task_name"], set()).add(task_run["result"])
        assert task_run["state_type"] == "COMPLETED"
    assert kept == {
        "small": {'{"a":1}'},
        "large": {None},
        "opaque": {None},
        "loose": {None},
        "vague": {None},
        "secret": {None},
    }
    said = [r.getMessage() for r in caplog.records if "is not kept" in r.getMessage()]
    assert len(said) == 4  # once per task, though each ran twice
    assert "task loose" in said[2] and "task vague" in said[3]
    assert (
        "task large" in said[0] and "larger (102 bytes) than EVENTFLOW_RESULT_MAX_BYTES" in said[0]
    )
    assert "task opaque" in said[1] and "not JSON-serialisable" in said[1]
