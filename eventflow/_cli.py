"""The `eventflow` command line."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import subprocess
import sys
from collections.abc import Coroutine, Sequence
from datetime import datetime
from typing import Any, TypeVar

import click

from ._errors import ConfigurationError
from ._loading import load_object
from ._settings import Settings
from ._states import StateType
from ._store._migrate import upgrade
from ._store._reader import RunNotFoundError, RunReader

T = TypeVar("T")

_STATE_CHOICES = [s.value for s in StateType]


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def _database_option(fn: Any) -> Any:
    return click.option(
        "--database-url",
        envvar="EVENTFLOW_DATABASE_URL",
        default=None,
        help="Store to use (default: EVENTFLOW_DATABASE_URL, else eventflow.db here).",
    )(fn)


def _database_url(value: str | None) -> str:
    return Settings.from_env({"EVENTFLOW_DATABASE_URL": value} if value else None).database_url


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(value).decode()}
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    return "\n".join(lines)


def _when(value: datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _duration(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return "-"
    seconds = (end - start).total_seconds()
    return f"{seconds * 1000:.0f}ms" if seconds < 1 else f"{seconds:.2f}s"


def _short(text: str | None, width: int) -> str:
    if not text:
        return ""
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


@click.group()
@click.version_option(package_name="eventflow")
def main() -> None:
    """eventflow: every event a tracked flow run."""


@main.group()
def runs() -> None:
    """Inspect flow runs."""


@runs.command("list")
@click.option("--flow", "flow_name", help="Only runs of this flow.")
@click.option(
    "--state",
    type=click.Choice(_STATE_CHOICES, case_sensitive=False),
    help="Only runs in this state.",
)
@click.option("--key", "event_key", help="Only runs of events with this key.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--json", "as_json", is_flag=True, help="One JSON array, for scripts.")
@_database_option
def runs_list(
    flow_name: str | None,
    state: str | None,
    event_key: str | None,
    limit: int,
    as_json: bool,
    database_url: str | None,
) -> None:
    """List flow runs, newest first."""
    reader = RunReader(_database_url(database_url))

    async def query() -> list[dict[str, Any]]:
        try:
            return await reader.list_flow_runs(
                flow=flow_name, state=state, event_key=event_key, limit=limit
            )
        finally:
            await reader.close()

    found = _run(query())
    if as_json:
        click.echo(json.dumps(_jsonable(found), indent=2))
        return
    if not found:
        click.echo("no flow runs")
        return
    rows = [
        [
            r["id"],
            r["flow_name"],
            r["state_name"],
            _when(r["created_at"]),
            _duration(r["started_at"], r["ended_at"]),
            _short(r["event_key"] or r["event_id"], 24),
            _short(r["error"], 60),
        ]
        for r in found
    ]
    click.echo(_table(["ID", "FLOW", "STATE", "CREATED", "DURATION", "EVENT", "ERROR"], rows))


@runs.command("show")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="The run, task runs, edges and logs as JSON.")
@_database_option
def runs_show(run_id: str, as_json: bool, database_url: str | None) -> None:
    """Show one flow run: its task runs, graph edges and logs.

    RUN_ID may be a unique prefix or suffix of the id.
    """
    reader = RunReader(_database_url(database_url))

    async def query() -> dict[str, Any]:
        try:
            return await reader.get_flow_run(run_id)
        finally:
            await reader.close()

    try:
        run = _run(query())
    except RunNotFoundError as error:
        raise click.ClickException(str(error)) from None
    if as_json:
        click.echo(json.dumps(_jsonable(run), indent=2))
        return
    names = {t["id"]: t["name"] for t in run["task_runs"]}
    click.echo(f"flow run   {run['id']}")
    click.echo(f"flow       {run['flow_name']}" + (f" ({run['name']})" if run["name"] else ""))
    click.echo(f"state      {run['state_name']} ({run['state_type']}), attempts {run['run_count']}")
    duration = _duration(run["started_at"], run["ended_at"])
    click.echo(f"created    {_when(run['created_at'])}   duration {duration}")
    if run["event_id"]:
        click.echo(
            f"event      {run['event_id']}"
            + (f" key={run['event_key']}" if run["event_key"] else "")
        )
    if run["parameters"]:
        click.echo(f"parameters {_short(run['parameters'], 200)}")
    if run["result"]:
        click.echo(f"result     {_short(run['result'], 200)}")
    if run["error"]:
        click.echo(f"error      {run['error']}")
    click.echo("")
    if run["task_runs"]:
        rows = [
            [
                t["name"],
                t["state_name"],
                str(t["run_count"]),
                _duration(t["started_at"], t["ended_at"]),
                _short(t["error"], 60),
            ]
            for t in run["task_runs"]
        ]
        click.echo(_table(["TASK RUN", "STATE", "ATTEMPTS", "DURATION", "ERROR"], rows))
    else:
        click.echo("no task runs")
    if run["edges"]:
        click.echo("")
        for edge in run["edges"]:
            upstream = names.get(edge["upstream_id"], edge["upstream_id"])
            downstream = names.get(edge["downstream_id"], edge["downstream_id"])
            click.echo(
                f"{upstream} -> {downstream}"
                + (" (wait_for)" if edge["kind"] == "wait_for" else "")
            )
    if run["logs"]:
        click.echo("")
        for entry in run["logs"]:
            where = names.get(entry["task_run_id"], "flow") if entry["task_run_id"] else "flow"
            level = {10: "DEBUG", 20: "INFO", 30: "WARNING", 40: "ERROR", 50: "CRITICAL"}.get(
                entry["level"], str(entry["level"])
            )
            click.echo(f"{_when(entry['timestamp'])} {level:<7} {where}: {entry['message']}")


@main.group()
def flows() -> None:
    """Inspect flows."""


@flows.command("list")
@click.option("--json", "as_json", is_flag=True)
@_database_option
def flows_list(as_json: bool, database_url: str | None) -> None:
    """List flows with their run counts by state."""
    reader = RunReader(_database_url(database_url))

    async def query() -> list[dict[str, Any]]:
        try:
            return await reader.list_flows()
        finally:
            await reader.close()

    found = _run(query())
    if as_json:
        click.echo(json.dumps(_jsonable(found), indent=2))
        return
    rows = [
        [
            f["name"],
            str(f["runs"]),
            " ".join(f"{k.lower()}={v}" for k, v in sorted(f["states"].items())),
            _when(f["last_run_at"]),
        ]
        for f in found
    ]
    click.echo(_table(["FLOW", "RUNS", "STATES", "LAST RUN"], rows) if rows else "no flows")


@main.group()
def db() -> None:
    """Manage the store's schema."""


@db.command("upgrade")
@_database_option
def db_upgrade(database_url: str | None) -> None:
    """Apply the store's migrations (also done on start)."""
    url = _database_url(database_url)
    upgrade(url)
    click.echo(f"store at {_redact(url)} is up to date")


@main.command("run")
@click.argument("target")
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 256),
    help="Worker processes sharing the load (Kafka: members of one consumer group).",
)
def run_command(target: str, workers: int) -> None:
    """Run the App at TARGET (path/to/file.py:app or package.module:app) until SIGTERM."""
    from ._runtime._app import App

    if workers > 1:
        upgrade(Settings.from_env().database_url)  # once, before the workers race to it
        sys.exit(_supervise([sys.executable, "-m", "eventflow", "run", target], workers))
    try:
        app = load_object(target)
    except ConfigurationError as error:
        raise click.ClickException(str(error)) from None
    if not isinstance(app, App):
        raise click.ClickException(f"{target} is a {type(app).__name__}, not an eventflow App")
    app.run()


def _supervise(command: list[str], workers: int) -> int:
    """Start `workers` copies of `command`, pass SIGTERM/SIGINT on, wait for all of them."""
    children = [subprocess.Popen(command) for _ in range(workers)]

    def forward(signum: int, _frame: Any) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [child.wait() for child in children]
    return max(codes, key=abs)


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
