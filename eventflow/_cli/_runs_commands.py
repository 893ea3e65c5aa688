"""`eventflow runs`: list, show, retry and replay flow runs."""

from __future__ import annotations

import json
import os
from datetime import datetime
from typing import Any

import click

from .._states import StateType
from .._store._reader import RunFilter, RunNotFoundError
from .._tracing import trace_id_of
from ._database import database_option, open_store, run_sync
from ._output import fmt_duration, fmt_table, fmt_time, jsonable, shorten, utc_timestamp

_STATE_CHOICES = [s.value for s in StateType]


@click.group()
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
@database_option
def runs_list(
    flow_name: str | None,
    state: str | None,
    event_key: str | None,
    limit: int,
    as_json: bool,
    database_url: str | None,
) -> None:
    """List flow runs, newest first."""
    reader = open_store(database_url)

    async def query() -> list[dict[str, Any]]:
        try:
            matching = RunFilter(flow=flow_name, state=state, event_key=event_key)
            return await reader.list_flow_runs(matching, limit=limit)
        finally:
            await reader.close()

    found = run_sync(query())
    if as_json:
        click.echo(json.dumps(jsonable(found), indent=2))
        return
    if not found:
        click.echo("no flow runs")
        return
    rows = [
        [
            r["id"],
            r["flow_name"],
            r["state_name"],
            fmt_time(r["created_at"]),
            fmt_duration(r["started_at"], r["ended_at"]),
            shorten(r["event_key"] or r["event_id"], 24),
            shorten(r["error"], 60),
        ]
        for r in found
    ]
    click.echo(fmt_table(["ID", "FLOW", "STATE", "CREATED", "DURATION", "EVENT", "ERROR"], rows))


@runs.command("show")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="The run, task runs, edges and logs as JSON.")
@database_option
def runs_show(run_id: str, as_json: bool, database_url: str | None) -> None:
    """Show one flow run: its task runs, graph edges and logs.

    RUN_ID may be a unique prefix or suffix of the id.
    """
    reader = open_store(database_url)

    async def query() -> dict[str, Any]:
        try:
            return await reader.get_flow_run(run_id)
        finally:
            await reader.close()

    try:
        run = run_sync(query())
    except RunNotFoundError as error:
        raise click.ClickException(str(error)) from None
    if as_json:
        click.echo(json.dumps(jsonable(run), indent=2))
        return
    names = {t["id"]: t["name"] for t in run["task_runs"]}
    click.echo(f"flow run   {run['id']}")
    click.echo(f"flow       {run['flow_name']}" + (f" ({run['name']})" if run["name"] else ""))
    click.echo(f"state      {run['state_name']} ({run['state_type']}), attempts {run['run_count']}")
    duration = fmt_duration(run["started_at"], run["ended_at"])
    click.echo(f"created    {fmt_time(run['created_at'])}   duration {duration}")
    if run["event_id"]:
        click.echo(
            f"event      {run['event_id']}"
            + (f" key={run['event_key']}" if run["event_key"] else "")
        )
    if run["parameters"]:
        click.echo(f"parameters {shorten(run['parameters'], 200)}")
    if run["result"]:
        click.echo(f"result     {shorten(run['result'], 200)}")
    if run["error"]:
        click.echo(f"error      {run['error']}")
    for label, linked in (
        ("retry of", run.get("retry_of")),
        ("resumes", run.get("resumed_from")),  # its reused task runs come from that run
        ("linked to", run.get("linked_run_id")),  # a flow control's record: the run it names
    ):
        if linked:
            click.echo(f"{label:<10} {linked}")
    trace_id = trace_id_of(run.get("trace_context"))
    if trace_id:  # its OpenTelemetry trace, in the tracing UI if a template says where
        template = os.environ.get("EVENTFLOW_TRACE_URL_TEMPLATE")
        where = f"  {template.replace('{trace_id}', trace_id)}" if template else ""
        click.echo(f"{'trace':<10} {trace_id}{where}")
    click.echo("")
    if run["task_runs"]:
        rows = [
            [
                t["name"],
                t["state_name"],
                str(t["run_count"]),
                fmt_duration(t["started_at"], t["ended_at"]),
                shorten(t["error"], 60),
            ]
            for t in run["task_runs"]
        ]
        click.echo(fmt_table(["TASK RUN", "STATE", "ATTEMPTS", "DURATION", "ERROR"], rows))
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
            click.echo(f"{fmt_time(entry['timestamp'])} {level:<7} {where}: {entry['message']}")


@runs.command("retry")
@click.argument("run_id")
@click.option(
    "--full", is_flag=True, help="Run every task again, not only those that did not complete."
)
@database_option
def runs_retry(run_id: str, full: bool, database_url: str | None) -> None:
    """Run a FAILED, CRASHED or CANCELLED run again from its stored event.

    The new run resumes the old one: task calls whose task run completed return
    the kept result without running again (`--full`: everything runs). A worker
    running the flow picks the new run up; it links to the old one. RUN_ID may
    be a unique prefix or suffix of the id. An event of a batch run, a Duplicate,
    a CancelSignal or an Abandoned event is not a run of its own: it cannot be
    retried. A run is retried at most once: to run it again, retry its retry.
    """
    from .._store._replay import ReplayError

    reader = open_store(database_url)

    async def retry() -> str:
        try:
            full_id = await reader.resolve_run_id(run_id)
            return await reader.retry(full_id, full=full)
        finally:
            await reader.close()

    try:
        new_id = run_sync(retry())
    except (RunNotFoundError, ReplayError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"flow run {new_id} will retry {run_id} (picked up by a worker running the flow)")


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
@click.option(
    "--full", is_flag=True, help="Run every task again, not only those that did not complete."
)
@database_option
def runs_replay(
    flow_name: str | None,
    states: tuple[str, ...],
    since: datetime | None,
    until: datetime | None,
    key: str | None,
    limit: int,
    as_json: bool,
    full: bool,
    database_url: str | None,
) -> None:
    """Run again every run matching the filter (each at most once).

    Each replay resumes its run as `runs retry` does: task calls whose task run
    completed return the kept result (`--full`: everything runs). Records of flow
    controls that are not runs of their own (an event of a batch run, a
    Duplicate, a CancelSignal, an event Abandoned while it waited for a control)
    are left out: replay a batch by its run. So is a run whose event its source
    delivered again (a crashed run's): that delivery ran it.
    """
    from .._store._replay import ReplayError, ReplayFilter

    reader = open_store(database_url)

    async def replay() -> tuple[list[str], int]:
        matching = ReplayFilter(
            flow_name=flow_name,
            state_types=states,
            since=utc_timestamp(since),
            until=utc_timestamp(until),
            key=key,
        )
        try:
            new_ids = await reader.replay(matching, limit=limit, full=full)
            left_out = 0 if as_json else await reader.count_not_replayed(matching)
            return new_ids, left_out
        finally:
            await reader.close()

    try:
        new_ids, left_out = run_sync(replay())
    except ReplayError as error:
        raise click.ClickException(str(error)) from None
    if as_json:
        click.echo(json.dumps(new_ids))
        return
    summary = f"{len(new_ids)} runs will be replayed by the workers running their flows"
    if left_out:
        summary += (
            f"; left out {left_out} records that cannot be retried"
            " (an event of a batch run, a duplicate, a cancel signal, an event abandoned"
            " while it waited for a flow control, or a run whose event was delivered again)"
        )
    click.echo(summary)
