"""Worker processes for the crash and rebalance tests: `eventflow run`, started and killed."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests._services import ROOT
from tests._store import flow_runs

EVENTFLOW = str(Path(sys.executable).with_name("eventflow"))


class Worker:
    """An `eventflow run` process; every one started is killed at the end of its test.

    `prefix` goes before the command (e.g. `ip netns exec NAME`, which execs it, so
    the pid stays the worker's); `new_session` puts the worker and its children
    (the writer process) in a process group of their own, which `signal_group`
    signals and `kill` kills whole.
    """

    started: list[Worker] = []

    def __init__(
        self,
        env: dict[str, str],
        log: Path,
        *args: str,
        app: str = "tests/apps/kafka_worker.py:app",
        prefix: Sequence[str] = (),
        new_session: bool = False,
    ) -> None:
        self.log = log
        self._file = log.open("ab")
        self.new_session = new_session
        self.process = subprocess.Popen(
            [*prefix, EVENTFLOW, "run", app, *args],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=self._file,
            stderr=subprocess.STDOUT,
            start_new_session=new_session,
        )
        Worker.started.append(self)

    @classmethod
    def kill_all(cls) -> None:
        for worker in cls.started:
            if worker.alive():
                worker.kill()
            else:
                worker._file.close()
        cls.started.clear()

    def kill(self) -> None:
        if self.new_session:
            self.signal_group(signal.SIGKILL)
        elif self.alive():
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)
        self._file.close()

    def signal_group(self, signum: int) -> None:
        """Signal the worker's whole process group (SIGSTOP freezes its writer too)."""
        assert self.new_session, "only a worker started with new_session has a group of its own"
        with contextlib.suppress(ProcessLookupError):  # the group is gone already
            os.killpg(self.process.pid, signum)

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
