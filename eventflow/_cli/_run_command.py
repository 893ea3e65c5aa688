"""`eventflow run`: an App as a worker, or as several worker processes."""

from __future__ import annotations

import sys

import click

from .._errors import ConfigurationError
from .._loading import load_object


@click.command("run")
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
    from .._runtime._app import App

    if workers > 1:
        from .._runtime._worker_processes import run_worker_processes

        sys.exit(run_worker_processes(target, workers))
    try:
        app = load_object(target)
    except ConfigurationError as error:
        raise click.ClickException(str(error)) from None
    if not isinstance(app, App):
        raise click.ClickException(f"{target} is a {type(app).__name__}, not an eventflow App")
    app.run()
