"""A redelivered event whose run had FAILED has its failure policy applied again; when
that raises (a bug, a broken sink), its partition stops there as for a first delivery,
and says so: the offsets no longer stall there without a word."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import orjson
import pytest

from connectors.jsonl import JsonlSource
from eventflow import App, flow
from eventflow.runtime import Sink
from tests._kafka import wait_until
from tests._store import flow_runs
from tests.connectors._app import serving, settings


class BrokenDeadLetters(JsonlSource):
    """A file whose dead-letter destination passes `subscribe`'s check, then cannot be
    made when a dead letter is sent (a bug in a sink's factory)."""

    checked = False

    def dead_letter_sink(self) -> Sink | None:
        if not self.checked:
            self.checked = True
            return _Unused()
        raise RuntimeError("no dead-letter destination: bad configuration")


class _Unused(Sink):
    async def send(
        self, value: bytes, *, key: bytes | None = None, headers: Sequence[tuple[str, bytes]] = ()
    ) -> None:
        raise AssertionError("never sent to")


@flow(name="always-fails")
def always_fails(id: str) -> None:
    raise ValueError(f"cannot handle {id}")


def _app(url: str, orders: Path) -> tuple[App, BrokenDeadLetters]:
    source = BrokenDeadLetters(orders, group_id="g")
    app = App(settings(url))
    app.subscribe(source, always_fails, on_failure="dead_letter")
    return app, source


async def test_a_redelivered_failure_whose_policy_raises_stops_its_partition(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    orders = tmp_path / "orders.jsonl"
    orders.write_bytes(orjson.dumps({"id": "o1"}) + b"\n")
    app, source = _app(database_url, orders)
    async with serving(app):  # the run fails; its dead letter cannot be sent: unfinished
        await wait_until(lambda: flow_runs(database_url, state_type="FAILED"), timeout=30)
        await wait_until(lambda: source.last_error, timeout=30)
    assert "handling event" in str(source.last_error)

    caplog.clear()
    app, source = _app(database_url, orders)
    with caplog.at_level(logging.ERROR, logger="eventflow.runtime"):
        async with serving(app):  # o1 again: its run ended, its policy is applied again
            await wait_until(lambda: source.last_error, timeout=30)
            [runner] = app.runners
            assert runner.inflight.partitions[("orders.jsonl", 0)].stopped
    assert len(await flow_runs(database_url)) == 1  # it did not run again
    expected = (
        "applying the failure policy again to redelivered event orders.jsonl:1 failed:"
        " RuntimeError('no dead-letter destination: bad configuration'); partition"
        " orders.jsonl[0] stops at offset 1 until a restart"
    )
    assert source.last_error == expected
    assert [r.getMessage() for r in caplog.records] == [f"{runner.subscription.name}: {expected}"]
