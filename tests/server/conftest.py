from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from eventflow._server import create_app
from tests._services import Postgres
from tests.server._data import Runs, fill_store
from tests.server._serve import serve


@dataclass
class Store:
    url: str
    runs: Runs


def _new_store(kind: str, request: pytest.FixtureRequest, tmp: pytest.TempPathFactory) -> Store:
    if kind == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp.mktemp('server') / 'runs.db'}"
    else:
        server: Postgres = request.getfixturevalue("postgres")
        url = server.create_database()
    return Store(url, fill_store(url))


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Store:
    """A store with real runs, shared by one module's read-only tests, on each database."""
    return _new_store(request.param, request, tmp_path_factory)


@pytest.fixture(scope="module")
def server(store: Store) -> Iterator[str]:
    """The server over `store`, on 127.0.0.1; its base URL."""
    # a long lease: "w-alive" (heartbeat at fill time) stays alive however slow the tests run
    with serve(create_app(store.url, worker_lease=600)) as base:
        yield base


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def fresh_store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Store:
    """A store of its own, for a test that changes it."""
    return _new_store(request.param, request, tmp_path_factory)


@pytest.fixture(scope="module")
def sqlite_store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Store:
    """A SQLite store with real runs, for tests where the database makes no difference."""
    return _new_store("sqlite", request, tmp_path_factory)


@pytest.fixture
def fresh_sqlite_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """A SQLite store of its own, for a browser test that changes it."""
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('server') / 'runs.db'}"
    return Store(url, fill_store(url))
