from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventflow._defaults import reset_default_writer
from tests._kafka import Kafka
from tests._prometheus import Prometheus
from tests._services import Postgres


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    server = Postgres.start_new()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def kafka() -> Iterator[Kafka]:
    broker = Kafka.start_new()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def prometheus() -> Iterator[Prometheus]:
    """A real Prometheus server scraping itself (tests/_prometheus.py)."""
    server = Prometheus.start_new()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty store of each kind: a SQLite file, a new PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'runs.db'}"
    server: Postgres = request.getfixturevalue("postgres")
    return server.create_database()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'runs.db'}"


@pytest.fixture
def default_store(sqlite_url: str) -> Iterator[str]:
    """Point direct flow calls at a fresh SQLite store for one test."""
    yield from _use_default_store(sqlite_url)


@pytest.fixture
def any_default_store(database_url: str) -> Iterator[str]:
    """Like `default_store`, once per database kind."""
    yield from _use_default_store(database_url)


def _use_default_store(url: str) -> Iterator[str]:
    previous = os.environ.get("EVENTFLOW_DATABASE_URL")
    reset_default_writer()
    os.environ["EVENTFLOW_DATABASE_URL"] = url
    try:
        yield url
    finally:
        reset_default_writer()
        if previous is None:
            os.environ.pop("EVENTFLOW_DATABASE_URL", None)
        else:
            os.environ["EVENTFLOW_DATABASE_URL"] = previous


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Start the slowest tests first, each followed by one quick test.

    With `--dist load --maxschedchunk 1` every test process is first sent two
    tests: this way each gets at most one slow test, and the minutes-long fault
    tests run beside the rest of the suite instead of after it."""
    slow = [item for item in items if item.get_closest_marker("slow")]
    quick = [item for item in items if not item.get_closest_marker("slow")]
    slow.sort(key=_expected_seconds, reverse=True)
    ordered: list[pytest.Item] = []
    for item in slow:
        ordered.append(item)
        if quick:
            ordered.append(quick.pop(0))
    items[:] = ordered + quick


def _expected_seconds(item: pytest.Item) -> float:
    marker = item.get_closest_marker("slow")
    assert marker is not None and marker.args, f"{item.nodeid}: slow(seconds) needs its seconds"
    return float(marker.args[0])
