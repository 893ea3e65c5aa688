"""A real Prometheus server scrapes `eventflow run --workers 2` and sees both workers' counts."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests._kafka import Kafka, create_topic, free_port_pair, produce
from tests._prometheus import Prometheus
from tests.runtime._workers import Worker

pytestmark = pytest.mark.kafka


@pytest.fixture(autouse=True)
def no_worker_outlives_its_test() -> Iterator[None]:
    yield
    Worker.kill_all()


async def test_prometheus_scrapes_the_summed_metrics_of_all_workers(
    kafka: Kafka, sqlite_url: str, tmp_path: Path
) -> None:
    topic, group = f"m-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    await create_topic(kafka.bootstrap, topic, partitions=4)
    total = 600
    await produce(
        kafka.bootstrap,
        topic,
        [
            (f"c{i % 20}", orjson.dumps({"id": f"o{i}", "customer_id": f"c{i % 20}", "amount": i}))
            for i in range(total)
        ]
        + [("c0", b"not json")],
    )
    port = free_port_pair()
    env = {
        "EVENTFLOW_DATABASE_URL": sqlite_url,
        "EVENTFLOW_METRICS_PORT": str(port),
        "EVENTFLOW_WORKER_LEASE": "3",
        "EVENTFLOW_COMMIT_INTERVAL": "0.2",
        "BOOTSTRAP": kafka.bootstrap,
        "TOPIC": topic,
        "GROUP": group,
        "WORK_SECONDS": "0.005",
    }
    supervisor = Worker(env, tmp_path / "workers.log", "--workers", "2")
    server = await asyncio.to_thread(
        Prometheus.start_new, scrape_targets=[f"127.0.0.1:{port}"], scrape_interval="1s"
    )
    try:
        completed = 'eventflow_flow_runs_total{flow="worker-orders",state="COMPLETED"}'
        await asyncio.to_thread(server.wait_for, f"sum({completed}) == {total}", 120)
        received = await asyncio.to_thread(
            server.query,
            f'sum(eventflow_events_received_total{{subscription="kafka:{topic}->worker-orders"}})',
        )
        assert float(received[0]["value"][1]) == total + 1
        failed = await asyncio.to_thread(
            server.query, 'eventflow_flow_runs_total{flow="worker-orders",state="FAILED"}'
        )
        assert [float(r["value"][1]) for r in failed] == [1.0]  # the poison message
        tasks = await asyncio.to_thread(
            server.query, 'sum by (task) (eventflow_task_runs_total{state="COMPLETED"})'
        )
        assert {r["metric"]["task"]: float(r["value"][1]) for r in tasks} == {
            "enrich": total,
            "load": total,
        }
        histogram = await asyncio.to_thread(
            server.query, 'eventflow_flow_run_duration_seconds_count{flow="worker-orders"}'
        )
        assert float(histogram[0]["value"][1]) == total
        partitions = await asyncio.to_thread(
            server.query, f'eventflow_consumer_lag{{topic="{topic}"}}'
        )
        assert sorted(r["metric"]["partition"] for r in partitions) == ["0", "1", "2", "3"]
        assert all(float(r["value"][1]) == 0 for r in partitions)  # caught up
        up = await asyncio.to_thread(server.query, "eventflow_store_up")
        assert [float(r["value"][1]) for r in up] == [1.0]
    finally:
        await asyncio.to_thread(server.stop)
        assert supervisor.terminate() == 0
    log = (tmp_path / "workers.log").read_text()
    assert log.count("started: 1 subscription(s)") == 2
