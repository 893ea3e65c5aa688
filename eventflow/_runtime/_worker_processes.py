"""`eventflow run --workers N`: N worker processes of one App, supervised by this one.

This process applies the migrations once, serves the workers' summed metrics
(prometheus-client's multi-process mode), passes SIGTERM/SIGINT on to every
worker and waits for all of them, marking each dead as soon as it exits.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from typing import Any

from .._metrics_multiprocess import mark_worker_dead, serve_multiprocess
from .._settings import Settings
from .._store._migrate import upgrade


def run_worker_processes(target: str, workers: int) -> int:
    """Run `workers` processes of `eventflow run TARGET` until they end; their exit code."""
    settings = Settings.from_env()
    upgrade(settings.database_url)  # once, before the workers race to it
    with tempfile.TemporaryDirectory(prefix="eventflow-metrics-") as metrics_dir:
        # prometheus-client's multi-process mode: workers write their values
        # to files there, this process serves them summed
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        server = None
        if settings.metrics_port:
            server = serve_multiprocess(settings.metrics_host, settings.metrics_port, metrics_dir)
        command = [sys.executable, "-m", "eventflow", "run", target]
        code = supervise(command, workers, metrics_dir)
        if server is not None:
            server.shutdown()
            server.server_close()
    return code


def supervise(command: list[str], workers: int, metrics_dir: str) -> int:
    """Start `workers` copies of `command`, pass SIGTERM/SIGINT on, wait for all of them."""
    children = [subprocess.Popen(command) for _ in range(workers)]

    def forward(signum: int, _frame: Any) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = []
    remaining = {child.pid: child for child in children}
    while remaining:  # in the order they exit: a dead worker's live gauges go at once
        try:
            pid, status = os.waitpid(-1, 0)
        except InterruptedError:
            continue
        child = remaining.pop(pid, None)
        if child is None:
            continue
        child.returncode = os.waitstatus_to_exitcode(status)
        codes.append(child.returncode)
        mark_worker_dead(pid, metrics_dir)
    return max(codes, key=abs)
