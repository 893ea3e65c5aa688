"""Prefect 3 baseline for the eventflow core benchmark.

Standalone: runs inside the cached Prefect venv (see ``bench/_prefect.py``)
and imports only ``prefect`` and the standard library. It mirrors eventflow's
core workload -- a flow with two tasks, one configured with ``retries=2`` that
always succeeds -- and runs it N times with every run tracked by Prefect's own
SQLite database, served by Prefect's *ephemeral* API server.

Usage::

    python prefect_core.py --runs 200 --concurrency 16 --mode async
    python prefect_core.py --runs 20 --mode sync

Prints exactly one JSON line on stdout.

Note on sync throughput: Prefect 3.9's sync flow engine runs a heartbeat
thread per flow run that sleeps in 1 s steps and is joined when the run ends
(``flow_engine._send_heartbeats(join_on_exit=True)``), so a sync flow run takes
about 1 s of wall time however little it does. ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY``
is validated ``>= 30`` and cannot be set to None from the environment, so we
measure Prefect as shipped. The async engine does not join that thread.

Note on async throughput: the server answers HTTP 503 when SQLite reports
SQLITE_BUSY(_SNAPSHOT) -- its own background services (event persister, task
run recorder) write concurrently with the API -- and the client then backs off
for 2-30+ s before retrying. This happens even at concurrency 1 and dominates
the async figure, which is therefore noisy; ``http_retries`` and
``http_retry_backoff_s`` in the output show how much of it there was.

About memory: in Prefect 3 the ephemeral API server is NOT in-process. The
first API call starts ``python -m uvicorn prefect.server.api.server:create_app``
as a subprocess on 127.0.0.1 (``SubprocessASGIServer``) that owns the SQLite
database. So we report ``client_peak_rss_mb`` (this process, ``RUSAGE_SELF``),
``server_peak_rss_mb`` (the server subprocess, ``RUSAGE_CHILDREN`` after we
stop and reap it) and ``peak_rss_mb`` = their sum (an upper bound on the
combined footprint, since the two peaks need not coincide).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import resource
import sys
import tempfile
import time
from typing import Any

# --- environment: must be settled before prefect is imported ----------------
if not os.environ.get("PREFECT_HOME"):
    os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="eventflow-prefect-home-")
for _var in ("PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_PROFILE"):
    os.environ.pop(_var, None)
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_ENABLED", "true")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # server heartbeat
os.environ.setdefault("DO_NOT_TRACK", "1")  # client-side SDK analytics
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "WARNING")

import prefect  # noqa: E402
from prefect import flow, get_client, task  # noqa: E402
from prefect.client.schemas.filters import (  # noqa: E402
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType  # noqa: E402

WARMUP_RUNS = 2


class _RetryCounter(logging.Filter):
    """Count the client's HTTP retries (e.g. 503 = SQLite busy on the server).

    Installed on the ``prefect.client`` logger, whose level is lowered to DEBUG
    so the retry messages reach us; records below ``floor`` are then dropped
    here, so the console output is unchanged.
    """

    _DELAY = re.compile(r"made in ([0-9.]+)s")

    def __init__(self, floor: int) -> None:
        super().__init__()
        self.floor = floor
        self.status: dict[str, int] = {}
        self.exceptions = 0
        self.backoff_s = 0.0

    def reset(self) -> None:
        self.status.clear()
        self.exceptions = 0
        self.backoff_s = 0.0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.DEBUG and "Another attempt" in str(record.msg):
            msg = record.getMessage()
            code = re.search(r"retryable status code (\w+)", msg)
            if code:
                self.status[code.group(1)] = self.status.get(code.group(1), 0) + 1
            else:
                self.exceptions += 1
            delay = self._DELAY.search(msg)
            if delay:
                self.backoff_s += float(delay.group(1))
        return record.levelno >= self.floor


def _install_retry_counter() -> _RetryCounter:
    log = logging.getLogger("prefect.client")
    counter = _RetryCounter(log.getEffectiveLevel())
    log.setLevel(logging.DEBUG)
    log.addFilter(counter)
    return counter


# --- workload: async ----------------------------------------------------------
@task(retries=2, retry_delay_seconds=0)
async def fetch(i: int) -> dict[str, int]:
    return {"id": i, "amount": i % 100}


@task
async def load(order: dict[str, int]) -> int:
    return order["amount"] * 2


@flow(name="process")
async def process(i: int) -> int:
    o = await fetch(i)
    return await load(o)


# --- workload: sync (same shape) ---------------------------------------------
@task(name="fetch", retries=2, retry_delay_seconds=0)
def fetch_sync(i: int) -> dict[str, int]:
    return {"id": i, "amount": i % 100}


@task(name="load")
def load_sync(order: dict[str, int]) -> int:
    return order["amount"] * 2


@flow(name="process_sync")
def process_sync(i: int) -> int:
    o = fetch_sync(i)
    return load_sync(o)


def _expected(i: int) -> int:
    return (i % 100) * 2


# --- drivers ------------------------------------------------------------------
async def _run_async(runs: int, concurrency: int, offset: int) -> None:
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            got = await process(i)
        if got != _expected(i):
            raise AssertionError(f"run {i}: got {got!r}")

    await asyncio.gather(*(one(offset + i) for i in range(runs)))


def _run_sync(runs: int, offset: int) -> None:
    for i in range(offset, offset + runs):
        got = process_sync(i)
        if got != _expected(i):
            raise AssertionError(f"run {i}: got {got!r}")


def _run(mode: str, runs: int, concurrency: int, offset: int) -> None:
    if mode == "async":
        asyncio.run(_run_async(runs, concurrency, offset))
    else:
        _run_sync(runs, offset)


# --- verification -------------------------------------------------------------
async def _counts(flow_name: str) -> tuple[int, int]:
    """Return (completed flow runs, completed task runs) as stored by the server."""
    async with get_client() as client:
        flows = await client.count_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.COMPLETED]))
            ),
        )
        # No public count_task_runs() on the client; the REST route exists.
        body: dict[str, Any] = {
            "flows": {"name": {"any_": [flow_name]}},
            "task_runs": {"state": {"type": {"any_": ["COMPLETED"]}}},
        }
        resp = await client._client.post("/task_runs/count", json=body)
        resp.raise_for_status()
        return int(flows), int(resp.json())


def _wait_task_runs(flow_name: str, want: int, timeout_s: float) -> tuple[int, int]:
    """Poll counts: task-run states reach the DB asynchronously via events."""
    deadline = time.monotonic() + timeout_s
    while True:
        flows, tasks = asyncio.run(_counts(flow_name))
        if tasks >= want or time.monotonic() >= deadline:
            return flows, tasks
        time.sleep(0.25)


# --- memory -------------------------------------------------------------------
def _maxrss_mb(who: int) -> float:
    rss = resource.getrusage(who).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def _server_pids() -> list[int]:
    try:
        from prefect.server.api.server import SubprocessASGIServer
    except ImportError:
        return []
    return [
        s.server_process.pid
        for s in SubprocessASGIServer._instances.values()
        if s.server_process is not None
    ]


def _server_cpu_s() -> float | None:
    """CPU seconds used so far by the ephemeral server process(es); Linux only."""
    pids = _server_pids()
    if not pids:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        total += (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return total


def _stop_ephemeral_server() -> bool:
    """Stop + reap the ephemeral server subprocess so RUSAGE_CHILDREN covers it."""
    try:
        from prefect.server.api.server import SubprocessASGIServer
    except ImportError:
        return False
    stopped = False
    for server in list(SubprocessASGIServer._instances.values()):
        if server.server_process is not None:
            server.stop()
            stopped = True
    return stopped


# --- main ---------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--mode", choices=("async", "sync"), default="async")
    ap.add_argument("--warmup", type=int, default=WARMUP_RUNS)
    args = ap.parse_args(argv)
    runs: int = args.runs
    mode: str = args.mode
    concurrency: int = 1 if mode == "sync" else max(1, args.concurrency)
    flow_name = "process" if mode == "async" else "process_sync"

    retries = _install_retry_counter()

    # Warm-up (not timed): starts the ephemeral server, creates/migrates the
    # SQLite DB, registers the flow.
    t_w = time.perf_counter()
    _run(mode, args.warmup, concurrency, offset=0)
    warmup_s = time.perf_counter() - t_w
    before_flows, before_tasks = asyncio.run(_counts(flow_name))

    s0 = _server_cpu_s()
    retries.reset()
    t0, c0 = time.perf_counter(), time.process_time()
    _run(mode, runs, concurrency, offset=args.warmup)
    seconds = time.perf_counter() - t0
    client_cpu_s = time.process_time() - c0
    s1 = _server_cpu_s()
    retry_status = dict(retries.status)
    retry_exceptions, retry_backoff_s = retries.exceptions, retries.backoff_s
    server_cpu_s = None if s0 is None or s1 is None else round(s1 - s0, 3)

    after_flows, after_tasks = _wait_task_runs(flow_name, before_tasks + 2 * runs, timeout_s=30.0)
    client_mb = _maxrss_mb(resource.RUSAGE_SELF)
    server_mb = _maxrss_mb(resource.RUSAGE_CHILDREN) if _stop_ephemeral_server() else 0.0

    out: dict[str, Any] = {
        "impl": "prefect",
        "version": prefect.__version__,
        "mode": mode,
        "runs": runs,
        "concurrency": concurrency,
        "seconds": round(seconds, 4),
        "runs_per_s": round(runs / seconds, 3) if seconds > 0 else None,
        "peak_rss_mb": round(client_mb + server_mb, 1),
        "client_peak_rss_mb": round(client_mb, 1),
        "server_peak_rss_mb": round(server_mb, 1),
        "rss_note": "ephemeral API server is a subprocess; peak_rss_mb = client + server peaks",
        "client_cpu_s": round(client_cpu_s, 3),
        "server_cpu_s": server_cpu_s,
        # Client-side HTTP retries during the timed loop; 503 is what the server
        # answers on SQLITE_BUSY. backoff_s is summed over requests (not wall).
        "http_retries": retry_status,
        "http_retry_exceptions": retry_exceptions,
        "http_retry_backoff_s": round(retry_backoff_s, 2),
        "tracked": after_flows - before_flows,
        "tracked_task_runs": after_tasks - before_tasks,
        "warmup_runs": args.warmup,
        "warmup_s": round(warmup_s, 3),
        "python": sys.version.split()[0],
    }
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
