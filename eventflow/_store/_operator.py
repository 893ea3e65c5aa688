"""OperatorStore: the run store as the API, the UI and the CLI see it.

Every read query of `RunReader`, and the few actions an operator takes that
write: retry a run, replay runs matching a filter, prune old runs. The server
and the CLI talk to this class only; none of them holds a database engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._lineage import Graph
from . import _lineage, _recovery, _replay, _retention
from ._dashboard_queries import DashboardQueries
from ._reader import RunReader
from ._recovery import Sweep
from ._replay import ReplayFilter


class OperatorStore(RunReader):
    @property
    def dashboard(self) -> DashboardQueries:
        """The aggregates only the dashboard and the subscription page read."""
        return DashboardQueries(self.engine)

    async def lineage(self) -> Graph:
        """The lineage graph, written datasets' last writes read from their runs."""
        return await _lineage.refreshed(self.engine, persist=False)

    async def retry(self, run_id: str, *, full: bool = False) -> str:
        """Ask for run `run_id` (a full id) to run again, resuming it unless `full`;
        the new run's id (a worker running the flow picks it up)."""
        return await _replay.request_retry(self.engine, run_id, full=full)

    async def redelivery_of(self, run: Mapping[str, Any]) -> str | None:
        """The newest run of `run`'s event its source delivered after it, if any."""
        async with self.engine.connect() as conn:
            return await _replay.redelivery_of(conn, run)

    async def replay(
        self, matching: ReplayFilter, *, limit: int = 1000, full: bool = False
    ) -> list[str]:
        """Ask for every run matching the filter to run again, each at most once
        (records that are not runs left out: `count_not_replayed`); each resumes its
        run unless `full`."""
        return await _replay.request_replay(self.engine, matching, limit=limit, full=full)

    async def count_not_replayed(self, matching: ReplayFilter) -> int:
        """How many records matching the filter `replay` leaves out: they are not runs
        (one event of a batch run, an idempotency duplicate, a cancel signal, an event
        abandoned while it waited for a flow control), or runs whose event its source
        delivered again."""
        return await _replay.count_not_runs(self.engine, matching)

    async def count_prunable(self, before: float) -> dict[tuple[str, str], int]:
        """How many runs `prune(before)` would delete, by (flow name, state type)."""
        return await _retention.count_prunable(self.engine, before)

    async def sweep_crashed(self, lease_seconds: float) -> Sweep:
        """End the runs of workers (and batch jobs) silent for `lease_seconds` CRASHED."""
        return await _recovery.sweep_crashed(self.engine, lease_seconds, alive="")

    async def prune(self, before: float) -> int:
        """Delete finished runs created before `before` (epoch seconds); how many."""
        return await _retention.prune(self.engine, before)
