"""The `eventflow` command line."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, TypeVar

import click

from ._errors import ConfigurationError, EventflowError
from ._loading import load_object
from ._metrics import mark_worker_dead, serve_multiprocess
from ._settings import Settings, check_database_url
from ._states import StateType
from ._store._migrate import ensure_initialised, upgrade
from ._store._operator import OperatorStore
from ._store._reader import RunNotFoundError

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
    """The store's URL from --database-url (or its variable), else the settings' default."""
    if not value:
        return Settings.from_env().database_url
    from_env = os.environ.get("EVENTFLOW_DATABASE_URL") == value
    return check_database_url(value, "EVENTFLOW_DATABASE_URL" if from_env else "--database-url")


def _store(database_url: str | None) -> OperatorStore:
    """The existing store at `database_url`; never creates one (StoreNotInitialisedError)."""
    url = _database_url(database_url)
    _run(ensure_initialised(url))
    return OperatorStore(url)


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


class _Main(click.Group):
    """The top command: what a user's mistake raises ends as one line, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as error:
            if ctx.params.get("debug"):
                raise
            message = _user_error(error)
            if message is None:
                raise
            raise click.ClickException(message) from None


def _user_error(error: Exception) -> str | None:
    """The one-line message of an error a user can cause, None for a bug (a traceback)."""
    from sqlalchemy.exc import DBAPIError, OperationalError

    if isinstance(error, EventflowError):
        return str(error)
    if isinstance(error, OperationalError | DBAPIError):
        cause = str(error.orig).strip().splitlines()[0] if error.orig else type(error).__name__
        return f"the store could not be used: {cause} (run with --debug for the details)"
    if isinstance(error, OSError):
        return f"{error} (run with --debug for the details)"
    return None


@click.group(cls=_Main)
@click.version_option(package_name="eventflow")
@click.option(
    "--debug",
    is_flag=True,
    envvar="EVENTFLOW_DEBUG",
    help="Show the whole traceback of an error (also: EVENTFLOW_DEBUG=1).",
)
def main(debug: bool) -> None:
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
    reader = _store(database_url)

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
    reader = _store(database_url)

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
    for label, linked in (
        ("retry of", run.get("retry_of")),
        ("resumes", run.get("resumed_from")),  # its reused task runs come from that run
        ("linked to", run.get("linked_run_id")),  # a flow control's record: the run it names
    ):
        if linked:
            click.echo(f"{label:<10} {linked}")
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


@runs.command("retry")
@click.argument("run_id")
@click.option(
    "--full", is_flag=True, help="Run every task again, not only those that did not complete."
)
@_database_option
def runs_retry(run_id: str, full: bool, database_url: str | None) -> None:
    """Run a FAILED, CRASHED or CANCELLED run again from its stored event.

    The new run resumes the old one: task calls whose task run completed return
    the kept result without running again (`--full`: everything runs). A worker
    running the flow picks the new run up; it links to the old one. RUN_ID may
    be a unique prefix or suffix of the id. An event of a batch run, a Duplicate
    or a CancelSignal is not a run of its own: it cannot be retried.
    """
    from ._store._replay import ReplayError

    reader = _store(database_url)

    async def retry() -> str:
        try:
            full_id = await reader.resolve_run_id(run_id)
            return await reader.retry(full_id, full=full)
        finally:
            await reader.close()

    try:
        new_id = _run(retry())
    except (RunNotFoundError, ReplayError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"flow run {new_id} will retry {run_id} (picked up by a worker running the flow)")


def _utc_timestamp(moment: datetime | None) -> float | None:
    """Epoch seconds of a time typed on the command line, UTC unless it says otherwise."""
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


@runs.command("replay")
@click.option("--flow", "flow_name", help="Only runs of this flow.")
@click.option(
    "--state",
    "states",
    multiple=True,
    default=("FAILED", "CRASHED"),
    show_default=True,
    type=click.Choice(["FAILED", "CRASHED", "CANCELLED"], case_sensitive=False),
)
@click.option("--since", type=click.DateTime(), help="Runs created at or after this time (UTC).")
@click.option("--until", type=click.DateTime(), help="Runs created before this time (UTC).")
@click.option("--key", help="Only runs of events with this key.")
@click.option("--limit", default=1000, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option("--json", "as_json", is_flag=True, help="Print the new run ids as JSON.")
@_database_option
def runs_replay(
    flow_name: str | None,
    states: tuple[str, ...],
    since: datetime | None,
    until: datetime | None,
    key: str | None,
    limit: int,
    as_json: bool,
    database_url: str | None,
) -> None:
    """Run again every run matching the filter (each at most once).

    Records of flow controls that are not runs of their own (an event of a batch
    run, a Duplicate, a CancelSignal) are left out: replay a batch by its run.
    """
    from ._store._replay import ReplayError, ReplayFilter

    reader = _store(database_url)

    async def replay() -> tuple[list[str], int]:
        matching = ReplayFilter(
            flow_name=flow_name,
            state_types=states,
            since=_utc_timestamp(since),
            until=_utc_timestamp(until),
            key=key,
        )
        try:
            new_ids = await reader.replay(matching, limit=limit)
            left_out = 0 if as_json else await reader.count_not_replayed(matching)
            return new_ids, left_out
        finally:
            await reader.close()

    try:
        new_ids, left_out = _run(replay())
    except ReplayError as error:
        raise click.ClickException(str(error)) from None
    if as_json:
        click.echo(json.dumps(new_ids))
        return
    summary = f"{len(new_ids)} runs will be replayed by the workers running their flows"
    if left_out:
        summary += (
            f"; left out {left_out} records that cannot be retried"
            " (an event of a batch run, a duplicate or a cancel signal)"
        )
    click.echo(summary)


@main.group()
def flows() -> None:
    """Inspect flows."""


@flows.command("list")
@click.option("--json", "as_json", is_flag=True)
@_database_option
def flows_list(as_json: bool, database_url: str | None) -> None:
    """List flows with their run counts by state."""
    reader = _store(database_url)

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
    """Manage the store: its schema and retention."""


@db.command("upgrade")
@_database_option
def db_upgrade(database_url: str | None) -> None:
    """Apply the store's migrations (also done on start)."""
    url = _database_url(database_url)
    upgrade(url)
    click.echo(f"store at {_redact(url)} is up to date")


def _cutoff(text: str) -> float:
    """Epoch seconds of `--older-than`: a duration with its unit, or an ISO date (UTC)."""
    from ._settings import parse_duration

    try:
        return time.time() - parse_duration(text, require_unit=True)
    except ConfigurationError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is neither a duration with a unit (7d, 12h, 30m) "
            "nor an ISO date (2026-11-01)",
            param_hint="--older-than",
        ) from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


@db.command("prune")
@click.option(
    "--older-than",
    required=True,
    help="Delete finished runs created before this: a duration with its unit "
    "(7d, 12h, 30m) or an ISO date (2026-11-01, UTC unless it says otherwise).",
)
@click.option("--dry-run", is_flag=True, help="Print what would be deleted; delete nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation on a terminal.")
@_database_option
def db_prune(older_than: str, dry_run: bool, yes: bool, database_url: str | None) -> None:
    """Delete finished runs (with their task runs, edges and logs) older than --older-than.

    Runs still active are never deleted. On a terminal it asks before deleting.
    """
    before = _cutoff(older_than)
    reader = _store(database_url)
    cutoff = datetime.fromtimestamp(before, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")

    async def count() -> dict[tuple[str, str], int]:
        try:
            return await reader.count_prunable(before)
        finally:
            await reader.close()

    counts = _run(count())
    total = sum(counts.values())
    if total == 0:
        click.echo(f"no finished runs created before {cutoff}: nothing to delete")
        return
    if dry_run or (not yes and sys.stdin.isatty()):
        click.echo(f"{total} finished runs created before {cutoff}:")
        for (flow_name, state), n in sorted(counts.items()):
            click.echo(f"  {flow_name:<30} {state:<10} {n}")
    if dry_run:
        click.echo("dry run: nothing deleted")
        return
    if not yes and sys.stdin.isatty():
        click.confirm(f"delete these {total} runs?", abort=True)

    async def delete() -> int:
        try:
            return await reader.prune(before)
        finally:
            await reader.close()

    click.echo(f"deleted {_run(delete())} runs created before {cutoff}")


@main.command("server")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--token",
    envvar="EVENTFLOW_API_TOKEN",
    default=None,
    help="Bearer token every API call must carry (default: EVENTFLOW_API_TOKEN; none: open).",
)
@_database_option
def server_command(host: str, port: int, token: str | None, database_url: str | None) -> None:
    """Serve the REST API (/api, OpenAPI at /api/openapi.json) and the web UI (/)."""
    from ._extras import require

    require("fastapi", "server", "eventflow server")
    uvicorn = require("uvicorn", "server", "eventflow server")
    from ._server import create_app

    url = _database_url(database_url)
    _run(ensure_initialised(url))  # serves a store, never creates one
    click.echo(f"eventflow server: store {_redact(url)}, http://{host}:{port}/")
    uvicorn.run(create_app(url, token=token or None), host=host, port=port, log_level="info")


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
        settings = Settings.from_env()
        upgrade(settings.database_url)  # once, before the workers race to it
        with tempfile.TemporaryDirectory(prefix="eventflow-metrics-") as metrics_dir:
            # prometheus-client's multi-process mode: workers write their values
            # to files there, this process serves them summed
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
            server = None
            if settings.metrics_port:
                server = serve_multiprocess(
                    settings.metrics_host, settings.metrics_port, metrics_dir
                )
            command = [sys.executable, "-m", "eventflow", "run", target]
            code = _supervise(command, workers, metrics_dir)
            if server is not None:
                server.shutdown()
                server.server_close()
        sys.exit(code)
    try:
        app = load_object(target)
    except ConfigurationError as error:
        raise click.ClickException(str(error)) from None
    if not isinstance(app, App):
        raise click.ClickException(f"{target} is a {type(app).__name__}, not an eventflow App")
    app.run()


def _supervise(command: list[str], workers: int, metrics_dir: str) -> int:
    """Start `workers` copies of `command`, pass SIGTERM/SIGINT on, wait for all of them."""
    children = [subprocess.Popen(command) for _ in range(workers)]

    def forward(signum: int, _frame: Any) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = []
    remaining = {child.pid: child for child in children}
    while remaining:  # in the order they exit: a dead worker's live gauges go at once
        try:
            pid, status = os.waitpid(-1, 0)
        except InterruptedError:
            continue
        child = remaining.pop(pid, None)
        if child is None:
            continue
        child.returncode = os.waitstatus_to_exitcode(status)
        codes.append(child.returncode)
        mark_worker_dead(pid, metrics_dir)
    return max(codes, key=abs)


def _utc_time(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"not an ISO 8601 time: {value!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@main.command("backfill")
@click.argument("target")
@click.option("--jsonl", type=click.Path(exists=True, dir_okay=False), help="A JSONL file.")
@click.option("--kafka-topic", help="A Kafka topic (with an offset or time range).")
@click.option(
    "--bootstrap", envvar="EVENTFLOW_KAFKA_BOOTSTRAP", default="localhost:9092", show_default=True
)
@click.option("--partition", "partitions", type=int, multiple=True, help="Only these partitions.")
@click.option("--from-offset", type=click.IntRange(0), help="First offset (in every partition).")
@click.option("--to-offset", type=click.IntRange(0), help="End offset, exclusive.")
@click.option("--since", callback=_utc_time, help="First record time (ISO 8601; naive is UTC).")
@click.option("--until", callback=_utc_time, help="End record time, exclusive.")
@click.option("--group-id", help="Where progress is stored (default: backfill:<flow>:<input>).")
@click.option("--max-in-flight", default=64, show_default=True, type=click.IntRange(1))
@click.option("--dead-letter", type=click.Path(dir_okay=False), help="Append failures here.")
@click.option("--no-progress", is_flag=True, help="No progress bar on stderr.")
@_database_option
def backfill_command(
    target: str,
    jsonl: str | None,
    kafka_topic: str | None,
    bootstrap: str,
    partitions: tuple[int, ...],
    from_offset: int | None,
    to_offset: int | None,
    since: datetime | None,
    until: datetime | None,
    group_id: str | None,
    max_in_flight: int,
    dead_letter: str | None,
    no_progress: bool,
    database_url: str | None,
) -> None:
    """Run the flow at TARGET (path/to/file.py:flow) once per input event, resumably.

    Every event becomes a tracked run; failed ones are reported (exit status
    1) and never stop the backfill. Interrupted (SIGINT/SIGTERM, exit status
    130), the same command resumes where it stopped and runs nothing twice.
    """
    from ._backfill import backfill
    from ._flows import Flow
    from ._runtime._source import Source

    if (jsonl is None) == (kafka_topic is None):
        raise click.UsageError("give one input: --jsonl FILE or --kafka-topic TOPIC")
    try:
        flow = load_object(target)
        if not isinstance(flow, Flow):
            raise ConfigurationError(f"{target} is a {type(flow).__name__}, not an eventflow flow")
        source: Source
        if jsonl is not None:
            from connectors.jsonl import JsonlSource

            source = JsonlSource(jsonl, group_id=group_id)
        else:
            from connectors.kafka import KafkaRangeSource

            assert kafka_topic is not None
            source = KafkaRangeSource(
                kafka_topic,
                bootstrap_servers=bootstrap,
                group_id=group_id,
                partitions=partitions or None,
                from_offset=from_offset,
                to_offset=to_offset,
                since=since,
                until=until,
            )
        settings = Settings.from_env()
        if database_url:
            settings = replace(settings, database_url=_database_url(database_url))
        result = backfill(
            flow,
            source,
            settings=settings,
            max_in_flight=max_in_flight,
            dead_letter_path=dead_letter,
            progress=not no_progress,
        )
    except EventflowError as error:
        raise click.ClickException(str(error)) from None
    click.echo(result.summary())
    if result.interrupted:
        sys.exit(130)
    if result.failed:
        sys.exit(1)


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
