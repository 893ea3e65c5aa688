"""Cached virtualenvs for third-party baselines used by the benchmarks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

_MARKER = "eventflow-requirements.json"


def cache_root() -> Path:
    """Return ``${EVENTFLOW_CACHE:-~/.cache/eventflow}/bench-venvs``."""
    base = os.environ.get("EVENTFLOW_CACHE") or str(Path.home() / ".cache" / "eventflow")
    return Path(base).expanduser() / "bench-venvs"


def venv_python(venv_dir: Path) -> Path:
    """Return the interpreter path inside ``venv_dir``."""
    if os.name == "nt":
        return venv_dir / "Scripts" / "python.exe"
    return venv_dir / "bin" / "python"


def _marker_payload(requirements: list[str]) -> str:
    info = {
        "requirements": sorted(requirements),
        "python": sys.version.split()[0],
        "executable": sys.executable,
    }
    return json.dumps(info, sort_keys=True)


def ensure_venv(name: str, requirements: list[str]) -> Path:
    """Create (once) venv ``name`` with pinned ``requirements``; return its python.

    The venv lives under :func:`cache_root`. A marker file records the
    requirement list (and base interpreter); if it differs, the venv is rebuilt.
    Raises ``subprocess.CalledProcessError`` if creation or install fails.
    """
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"invalid venv name: {name!r}")
    venv_dir = cache_root() / name
    marker = venv_dir / _MARKER
    python = venv_python(venv_dir)
    payload = _marker_payload(requirements)
    if python.exists() and marker.exists() and marker.read_text() == payload:
        return python
    if venv_dir.exists():
        shutil.rmtree(venv_dir)
    venv_dir.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv_dir)], check=True)
    if requirements:
        env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", *requirements],
            check=True,
            env=env,
        )
    # Written last: an interrupted install leaves no marker and is redone.
    marker.write_text(payload)
    return python
