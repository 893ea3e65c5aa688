"""A subscription's `DurableState` in the run store: its source's checkpoint and leases."""

from __future__ import annotations

import logging

from .._errors import describe_error
from .._store._runstore import RunStore
from .._store._writer import RunWriter
from ._fencing import WorkerLease
from ._source import DurableState

logger = logging.getLogger("eventflow.runtime")


class StoredDurableState(DurableState):
    """The checkpoint is written with the runs before it, under the worker's lease
    (a worker declared dead writes none); leases are held in the name of the worker."""

    def __init__(
        self, subscription: str, source: str, store: RunStore, writer: RunWriter, lease: WorkerLease
    ) -> None:
        self.subscription = subscription
        self.source = source
        self.store = store
        self.writer = writer
        self.worker = lease

    async def checkpoint(self) -> str | None:
        return await self.store.read_checkpoint(self.subscription)

    def save_checkpoint(self, value: str) -> None:
        token = self.worker.fence.token
        self.writer.put_checkpoint(self.subscription, self.source, value, token)

    async def lease(self, name: str, ttl: float) -> bool:
        try:
            return await self.store.acquire_lease(name, self.worker.worker_id, ttl)
        except Exception as error:
            logger.warning(
                "%s: cannot take lease %r: %s", self.subscription, name, describe_error(error)
            )
            return False

    async def release_lease(self, name: str) -> None:
        try:
            await self.store.release_lease(name, self.worker.worker_id)
        except Exception as error:  # it expires by itself
            logger.warning(
                "%s: cannot release lease %r: %s", self.subscription, name, describe_error(error)
            )
