"""`eventflow server` sweeps too: with no worker on the store, the runs of a worker or
batch job that died end CRASHED within the lease (they stayed RUNNING for ever)."""

from __future__ import annotations

import asyncio
import time

from eventflow._server import create_app
from eventflow._store._migrate import upgrade
from eventflow._store._writer import RunWriter
from tests._kafka import wait_until
from tests._store import flow_runs
from tests.server._serve import serve
from tests.store.test_writer import flow_run


async def test_the_server_ends_a_dead_processs_runs_crashed(database_url: str) -> None:
    await asyncio.to_thread(upgrade, database_url)
    writer = RunWriter(database_url)
    await asyncio.to_thread(writer.start)
    now = time.time()
    for worker_id, heartbeat in (("alive", now + 3600), ("dead", now)):
        writer.put_worker(
            {
                "id": worker_id,
                "hostname": "h",
                "pid": 1,
                "started_at": now,
                "heartbeat_at": heartbeat,
                "stopped_at": None,
            }
        )
        writer.put_flow_run(flow_run(f"run-of-{worker_id}", "RUNNING", worker_id=worker_id))
    await writer.flush()
    await asyncio.to_thread(writer.close)
    app = create_app(database_url, worker_lease=0.5, sweep=True)
    with serve(app):
        (crashed,) = await wait_until(
            lambda: flow_runs(database_url, state_type="CRASHED"), timeout=30
        )
    assert crashed["id"] == "run-of-dead"
    (running,) = await flow_runs(database_url, state_type="RUNNING")
    assert running["id"] == "run-of-alive"
