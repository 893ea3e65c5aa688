"""The top command: what a user's mistake raises ends as one line, not a traceback."""

from __future__ import annotations

from typing import Any

import click

from .._errors import EventflowError


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
