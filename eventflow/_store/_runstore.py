"""RunStore: what the runtime reads from the run store, and its leases.

The runtime writes through `RunWriter` (batched, in its own thread or
process); everything it asks of the store otherwise goes through a
`RunStore`, so no runtime signature carries a database engine. `SqlRunStore`
is the one implementation, over SQLite or PostgreSQL.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from .._partition import Partition
from .._resume import Resume
from . import (
    _checkpoints,
    _fences,
    _idempotency,
    _leases,
    _recovery,
    _replay,
    _results,
    _retention,
)
from ._engine import make_engine
from ._idempotency import COMPLETED, RELEASED, Claim, stored_key
from ._recovery import CrashedRun, FinishedRun, Sweep

__all__ = [
    "COMPLETED",
    "RELEASED",
    "Claim",
    "CrashedRun",
    "FinishedRun",
    "RunStore",
    "SqlRunStore",
    "Sweep",
    "stored_key",
]


class RunStore(ABC):
    """The run store as the runtime sees it (reads, claims, leases, housekeeping)."""

    @abstractmethod
    async def register_worker(self, row: Mapping[str, Any]) -> int:
        """Write a worker's row as alive and claim its lease; the lease's fencing epoch."""

    @abstractmethod
    async def revive_worker(self, row: Mapping[str, Any]) -> tuple[int, list[CrashedRun]]:
        """A worker that lost its lease claims it anew: its runs in flight end CRASHED,
        its fences move on; the new epoch and the runs ended."""

    @abstractmethod
    async def claim_partitions(
        self, flow_name: str, group: str, partitions: Sequence[Partition], holder: str
    ) -> tuple[dict[Partition, int], list[CrashedRun]]:
        """Claim a group's partitions (fencing out their earlier holder, whose runs in
        flight there end CRASHED); the new epochs and the runs ended."""

    @abstractmethod
    async def read_fences(self, scopes: Sequence[str]) -> dict[str, tuple[int, str | None]]:
        """Each fence's current epoch and holder (None: released by the crash sweep)."""

    @abstractmethod
    async def load_offsets(
        self, group_id: str, partitions: Sequence[Partition]
    ) -> dict[Partition, int]:
        """The next offsets stored for `group_id`, for those of `partitions` that have one."""

    @abstractmethod
    async def finished_events(
        self, flow_name: str, partition: Partition, from_offset: int, group: str | None
    ) -> dict[int, FinishedRun]:
        """Events of `partition` at or after `from_offset` whose run (read by consumer
        group `group`) already ended."""

    @abstractmethod
    async def unfinished_runs(
        self, flow_name: str, partition: Partition, from_offset: int, group: str | None
    ) -> dict[int, Resume]:
        """Events of `partition` at or after `from_offset` whose run did not end, with
        the task results a redelivery of each may reuse."""

    @abstractmethod
    async def run_results(self, run_id: str) -> Resume:
        """The task results run `run_id` kept (what a retry of it reuses)."""

    @abstractmethod
    async def finished_event_ids(
        self, flow_name: str, event_ids: Sequence[str]
    ) -> dict[str, FinishedRun]:
        """Of `event_ids` (unpartitioned sources), those whose run already ended."""

    @abstractmethod
    async def unfinished_event_runs(
        self, flow_name: str, event_ids: Sequence[str]
    ) -> dict[str, Resume]:
        """Of `event_ids` (unpartitioned sources), those whose run did not end, with the
        task results a redelivery of each may reuse."""

    @abstractmethod
    async def claim_keys(
        self,
        flow_name: str,
        requests: Sequence[tuple[str, str]],
        worker_id: str,
        window_seconds: float,
    ) -> dict[str, Claim]:
        """Claim each `(idempotency key, run id)` at once; the outcome by run id."""

    @abstractmethod
    async def acquire_lease(self, name: str, holder: str, ttl: float) -> bool:
        """Take or renew lease `name` for `ttl` seconds; True while `holder` holds it."""

    @abstractmethod
    async def release_lease(self, name: str, holder: str) -> None:
        """Give lease `name` up, if `holder` holds it."""

    @abstractmethod
    async def read_checkpoint(self, subscription: str) -> str | None:
        """What an unpartitioned source of `subscription` saved last."""

    @abstractmethod
    async def sweep_crashed(self, lease_seconds: float, alive: str) -> Sweep:
        """Mark the in-flight runs of workers silent for `lease_seconds` CRASHED."""

    @abstractmethod
    async def claim_replays(
        self, flow_names: Sequence[str], worker_id: str, limit: int
    ) -> list[dict[str, Any]]:
        """Replay requests of `flow_names` this worker now owns."""

    @abstractmethod
    async def prune(self, before: float) -> int:
        """Delete runs that ended before `before`; how many."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections."""


class SqlRunStore(RunStore):
    """The run store in SQLite or PostgreSQL, through SQLAlchemy."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @classmethod
    def open(cls, url: str) -> SqlRunStore:
        return cls(make_engine(url))

    async def register_worker(self, row: Mapping[str, Any]) -> int:
        async with self.engine.begin() as conn:
            return await _fences.register_worker(conn, row)

    async def revive_worker(self, row: Mapping[str, Any]) -> tuple[int, list[CrashedRun]]:
        return await _recovery.revive_worker(self.engine, row)

    async def claim_partitions(
        self, flow_name: str, group: str, partitions: Sequence[Partition], holder: str
    ) -> tuple[dict[Partition, int], list[CrashedRun]]:
        return await _recovery.claim_partitions(self.engine, flow_name, group, partitions, holder)

    async def read_fences(self, scopes: Sequence[str]) -> dict[str, tuple[int, str | None]]:
        async with self.engine.connect() as conn:
            return await _fences.read(conn, scopes)

    async def load_offsets(
        self, group_id: str, partitions: Sequence[Partition]
    ) -> dict[Partition, int]:
        return await _recovery.load_offsets(self.engine, group_id, partitions)

    async def finished_events(
        self, flow_name: str, partition: Partition, from_offset: int, group: str | None
    ) -> dict[int, FinishedRun]:
        stream, number = partition
        return await _recovery.finished_events(
            self.engine, flow_name, stream, number, from_offset, group
        )

    async def unfinished_runs(
        self, flow_name: str, partition: Partition, from_offset: int, group: str | None
    ) -> dict[int, Resume]:
        stream, number = partition
        return await _results.unfinished_runs(
            self.engine, flow_name, stream, number, from_offset, group
        )

    async def run_results(self, run_id: str) -> Resume:
        return await _results.run_results(self.engine, run_id)

    async def finished_event_ids(
        self, flow_name: str, event_ids: Sequence[str]
    ) -> dict[str, FinishedRun]:
        return await _recovery.finished_event_ids(self.engine, flow_name, event_ids)

    async def unfinished_event_runs(
        self, flow_name: str, event_ids: Sequence[str]
    ) -> dict[str, Resume]:
        return await _results.unfinished_event_runs(self.engine, flow_name, event_ids)

    async def claim_keys(
        self,
        flow_name: str,
        requests: Sequence[tuple[str, str]],
        worker_id: str,
        window_seconds: float,
    ) -> dict[str, Claim]:
        return await _idempotency.claim_keys(
            self.engine, flow_name, requests, worker_id, window_seconds
        )

    async def acquire_lease(self, name: str, holder: str, ttl: float) -> bool:
        return await _leases.acquire_lease(self.engine, name, holder, ttl)

    async def release_lease(self, name: str, holder: str) -> None:
        await _leases.release_lease(self.engine, name, holder)

    async def read_checkpoint(self, subscription: str) -> str | None:
        return await _checkpoints.read_checkpoint(self.engine, subscription)

    async def sweep_crashed(self, lease_seconds: float, alive: str) -> Sweep:
        return await _recovery.sweep_crashed(self.engine, lease_seconds, alive)

    async def claim_replays(
        self, flow_names: Sequence[str], worker_id: str, limit: int
    ) -> list[dict[str, Any]]:
        return await _replay.claim_replays(self.engine, flow_names, worker_id, limit=limit)

    async def prune(self, before: float) -> int:
        return await _retention.prune(self.engine, before)

    async def close(self) -> None:
        await self.engine.dispose()
