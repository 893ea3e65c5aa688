"""Resuming a run: task calls matched by position to the task runs of the run it resumes.

A task call's position is its call order in the flow run (submission order for
`submit` and `map`). When a run resumes an earlier one (a redelivered event whose
run crashed or never ended; `runs retry`), a call at a position where that run
has a COMPLETED task run of the same task, with its result kept, returns that
result without calling the function. The first position holding a different
task means the flow took another path: from there on every call runs, and one
WARNING says where. Flows must be deterministic between tasks for this to hold.
"""

from __future__ import annotations

import logging
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass

from ._partition import Partition

logger = logging.getLogger("eventflow.engine")


@dataclass(frozen=True, slots=True)
class KeptResult:
    """A COMPLETED task run of the resumed run, with its stored result (JSON)."""

    task_run_id: str
    task_name: str
    result: str


class Resume:
    """The kept results a run may reuse, by position.

    `completed` names the task of every position the old run completed, its
    result kept (in `results`) or not. Only the unbroken prefix of completed
    positions is reused: from the first call the old run did not complete on,
    everything runs again, so no later call reuses a result computed while that
    call had not given its own. `limit` is that first position; it moves back to
    where the flow takes another path. A completed call whose result was not
    kept runs again alone.
    """

    __slots__ = ("completed", "limit", "results", "run_id")

    def __init__(
        self,
        run_id: str,
        results: dict[int, KeptResult],
        completed: dict[int, str] | None = None,
    ) -> None:
        self.run_id = run_id
        self.results = results
        self.completed = (
            completed if completed is not None else {p: k.task_name for p, k in results.items()}
        )
        limit = 0
        while limit in self.completed:
            limit += 1
        self.limit = limit

    def take(self, position: int, task_name: str, flow_run_id: str) -> KeptResult | None:
        """The kept result for the call at `position`, or None: the call runs."""
        if position >= self.limit:
            return None
        before = self.completed[position]
        if before != task_name:
            self.limit = position
            logger.warning(
                "flow run %s resumes %s but took another path: task call %d is %s, where %s"
                " was before; this call and every later one run again (flows must be"
                " deterministic between tasks to resume)",
                flow_run_id,
                self.run_id,
                position,
                task_name,
                before,
            )
            return None
        return self.results.get(position)


class ResumePlans:
    """The runs a subscription's events resume, taken as each event runs.

    Partitioned events (Kafka) by offset: loaded at assignment with the finished
    events (one query per partition, a few rows: the runs in flight at the last
    owner's end), so nothing is read from the store on the hot path.
    Unpartitioned events (an HTTP poll) by event id: looked up with the events'
    ended runs as each batch is delivered.
    """

    __slots__ = ("_by_event_id", "_plans")

    def __init__(self) -> None:
        self._plans: dict[Partition, dict[int, Resume]] = {}
        self._by_event_id: dict[str, Resume] = {}

    def assign(
        self, partition: Partition, plans: Mapping[int, Resume], finished: Container[int]
    ) -> None:
        """The unfinished runs of a newly assigned partition (`RunStore.unfinished_runs`),
        but for the events that ended after all (`finished`)."""
        self._plans[partition] = {o: r for o, r in plans.items() if o not in finished}

    def revoke(self, partitions: Iterable[Partition]) -> None:
        for partition in partitions:
            self._plans.pop(partition, None)

    def hold(self, plans: Mapping[str, Resume]) -> None:
        """The unfinished runs of unpartitioned events being delivered, by event id
        (`RunStore.unfinished_event_runs`)."""
        self._by_event_id.update(plans)

    def take(
        self, stream: str | None, partition: int | None, offset: int | None, event_id: str
    ) -> Resume | None:
        """The plan of the event at this position (or with this id), once (None for
        most events)."""
        if partition is None or offset is None:
            return self._by_event_id.pop(event_id, None) if self._by_event_id else None
        plans = self._plans.get((stream or "", partition))
        return plans.pop(offset, None) if plans else None
