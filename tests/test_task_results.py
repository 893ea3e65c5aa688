"""Which task results are kept with their task runs: JSON within the size limit, unless
the task opts out; what is not kept is said once per task."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import orjson
import pydantic
import pytest

from eventflow import flow, task
from eventflow._defaults import default_writer_async
from eventflow._results import configure, encodes_quickly
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


ENCODED_ON: list[str] = []
"""The thread each Line was encoded on."""


class Line(pydantic.BaseModel):
    text: str

    @pydantic.model_serializer
    def _as_json(self) -> dict[str, str]:
        ENCODED_ON.append(threading.current_thread().name)
        return {"text": self.text}


@task
async def many_lines(count: int) -> list[Line]:
    return [Line(text=f"line {i}") for i in range(count)]


@flow(name="lines")
async def lines(count: int) -> int:
    return len(await many_lines(count))


async def test_a_large_result_is_encoded_off_the_event_loop(any_default_store: str) -> None:
    """An async task's result was encoded on the event loop whatever its size (every
    other run of the worker waited for it); now only a surely small one is."""
    loop_thread = threading.current_thread().name
    ENCODED_ON.clear()
    assert await lines(3) == 3
    assert set(ENCODED_ON) == {loop_thread}  # small: encoded in place
    ENCODED_ON.clear()
    assert await lines(3_000) == 3_000
    assert len(ENCODED_ON) == 3_000 and loop_thread not in ENCODED_ON
    await (await default_writer_async()).flush()
    kept = await rows(any_default_store, schema.task_runs)
    sizes = sorted(len(orjson.loads(t["result"])) for t in kept)
    assert sizes == [3, 3_000]  # both kept, read back whole


def test_the_look_at_a_result_stops_early() -> None:
    assert encodes_quickly({"a": [1, 2, 3], "b": "x" * 100})
    assert not encodes_quickly(list(range(1_000)))
    assert not encodes_quickly({"blob": "x" * 100_000})
    assert not encodes_quickly([["x"] * 100 for _ in range(100)])
