"""`eventflow db`: the store's schema and retention."""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime

import click

from .._errors import ConfigurationError
from .._store._migrate import upgrade
from ._database import database_option, open_store, redact, resolve_database_url, run_sync


@click.group()
def db() -> None:
    """Manage the store: its schema and retention."""


@db.command("upgrade")
@database_option
def db_upgrade(database_url: str | None) -> None:
    """Apply the store's migrations (also done on start)."""
    url = resolve_database_url(database_url)
    upgrade(url)
    click.echo(f"store at {redact(url)} is up to date")


def _cutoff(text: str) -> float:
    """Epoch seconds of `--older-than`: a duration with its unit, or an ISO date (UTC)."""
    from .._settings import parse_duration

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
@database_option
def db_prune(older_than: str, dry_run: bool, yes: bool, database_url: str | None) -> None:
    """Delete finished runs (with their task runs, edges and logs) older than --older-than.

    Runs still active are never deleted. On a terminal it asks before deleting.
    """
    before = _cutoff(older_than)
    reader = open_store(database_url)
    cutoff = datetime.fromtimestamp(before, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")

    async def count() -> dict[tuple[str, str], int]:
        try:
            return await reader.count_prunable(before)
        finally:
            await reader.close()

    counts = run_sync(count())
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

    click.echo(f"deleted {run_sync(delete())} runs created before {cutoff}")
