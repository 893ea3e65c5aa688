"""Worker processes for the crash and rebalance tests: `eventflow run`, started and killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from tests._services import ROOT
from tests._store import flow_runs

EVENTFLOW = str(Path(sys.executable).with_name("eventflow"))


class Worker:
    """An `eventflow run` process; every one started is killed at the end of its test."""

    started: list[Worker] = []

    def __init__(
        self,
        env: dict[str, str],
        log: Path,
        *args: str,
        app: str = "tests/apps/kafka_worker.py:app",
    ) -> None:
        self.log = log
        self._file = log.open("ab")
        self.process = subprocess.Popen(
            [EVENTFLOW, "run", app, *args],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=self._file,
            stderr=subprocess.STDOUT,
        )
        Worker.started.append(self)

    @classmethod
    def kill_all(cls) -> None:
        for worker in cls.started:
            if worker.alive():
                worker.kill()
        cls.started.clear()

    def kill(self) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)
        self._file.close()

    def terminate(self, timeout: float = 60) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        self._file.close()
        return code

    def alive(self) -> bool:
        return self.process.poll() is None


async def completed_count(url: str) -> int:
    return len(await flow_runs(url, state_type="COMPLETED"))


async def delivery_report(url: str) -> dict[str, Any]:
    """Per event position: how many COMPLETED runs, and the state counts overall."""
    runs = await flow_runs(url)
    completed = Counter(
        (r["event_partition"], r["event_offset"]) for r in runs if r["state_type"] == "COMPLETED"
    )
    return {
        "completed_positions": len(completed),
        "duplicates": [pos for pos, n in completed.items() if n > 1],
        "states": Counter(r["state_type"] for r in runs),
    }
