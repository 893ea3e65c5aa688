"""What flow controls write about the runs they hold back or skip, through the run writer."""

from __future__ import annotations

import logging
import time
from typing import Any

from .._store._writer import RunWriter
from ._delivery import partition_of
from ._fencing import PartitionFences
from ._source import Event


class ControlRecords:
    """Run records and log lines of one subscription's controls (not the engine's)."""

    logger_name = "eventflow.controls"

    def __init__(
        self,
        writer: RunWriter,
        flow: Any,
        worker_id: str,
        source_name: str,
        group: str | None,
        fences: PartitionFences,
    ) -> None:
        self.writer = writer
        self.fences = fences
        """A record is made under its event's claim: a fenced worker's is refused."""
        self.flow = flow
        self.worker_id = worker_id
        self.source_name = source_name
        self.group = group
        """The consumer group reading the events (their runs count for it alone)."""

    def run(
        self,
        event: Event,
        run_id: str,
        state_type: str,
        state_name: str,
        *,
        ended: bool = True,
        error: str | None = None,
        linked_run_id: str | None = None,
    ) -> None:
        """A run waiting (PENDING), skipped (CANCELLED), or abandoned before it started.

        The engine's own record of the same run id, once it starts, replaces it
        (keeping `created_at`, so the wait shows as created -> started).
        """
        now = time.time()
        self.writer.ensure_flow(self.flow.name, self.flow.version)
        self.writer.put_flow_run(
            {
                "id": run_id,
                "flow_name": self.flow.name,
                "name": None,
                "state_type": state_type,
                "state_name": state_name,
                "parameters": None,
                "result": None,
                "error": error,
                "run_count": 0,
                "parent_flow_run_id": None,
                "retry_of": None,
                "worker_id": self.worker_id,
                "event_source": event.stream or self.source_name,
                "event_partition": event.partition,
                "event_offset": event.offset,
                "event_id": event.id,
                "event_key": event.key,
                "event_group": self.group,
                "event_payload": event.value,
                "event_time": event.timestamp,
                "created_at": now,
                "started_at": None,
                "ended_at": now if ended else None,
                "linked_run_id": linked_run_id,
                "fence": self.fences.of(partition_of(event)).token,
            }
        )

    def log(self, run_id: str, message: str, level: int = logging.INFO) -> None:
        """A log line stored with the run: why it waited or did not run."""
        self.writer.put_log(
            {
                "flow_run_id": run_id,
                "task_run_id": None,
                "level": level,
                "logger": self.logger_name,
                "message": message,
                "timestamp": time.time(),
            }
        )
