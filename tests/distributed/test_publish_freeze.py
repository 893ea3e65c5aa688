"""A worker frozen past its claims while its flows publish (issues 21 and 23): what it
completes after waking is refused with its runs, so it publishes nothing for the events
it lost, and every completed event's message is in the topic once, in key order."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from eventflow._store import _schema as schema
from tests._kafka import Kafka, consume_to_end, create_topic, wait_until
from tests._services import Postgres
from tests._store import flow_runs, rows
from tests.distributed._scenario import Scenario
from tests.distributed.test_freeze import freeze_one_of
from tests.runtime._workers import Worker
from tests.runtime.test_publish import assert_exactly_once_in_key_order, published

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(420)]


@pytest.fixture(autouse=True)
def no_worker_outlives_its_test() -> Iterator[None]:
    yield
    Worker.kill_all()


@pytest.mark.postgres
@pytest.mark.slow(150)
async def test_a_frozen_worker_publishes_nothing_for_the_events_it_lost(
    kafka: Kafka, postgres: Postgres, tmp_path: Path
) -> None:
    url = postgres.create_database()
    out_topic = f"fenced-out-{uuid.uuid4().hex[:8]}"
    await create_topic(kafka.bootstrap, out_topic, 4)
    scenario = await Scenario.create(kafka.bootstrap, url, tmp_path, OUT_TOPIC=out_topic)
    await freeze_one_of(scenario, workers=2, total=2000, rate=50)
    # every message stored is published before the workers stop
    await wait_until(lambda: _all_published(url), timeout=60, interval=0.5)
    report = await scenario.finish()
    report.assert_holds()
    runs = await flow_runs(url, state_type="COMPLETED")
    ids = {orjson.loads(r["event_payload"])["id"] for r in runs}
    messages = published(await consume_to_end(kafka.bootstrap, out_topic))
    assert_exactly_once_in_key_order(messages, {(i, 0) for i in ids})


async def _all_published(url: str) -> bool:
    return all(r["published_at"] is not None for r in await rows(url, schema.outbox))
