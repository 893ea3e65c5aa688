"""Every query the API, UI, CLI, replay, retention and recovery send stays indexed.

A PostgreSQL store of 1,000,000 flow runs and 2,000,000 task runs (made with
`generate_series`, in seconds) is queried through the real functions; each SQL
statement they send is captured and EXPLAINed with its parameters: none may
read flow_runs or task_runs with a sequential scan, but the flows page's counts
by flow and state over all runs, which read every row whatever the plan.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from eventflow._store._dashboard_queries import DashboardQueries
from eventflow._store._engine import make_engine
from eventflow._store._idempotency import _completed_at
from eventflow._store._migrate import upgrade
from eventflow._store._reader import RunFilter, RunReader
from eventflow._store._recovery import (
    finished_event_ids,
    finished_events,
    load_offsets,
    sweep_crashed,
)
from eventflow._store._replay import (
    ReplayFilter,
    claim_replays,
    count_not_runs,
    request_replay,
    request_retry,
)
from eventflow._store._results import run_results, unfinished_event_runs, unfinished_runs
from eventflow._store._retention import prune
from tests._services import Postgres

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(300)]

RUNS = 1_000_000
NOW = time.time()

# One flow takes most runs, one is rare; 97% COMPLETED, the rest FAILED,
# CRASHED, CANCELLED or in flight; 5% from an unpartitioned (HTTP) source;
# ids laid out like eventflow's (time first, then random hex).
FILL = f"""
SET maintenance_work_mem = '128MB';
-- built once after the fill (sorted) rather than row by row: several times faster
CREATE TEMP TABLE saved_indexes AS SELECT indexname, indexdef FROM pg_indexes
WHERE tablename IN ('flow_runs', 'task_runs') AND indexname NOT LIKE '%pkey';
DO $$ DECLARE r record; BEGIN
    FOR r IN SELECT indexname FROM saved_indexes LOOP
        EXECUTE 'DROP INDEX ' || r.indexname;
    END LOOP;
END $$;
INSERT INTO flows (name, version, created_at)
SELECT 'flow-' || f, NULL, now() FROM generate_series(0, 9) AS f;
INSERT INTO flows (name, version, created_at) VALUES ('rare', NULL, now());
INSERT INTO flow_runs (
    id, flow_name, name, state_type, state_name, parameters, result, error, run_count,
    worker_id, event_source, event_partition, event_offset, event_id, event_key,
    event_payload, event_time, created_at, started_at, ended_at, retry_of
)
SELECT
    lpad(to_hex(i), 12, '0') || substr(md5(i::text), 1, 20),
    CASE WHEN i % 100000 = 7 THEN 'rare' WHEN i % 10 < 7 THEN 'flow-0' ELSE 'flow-' || (i % 10) END,
    NULL,
    s.state, initcap(s.state), NULL, '2', NULL, 1,
    'w-' || (i % 8),
    CASE WHEN i % 20 = 0 THEN 'http://orders' ELSE 'orders' END,
    CASE WHEN i % 20 = 0 THEN NULL ELSE i % 8 END,
    CASE WHEN i % 20 = 0 THEN NULL ELSE i / 8 END,
    CASE WHEN i % 20 = 0 THEN 'http-' || i ELSE 'orders/' || (i % 8) || '/' || (i / 8) END,
    'c-' || (i % 1000),
    convert_to('{{"id":"o-' || i || '","customer_id":"c-' || (i % 1000) || '"}}', 'UTF8'),
    to_timestamp({NOW} - ({RUNS} - i) * 2.5 - 1),
    to_timestamp({NOW} - ({RUNS} - i) * 2.5),
    to_timestamp({NOW} - ({RUNS} - i) * 2.5),
    CASE WHEN s.state IN ('PENDING', 'RUNNING', 'RETRYING') THEN NULL
         ELSE to_timestamp({NOW} - ({RUNS} - i) * 2.5 + 0.01) END,
    NULL
FROM generate_series(1, {RUNS}) AS i,
LATERAL (SELECT CASE
    WHEN i % 1000 < 970 THEN 'COMPLETED'
    WHEN i % 1000 < 990 THEN 'FAILED'
    WHEN i % 1000 < 995 THEN 'CRASHED'
    WHEN i % 1000 < 998 THEN 'CANCELLED'
    WHEN i % 1000 < 999 THEN 'RETRYING'
    ELSE 'RUNNING' END AS state) AS s;
INSERT INTO task_runs (
    id, flow_run_id, task_name, name, state_type, state_name, run_count, created_at,
    started_at, ended_at
)
SELECT
    lpad(to_hex(r.i), 12, '0') || substr(md5(r.i::text || t.name), 1, 20),
    lpad(to_hex(r.i), 12, '0') || substr(md5(r.i::text), 1, 20),
    t.name, t.name || '-0', 'COMPLETED', 'Completed', 1,
    to_timestamp({NOW} - ({RUNS} - r.i) * 2.5),
    to_timestamp({NOW} - ({RUNS} - r.i) * 2.5),
    to_timestamp({NOW} - ({RUNS} - r.i) * 2.5 + 0.005)
FROM generate_series(1, {RUNS}) AS r(i), (VALUES ('fetch'), ('store')) AS t(name);
INSERT INTO workers (id, hostname, pid, started_at, heartbeat_at, stopped_at)
SELECT 'w-' || w, 'host', w, now(), CASE WHEN w = 7 THEN now() - interval '1 hour' ELSE now() END,
       NULL
FROM generate_series(0, 7) AS w;
INSERT INTO consumer_offsets (group_id, topic, partition, next_offset, updated_at)
SELECT 'g', 'orders', p, {RUNS} / 8, now() FROM generate_series(0, 7) AS p;
DO $$ DECLARE r record; BEGIN
    FOR r IN SELECT indexdef FROM saved_indexes LOOP EXECUTE r.indexdef; END LOOP;
END $$;
"""


@pytest.fixture(scope="module")
def big_store(postgres: Postgres) -> str:
    url = postgres.create_database()
    upgrade(url)
    # psql, one script: the server makes the rows, nothing crosses a driver
    subprocess.run(
        [
            "psql",
            "-h",
            "127.0.0.1",
            "-p",
            str(postgres.port),
            "-U",
            "postgres",
            "-d",
            url.rsplit("/", 1)[1],
            "-v",
            "ON_ERROR_STOP=1",
            "-q",
            "-f",
            "-",
        ],
        input=FILL + "VACUUM ANALYZE flow_runs; VACUUM ANALYZE task_runs;",
        text=True,
        check=True,
        capture_output=True,
        timeout=240,
    )
    return url


class Capture:
    """The statements an engine sends, with their parameters."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.statements: list[tuple[str, Any]] = []
        sa.event.listen(engine.sync_engine, "before_cursor_execute", self._record)

    def _record(self, _conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE", "INSERT", "WITH")):
            self.statements.append((statement, parameters))


@pytest.fixture
async def engine(big_store: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(big_store)
    try:
        yield engine
    finally:
        await engine.dispose()


def seq_scans(plan: dict[str, Any]) -> list[str]:
    found = []
    if plan.get("Node Type") == "Seq Scan" and plan.get("Relation Name") in (
        "flow_runs",
        "task_runs",
    ):
        found.append(plan["Relation Name"])
    for child in plan.get("Plans", []):
        found.extend(seq_scans(child))
    return found


async def explain(engine: AsyncEngine, statements: list[tuple[str, Any]]) -> dict[str, str]:
    """Each statement that scans a run table sequentially, with its plan."""
    bad: dict[str, str] = {}
    async with engine.connect() as conn:
        for statement, parameters in statements:
            result = await conn.exec_driver_sql(
                "EXPLAIN (FORMAT JSON) " + statement, parameters or ()
            )
            raw = result.scalar_one()
            plan = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]
            if seq_scans(plan):
                text = await conn.exec_driver_sql("EXPLAIN " + statement, parameters or ())
                bad[statement] = "\n".join(row[0] for row in text.all())
    return bad


@pytest.mark.slow(75)
async def test_no_query_scans_a_run_table_sequentially(engine: AsyncEngine, big_store: str) -> None:
    capture = Capture(engine)
    reader = RunReader(big_store)
    reader._engine = engine  # the same engine, so its statements are captured
    now = datetime.fromtimestamp(NOW, UTC)
    hour_ago = now - timedelta(hours=1)
    some_id = (await reader.list_flow_runs(limit=1))[0]["id"]
    failed_id = (await reader.list_flow_runs(RunFilter(state="FAILED"), limit=1))[0]["id"]

    # the API, UI and CLI (the flows page's counts, over every run, are below)
    for matching in (
        RunFilter(),
        RunFilter(flow="flow-3"),
        RunFilter(flow="rare"),
        RunFilter(state="FAILED"),
        RunFilter(state="COMPLETED"),
        RunFilter(state="RUNNING"),
        RunFilter(event_key="c-42"),
        RunFilter(since=hour_ago, until=now),
        RunFilter(flow="flow-0", state="CRASHED", since=hour_ago),
    ):
        await reader.list_flow_runs(matching, limit=50, offset=50)
        await reader.count_flow_runs(matching)
        if matching.state is None:
            await reader.count_flow_runs_by_state(matching)
    await reader.get_flow_run(some_id)
    await reader.get_flow_run(some_id[:16])
    await reader.get_flow_run(some_id[-8:])
    await reader.last_runs()
    await reader.final_state_histogram(flow=None, since=hour_ago, until=now, bucket_seconds=60)
    await reader.final_state_histogram(flow="flow-0", since=hour_ago, until=now, bucket_seconds=60)
    await reader.list_workers()
    await reader.list_source_status(alive_since=hour_ago)
    await reader.list_replays(failed_id)
    await reader.run_inputs([some_id, failed_id])
    # the dashboard and the subscription page
    dashboard = DashboardQueries(engine)
    await dashboard.created_histogram_by_flow(since=hour_ago, until=now, bucket_seconds=60)
    await dashboard.count_active_runs()
    await dashboard.newest_durations(since=hour_ago, until=now, limit=20_000)
    await dashboard.events_by_source(since=hour_ago, until=now)
    await dashboard.subscription_status("kafka:orders->flow-0")
    await dashboard.events_histogram(
        streams=["orders"], flow="flow-0", since=hour_ago, until=now, bucket_seconds=60
    )
    await dashboard.failed_events(streams=["orders"], flow="flow-0", limit=10)
    # replay
    await request_retry(engine, failed_id)
    await request_replay(engine, ReplayFilter(flow_name="flow-3"), limit=5)
    await count_not_runs(engine, ReplayFilter(flow_name="flow-0"))
    await count_not_runs(engine, ReplayFilter())  # the CLI's default: every failed or crashed run
    await claim_replays(engine, ["flow-3", "flow-0"], "w-0", limit=5)
    # recovery and deduplication
    await load_offsets(engine, "g", [("orders", p) for p in range(8)])
    await finished_events(engine, "flow-0", "orders", 3, RUNS // 8 - 1000)
    await finished_event_ids(engine, "flow-0", ["http-20", "http-40"])
    await sweep_crashed(engine, 60, "w-0")
    # durable steps: the runs to resume at assignment, a retry's kept results
    await unfinished_runs(engine, "flow-0", "orders", 3, RUNS // 8 - 1000)
    await unfinished_event_runs(engine, "flow-0", ["http-20", "http-40"])
    await run_results(engine, failed_id)
    async with engine.connect() as conn:
        await _completed_at(conn, some_id)
    # retention (a cutoff before every run: the queries run, nothing goes)
    await prune(engine, NOW - RUNS * 3)

    statements = list(capture.statements)
    assert len(statements) > 40
    assert await explain(engine, statements) == {}

    # the one exemption: the flows page's counts by flow and state read every run
    # whatever the plan (the planner picks a parallel sequential scan or an
    # index-only scan of ix_flow_runs_flow_created by cost; both have been seen here)
    capture.statements.clear()
    await reader.list_flows()
    assert [s for s, _ in capture.statements if "flow_runs" in s] == [
        "SELECT flow_runs.flow_name, flow_runs.state_type, count(*) AS count, "
        "max(flow_runs.created_at) AS last_run_at \nFROM flow_runs "
        "GROUP BY flow_runs.flow_name, flow_runs.state_type"
    ]

    # the CLI's default bulk replay, of every flow: it finds runs, whose requests it
    # inserts (an executemany, which EXPLAIN cannot take: only its SELECT is explained)
    capture.statements.clear()
    assert len(await request_replay(engine, ReplayFilter(), limit=5)) == 5
    selects = [(s, p) for s, p in capture.statements if s.lstrip().startswith("SELECT")]
    assert len(selects) == 1 and await explain(engine, selects) == {}
