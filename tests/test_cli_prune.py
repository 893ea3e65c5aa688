"""`eventflow db prune` deletes nothing by accident: a unit or date, a dry run, a question."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from eventflow import flow

EVENTFLOW = str(Path(sys.executable).with_name("eventflow"))


@flow(name="prune-me")
def prune_me(x: int) -> int:
    return x


def eventflow(url: str, *args: str, stdin: int | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EVENTFLOW_DATABASE_URL": url}
    return subprocess.run(
        [EVENTFLOW, *args],
        capture_output=stdin is None,
        stdin=stdin if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE if stdin is not None else None,
        stderr=subprocess.STDOUT if stdin is not None else None,
        text=True,
        env=env,
        timeout=60,
    )


def run_count(url: str) -> int:
    done = eventflow(url, "runs", "list", "--json")
    assert done.returncode == 0, done.stderr
    return len(json.loads(done.stdout))


def test_a_bare_number_is_refused_and_deletes_nothing(default_store: str) -> None:
    prune_me(1)
    done = eventflow(default_store, "db", "prune", "--older-than", "7")
    assert done.returncode == 2
    assert "'7' is neither a duration with a unit (7d, 12h, 30m) nor an ISO date" in done.stderr
    assert run_count(default_store) == 1


def test_units_and_iso_dates_choose_the_cutoff(default_store: str) -> None:
    prune_me(1)
    for older_than in ("7d", "12h", "30m", "2020-01-01", "2020-01-01T00:00:00+02:00"):
        done = eventflow(default_store, "db", "prune", "--older-than", older_than)
        assert done.returncode == 0, done.stderr
        assert "nothing to delete" in done.stdout
    assert run_count(default_store) == 1
    tomorrow = datetime.fromtimestamp(time.time() + 86400, UTC).date().isoformat()
    done = eventflow(default_store, "db", "prune", "--older-than", tomorrow)
    assert done.returncode == 0 and "deleted 1 runs" in done.stdout
    assert run_count(default_store) == 0


def test_dry_run_prints_what_would_go_and_deletes_nothing(default_store: str) -> None:
    for i in range(3):
        prune_me(i)
    done = eventflow(default_store, "db", "prune", "--older-than", "0s", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "3 finished runs created before" in done.stdout
    assert "prune-me" in done.stdout and "COMPLETED" in done.stdout
    assert "dry run: nothing deleted" in done.stdout
    assert run_count(default_store) == 3


def test_a_terminal_is_asked_and_no_keeps_the_runs(default_store: str) -> None:
    prune_me(1)
    for answer, left in (("n", 1), ("y", 0)):
        controller, terminal = pty.openpty()
        try:
            os.write(controller, f"{answer}\n".encode())
            done = eventflow(default_store, "db", "prune", "--older-than", "0s", stdin=terminal)
        finally:
            os.close(controller)
            os.close(terminal)
        assert "delete these 1 runs? [y/N]" in done.stdout
        assert done.returncode == (1 if answer == "n" else 0), done.stdout
        assert run_count(default_store) == left


def test_yes_skips_the_question_on_a_terminal(default_store: str) -> None:
    prune_me(1)
    controller, terminal = pty.openpty()
    try:
        done = eventflow(
            default_store, "db", "prune", "--older-than", "0s", "--yes", stdin=terminal
        )
    finally:
        os.close(controller)
        os.close(terminal)
    assert done.returncode == 0 and "deleted 1 runs" in done.stdout
    assert "[y/N]" not in done.stdout
