"""The README's first command, the orders demo, run whole: the main job must keep working.

Its wait loop reads the store through the same API the UI and CLI use; when that
API changed, the demo counted 0 runs for ever and nothing failed. So this runs
`scripts/demo` itself (small), and checks what it printed.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EVENTS = 300


@pytest.mark.slow(120)
def test_the_demo_streams_every_order_into_a_tracked_run_and_shows_them(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(ROOT / "scripts" / "demo")],
        cwd=ROOT,
        env={**os.environ, "DEMO_EVENTS": str(EVENTS), "DEMO_DIR": str(tmp_path / "demo")},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    counts = re.findall(r"(\d+) process-order runs .*?, (\d+) orders-pipeline runs", output)
    assert counts, output[-4000:]
    process_order, pipeline = map(int, counts[-1])
    assert process_order >= EVENTS  # every Kafka event, plus the orders the API served
    assert pipeline >= 3
    assert "worker stopped gracefully" in output
    assert "process-order" in output.split("worker stopped gracefully", 1)[1]  # flows list
