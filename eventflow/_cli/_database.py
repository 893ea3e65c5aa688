"""The store a command works on: --database-url, opened read-only to the schema, and run."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

import click

from .._settings import Settings, check_database_url
from .._store._migrate import ensure_initialised
from .._store._operator import OperatorStore

T = TypeVar("T")


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def database_option(fn: Any) -> Any:
    return click.option(
        "--database-url",
        envvar="EVENTFLOW_DATABASE_URL",
        default=None,
        help="Store to use (default: EVENTFLOW_DATABASE_URL, else eventflow.db here).",
    )(fn)


def resolve_database_url(value: str | None) -> str:
    """The store's URL from --database-url (or its variable), else the settings' default."""
    if not value:
        return Settings.from_env().database_url
    from_env = os.environ.get("EVENTFLOW_DATABASE_URL") == value
    return check_database_url(value, "EVENTFLOW_DATABASE_URL" if from_env else "--database-url")


def open_store(database_url: str | None) -> OperatorStore:
    """The existing store at `database_url`; never creates one (StoreNotInitialisedError)."""
    url = resolve_database_url(database_url)
    run_sync(ensure_initialised(url))
    return OperatorStore(url)


def redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
