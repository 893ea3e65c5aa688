"""Rejoin: what a worker does when it learns that it lost a claim.

The writer reports the claims the store refused (eventflow/_store/_fences.py);
the clock watch reports a freeze longer than the lease. One loop acts on them
in order: a runner whose partitions were claimed by another worker drops their
work and restarts its source (a new consumer claims its new assignment); a
worker whose lease was taken over (declared dead while alive), or that found
itself frozen, drops every run in flight, claims its lease anew (its unfinished
runs end CRASHED) and then lets its sources restart. Each says so in one
WARNING and counts in `eventflow_fenced_total{subscription,reason}`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from .._errors import describe_error
from .._store._fences import Fence
from ._fencing import WorkerLease
from ._runner import SubscriptionRunner

logger = logging.getLogger("eventflow.runtime")


class Rejoin:
    """Acts on lost claims, one after the other (see the module); `run` is its loop."""

    def __init__(
        self,
        lease: WorkerLease,
        runners: Sequence[SubscriptionRunner],
        stopping: Callable[[], bool],
    ) -> None:
        self.lease = lease
        self.runners = runners
        self.stopping = stopping
        self._reports: asyncio.Queue[list[Fence] | str] = asyncio.Queue()
        """Claims the store refused, or why the worker fenced itself (a freeze)."""

    def refused(self, fences: list[Fence]) -> None:
        """The store refused these claims (called on the loop, for the writer)."""
        self._reports.put_nowait(fences)

    def frozen(self, gap: float) -> None:
        """The process stood still longer than the lease: fence itself before writing on."""
        if self.lease.valid.is_set():
            self._lease_lost()
            self._reports.put_nowait(f"frozen for {gap:.0f}s, longer than the lease")

    def _lease_lost(self) -> None:
        """Nothing made under the lease or the partitions' claims is written from now on."""
        self.lease.lost()
        fences = [f for r in self.runners for f in r.fences.by_partition.values()]
        self.lease.writer.fences.drop_lost([self.lease.fence, *fences])

    async def run(self) -> None:
        lease = self.lease
        while True:
            lost = await self._reports.get()
            if isinstance(lost, str):
                await self._claim_lease_again("frozen", lost)
                continue
            if not lease.valid.is_set():
                continue  # rejoining already
            holders = await self._holders([lease.fence, *lost])
            lease_now = holders.get(lease.fence.scope)
            if any(f is lease.fence for f in lost) or (
                lease_now is not None and lease_now[0] != lease.fence.epoch
            ):
                self._lease_lost()
                await self._claim_lease_again(
                    "lease_lost",
                    "lease taken over: another worker declared it dead after missed"
                    " heartbeats; was it frozen, or cut off from the store?",
                )
                continue
            others = sorted({h for f in lost if (h := holders.get(f.scope, (0, None))[1])})
            reason = "claimed by " + (", ".join(others) if others else "another worker")
            for runner in self.runners:
                await runner.fence_out(lost, reason)

    async def _holders(self, fences: Sequence[Fence]) -> dict[str, tuple[int, str | None]]:
        """Who holds `fences` now (to tell a lost lease, and for the log); nothing if the
        store cannot say."""
        try:
            return await self.lease.store.read_fences([f.scope for f in fences])
        except Exception as error:
            logger.warning("cannot read who holds the lost claims: %s", describe_error(error))
            return {}

    async def _claim_lease_again(self, reason: str, detail: str) -> None:
        """Drop every run in flight, claim the lease anew, then let the sources restart.

        `reason` (lease_lost, frozen) labels `eventflow_fenced_total`; `detail` is logged.
        """
        cancelled = 0
        for runner in self.runners:
            cancelled += await runner.drop_everything(reason)
        logger.warning(
            "worker %s fenced (%s): dropped %d run(s) in flight, nothing more of them is"
            " written; claiming the lease again and rejoining",
            self.lease.worker_id,
            detail,
            cancelled,
        )
        crashed = await self.lease.revive(self.stopping)
        logger.info(
            "worker %s holds its lease again; %d of its unfinished run(s) ended CRASHED"
            " (their events run again)",
            self.lease.worker_id,
            len(crashed),
        )
