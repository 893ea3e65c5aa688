"""Prefect 3 baseline: run ``_baselines/prefect_core.py`` in a pinned venv."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

from _venvs import ensure_venv  # noqa: E402

PREFECT_VERSION = "3.9.1"
PREFECT_REQUIREMENTS = [f"prefect=={PREFECT_VERSION}"]
VENV_NAME = f"prefect-{PREFECT_VERSION}"
SCRIPT = _HERE / "_baselines" / "prefect_core.py"

# Sized so both default Prefect measurements together take under ~60 s on
# 2 cores. Measured with 3.9.1: async 1.3-2.9 runs/s at 1-16 in flight (noisy:
# the server answers 503 on SQLITE_BUSY and the client backs off for seconds),
# sync ~0.93 runs/s (a ~1 s heartbeat-thread join per run), plus ~12 s per
# measurement of untimed warm-up (server start-up, migrations on a fresh DB).
DEFAULT_ASYNC_RUNS = 40
DEFAULT_ASYNC_CONCURRENCY = 16
DEFAULT_SYNC_RUNS = 6

_FIXED_ENV = {
    # Ephemeral mode: no API URL, the client starts a local API server
    # subprocess on 127.0.0.1 backed by SQLite in $PREFECT_HOME/prefect.db.
    "PREFECT_SERVER_EPHEMERAL_ENABLED": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",  # server telemetry heartbeat
    "DO_NOT_TRACK": "1",  # client-side SDK usage analytics
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
    "PYTHONUNBUFFERED": "1",
}


def prefect_env(home: Path) -> dict[str, str]:
    """Return a clean environment for Prefect using ``home`` as PREFECT_HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(_FIXED_ENV)
    env["PREFECT_HOME"] = str(home)
    return env


def parse_result(stdout: str) -> dict[str, object] | None:
    """Return the last JSON object line with ``impl == "prefect"``, if any."""
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict) and data.get("impl") == "prefect":
            return {str(k): v for k, v in data.items()}
    return None


def _error(message: str, **extra: object) -> dict[str, object]:
    return {"impl": "prefect", "error": message, **extra}


def _tail(text: str, limit: int = 2000) -> str:
    return text[-limit:].strip()


def measure_prefect(
    runs: int, concurrency: int, mode: str = "async", timeout_s: float = 600
) -> dict[str, object]:
    """Measure Prefect flow runs/s; never raises, returns ``{"error": ...}`` instead.

    Builds (once) the pinned Prefect venv, then runs the baseline script with a
    fresh temporary PREFECT_HOME. ``timeout_s`` bounds the script, not the install.
    """
    if mode not in ("async", "sync"):
        return _error(f"unknown mode {mode!r}")
    if runs < 1 or concurrency < 1:
        return _error("runs and concurrency must be >= 1")
    t0 = time.perf_counter()
    try:
        python = ensure_venv(VENV_NAME, PREFECT_REQUIREMENTS)
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        return _error(f"venv setup failed: {exc}")
    venv_s = time.perf_counter() - t0
    cmd = [
        str(python),
        str(SCRIPT),
        "--runs",
        str(runs),
        "--concurrency",
        str(concurrency),
        "--mode",
        mode,
    ]
    with tempfile.TemporaryDirectory(prefix="eventflow-prefect-home-") as home:
        try:
            # New session: on timeout we kill the whole group, including the
            # ephemeral API server grandchild (uvicorn), not just the script.
            proc = subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                text=True,
                env=prefect_env(Path(home)),
                cwd=home,
                start_new_session=True,
            )
        except OSError as exc:
            return _error(f"could not start baseline: {exc}")
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            out, err = proc.communicate()
            return _error(f"timed out after {timeout_s:g}s", stderr=_tail(err))
        finally:
            if proc.poll() is None:
                _kill_group(proc)
                proc.wait()
        _kill_group(proc)  # reap any straggler (e.g. server left by a crash)
    result = parse_result(out)
    if proc.returncode != 0 or result is None:
        return _error(
            f"baseline exited with code {proc.returncode}",
            stdout=_tail(out),
            stderr=_tail(err),
        )
    result["venv_setup_s"] = round(venv_s, 3)
    return result


def _kill_group(proc: subprocess.Popen[str]) -> None:
    """SIGKILL the process group led by ``proc`` (no-op if it is gone)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


if __name__ == "__main__":
    print(json.dumps(measure_prefect(DEFAULT_ASYNC_RUNS, DEFAULT_ASYNC_CONCURRENCY)))
    print(json.dumps(measure_prefect(DEFAULT_SYNC_RUNS, 1, "sync")))
