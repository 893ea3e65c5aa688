"""`eventflow server`: the REST API and the web UI."""

from __future__ import annotations

import click

from .._store._migrate import ensure_initialised
from ._database import database_option, redact, resolve_database_url, run_sync


@click.command("server")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--token",
    envvar="EVENTFLOW_API_TOKEN",
    default=None,
    help="Bearer token every API call must carry (default: EVENTFLOW_API_TOKEN; none: open).",
)
@database_option
def server_command(host: str, port: int, token: str | None, database_url: str | None) -> None:
    """Serve the REST API (/api, OpenAPI at /api/openapi.json) and the web UI (/)."""
    from .._extras import require

    require("fastapi", "server", "eventflow server")
    uvicorn = require("uvicorn", "server", "eventflow server")
    from .._server import create_app

    url = resolve_database_url(database_url)
    run_sync(ensure_initialised(url))  # serves a store, never creates one
    click.echo(f"eventflow server: store {redact(url)}, http://{host}:{port}/")
    uvicorn.run(
        create_app(url, token=token or None, sweep=True), host=host, port=port, log_level="info"
    )
