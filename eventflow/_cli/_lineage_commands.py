"""`eventflow lineage` and `eventflow late`: the lineage graph, and what is late (for cron)."""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from typing import Any

import click

from ._database import database_option, open_store, run_sync
from ._output import fmt_table


def _graph(database_url: str | None) -> dict[str, Any]:
    store = open_store(database_url)

    async def query() -> dict[str, Any]:
        try:
            graph = await store.lineage()
        finally:
            await store.close()
        return graph.to_json(time.time())

    return run_sync(query())


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S")


@click.command("lineage")
@click.option("--json", "as_json", is_flag=True, help="The graph as JSON (as /api/lineage).")
@database_option
def lineage_command(as_json: bool, database_url: str | None) -> None:
    """The lineage graph: datasets, the flows reading and writing them, their state."""
    graph = _graph(database_url)
    if as_json:
        click.echo(json.dumps(graph, indent=2))
        return
    if not graph["datasets"]:
        click.echo("no datasets declared (a worker declares its subscriptions' on start)")
        return
    rows = [
        [
            d["name"],
            d["state"].upper() if d["state"] in ("late", "affected") else d["state"],
            _age(d["age_seconds"]),
            _age(d["expect_seconds"]),
            ", ".join(d["writers"]) or "-",
            ", ".join(d["readers"]) or "-",
        ]
        for d in graph["datasets"]
    ]
    click.echo(fmt_table(["DATASET", "STATE", "AGE", "EXPECTED", "WRITTEN BY", "READ BY"], rows))
    click.echo()
    flows = [
        [
            f["name"],
            "AFFECTED" if f["state"] == "affected" else "ok",
            ", ".join(f["reads"]) or "-",
            ", ".join(f["writes"]) or "-",
        ]
        for f in graph["flows"]
    ]
    click.echo(fmt_table(["FLOW", "STATE", "READS", "WRITES"], flows))


@click.command("late")
@click.option("--json", "as_json", is_flag=True, help="The late datasets as JSON.")
@database_option
def late_command(as_json: bool, database_url: str | None) -> None:
    """What is late and what it affects; exits 1 when something is late (for cron checks)."""
    graph = _graph(database_url)
    late = graph["late"]
    by_name = {d["name"]: d for d in graph["datasets"]}
    if as_json:
        click.echo(json.dumps(late, indent=2))
    elif not late:
        click.echo("nothing is late")
    else:
        for item in late:
            dataset = by_name[item["dataset"]]
            click.echo(
                f"LATE {item['dataset']}: due {_when(dataset['due_at'])}, last"
                f" {_when(dataset['last_at'])} ({_age(dataset['age_seconds'])} ago)"
            )
            click.echo(f"  affected flows: {', '.join(item['affected_flows']) or 'none'}")
            if item["affected_datasets"]:
                click.echo(f"  affected datasets: {', '.join(item['affected_datasets'])}")
    if late:
        sys.exit(1)
