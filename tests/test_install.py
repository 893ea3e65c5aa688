"""The package as a user gets it: the wheel in a fresh virtualenv, core first, then each extra.

A newcomer's path from the getting-started page: install, run the quickstart
app once and as a worker, list the runs, type-check the app with `mypy
--strict`; then the extras, each unlocking what it names.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests._services import Postgres

ROOT = Path(__file__).resolve().parents[1]
PIP = [sys.executable, "-m", "pip"]


class Venv:
    """A virtualenv without pip of its own: the suite's pip installs into it."""

    def __init__(self, path: Path, wheel: Path, app: Path) -> None:
        self.path = path
        self.wheel = wheel
        self.app = app
        self.python = path / "bin" / "python"

    def install(self, extra: str | None = None) -> None:
        target = f"{self.wheel}[{extra}]" if extra else str(self.wheel)
        subprocess.run(
            [*PIP, "--python", str(self.python), "install", "-q", target],
            check=True,
            timeout=600,
        )

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(args),
            cwd=self.app,
            capture_output=True,
            text=True,
            env=self.environ(**env),
            timeout=120,
        )

    def environ(self, **env: str) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("EVENTFLOW_", "PYTHON"))}
        base["PATH"] = f"{self.path / 'bin'}{os.pathsep}{base.get('PATH', '')}"
        return {**base, "EVENTFLOW_METRICS_PORT": "0", **env}

    def eventflow(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return self.run(str(self.path / "bin" / "eventflow"), *args, **env)


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """The wheel, built from this checkout, installed alone (no extra) into a new virtualenv."""
    where = tmp_path_factory.mktemp("install")
    subprocess.run(
        [*PIP, "wheel", "-q", "--no-deps", "-w", str(where), str(ROOT)], check=True, timeout=600
    )
    [wheel] = where.glob("eventflow-*.whl")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where / "venv")], check=True)
    app = where / "app"
    app.mkdir()
    (app / "quickstart.py").write_text((ROOT / "docs" / "examples" / "quickstart.py").read_text())
    env = Venv(where / "venv", wheel, app)
    env.install()
    return env


def wait_for(check: Callable[[], bool], timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return check()


def test_the_core_install_runs_the_quickstart_as_the_docs_say(venv: Venv) -> None:
    installed = {p.name for p in (venv.path / "lib").glob("python*/site-packages/*")}
    for left_out in ("fastapi", "uvicorn", "asyncpg", "httpx", "croniter", "tqdm", "opentelemetry"):
        assert left_out not in installed

    once = venv.run(str(venv.python), "quickstart.py")
    assert once.returncode == 0, once.stderr
    assert once.stdout.strip().splitlines()[-1] in ("even", "odd")

    worker = subprocess.Popen(
        [str(venv.path / "bin" / "eventflow"), "run", "quickstart:app"],
        cwd=venv.app,
        env=venv.environ(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def scheduled_runs() -> list[dict[str, object]]:
            listed = venv.eventflow("runs", "list", "--flow", "tick", "--json")
            assert listed.returncode == 0, listed.stderr
            runs: list[dict[str, object]] = json.loads(listed.stdout)
            return [r for r in runs if r["event_source"] and r["state_type"] == "COMPLETED"]

        assert wait_for(lambda: bool(scheduled_runs())), "the worker ran no tick"
    finally:
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=60)
    assert worker.returncode == 0, output
    assert "the tick at" in output and "Traceback" not in output

    table = venv.eventflow("runs", "list")
    assert table.returncode == 0 and table.stdout.count("Completed") >= 2


def test_a_users_app_passes_mypy_strict_against_the_installed_package(venv: Venv) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--python-executable",
            str(venv.python),
            "quickstart.py",
        ],
        cwd=venv.app,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout


def test_a_missing_extra_is_named(venv: Venv) -> None:
    server = venv.eventflow("server")
    assert server.returncode == 1
    assert server.stderr.strip() == (
        "Error: eventflow server cannot be used without the package 'fastapi', "
        "which is not installed: pip install 'eventflow[server]'"
    )
    http = venv.run(str(venv.python), "-c", "import connectors.http")
    assert "pip install 'eventflow[http]'" in http.stderr
    cron = venv.run(
        str(venv.python),
        "-c",
        "from connectors.schedule import CronSchedule; CronSchedule('* * * * *')",
    )
    assert "pip install 'eventflow[schedules]'" in cron.stderr
    store = venv.eventflow("runs", "list", EVENTFLOW_DATABASE_URL="postgresql://u@127.0.0.1:1/db")
    assert store.returncode == 1
    assert "a PostgreSQL store cannot be used without the package 'asyncpg'" in store.stderr
    assert "pip install 'eventflow[postgres]'" in store.stderr
    # OTEL_* ask for traces that cannot be made: said once, the run is not held up
    traced = venv.run(
        str(venv.python),
        "-c",
        "import sys, datetime, quickstart\n"
        "for _ in range(2): quickstart.tick(datetime.datetime.now())\n"
        "print(sorted(m for m in sys.modules if 'opentelemetry' in m))",
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:1",
    )
    assert traced.returncode == 0, traced.stderr
    assert traced.stdout.strip().splitlines()[-1] == "[]"
    assert traced.stderr.count('pip install "eventflow[otel]"') == 1


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def server(venv: Venv) -> Iterator[str]:
    venv.install("server")
    assert venv.run(str(venv.python), "quickstart.py").returncode == 0  # a run to show
    port = free_port()
    process = subprocess.Popen(
        [str(venv.path / "bin" / "eventflow"), "server", "--port", str(port)],
        cwd=venv.app,
        env=venv.environ(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(30)


def test_each_extra_brings_its_feature(venv: Venv, server: str) -> None:
    def answers() -> bool:
        try:
            with urllib.request.urlopen(f"{server}/", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    assert wait_for(answers), "the UI did not answer"
    with urllib.request.urlopen(f"{server}/api/flow-runs?flow=tick", timeout=5) as response:
        assert json.load(response)["total"] >= 1

    checks = {
        "http": "import connectors.http, connectors.prometheus, eventflow; "
        "eventflow.WebhookNotifier('http://127.0.0.1:1/')",
        "schedules": "from connectors.schedule import CronSchedule; CronSchedule('* * * * * *')",
        "backfill": "import tqdm",
        "postgres": "import asyncpg",
        "kafka": "import aiokafka",
        "otel": "import eventflow; from eventflow.testing import TestApp; "
        "TestApp(eventflow.App(), trace=True)",
    }
    for extra, code in checks.items():
        venv.install(extra)
        done = venv.run(str(venv.python), "-c", code)
        assert done.returncode == 0, (extra, done.stderr)
    venv.install("all")


@pytest.mark.postgres
def test_the_postgres_extra_reaches_a_real_store(venv: Venv, postgres: Postgres) -> None:
    venv.install("postgres")
    url = postgres.create_database()
    upgraded = venv.eventflow("db", "upgrade", EVENTFLOW_DATABASE_URL=url)
    assert upgraded.returncode == 0, upgraded.stderr
    listed = venv.eventflow("runs", "list", EVENTFLOW_DATABASE_URL=url)
    assert listed.returncode == 0 and "no flow runs" in listed.stdout
