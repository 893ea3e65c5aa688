"""With several flow controls on, an event's JSON is decoded once: every key function
reads it, and the flow's parameters are validated from it."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pydantic
import pytest

from eventflow import App, flow
from eventflow.testing import TestApp
from tests.controls._harness import memory_topic, settings


class Job(pydantic.BaseModel):
    id: str
    account: str


async def test_every_control_reads_the_one_decoded_document(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, _group = memory_topic("decode-once")
    seen: dict[str, list[dict[str, Any]]] = defaultdict(list)

    def key_of(control: str) -> Any:
        def key(document: dict[str, Any]) -> str:
            seen[document["id"]].append(document)  # kept: ids of freed objects repeat
            return f"{control}:{document['account']}"

        return key

    @flow(name="decode-once")
    async def handle(job: Job) -> str:
        return job.id

    def parsed_again(document: bytes | str) -> dict[str, Any]:
        raise AssertionError(f"the event was parsed a second time: {document!r}")

    monkeypatch.setattr(handle, "validate_json", parsed_again)
    app = App(settings(database_url))
    app.subscribe(
        source,
        handle,
        singleton_key=key_of("singleton"),
        cancel_key=key_of("cancel"),
        cancel_on=lambda document: None,  # no event is a signal (its getter is not counted)
        concurrency=4,
        concurrency_key=key_of("concurrency"),
        rate_limit="1000/s",
        rate_limit_key=key_of("rate"),
        idempotency_key=key_of("idempotency"),
        priority=lambda document: 1,
    )
    async with TestApp(app, database_url=database_url) as test:
        for i in range(3):
            run = await test.publish(source, {"id": f"j{i}", "account": f"a{i}"})
            assert run.state == "COMPLETED", run.error
            assert run.result == f"j{i}"
    assert set(seen) == {"j0", "j1", "j2"}
    for calls in seen.values():
        assert len(calls) == 5  # singleton, cancel, idempotency, concurrency, rate
        assert all(document is calls[0] for document in calls)  # ... all the same decoded object
