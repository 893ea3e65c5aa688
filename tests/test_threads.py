"""Sync user code on eventflow's threads: flows never starve the tasks they wait for."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests._services import ROOT


def test_more_sync_flows_in_flight_than_threads_still_finish(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "EVENTFLOW_MAX_THREADS": "4",  # 16 flows in flight, each holding a thread while it waits
        "EVENTFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'runs.db'}",
    }
    done = subprocess.run(
        [sys.executable, "tests/apps/sync_flows.py", "16"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "16 sync flow runs completed" in done.stdout
