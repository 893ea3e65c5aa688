"""One fault scenario: a topic, a store with the contract's audit, workers, a watcher."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from eventflow._store._engine import make_engine
from tests._kafka import create_topic, wait_until
from tests.distributed._contract import (
    ContractReport,
    Watcher,
    check_contract,
    empty_errors,
    install_audit,
)
from tests.runtime._workers import Worker

APP = "tests/apps/fence_worker.py:app"


@dataclass
class Scenario:
    """Workers of one group on one topic and store, and what the store says about them."""

    bootstrap: str
    url: str
    topic: str
    group: str
    logs: Path
    env_extra: dict[str, str]
    watcher: Watcher
    workers: dict[str, Worker] = field(default_factory=dict)

    @classmethod
    async def create(
        cls, bootstrap: str, url: str, logs: Path, partitions: int = 8, **env: str
    ) -> Scenario:
        topic, group = f"fence-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
        await install_audit(url)
        await create_topic(bootstrap, topic, partitions)
        watcher = Watcher(url)
        watcher.start()
        return cls(bootstrap, url, topic, group, logs, env, watcher)

    def env(self) -> dict[str, str]:
        return {
            "EVENTFLOW_DATABASE_URL": self.url,
            "EVENTFLOW_WORKER_LEASE": "5",
            "EVENTFLOW_METRICS_PORT": "0",
            "EVENTFLOW_SHUTDOWN_GRACE": "10",
            "BOOTSTRAP": self.bootstrap,
            "TOPIC": self.topic,
            "GROUP": self.group,
            "SIDE_EFFECTS": str(self.logs / "side-effects.txt"),
            **self.env_extra,
        }

    def start_worker(self, name: str, prefix: Sequence[str] = ()) -> Worker:
        """Start (or restart) worker `name`, in a process group of its own."""
        worker = Worker(
            self.env(), self.logs / f"{name}.log", app=APP, prefix=prefix, new_session=True
        )
        self.workers[name] = worker
        return worker

    async def query(self, sql: str, **params: Any) -> list[Any]:
        engine = make_engine(self.url, statement_timeout=20)
        try:
            async with engine.connect() as conn:
                return list((await conn.execute(sa.text(sql), params)).all())
        finally:
            await engine.dispose()

    async def worker_id(self, worker: Worker, timeout: float = 120) -> str:
        """The id the store knows `worker` by (its row in `workers`, by pid)."""

        async def find() -> str | None:
            found = await self.query(
                "SELECT id FROM workers WHERE pid = :pid ORDER BY started_at DESC",
                pid=worker.process.pid,
            )
            return str(found[0][0]) if found else None

        result: str = await wait_until(find, timeout=timeout, interval=0.2)
        return result

    async def in_flight(self, worker_id: str) -> int:
        found = await self.query(
            "SELECT count(*) FROM flow_runs WHERE worker_id = :w"
            " AND state_type IN ('PENDING', 'RUNNING', 'RETRYING')",
            w=worker_id,
        )
        return int(found[0][0])

    async def completed_by(self, worker_id: str, since: float) -> set[int]:
        """The partitions of runs `worker_id` completed that ended after `since` (epoch s)."""
        found = await self.query(
            "SELECT DISTINCT event_partition FROM flow_runs WHERE worker_id = :w"
            " AND state_type = 'COMPLETED' AND ended_at > :since",
            w=worker_id,
            since=_timestamp(self.url, since),
        )
        return {int(r[0]) for r in found}

    async def completed_positions(self) -> int:
        found = await self.query(
            "SELECT count(*) FROM (SELECT DISTINCT event_partition, event_offset FROM flow_runs"
            " WHERE state_type = 'COMPLETED' AND event_group = :g) AS done",
            g=self.group,
        )
        return int(found[0][0])

    async def active_runs(self) -> int:
        found = await self.query(
            "SELECT count(*) FROM flow_runs WHERE state_type IN ('PENDING', 'RUNNING', 'RETRYING')"
        )
        return int(found[0][0])

    async def wait_done(self, events: int, timeout: float) -> None:
        """Until every event has a COMPLETED run and no run is in flight (sweeps done)."""

        async def done() -> bool:
            try:
                return await self.completed_positions() >= events and await self.active_runs() == 0
            except Exception:  # the store restarting
                return False

        await wait_until(done, timeout=timeout, interval=1.0)

    async def ends_by(self, worker_ids: Sequence[str]) -> list[float]:
        """When each COMPLETED run of these workers ended (epoch seconds)."""
        found = await self.query(
            "SELECT worker_id, ended_at FROM flow_runs WHERE state_type = 'COMPLETED'"
        )
        wanted = set(worker_ids)
        return [_epoch(ended) for worker, ended in found if worker in wanted]

    async def finish(self) -> ContractReport:
        """Stop every worker (SIGTERM, bounded; SIGKILL after), then check the contract."""
        for worker in self.workers.values():
            if worker.alive():
                worker.signal_group(signal.SIGCONT)
                try:
                    worker.terminate(timeout=40)
                except Exception:
                    worker.kill()
        await self.watcher.stop()
        report = await check_contract(
            self.url, self.bootstrap, self.topic, self.group, self.watcher
        )
        report.empty_errors = empty_errors(sorted(self.logs.glob("*.log")))
        return report


def _timestamp(url: str, epoch: float) -> Any:
    return epoch if url.startswith("sqlite") else datetime.fromtimestamp(epoch, UTC)


def _epoch(value: Any) -> float:
    return value.timestamp() if isinstance(value, datetime) else float(value)
