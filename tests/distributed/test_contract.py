"""The contract checker itself: it sees each kind of violation, and none in a run without faults."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventflow._store import _schema as schema
from eventflow._store._engine import make_engine
from tests._kafka import Kafka, create_topic, produce, wait_until
from tests.distributed._contract import Watcher, check_contract, install_audit, longest_gap
from tests.distributed._load import SteadyProducer
from tests.distributed._scenario import Scenario
from tests.runtime._workers import Worker

pytestmark = pytest.mark.kafka


@pytest.fixture(autouse=True)
def no_worker_outlives_its_test() -> Iterator[None]:
    yield
    Worker.kill_all()


def _run(run_id: str, state: str, offset: int, ended: float, key: str = "k") -> dict[str, object]:
    return {
        "id": run_id,
        "flow_name": "f",
        "state_type": state,
        "state_name": state.title(),
        "run_count": 1,
        "event_source": "",  # set by the caller
        "event_group": "",
        "event_partition": 0,
        "event_offset": offset,
        "event_key": key,
        "created_at": ended - 1,
        "started_at": ended - 1,
        "ended_at": ended,
        "worker_id": "w",
    }


async def test_each_violation_is_seen(kafka: Kafka, database_url: str) -> None:
    """Written by hand into a real store: a CRASHED run made COMPLETED, a double, an
    offset moved back, two runs of a key ending out of order, an event never run."""
    topic, group = f"c-{uuid.uuid4().hex[:8]}", "g"
    await create_topic(kafka.bootstrap, topic, 1)
    await produce(kafka.bootstrap, topic, [("k", b"{}")] * 4)
    await install_audit(database_url)
    watcher = Watcher(database_url, offset_interval=0.05, runs_interval=0.05)
    watcher.start()
    t = time.time()
    runs = [
        _run("a", "CRASHED", 0, t),
        _run("b", "COMPLETED", 0, t + 1),
        _run("c", "COMPLETED", 1, t + 5),
        _run("d", "COMPLETED", 1, t + 2),  # offset 1 twice
        _run("e", "COMPLETED", 2, t + 3),  # ends before offsets 0 and 1: an inversion
    ]
    engine = make_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                schema.flow_runs.insert(),
                [{**r, "event_source": topic, "event_group": group} for r in runs],
            )
            await conn.execute(
                schema.consumer_offsets.insert(),
                {
                    "group_id": group,
                    "topic": topic,
                    "partition": 0,
                    "next_offset": 3,
                    "updated_at": t,
                },
            )
        await _wait_polled(watcher)
        async with engine.begin() as conn:
            await conn.execute(
                schema.flow_runs.update()
                .where(schema.flow_runs.c.id == "a")
                .values(state_type="COMPLETED", ended_at=t + 9)
            )
            await conn.execute(schema.consumer_offsets.update().values(next_offset=1))
        await _wait_polled(watcher)
    finally:
        await engine.dispose()
    await watcher.stop()
    report = await check_contract(database_url, kafka.bootstrap, topic, group, watcher)
    lines = report.violations()
    assert [line.split(":")[0] for line in lines[:4]] == ["line 1", "line 2", "line 3", "line 4"]
    # the trigger and the watcher both saw the rewrite and the move back
    assert len(report.final_rewritten) == len(report.seen_final_changes) == 1
    assert len(report.offsets_backwards) == len(report.seen_offsets_backwards) == 1
    assert set(report.completed_twice) == {(0, 0), (0, 1)}  # "a" became a second COMPLETED
    assert report.missing == [(0, 3)]
    # offsets 1 and 2 ended before offset 0's late COMPLETED run, offset 2 before offset 1's c
    assert sorted(i.split(": ")[1] for i in report.order_inversions) == [
        "offset 1 ended 4.00s before offset 0",
        "offset 1 ended 7.00s before offset 0",
        "offset 2 ended 6.00s before offset 0",
    ]


async def _wait_polled(watcher: Watcher) -> None:
    polls = watcher.polls
    await wait_until(lambda: watcher.polls >= polls + 3, timeout=20, interval=0.02)


def test_longest_gap() -> None:
    assert longest_gap([3.0, 4.0, 9.0, 20.0], 0.0, 10.0) == 5.0
    assert longest_gap([], 0.0, 10.0) == 10.0


def test_longest_stall() -> None:
    watcher = Watcher("sqlite+aiosqlite:///unused.db")
    counts = {0: 5, 1: 6, 2: 6, 3: 6, 7: 9, 8: 9, 9: 9, 12: 9, 13: 10}
    watcher.completed_timeline = [(float(t), n) for t, n in counts.items()]
    assert watcher.longest_stall(1.5, 13.0) == 6.0  # 7 -> 13: nothing new stored
    assert watcher.longest_stall(1.5, 10.0) == 5.5  # 1.5 -> 7
    assert watcher.longest_stall(0.5, 3.0) == 2.0  # 1 -> 3 (the window's end)


@pytest.mark.slow(60)
@pytest.mark.timeout(300)
async def test_without_faults_the_contract_holds(
    kafka: Kafka, database_url: str, tmp_path: Path
) -> None:
    """Two workers started together, no fault: the checker finds nothing.

    Before fencing (499d236) this passed 4 times in 5: once (SQLite) the group's first
    rebalance gave a worker back a partition it had been running, at the stored offset 16,
    while its run of offset 30 had just ended but was not stored yet, and offset 30 ran
    again. The new claim of the partition now refuses that late write."""
    scenario = await Scenario.create(kafka.bootstrap, database_url, tmp_path)
    for name in ("a", "b"):
        scenario.start_worker(name)
    producer = SteadyProducer(kafka.bootstrap, scenario.topic, total=1200, rate=60)
    producer.start()
    await producer.wait(timeout=120)
    await scenario.wait_done(producer.sent, timeout=120)
    report = await scenario.finish()
    print(report.summary())
    report.assert_holds()
    assert report.key_overlaps == 0
