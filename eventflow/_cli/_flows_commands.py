"""`eventflow flows`: the flows in the store."""

from __future__ import annotations

import json
from typing import Any

import click

from ._database import database_option, open_store, run_sync
from ._output import fmt_table, fmt_time, jsonable


@click.group()
def flows() -> None:
    """Inspect flows."""


@flows.command("list")
@click.option("--json", "as_json", is_flag=True)
@database_option
def flows_list(as_json: bool, database_url: str | None) -> None:
    """List flows with their run counts by state."""
    reader = open_store(database_url)

    async def query() -> list[dict[str, Any]]:
        try:
            return await reader.list_flows()
        finally:
            await reader.close()

    found = run_sync(query())
    if as_json:
        click.echo(json.dumps(jsonable(found), indent=2))
        return
    rows = [
        [
            f["name"],
            str(f["runs"]),
            " ".join(f"{k.lower()}={v}" for k, v in sorted(f["states"].items())),
            fmt_time(f["last_run_at"]),
        ]
        for f in found
    ]
    click.echo(fmt_table(["FLOW", "RUNS", "STATES", "LAST RUN"], rows) if rows else "no flows")
