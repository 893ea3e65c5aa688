"""Schedules in a running App: every tick one run, once, across restarts and workers."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from connectors.schedule import CatchUp, IntervalSchedule
from eventflow import App, Flow, Settings, flow
from eventflow._store import _schema as schema
from eventflow._store._engine import make_engine
from eventflow._store._migrate import upgrade
from tests._kafka import wait_until
from tests._services import ROOT
from tests._store import flow_runs, rows

TICK = 0.2
EVENTFLOW = str(Path(sys.executable).with_name("eventflow"))


def settings(url: str) -> Settings:
    return Settings(database_url=url, flush_interval=0.02, commit_interval=0.2, worker_lease=3)


def tick_flow() -> Flow[Any, Any]:
    @flow(name="on-tick")
    async def on_tick(scheduled_at: datetime) -> str:
        return scheduled_at.isoformat()

    return on_tick


def app_with(url: str, name: str, catchup: CatchUp = "latest") -> tuple[App, IntervalSchedule]:
    schedule = IntervalSchedule(TICK, name=name, catchup=catchup, lease_ttl=1.0)
    app = App(settings(url))
    app.subscribe(schedule, tick_flow())
    return app, schedule


class Serving:
    """An App served in this event loop until `stop()`."""

    def __init__(self, app: App) -> None:
        self.app = app
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> Serving:
        self._task = asyncio.create_task(self.app.serve(self._stop))
        await asyncio.wait_for(self.app.started.wait(), 60)
        return self

    async def stop(self) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task


async def completed(url: str) -> list[dict[str, Any]]:
    runs = await flow_runs(url, state_type="COMPLETED")
    return sorted(runs, key=lambda r: r["event_offset"])


async def test_an_interval_schedule_fires_consecutive_ticks_with_their_time(
    sqlite_url: str,
) -> None:
    name = f"s-{uuid.uuid4().hex[:6]}"
    app, schedule = app_with(sqlite_url, name, catchup="all")
    serving = await Serving(app).start()
    await wait_until(lambda: app.runners[0].stats.completed >= 6, timeout=30)
    await serving.stop()

    runs = await completed(sqlite_url)
    offsets = [r["event_offset"] for r in runs]
    assert len(runs) >= 6
    assert offsets == list(range(offsets[0], offsets[0] + len(offsets)))  # every tick, in turn
    for run in runs:
        assert run["event_source"] == f"schedule:{name}"
        assert run["event_partition"] == 0
        # the flow took the tick's time as its parameter and returned it
        assert run["result"] == f'"{schedule.tick_time(run["event_offset"]).isoformat()}"'
        assert abs(run["started_at"].timestamp() - run["event_time"].timestamp()) < 5
    (stored,) = await rows(sqlite_url, schema.consumer_offsets)
    assert (stored["group_id"], stored["topic"]) == (f"schedule:{name}", f"schedule:{name}")
    assert stored["next_offset"] == offsets[-1] + 1  # committed with the runs


async def restarted(url: str, catchup: CatchUp) -> tuple[list[int], list[int]]:
    """Run an App, stop it, let ticks pass, run another on the same store; each one's offsets."""
    name = f"s-{uuid.uuid4().hex[:6]}"
    first, schedule = app_with(url, name, catchup)
    serving = await Serving(first).start()
    await wait_until(lambda: first.runners[0].stats.completed >= 3, timeout=30)
    await serving.stop()
    before = [r["event_offset"] for r in await completed(url)]
    stopped_at = time.time()
    await wait_until(lambda: time.time() > stopped_at + 4 * TICK, timeout=5, interval=0.05)

    second, _ = app_with(url, name, catchup)
    serving = await Serving(second).start()
    await wait_until(lambda: second.runners[0].stats.completed >= 3, timeout=30)
    await serving.stop()
    after = [r["event_offset"] for r in await completed(url) if r["event_offset"] > before[-1]]
    assert schedule.tick_time(before[-1]).timestamp() <= stopped_at
    return before, after


async def test_a_restart_runs_no_tick_twice_and_only_the_latest_missed_tick(
    sqlite_url: str,
) -> None:
    before, after = await restarted(sqlite_url, "latest")
    runs = await flow_runs(sqlite_url)
    assert not [o for o, n in Counter(r["event_offset"] for r in runs).items() if n > 1]
    assert {r["state_type"] for r in runs} == {"COMPLETED"}
    # at least four ticks passed while no worker ran; only the latest of them ran
    skipped = after[0] - before[-1] - 1
    assert skipped >= 3
    assert after == list(range(after[0], after[0] + len(after)))


async def test_catchup_all_runs_every_missed_tick_after_a_restart(sqlite_url: str) -> None:
    before, after = await restarted(sqlite_url, "all")
    runs = await flow_runs(sqlite_url)
    offsets = sorted(r["event_offset"] for r in runs)
    assert len(offsets) == len(set(offsets))  # no tick twice
    assert len(after) >= 4  # the missed ticks, then the new ones
    # nothing skipped: the second App went on from the tick after the first one's last
    assert offsets == list(range(before[0], before[0] + len(offsets)))


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_two_workers_on_one_store_never_run_a_tick_twice(
    kind: str, request: pytest.FixtureRequest, sqlite_url: str
) -> None:
    url = sqlite_url if kind == "sqlite" else request.getfixturevalue("postgres").create_database()
    name = f"s-{uuid.uuid4().hex[:6]}"
    one, _ = app_with(url, name)
    two, _ = app_with(url, name)
    servers = {id(one): await Serving(one).start(), id(two): await Serving(two).start()}
    try:
        await wait_until(
            lambda: one.runners[0].stats.completed + two.runners[0].stats.completed >= 8, 30
        )
        # exactly one of them fires: the lease holder
        assert 0 in (one.runners[0].stats.received, two.runners[0].stats.received)
        holder, other = (one, two) if one.runners[0].stats.received else (two, one)
        await servers.pop(id(holder)).stop()
        # its lease lapses (no release on a graceful stop yet) and the other takes over
        await wait_until(lambda: other.runners[0].stats.completed >= 4, timeout=30)
    finally:
        for serving in servers.values():
            await serving.stop()

    runs = await flow_runs(url)
    by_offset = Counter(r["event_offset"] for r in runs)
    assert [o for o, n in by_offset.items() if n > 1] == []
    assert {r["state_type"] for r in runs} == {"COMPLETED"}
    workers = {r["worker_id"] for r in runs}
    assert workers == {holder.worker_id, other.worker_id}
    last_of_holder = max(r["event_offset"] for r in runs if r["worker_id"] == holder.worker_id)
    first_of_other = min(r["event_offset"] for r in runs if r["worker_id"] == other.worker_id)
    assert first_of_other > last_of_holder  # it took over after the holder's last tick


async def test_a_worker_that_loses_the_lease_stops_firing_until_it_gets_it_back(
    sqlite_url: str,
) -> None:
    name = f"s-{uuid.uuid4().hex[:6]}"
    app, _ = app_with(sqlite_url, name, catchup="all")
    serving = await Serving(app).start()
    stats = app.runners[0].stats
    try:
        await wait_until(lambda: stats.completed >= 3, timeout=30)
        engine = make_engine(sqlite_url)
        try:
            async with engine.begin() as conn:  # another worker of the app takes it over
                await conn.execute(
                    schema.leases.update()
                    .where(schema.leases.c.name == f"schedule:{name}")
                    .values(holder="someone-else", expires_at=time.time() + 3600)
                )
            # it renews every lease_ttl / 3 (0.33 s here), finds the lease gone, stops firing
            taken = time.time()
            await wait_until(lambda: time.time() > taken + 1.5, timeout=5, interval=0.05)
            quiet_from = stats.received
            await wait_until(lambda: time.time() > taken + 2.5, timeout=5, interval=0.05)
            assert stats.received == quiet_from
            async with engine.begin() as conn:  # the other worker stops and lets go
                await conn.execute(schema.leases.delete())
        finally:
            await engine.dispose()
        await wait_until(lambda: stats.received > quiet_from, timeout=10)
    finally:
        await serving.stop()
    runs = await flow_runs(sqlite_url)
    offsets = sorted(r["event_offset"] for r in runs)
    # catchup="all": the ticks due while it did not hold the lease ran once it had it again
    assert offsets == list(range(offsets[0], offsets[0] + len(offsets)))
    assert {r["state_type"] for r in runs} == {"COMPLETED"}


async def test_eventflow_run_with_two_workers_fires_each_tick_once(
    tmp_path: Path, sqlite_url: str
) -> None:
    await asyncio.to_thread(upgrade, sqlite_url)  # a store to poll
    env = {**os.environ, "EVENTFLOW_DATABASE_URL": sqlite_url, "EVENTFLOW_METRICS_PORT": "0"}
    log = (tmp_path / "workers.log").open("wb")
    supervisor = await asyncio.create_subprocess_exec(
        *[EVENTFLOW, "run", "tests/schedules/schedule_app.py:app", "--workers", "2"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=log,
    )
    try:

        async def ten_ticks() -> bool:
            return len(await flow_runs(sqlite_url, state_type="COMPLETED")) >= 10

        async def two_workers() -> list[dict[str, Any]]:
            found = await rows(sqlite_url, schema.workers)
            return found if len(found) >= 2 else []

        await wait_until(ten_ticks, timeout=60, interval=0.2)
        workers = await wait_until(two_workers, timeout=30)
    finally:
        supervisor.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(supervisor.wait(), 60)
        log.close()
    assert code == 0
    assert len(workers) == 2  # two worker processes were running
    runs = await flow_runs(sqlite_url)
    offsets = Counter(r["event_offset"] for r in runs)
    assert [o for o, n in offsets.items() if n > 1] == []
    assert len({r["worker_id"] for r in runs}) == 1  # the lease holder fired them all


async def test_params_mapping_adds_to_the_tick_and_a_stopped_worker_hands_over_at_once(
    sqlite_url: str,
) -> None:
    @flow(name="regional-report")
    async def report(region: str) -> str:  # takes no `scheduled_at`: that key is ignored
        return region

    name = f"s-{uuid.uuid4().hex[:6]}"

    def regional_app() -> App:
        app = App(settings(sqlite_url))
        app.subscribe(
            IntervalSchedule(TICK, name=name, lease_ttl=60.0), report, params={"region": "eu"}
        )
        return app

    first = regional_app()
    serving = await Serving(first).start()
    await wait_until(lambda: first.runners[0].stats.completed >= 2, timeout=30)
    await serving.stop()
    second = regional_app()
    serving = await Serving(second).start()
    # the lease was given back on stop: no waiting for its 60 s to run out
    await wait_until(lambda: second.runners[0].stats.completed >= 2, timeout=10)
    await serving.stop()
    runs = await flow_runs(sqlite_url, flow_name="regional-report")
    assert {r["state_type"] for r in runs} == {"COMPLETED"}
    assert {r["result"] for r in runs} == {'"eu"'}
