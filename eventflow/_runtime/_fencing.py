"""A worker's claims: its lease (`WorkerLease`) and its partitions (`PartitionFences`).

A worker's row in the store, its heartbeat, and the fence of its lease:

A worker is alive while its heartbeat is fresh; the crash sweep of any other
worker (or server) declares it dead after `EVENTFLOW_WORKER_LEASE` seconds of
silence, ends its runs in flight CRASHED and moves every fence it held
(eventflow/_store/_fences.py). The records a worker makes outside any
partition's claim (runs of unpartitioned events, replays, checkpoints, its
heartbeat) carry its lease's token, so once it is declared dead nothing it
queued is written. It then claims its lease anew (`revive`) and rejoins.

A runner claims each partition it is assigned before it reads the
partition's offsets; the runs of its events carry that claim's token.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .._errors import describe_error
from .._partition import Partition
from .._retries import Backoff
from .._store._fences import Fence, partition_scope, worker_scope
from .._store._runstore import CrashedRun, RunStore
from .._store._writer import RunWriter

logger = logging.getLogger("eventflow.runtime")

REVIVE_RETRY = Backoff(initial=0.5, maximum=5.0, jitter=0.1)


class WorkerLease:
    """One worker's identity and lease (see the module)."""

    def __init__(self, row: dict[str, Any], store: RunStore, writer: RunWriter) -> None:
        self.row = row
        self.store = store
        self.writer = writer
        self.fence = Fence(worker_scope(row["id"]), 0, lost=True)
        """The lease's current claim (lost until `register` has taken it)."""
        self.valid = asyncio.Event()
        """Set while the lease is held: sources restart only then after losing it."""

    @property
    def worker_id(self) -> str:
        return str(self.row["id"])

    async def register(self) -> None:
        """Write the worker's row and claim its lease (at start)."""
        self._adopt(await self.store.register_worker(self.heartbeat()))

    async def revive(self, stopping: Callable[[], bool] = lambda: False) -> list[CrashedRun]:
        """Claim the lease again after losing it; the worker's runs it ended CRASHED.

        Waits for the store while it is away (the worker does nothing meanwhile).
        """
        failures = 0
        while True:
            try:
                epoch, crashed = await self.store.revive_worker(self.heartbeat())
            except Exception as error:
                if stopping():
                    raise
                failures += 1
                if failures == 1:
                    logger.warning(
                        "worker %s: cannot claim its lease again yet, retrying: %s",
                        self.worker_id,
                        describe_error(error),
                    )
                await asyncio.sleep(REVIVE_RETRY.delay(failures))
                continue
            self._adopt(epoch)
            return crashed

    def _adopt(self, epoch: int) -> None:
        self.writer.fences.forget(self.fence)
        self.fence = Fence(self.fence.scope, epoch)
        self.writer.fences.watch(self.fence)
        self.valid.set()

    def lost(self) -> None:
        """The lease is lost (refused by the store, or the worker was frozen past it)."""
        self.fence.lost = True
        self.valid.clear()

    def heartbeat(self) -> dict[str, Any]:
        """The worker's row, alive now, under its lease's token."""
        return {**self.row, "heartbeat_at": time.time(), "fence": self.fence.token}

    def put_heartbeat(self) -> None:
        self.writer.put_worker(self.heartbeat())

    def put_stopped(self) -> None:
        now = time.time()
        self.writer.put_worker({**self.heartbeat(), "heartbeat_at": now, "stopped_at": now})


class PartitionFences:
    """A runner's claims: one per assigned partition of its consumer group, else the lease's."""

    def __init__(self, lease: WorkerLease, group: str | None, flow_name: str) -> None:
        self.lease = lease
        self.group = group
        self.flow_name = flow_name
        self.by_partition: dict[Partition, Fence] = {}

    def of(self, partition: Partition | None) -> Fence:
        """The claim a run of an event of `partition` is made under."""
        if partition is not None and self.group is not None:
            fence = self.by_partition.get(partition)
            if fence is not None:
                return fence
        return self.lease.fence

    def tokens(self, partitions: Iterable[Partition]) -> dict[Partition, Any]:
        return {p: f.token for p in partitions if (f := self.by_partition.get(p)) is not None}

    def claimed(self, epochs: dict[Partition, int]) -> None:
        assert self.group is not None
        writer = self.lease.writer
        for (topic, number), epoch in epochs.items():
            fence = Fence(partition_scope(self.group, topic, number, self.flow_name), epoch)
            if (old := self.by_partition.get((topic, number))) is not None:
                writer.fences.forget(old)
            self.by_partition[(topic, number)] = fence
            writer.fences.watch(fence)

    def release(self, partitions: Iterable[Partition]) -> list[Fence]:
        """Forget the claims of `partitions` (revoked or lost); they count as lost from now."""
        released = []
        for partition in partitions:
            fence = self.by_partition.pop(partition, None)
            if fence is not None:
                fence.lost = True
                self.lease.writer.fences.forget(fence)
                released.append(fence)
        return released

    def lost(self, fences: Sequence[Fence]) -> list[Partition]:
        """Of this runner's partitions, those whose claim is among `fences` (or lost)."""
        return [p for p, f in self.by_partition.items() if f.lost or any(f is x for x in fences)]
