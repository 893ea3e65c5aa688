"""Benchmark: tracked flow runs per second of direct flow calls, eventflow beside Prefect 3.

    .venv/bin/python bench/core.py [--runs N] [--prefect-runs N] [--skip-prefect]

Each implementation runs in a fresh process: an async flow with two tasks (one
with retries), every run and task run stored in SQLite. eventflow is measured
at 16 in flight (Prefect's figure) and 256; Prefect 3 runs in its own
virtualenv (made once, cached), telemetry off, at 16 in flight and
sequentially for the sync flow.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from _prefect import measure_prefect  # noqa: E402


def measure_eventflow(runs: int, concurrency: int, mode: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, str(BENCH / "_eventflow_core.py"), str(runs), str(concurrency), mode],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        timeout=900,
    )
    if done.returncode != 0:
        return {"impl": "eventflow", "mode": mode, "error": done.stderr[-2000:]}
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


COLUMNS = ("impl", "mode", "concurrency", "runs", "runs_per_s", "peak_rss_mb", "tracked")
HEADERS = ("impl", "mode", "in flight", "runs", "runs/s", "peak RSS MB", "tracked")


def row(result: dict[str, object]) -> str:
    if "error" in result:
        message = str(result["error"])[:300]
        return f"{result.get('impl')!s:<10} {result.get('mode')!s:<6} error: {message}"
    cells = [str(result.get(c)) for c in COLUMNS]
    return " ".join([f"{cells[0]:<10}", f"{cells[1]:<6}", *(f"{c:>12}" for c in cells[2:])])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=50_000)
    parser.add_argument("--prefect-runs", type=int, default=40)
    parser.add_argument("--skip-prefect", action="store_true")
    args = parser.parse_args()

    results = [
        measure_eventflow(args.runs, 256, "async"),
        measure_eventflow(args.runs // 2, 16, "async"),
        measure_eventflow(args.runs // 10, 1, "sync"),
    ]
    if not args.skip_prefect:
        results.append(measure_prefect(args.prefect_runs, 16, "async"))
        results.append(measure_prefect(max(args.prefect_runs // 5, 10), 1, "sync"))
    print(" ".join([f"{HEADERS[0]:<10}", f"{HEADERS[1]:<6}", *(f"{h:>12}" for h in HEADERS[2:])]))
    for result in results:
        print(row(result))


if __name__ == "__main__":
    main()
