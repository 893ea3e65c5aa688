"""Every mistake a user can make on the command line ends in one clear line and exit status 1.

Each test runs the console script as a user would, in a directory of its own,
and asserts the message and that no traceback was printed (unless --debug).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests._services import Postgres

EVENTFLOW = str(Path(sys.executable).with_name("eventflow"))


def eventflow(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("EVENTFLOW_")}
    environ.pop("PYTHONPATH", None)
    return subprocess.run(
        [EVENTFLOW, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**environ, **env},
        timeout=60,
    )


def short_error(done: subprocess.CompletedProcess[str]) -> str:
    """The error message, after asserting it is short, has no traceback, and failed."""
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 2, done.stderr
    assert lines[0].startswith("Error: ")
    return done.stderr


def test_runs_list_in_a_new_directory_says_there_is_no_store_and_creates_none(
    tmp_path: Path,
) -> None:
    message = short_error(eventflow(tmp_path, "runs", "list"))
    assert "no eventflow store at eventflow.db yet" in message
    assert "eventflow db upgrade" in message
    assert list(tmp_path.iterdir()) == []


def test_the_server_refuses_a_store_that_does_not_exist_and_creates_none(tmp_path: Path) -> None:
    message = short_error(eventflow(tmp_path, "server", "--port", "1"))
    assert "no eventflow store at eventflow.db yet" in message
    assert list(tmp_path.iterdir()) == []


def test_an_empty_sqlite_file_is_not_an_initialised_store(tmp_path: Path) -> None:
    (tmp_path / "empty.db").touch()
    done = eventflow(tmp_path, "flows", "list", EVENTFLOW_DATABASE_URL="sqlite:///empty.db")
    assert "no eventflow store at empty.db yet" in short_error(done)


@pytest.mark.postgres
def test_a_postgres_database_without_the_schema_is_not_an_initialised_store(
    tmp_path: Path, postgres: Postgres
) -> None:
    url = postgres.create_database()
    done = eventflow(tmp_path, "runs", "list", EVENTFLOW_DATABASE_URL=url)
    assert "no eventflow store at postgresql" in short_error(done)


def test_a_store_that_does_not_answer_is_named_without_its_password(tmp_path: Path) -> None:
    url = "postgresql://eventflow:hunter2@127.0.0.1:1/runs"
    message = short_error(eventflow(tmp_path, "runs", "list", EVENTFLOW_DATABASE_URL=url))
    assert (
        "cannot reach the store at postgresql+asyncpg://eventflow:***@127.0.0.1:1/runs" in message
    )
    assert "hunter2" not in message


def test_a_database_url_that_is_no_url_names_the_variable(tmp_path: Path) -> None:
    message = short_error(eventflow(tmp_path, "runs", "list", EVENTFLOW_DATABASE_URL="notaurl"))
    assert "EVENTFLOW_DATABASE_URL='notaurl' is not a database URL" in message
    assert "sqlite:///" in message and "postgresql://" in message


def test_an_unsupported_database_is_named_with_the_supported_ones(tmp_path: Path) -> None:
    done = eventflow(tmp_path, "runs", "list", EVENTFLOW_DATABASE_URL="mysql://u:secret@h/db")
    message = short_error(done)
    assert "names the database 'mysql', which eventflow does not support" in message
    assert "secret" not in message


def test_the_database_option_is_named_when_it_is_the_culprit(tmp_path: Path) -> None:
    message = short_error(eventflow(tmp_path, "runs", "list", "--database-url", "oracle://x/y"))
    assert "--database-url names the database 'oracle'" in message


def test_a_sqlite_store_in_a_missing_directory_is_refused_not_created(tmp_path: Path) -> None:
    done = eventflow(tmp_path, "db", "upgrade", EVENTFLOW_DATABASE_URL="sqlite:///nodir/runs.db")
    message = short_error(done)
    assert f"mkdir -p {tmp_path / 'nodir'}" in message
    assert not (tmp_path / "nodir").exists()


def test_a_sqlite_store_under_a_file_says_the_parent_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "afile").touch()
    done = eventflow(tmp_path, "db", "upgrade", EVENTFLOW_DATABASE_URL="sqlite:///afile/runs.db")
    assert f"{tmp_path / 'afile'} is a file, not a directory" in short_error(done)


def test_a_worker_refuses_a_store_in_a_missing_directory(tmp_path: Path) -> None:
    (tmp_path / "myapp.py").write_text("from eventflow import App\n\napp = App()\n")
    done = eventflow(tmp_path, "run", "myapp:app", EVENTFLOW_DATABASE_URL="sqlite:///nodir/runs.db")
    assert "the directory of the SQLite store nodir/runs.db does not exist" in short_error(done)


def test_a_module_that_is_not_there_says_where_it_was_looked_for(tmp_path: Path) -> None:
    message = short_error(eventflow(tmp_path, "run", "myapp:app"))
    assert f"no module named 'myapp' in {tmp_path}" in message


def test_a_syntax_error_in_the_app_shows_the_python_error_and_where(tmp_path: Path) -> None:
    (tmp_path / "myapp.py").write_text("from eventflow import App\nx = (\napp = App()\n")
    for target in ("myapp:app", "myapp.py:app"):
        message = short_error(eventflow(tmp_path, "run", target))
        assert "SyntaxError: '(' was never closed" in message
        assert f"({tmp_path / 'myapp.py'}, line 2)" in message
        assert message.strip().splitlines()[1].strip() == "x = ("


def test_an_import_error_in_the_app_shows_the_python_error_and_where(tmp_path: Path) -> None:
    (tmp_path / "myapp.py").write_text("import eventflow\nimport nosuchpackage\n")
    message = short_error(eventflow(tmp_path, "run", "myapp:app"))
    assert "ModuleNotFoundError: No module named 'nosuchpackage'" in message
    assert f"({tmp_path / 'myapp.py'}, line 2)" in message


def test_an_error_raised_while_importing_the_app_shows_the_line(tmp_path: Path) -> None:
    (tmp_path / "myapp.py").write_text("import eventflow\n\n1 / 0\n")
    message = short_error(eventflow(tmp_path, "run", "myapp.py"))
    assert "ZeroDivisionError: division by zero" in message and "line 3" in message


def test_a_missing_attribute_and_a_wrong_object_are_named(tmp_path: Path) -> None:
    (tmp_path / "myapp.py").write_text("import eventflow\n\napp = 3\n")
    assert "myapp has no attribute 'nope'" in short_error(eventflow(tmp_path, "run", "myapp:nope"))
    assert "not an eventflow App" in short_error(eventflow(tmp_path, "run", "myapp:app"))


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    done = eventflow(tmp_path, "--debug", "runs", "list")
    assert done.returncode == 1 and "Traceback" in done.stderr
    assert "StoreNotInitialisedError" in done.stderr
    done = eventflow(tmp_path, "runs", "list", EVENTFLOW_DEBUG="1")
    assert done.returncode == 1 and "Traceback" in done.stderr


def test_module_and_file_targets_both_load_from_the_current_directory(tmp_path: Path) -> None:
    """`eventflow backfill` takes the same targets as `run`; it finishes, so it shows both."""
    (tmp_path / "jobs.py").write_text(
        "from eventflow import flow\n\n\n@flow\ndef double(x: int) -> int:\n    return 2 * x\n"
    )
    for i, target in enumerate(("jobs:double", "jobs.py:double")):
        (tmp_path / f"in{i}.jsonl").write_text('{"x": 1}\n{"x": 2}\n')
        done = eventflow(
            tmp_path,
            "backfill",
            target,
            "--jsonl",
            f"in{i}.jsonl",
            "--no-progress",
            EVENTFLOW_DATABASE_URL="sqlite:///runs.db",
        )
        assert done.returncode == 0, done.stderr
    listed = eventflow(tmp_path, "runs", "list", EVENTFLOW_DATABASE_URL="sqlite:///runs.db")
    assert listed.stdout.count("Completed") == 4


def test_a_subscription_that_cannot_work_stops_the_worker_at_start(tmp_path: Path) -> None:
    (tmp_path / "myapp.py").write_text(
        "import socket\n"
        "from connectors.jsonl import JsonlSource\n"
        "from eventflow import App, flow\n\n\n"
        "@flow\n"
        "def uses_a_socket(conn: socket.socket) -> None: ...\n\n\n"
        "app = App()\n"
        "app.subscribe(JsonlSource('in.jsonl'), uses_a_socket)\n"
    )
    message = short_error(eventflow(tmp_path, "run", "myapp:app"))
    assert "cannot import myapp: flow 'uses-a-socket' cannot run from events" in message
    assert f"({tmp_path / 'myapp.py'}, line 11)" in message
