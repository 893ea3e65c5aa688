"""A batch job interrupted mid-run: `python tests/apps/interrupted_flow.py RELEASE_FILE`.

Its flow's second task waits (up to 60 s) until RELEASE_FILE exists, so a test
can interrupt the process while that task runs. The store is EVENTFLOW_DATABASE_URL.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

from eventflow import flow, task

RELEASE = Path(sys.argv[1])

# Ctrl-C as in a terminal, even when the test runner was started in the background by a
# shell without job control (its children then inherit SIGINT ignored)
signal.signal(signal.SIGINT, signal.default_int_handler)


@task
def extract() -> int:
    return 1


@task
def load(rows: int) -> int:
    deadline = time.monotonic() + 60
    while not RELEASE.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return rows


@flow(name="nightly")
def nightly() -> int:
    return load(extract())


if __name__ == "__main__":
    print(nightly())
