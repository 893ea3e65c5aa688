"""Failures are visible where the user looks: the worker's log, the run's logs, their handlers."""

from __future__ import annotations

import asyncio
import logging
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from connectors.jsonl import JsonlSource
from eventflow import Settings, backfill, flow, get_run_logger, task
from tests._store import run_detail, sync


@task(retries=2, retry_delay_seconds=0)
def always_fails(x: int) -> int:
    raise ValueError(f"bad input {x}")


@flow(name="visible-failing")
def visible_failing(x: int) -> int:
    return always_fails(x)


@flow(name="visible-logging")
def visible_logging(x: int) -> int:
    get_run_logger().info("working on %d", x)
    return x


@flow(name="visible-slow")
async def visible_slow() -> None:
    await asyncio.sleep(60)


def records(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == name]


def test_a_failed_run_logs_one_warning_and_each_retry_one_info_line(
    default_store: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    state = visible_failing(7, return_state=True)
    assert state.is_failed()

    lines = records(caplog, "eventflow.runs.visible-failing")
    retries = [r for r in lines if r.levelno == logging.INFO]
    assert [r.getMessage() for r in retries] == [
        f"task run always_fails-0 failed (attempt {n}), retrying in 0s: ValueError: bad input 7"
        for n in (1, 2)
    ]
    failed = [r.getMessage() for r in lines if r.levelno == logging.WARNING]
    assert failed == [
        "task run always_fails-0 ended Failed after 3 attempt(s): ValueError: bad input 7",
        f"flow run {state.run_id} FAILED: ValueError: bad input 7",
    ]

    stored = sync(run_detail(default_store, state.run_id))["logs"]
    assert [(e["level"], e["message"]) for e in stored] == [
        (r.levelno, r.getMessage()) for r in lines
    ]


def test_a_failed_event_names_its_position(
    tmp_path: Path, sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    (tmp_path / "in.jsonl").write_text('{"x": 1}\n{"x": "not a number"}\n')
    result = backfill(
        visible_logging,
        JsonlSource(str(tmp_path / "in.jsonl")),
        settings=Settings(database_url=sqlite_url, flush_interval=0.02, metrics_port=0),
    )
    assert result.failed == 1
    [line] = [
        r for r in records(caplog, "eventflow.runs.visible-logging") if r.levelno >= logging.WARNING
    ]
    assert line.levelno == logging.WARNING
    message = line.getMessage()
    assert message.startswith(f"flow run {result.failures[0].run_id} FAILED on in.jsonl ")
    assert "offset 2: ParameterValidationError" in message


def test_a_crashed_run_logs_an_error(default_store: str, caplog: pytest.LogCaptureFixture) -> None:
    async def interrupted() -> None:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await visible_slow()

    asyncio.run(interrupted())
    [line] = [
        r for r in records(caplog, "eventflow.runs.visible-slow") if r.levelno >= logging.WARNING
    ]
    assert line.levelno == logging.ERROR and "CRASHED" in line.getMessage()


def test_run_logs_reach_the_users_own_handlers(default_store: str) -> None:
    seen: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    handler = Collect()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        visible_logging(5)
    finally:
        root.removeHandler(handler)
    [record] = [r for r in seen if r.getMessage() == "working on 5"]
    assert record.name == "eventflow.runs.visible-logging"


_STATUS_SCRIPT = """
import logging
from eventflow._logging import STATUS_LINE, configure_logging
configure_logging()
STATUS_LINE.show("orders: 10 events/s | store ok")
logging.getLogger("eventflow.runtime").info("shutting down")
STATUS_LINE.close()
"""


def test_log_lines_never_share_the_status_line() -> None:
    """Both streams on one terminal, as in a shell: a record erases the status, then redraws it."""
    controller, terminal = pty.openpty()
    try:
        child = subprocess.Popen(
            [sys.executable, "-c", _STATUS_SCRIPT],
            stdout=terminal,
            stderr=terminal,
            env={k: v for k, v in os.environ.items() if not k.startswith("EVENTFLOW_")},
        )
        os.close(terminal)
        output = b""
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
        assert child.wait(30) == 0
    finally:
        os.close(controller)
    text = output.decode().replace("\r\n", "\n")
    status = "orders: 10 events/s | store ok"
    assert f"\r\x1b[K{status}\r\x1b[K" in text  # erased before the record is written
    line = next(x for x in text.split("\n") if "shutting down" in x)
    assert line.startswith("\r\x1b[K") and status not in line.split("\x1b[K")[-1]
    assert text.endswith(f"{status}\n")  # drawn again after it, and left in place at the end
