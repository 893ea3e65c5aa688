"""More sync flows in flight than threads, each waiting on its tasks (tests/test_threads.py)."""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor

from eventflow import flow, task


@task
def double(x: int) -> int:
    return 2 * x


@flow(name="sync-fan-out")
def fan_out(x: int) -> int:
    futures = [double.submit(x), double.submit(x + 1)]
    return sum(f.result() for f in futures) + double(x)


if __name__ == "__main__":
    calls = int(sys.argv[1])
    with ThreadPoolExecutor(calls) as callers:
        results = list(callers.map(fan_out, range(calls)))
    assert results == [6 * x + 2 for x in range(calls)], results
    print(f"{calls} sync flow runs completed")
