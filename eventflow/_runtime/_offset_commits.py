"""Offsets: stored with the runs before them, then committed to the source.

A partition's offset advances over the contiguous prefix of finished events
(`InFlight`); it is stored in the run store in the same transaction as those
runs (the writer's queue keeps the order), then committed to the broker,
whose copy only serves lag tools. A commit the broker did not confirm is
tried again every round, runs finished or not.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping

from .._errors import describe_error
from .._store._writer import RunWriter
from ._fencing import PartitionFences
from ._inflight import InFlight, PartitionState
from ._liveness import Outage
from ._source import Partition, Source
from ._subscription import SOURCE_CALL_TIMEOUT


class OffsetCommits:
    """A runner's offsets on their way to the store and the broker (see the module)."""

    def __init__(
        self,
        name: str,
        source: Source,
        writer: RunWriter,
        inflight: InFlight,
        fences: PartitionFences,
    ) -> None:
        self.source = source
        self.writer = writer
        self.inflight = inflight
        self.fences = fences
        self.committed: dict[Partition, int] = {}
        """Offsets the source last confirmed committed (the broker's copy, for lag tools)."""
        self._to_commit: dict[Partition, int] = {}
        """Offsets stored with the runs and not yet committed to the source."""
        self.outage = Outage(f"{name}: broker commit (offsets are safe in the store)")

    def assigned(self, stored: Mapping[Partition, int]) -> None:
        # the broker's copy may lag the store's (a commit it never got before a
        # restart or a rebalance): give it the stored offset with the next commit
        self._to_commit.update(stored)

    def revoked(self, partitions: Iterable[Partition]) -> None:
        for partition in partitions:
            self._to_commit.pop(partition, None)  # the source commits these on revocation
            self.committed.pop(partition, None)

    async def commit(self) -> None:
        """Store the offsets that advanced (with the runs before them), then tell the source.

        Offsets the source failed to commit (a broker away) are committed again
        on the next call, even if no run finished meanwhile.
        """
        self._to_commit.update(await self.store(self.inflight.partitions))
        if self._to_commit:
            await self._commit_to_source()
        elif self.outage.active:
            self.outage.clear()  # what failed to commit is another worker's now
        if self.inflight.unacked:
            events = self.inflight.take_unacked()
            await self.writer.flush()
            await self.source.ack(events)

    async def store(
        self, states: Mapping[Partition, PartitionState], timeout: float | None = None
    ) -> dict[Partition, int]:
        """Store the offsets that advanced, with the runs queued before them; those stored.

        With a `timeout`, a store that does not confirm in time stores nothing
        now (the offsets stay queued and are written when it is back). An
        offset whose partition's claim the store refused is not stored (it
        never moves a successor's offset back).
        """
        advanced = self.inflight.advanced(states)
        if not advanced:
            return {}
        group = self.source.group_id
        if group is not None:
            self.writer.put_offsets(
                group,
                [(t, p, o) for (t, p), o in advanced.items()],
                fences=self.fences.tokens(advanced),
            )
        try:
            await asyncio.wait_for(self.writer.flush(), timeout)
        except TimeoutError:
            return {}
        if group is not None:
            by_partition = self.fences.by_partition
            advanced = {
                p: o for p, o in advanced.items() if (f := by_partition.get(p)) and not f.lost
            }
        self.inflight.mark_stored(advanced)
        return advanced

    async def _commit_to_source(self) -> None:
        offsets = {p: o for p, o in self._to_commit.items() if p in self.inflight.partitions}
        try:
            async with asyncio.timeout(SOURCE_CALL_TIMEOUT):
                await self.source.commit(offsets)
        except Exception as error:  # the store has them; the broker's copy is for lag tools
            self.outage.failed(describe_error(error))
            return
        self.outage.recovered()
        self.committed.update(offsets)
        for partition, offset in offsets.items():
            if self._to_commit.get(partition) == offset:
                del self._to_commit[partition]
