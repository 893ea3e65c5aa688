"""A traced run's page shows its trace id, linked through EVENTFLOW_TRACE_URL_TEMPLATE
(headless Chromium, as tests/server/test_ui.py); the API has both."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from selenium.webdriver.remote.webdriver import WebDriver

from eventflow import flow, task
from eventflow._server import create_app
from eventflow._testing._spans import SpanCollector
from tests.server._serve import serve
from tests.server.test_ui import browser, screenshot, text, wait

__all__ = ["browser"]  # the fixture, shared with the UI tests

TEMPLATE = "http://127.0.0.1:16686/trace/{trace_id}"


@task
def double(x: int) -> int:
    return 2 * x


@flow(name="traced-ui")
def traced_ui(x: int) -> int:
    return double(x)


def traced_run() -> tuple[str, str]:
    """A run made while tracing was on: its id and its trace id."""
    collector = SpanCollector()
    collector.start()
    try:
        state = traced_ui(3, return_state=True)
    finally:
        collector.stop()
    (span,) = [s for s in collector.spans() if s.name == "flow traced-ui"]
    assert span.context is not None and state.run_id is not None
    return state.run_id, f"{span.context.trace_id:032x}"


def test_the_run_page_links_the_runs_trace(
    browser: WebDriver,
    default_store: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    run_id, trace_id = traced_run()
    monkeypatch.setenv("EVENTFLOW_TRACE_URL_TEMPLATE", TEMPLATE)
    with serve(create_app(default_store)) as base:
        detail = httpx.get(f"{base}/api/flow-runs/{run_id}", timeout=10).json()
        assert detail["trace_id"] == trace_id
        assert detail["trace_url"] == TEMPLATE.format(trace_id=trace_id)
        browser.get(f"{base}/#/runs/{run_id}")
        wait(browser, lambda d: text(d, "#trace-link") == trace_id)
        link = browser.find_element("css selector", "#trace-link")
        assert link.get_attribute("href") == TEMPLATE.format(trace_id=trace_id)
        screenshot(browser, tmp_path, "run-trace-link")
    monkeypatch.delenv("EVENTFLOW_TRACE_URL_TEMPLATE")
    with serve(create_app(default_store)) as base:  # no template: the id alone
        browser.get(f"{base}/#/runs/{run_id}")
        wait(browser, lambda d: text(d, "#trace-id") == trace_id)
        assert text(browser, "#trace-link") is None
        assert httpx.get(f"{base}/api/flow-runs/{run_id}", timeout=10).json()["trace_url"] is None


def test_a_run_made_without_tracing_has_no_trace(
    browser: WebDriver, default_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = traced_ui(1, return_state=True)
    monkeypatch.setenv("EVENTFLOW_TRACE_URL_TEMPLATE", TEMPLATE)
    with serve(create_app(default_store)) as base:
        detail = httpx.get(f"{base}/api/flow-runs/{state.run_id}", timeout=10).json()
        assert detail["trace_id"] is None and detail["trace_url"] is None
        browser.get(f"{base}/#/runs/{state.run_id}")
        wait(browser, lambda d: text(d, "#run-state") is not None)
        assert text(browser, "#trace-id") is None and text(browser, "#trace-link") is None
