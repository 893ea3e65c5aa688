"""Metrics of several worker processes (`eventflow run --workers N`): prometheus_client's
multi-process mode, served summed by the supervisor."""

from __future__ import annotations

import logging
import os
from typing import Any

from prometheus_client import CollectorRegistry

from . import _probe_server

logger = logging.getLogger("eventflow.metrics")


def multiprocess_dir() -> str | None:
    """The directory of multi-process mode, when this process is one of several workers."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def serve_multiprocess(host: str, port: int, directory: str) -> Any:
    """Serve every worker's metrics, summed, from the supervisor; the server or None.

    The probes answer for all workers: alive while every live worker says it is
    alive (`eventflow_worker_alive`, the minimum over workers), ready likewise.
    """
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]

    def health() -> dict[str, Any]:
        values = {
            sample.name: sample.value
            for family in registry.collect()
            if family.name in ("eventflow_worker_alive", "eventflow_worker_ready")
            for sample in family.samples
        }
        alive = values.get("eventflow_worker_alive", 1.0) >= 1  # none yet: starting, alive
        return {"alive": alive, "ready": values.get("eventflow_worker_ready", 0.0) >= 1}

    try:
        return _probe_server.serve(host, port, health, registry)
    except OSError as error:
        logger.warning("metrics not served on %s:%d: %s", host, port, error)
        return None


def mark_worker_dead(pid: int, directory: str) -> None:
    """Drop a stopped worker's live gauges (in flight, lag) from the sums."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
