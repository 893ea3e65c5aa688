"""The `eventflow` console script, run as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from eventflow import flow, task

EVENTFLOW = str(Path(sys.executable).with_name("eventflow"))


@task
def add_one(x: int) -> int:
    return x + 1


@flow(name="cli-flow")
def cli_flow(x: int) -> int:
    return add_one(add_one.submit(x))


def cli(url: str, *args: str) -> str:
    env = {**os.environ, "EVENTFLOW_DATABASE_URL": url}
    done = subprocess.run([EVENTFLOW, *args], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_runs_list_show_and_flows_list(default_store: str) -> None:
    state = cli_flow(1, return_state=True)
    assert state.result() == 3

    listed = json.loads(cli(default_store, "runs", "list", "--json"))
    assert [(r["id"], r["state_type"]) for r in listed] == [(state.run_id, "COMPLETED")]
    table = cli(default_store, "runs", "list", "--flow", "cli-flow", "--state", "completed")
    assert state.run_id in table and "Completed" in table
    assert "no flow runs" in cli(default_store, "runs", "list", "--state", "FAILED")

    shown = cli(default_store, "runs", "show", state.run_id[-8:])
    assert "add_one-0 -> add_one-1" in shown and "Completed" in shown
    detail = json.loads(cli(default_store, "runs", "show", state.run_id, "--json"))
    assert len(detail["task_runs"]) == 2 and detail["result"] == "3"

    flows = json.loads(cli(default_store, "flows", "list", "--json"))
    assert [(f["name"], f["runs"]) for f in flows] == [("cli-flow", 1)]


def test_db_upgrade_creates_a_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    assert "up to date" in cli(url, "db", "upgrade")
    assert (tmp_path / "new.db").exists()


def test_unknown_run_is_an_error_message(default_store: str) -> None:
    cli(default_store, "db", "upgrade")
    env = {**os.environ, "EVENTFLOW_DATABASE_URL": default_store}
    done = subprocess.run(
        [EVENTFLOW, "runs", "show", "abcdef"], capture_output=True, text=True, env=env
    )
    assert done.returncode == 1 and "no flow run 'abcdef'" in done.stderr


@flow(name="cli-failing")
def cli_failing(x: int) -> int:
    raise ValueError(f"bad x {x}")


def cli_error(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EVENTFLOW_DATABASE_URL": url}
    return subprocess.run([EVENTFLOW, *args], capture_output=True, text=True, env=env, timeout=60)


def test_retry_replay_and_prune(default_store: str) -> None:
    ok = cli_flow(1, return_state=True)
    failed = [cli_failing(i, return_state=True) for i in range(3)]
    assert {s.type.value for s in failed} == {"FAILED"}

    out = cli(default_store, "runs", "retry", failed[0].run_id[-10:])
    assert f"will retry {failed[0].run_id[-10:]}" in out
    pending = json.loads(cli(default_store, "runs", "list", "--state", "PENDING", "--json"))
    assert len(pending) == 1 and pending[0]["id"] in out
    assert pending[0]["retry_of"] == failed[0].run_id

    refused = cli_error(default_store, "runs", "retry", ok.run_id)
    assert refused.returncode == 1 and "only FAILED, CRASHED or CANCELLED" in refused.stderr

    replayed = json.loads(cli(default_store, "runs", "replay", "--flow", "cli-failing", "--json"))
    assert len(replayed) == 2  # the third was already asked for
    assert json.loads(cli(default_store, "runs", "replay", "--json")) == []

    assert "deleted 4 runs" in cli(default_store, "db", "prune", "--older-than", "0s", "--yes")
    left = json.loads(cli(default_store, "runs", "list", "--json"))
    assert sorted(r["state_type"] for r in left) == ["PENDING"] * 3

    bad = cli_error(default_store, "db", "prune", "--older-than", "soon")
    assert bad.returncode == 2 and "'soon' is neither a duration with a unit" in bad.stderr
