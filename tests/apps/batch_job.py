"""A batch job (a direct flow call): `python tests/apps/batch_job.py sync|async WORKDIR`.

`extract` appends `extract` to WORKDIR/calls (the side effect a resumed job must
not repeat); `load` waits until WORKDIR/release exists (up to 120 s), then
appends `load`. A test SIGKILLs the job while `load` waits, then runs it again.
The store is EVENTFLOW_DATABASE_URL.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

from eventflow import flow, task

WORKDIR = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(".")


def _append(line: str) -> None:
    fd = os.open(WORKDIR / "calls", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def _released() -> bool:
    return (WORKDIR / "release").exists()


@task
def extract() -> int:
    _append("extract")
    return 7


@task
def load(rows: int) -> int:
    deadline = time.monotonic() + 120
    while not _released() and time.monotonic() < deadline:
        time.sleep(0.05)
    _append("load")
    return rows


@flow(name="batch-nightly")
def nightly() -> int:
    return load(extract())


@task
async def extract_async() -> int:
    _append("extract")
    return 7


@task
async def load_async(rows: int) -> int:
    deadline = time.monotonic() + 120
    # the release is a file another process creates: nothing to await but its existence
    while not _released() and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    _append("load")
    return rows


@flow(name="batch-nightly-async")
async def nightly_async() -> int:
    return await load_async(await extract_async())


if __name__ == "__main__":
    if sys.argv[1] == "sync":
        print(nightly())
    else:
        print(asyncio.run(nightly_async()))
