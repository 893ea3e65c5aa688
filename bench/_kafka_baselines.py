"""Kafka benchmark baselines: raw aiokafka and FastStream, each in its own subprocess.

Each baseline reads the benchmark topic from the beginning under a fresh,
unique consumer group, so every implementation sees the same topic contents
and none is helped by another's committed offsets. A subprocess per baseline
keeps peak RSS figures separate and the interpreters clean. Both ``measure_*``
functions never raise: a failure comes back as ``{"impl": ..., "error": ...}``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

from _venvs import ensure_venv  # noqa: E402

FASTSTREAM_VERSION = "0.7.8"
# aiokafka, pydantic and orjson pinned to the project venv's versions, so the
# FastStream figure differs from the raw one by FastStream alone.
FASTSTREAM_REQUIREMENTS = [
    f"faststream[kafka]=={FASTSTREAM_VERSION}",
    "aiokafka==0.14.0",
    "pydantic==2.14.4",
    "orjson==3.13.0",
]
FASTSTREAM_VENV = f"faststream-{FASTSTREAM_VERSION}"

RAW_SCRIPT = _HERE / "_baselines" / "raw_aiokafka.py"
FASTSTREAM_SCRIPT = _HERE / "_baselines" / "faststream_sub.py"

RAW_IMPL = "aiokafka-raw"
FASTSTREAM_IMPL = "faststream"


def fresh_group(prefix: str) -> str:
    """Return a consumer group id no run has used: it starts at the earliest offsets."""
    return f"eventflow-bench-{prefix}-{uuid.uuid4().hex[:12]}"


def parse_result(stdout: str, impl: str) -> dict[str, object] | None:
    """Return the last JSON object line on ``stdout`` whose ``impl`` is ``impl``, if any."""
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict) and data.get("impl") == impl:
            return {str(k): v for k, v in data.items()}
    return None


def _error(impl: str, message: str, **extra: object) -> dict[str, object]:
    return {"impl": impl, "error": message, **extra}


def _tail(text: str, limit: int = 2000) -> str:
    return text[-limit:].strip()


def _kill_group(proc: subprocess.Popen[str]) -> None:
    """SIGKILL the process group led by ``proc`` (no-op if it is gone)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _child_env() -> dict[str, str]:
    """Our environment minus what could make a venv interpreter import foreign packages."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
    }
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _run_script(impl: str, cmd: list[str], timeout_s: float) -> dict[str, object]:
    """Run one baseline script, bounded by ``timeout_s``; return its JSON line or an error."""
    try:
        # New session, so a timeout kills the whole group, not just the script.
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=_child_env(),
            start_new_session=True,
        )
    except OSError as exc:
        return _error(impl, f"could not start baseline: {exc}")
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, err = proc.communicate()
        return _error(impl, f"timed out after {timeout_s:g}s", stderr=_tail(err))
    finally:
        if proc.poll() is None:
            _kill_group(proc)
            proc.wait()
    result = parse_result(out, impl)
    if result is None:
        return _error(
            impl,
            f"baseline exited with code {proc.returncode} and no result",
            stdout=_tail(out),
            stderr=_tail(err),
        )
    if proc.returncode != 0 and "error" not in result:
        result["error"] = f"baseline exited with code {proc.returncode}"
    if "error" in result:
        result["stderr"] = _tail(err)
    return result


def _check_args(bootstrap: str, topic: str, count: int) -> str | None:
    if not bootstrap or not topic:
        return "bootstrap and topic are required"
    if count < 1:
        return "count must be >= 1"
    return None


def measure_raw_aiokafka(
    bootstrap: str, topic: str, count: int, timeout_s: float = 600
) -> dict[str, object]:
    """Measure the raw aiokafka loop with this interpreter (the project venv); never raises."""
    problem = _check_args(bootstrap, topic, count)
    if problem:
        return _error(RAW_IMPL, problem)
    group = fresh_group("raw")
    cmd = [
        sys.executable,
        str(RAW_SCRIPT),
        "--bootstrap",
        bootstrap,
        "--topic",
        topic,
        "--count",
        str(count),
        "--group",
        group,
    ]
    result = _run_script(RAW_IMPL, cmd, timeout_s)
    result["group"] = group
    return result


def measure_faststream(
    bootstrap: str,
    topic: str,
    count: int,
    timeout_s: float = 600,
    ack_policy: str = "ack_first",
) -> dict[str, object]:
    """Measure the FastStream subscriber in its pinned venv (built once); never raises.

    ``timeout_s`` bounds the script, not the venv install, whose time is
    reported as ``venv_setup_s``. ``ack_policy="ack"`` commits per message and
    runs at a few hundred events/s: keep ``count`` small with it.
    """
    problem = _check_args(bootstrap, topic, count)
    if problem:
        return _error(FASTSTREAM_IMPL, problem)
    t0 = time.perf_counter()
    try:
        python = ensure_venv(FASTSTREAM_VENV, FASTSTREAM_REQUIREMENTS)
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        return _error(FASTSTREAM_IMPL, f"venv setup failed: {exc}")
    venv_s = time.perf_counter() - t0
    group = fresh_group("faststream")
    cmd = [
        str(python),
        str(FASTSTREAM_SCRIPT),
        "--bootstrap",
        bootstrap,
        "--topic",
        topic,
        "--count",
        str(count),
        "--group",
        group,
        "--ack-policy",
        ack_policy,
    ]
    result = _run_script(FASTSTREAM_IMPL, cmd, timeout_s)
    result["group"] = group
    result["venv_setup_s"] = round(venv_s, 3)
    return result


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(f"usage: {sys.argv[0]} BOOTSTRAP TOPIC COUNT  (the topic must hold COUNT orders)")
    _bootstrap, _topic, _count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    print(json.dumps(measure_raw_aiokafka(_bootstrap, _topic, _count)))
    print(json.dumps(measure_faststream(_bootstrap, _topic, _count)))
