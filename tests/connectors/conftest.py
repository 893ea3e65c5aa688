from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.connectors._servers import ScriptedApp, ServerThread, serve


@pytest.fixture(scope="module")
def scripted() -> ScriptedApp:
    return ScriptedApp()


@pytest.fixture(scope="module")
def feed(scripted: ScriptedApp) -> Iterator[ServerThread]:
    """The scripted app served once per module; each test routes its own paths."""
    yield from serve(scripted)
