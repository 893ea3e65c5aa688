"""Every example, run the way its docstring says, against real servers on loopback."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client import Counter as PromCounter

from eventflow._store._migrate import upgrade
from examples.orders_api import OrdersApi
from tests._kafka import Kafka, wait_until
from tests._receiver import receiving
from tests._services import ROOT
from tests._store import flow_runs, run_detail
from tests.connectors._servers import Reply, ScriptedApp, ServerThread, replies

EVENTFLOW = str(Path(sys.executable).with_name("eventflow"))


@pytest.fixture
def orders_api() -> Iterator[tuple[OrdersApi, ServerThread]]:
    api = OrdersApi(failure_rate=0.3, retry_after=0, seed=7)
    server = ServerThread(api).start()
    try:
        yield api, server
    finally:
        server.stop()


def example_env(store: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "EVENTFLOW_DATABASE_URL": store,
        "EVENTFLOW_METRICS_PORT": "0",
        "ORDERS_WAREHOUSE": str(tmp_path / "warehouse.db"),
        **extra,
    }


def run_example(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def warehouse(tmp_path: Path, table: str) -> list[tuple[str, str, int]]:
    with sqlite3.connect(tmp_path / "warehouse.db") as db:
        return db.execute(f"SELECT id, customer_id, amount FROM {table}").fetchall()


async def test_orders_pipeline_loads_what_the_api_served_through_its_failures(
    orders_api: tuple[OrdersApi, ServerThread], sqlite_url: str, tmp_path: Path
) -> None:
    api, server = orders_api
    env = example_env(sqlite_url, tmp_path, ORDERS_API_URL=server.url)
    loaded = 0
    for _ in range(6):
        out = run_example(env, "examples/orders_pipeline.py", "20")
        assert ": Completed, " in out
        loaded += int(out.rsplit(", ", 1)[1])
    rows = warehouse(tmp_path, "pipeline_orders")
    assert len(rows) == loaded == len(api.served)
    assert {r[0] for r in rows} == set(api.served)
    assert all(0 <= amount <= 20 for _, _, amount in rows)
    runs = await flow_runs(sqlite_url, flow_name="orders-pipeline")
    assert [r["state_type"] for r in runs] == ["COMPLETED"] * 6
    assert api.failures > 0  # the retries absorbed injected 503s
    detail = await run_detail(sqlite_url, runs[0]["id"])
    assert {t["task_name"] for t in detail["task_runs"]} <= {"fetch_orders", "load_orders"}


async def test_orders_pipeline_skips_loading_when_there_are_no_orders(
    sqlite_url: str, tmp_path: Path
) -> None:
    app = ScriptedApp()
    app.route("/orders", replies(Reply(503), Reply(json={"orders": []})))
    server = ServerThread(app).start()
    try:
        env = example_env(sqlite_url, tmp_path, ORDERS_API_URL=server.url)
        assert "Completed, 0" in run_example(env, "examples/orders_pipeline.py", "20")
        invalid = run_example(env, "examples/orders_pipeline.py", "lots")
    finally:
        server.stop()
    assert "Failed" in invalid
    skipped, failed = sorted(await flow_runs(sqlite_url), key=lambda r: r["created_at"])
    detail = await run_detail(sqlite_url, skipped["id"])
    assert [(t["task_name"], t["run_count"]) for t in detail["task_runs"]] == [("fetch_orders", 2)]
    assert any("nothing to load" in log["message"] for log in detail["logs"])
    assert failed["state_type"] == "FAILED" and "max_value" in failed["error"]
    assert len(app.requests_to("/orders")) == 2  # the invalid run called nothing


@pytest.mark.slow(40)
@pytest.mark.kafka
async def test_one_worker_streams_kafka_polls_the_api_and_runs_the_schedule(
    kafka: Kafka,
    orders_api: tuple[OrdersApi, ServerThread],
    sqlite_url: str,
    tmp_path: Path,
) -> None:
    _api, server = orders_api
    env = example_env(
        sqlite_url, tmp_path, ORDERS_API_URL=server.url, EVENTFLOW_KAFKA_BOOTSTRAP=kafka.bootstrap
    )
    run_example(env, "examples/produce_orders.py", kafka.bootstrap, "300")
    upgrade(sqlite_url)  # the store exists before the test reads it
    log = (tmp_path / "worker.log").open("wb")
    worker = await asyncio.create_subprocess_exec(
        EVENTFLOW, "run", "examples/orders.py:app", cwd=ROOT, env=env, stdout=log, stderr=log
    )
    try:

        async def sources() -> Counter[str]:
            runs = await flow_runs(sqlite_url)
            return Counter(str(r["event_source"]).split(":")[0] for r in runs)

        await wait_until(
            lambda: _has(sources(), orders=300, http=3, schedule=2), timeout=120, interval=0.5
        )
    finally:
        worker.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(worker.wait(), 60) == 0
        log.close()
    runs = await flow_runs(sqlite_url)
    assert {r["state_type"] for r in runs} <= {"COMPLETED", "FAILED"}
    assert not [r for r in runs if r["state_type"] not in ("COMPLETED", "FAILED")]


async def _has(found: object, **at_least: int) -> bool:
    counts = await found  # type: ignore[misc]
    return all(counts.get(k, 0) >= n for k, n in at_least.items())


def test_prometheus_alert_scrapes_a_rate_and_notifies(sqlite_url: str, tmp_path: Path) -> None:
    registry = CollectorRegistry()
    runs = PromCounter("eventflow_flow_runs", "finished runs", ["flow", "state"], registry=registry)
    server, _thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    port = server.server_address[1]
    with receiving() as receiver:
        env = example_env(
            sqlite_url,
            tmp_path,
            METRICS_URL=f"http://127.0.0.1:{port}/metrics",
            ALERT_WEBHOOK_URL=receiver.url,
            ALERT_THRESHOLD="5",
            SCRAPE_INTERVAL="0.3",
        )
        worker = subprocess.Popen(
            [EVENTFLOW, "run", "examples/prometheus_alert.py:app"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while not receiver.bodies:
                assert time.monotonic() < deadline, "no alert arrived"
                runs.labels("payments", "FAILED").inc(50)  # ~ 500 failures/s: far over 5/s
                runs.labels("payments", "COMPLETED").inc(1000)  # filtered out by the source
                time.sleep(0.1)
        finally:
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(60) == 0
            server.shutdown()
            server.server_close()
    text = receiver.bodies[0]["text"]
    assert "flow `payments` fails" in text and "threshold 5/s" in text
    checks = asyncio.run(flow_runs(sqlite_url, flow_name="check-failure-rate"))
    results = Counter(orjson.loads(r["result"]) for r in checks if r["result"])
    assert results["alerted"] >= 1 and results["ok"] >= 1  # the first scrape has no rate


def test_backfill_example_runs_every_line_once_and_reports_bad_ones(
    sqlite_url: str, tmp_path: Path
) -> None:
    env = example_env(sqlite_url, tmp_path)
    path = tmp_path / "orders.jsonl"
    out = run_example(env, "examples/backfill_orders.py", str(path), "--create", "300")
    assert "300/300 done" in out and "297 completed, 3 failed" in out
    assert "FAILED orders.jsonl:100 " in out  # bad lines are reported with their line number
    again = run_example(env, "examples/backfill_orders.py", str(path))
    assert "300/300 done" in again and "ran 0" in again
    runs = asyncio.run(flow_runs(sqlite_url, flow_name="process-order"))
    assert len(runs) == 300
    assert Counter(r["event_offset"] for r in runs).most_common(1)[0][1] == 1


def test_the_orders_app_puts_batch_and_streaming_in_one_lineage_graph(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from eventflow._lineage import Graph
    from eventflow._runtime._lineage_loop import declared_edges

    monkeypatch.delenv("ORDERS_API_URL", raising=False)
    from examples.orders import app

    graph = Graph(datasets={}, edges=declared_edges(app.subscriptions))
    impact = graph.affected("kafka:orders")
    assert impact.flows == ("orders-report", "process-order")
    assert impact.datasets == ("table:warehouse.order_totals", "table:warehouse.orders")
