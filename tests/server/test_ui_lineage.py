"""The lineage page and the dashboard's late panel in headless Chromium, over a store whose
lineage was declared and reported as workers do: nodes and edges as stored, late and
affected marked by text as well as colour, flows linking to their runs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.remote.webdriver import WebDriver

from eventflow._lineage import Edge
from eventflow._server import create_app
from eventflow._store import _lineage
from eventflow._store._engine import make_engine
from eventflow._store._migrate import upgrade
from tests.server._serve import serve
from tests.server.test_ui import browser, click, text, wait

__all__ = ["browser"]

EDGES = [
    Edge("ingest", "kafka:orders", "reads", 5.0),
    Edge("ingest", "table:w.orders", "writes"),
    Edge("nightly", "table:w.orders", "reads"),
    Edge("nightly", "table:w.daily", "writes"),
    Edge("report", "table:w.daily", "reads"),
    Edge("clicks", "kafka:clicks", "reads", 3600.0),
]


async def declare(url: str) -> None:
    """kafka:orders late (its last event long ago), kafka:clicks fresh."""
    upgrade(url)
    engine = make_engine(url)
    try:
        await _lineage.declare(engine, EDGES, {e.flow for e in EDGES})
        await _lineage.touch(engine, "kafka:orders", time.time() - 100)
        await _lineage.touch(engine, "kafka:clicks", time.time())
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def lineage_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = f"sqlite+aiosqlite:///{Path(tmp_path_factory.mktemp('lineage')) / 'runs.db'}"
    asyncio.run(declare(url))
    with serve(create_app(url, migrate=False)) as base:
        yield base


def nodes(driver: WebDriver) -> dict[str, dict[str, Any]]:
    """Each graph node by name: kind, state, text, fill colour, link (read in one step)."""
    found: list[dict[str, Any]] = driver.execute_script(
        """return [...document.querySelectorAll('#lineage-graph .node')].map((n) => ({
            name: n.dataset.name, kind: n.dataset.kind, state: n.dataset.state,
            text: n.querySelector('.node-status').textContent,
            fill: n.querySelector('rect').getAttribute('fill'),
            href: n.getAttribute('href')}))"""
    )
    return {n["name"]: n for n in found}


def edges(driver: WebDriver) -> set[tuple[str, str, str]]:
    found: list[list[str]] = driver.execute_script(
        """return [...document.querySelectorAll('#lineage-graph path.edge')].map((e) =>
            [e.dataset.flow, e.dataset.dataset, e.dataset.direction])"""
    )
    return {(f, d, direction) for f, d, direction in found}


def test_the_lineage_page_draws_the_stored_graph_and_marks_late_and_affected(
    browser: WebDriver, lineage_server: str
) -> None:
    browser.get(f"{lineage_server}/#/lineage")
    wait(browser, lambda d: len(nodes(d)) == 8)
    shown = nodes(browser)
    assert {n: v["kind"] for n, v in shown.items()} == {
        "kafka:orders": "dataset",
        "kafka:clicks": "dataset",
        "table:w.orders": "dataset",
        "table:w.daily": "dataset",
        "ingest": "flow",
        "nightly": "flow",
        "report": "flow",
        "clicks": "flow",
    }
    assert edges(browser) == {(e.flow, e.dataset, e.direction) for e in EDGES}
    assert shown["kafka:orders"]["state"] == "late"
    assert shown["kafka:orders"]["text"].startswith("LATE by ")
    for name in ("table:w.orders", "table:w.daily", "ingest", "nightly", "report"):
        assert shown[name]["state"] == "affected"
        assert shown[name]["text"].startswith("AFFECTED"), shown[name]
    assert shown["kafka:clicks"]["text"].startswith("fresh")
    assert shown["clicks"]["text"].startswith("ok")
    colours = {shown[n]["fill"] for n in ("kafka:orders", "ingest", "kafka:clicks", "clicks")}
    assert len(colours) == 4  # late, affected, fresh and ok each their own colour too
    assert shown["report"]["href"] == "#/runs?flow=report"
    late = text(browser, "#lineage-late-list")
    assert late is not None and "kafka:orders affects ingest, nightly, report" in late
    row = text(browser, '#lineage-datasets tr[data-dataset="table:w.daily"]')
    assert row is not None and "AFFECTED" in row

    click(browser, '#lineage-graph a[data-name="nightly"]')
    wait(browser, lambda d: "#/runs?flow=nightly" in d.current_url)

    browser.get(f"{lineage_server}/#/dashboard")
    wait(browser, lambda d: text(d, "#dashboard-late-list") is not None)
    panel = text(browser, "#dashboard-late")
    assert panel is not None and "LATE" in panel and "kafka:orders" in panel
    assert "report" in panel
