"""The web UI in headless Chromium (Debian's chromium + chromium-driver, driven by Selenium)
over a store with real runs: lists, filters, live updates, graph, retry, charts, token."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait

from eventflow._server import create_app
from tests._services import ROOT
from tests.server._data import SECRET
from tests.server._serve import serve
from tests.server.conftest import Store

ARTIFACTS = ROOT / "artifacts"


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    options = Options()
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in a container
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1600",
    ):
        options.add_argument(argument)
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    service = Service(shutil.which("chromedriver") or "/usr/bin/chromedriver")
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: WebDriver, condition: Any, timeout: float = 10) -> Any:
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition)


def css(driver: WebDriver, selector: str) -> list[Any]:
    return list(driver.find_elements(By.CSS_SELECTOR, selector))


def run_rows(driver: WebDriver) -> list[str]:
    """The listed run ids, read in one step (the list is re-rendered while we look)."""
    ids: list[str] = driver.execute_script(
        "return [...document.querySelectorAll('#runs-body tr[data-run-id]')]"
        ".map((row) => row.dataset.runId)"
    )
    return ids


def wait_rows(driver: WebDriver, expected: set[str]) -> None:
    wait(driver, lambda d: set(run_rows(d)) == expected)


def screenshot(driver: WebDriver, tmp_path: Path, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    for folder in (tmp_path, ARTIFACTS):
        assert driver.save_screenshot(str(folder / f"ui-{name}.png"))


def test_runs_list_filters_and_live_updates(
    browser: WebDriver, fresh_sqlite_store: Store, tmp_path: Path
) -> None:
    runs = fresh_sqlite_store.runs
    every = {*runs.etl_ok, *runs.order_ok, runs.order_failed, runs.order_invalid}
    with serve(create_app(fresh_sqlite_store.url)) as base:
        browser.get(base + "/#/runs")
        wait_rows(browser, every)
        assert css(browser, "#runs-total")[0].text == "1\u20137 of 7"
        screenshot(browser, tmp_path, "runs")

        summary = css(browser, "#state-summary")[0].text
        assert summary.split() == ["completed", "5", "failed", "2"]
        css(browser, '#state-summary a[data-state="FAILED"]')[0].click()
        wait_rows(browser, {runs.order_failed, runs.order_invalid})
        assert "state=FAILED" in browser.current_url  # filters live in the URL
        assert Select(css(browser, "#filter-state")[0]).first_selected_option.text == "FAILED"
        Select(css(browser, "#filter-state")[0]).select_by_value("")
        key = css(browser, "#filter-key")[0]
        key.send_keys("c1", Keys.ENTER)
        wait_rows(browser, {runs.order_ok[1], runs.order_failed})
        key.clear()
        key.send_keys(Keys.ENTER)
        wait(browser, lambda d: len(run_rows(d)) == 7)
        wait(browser, lambda d: len(css(d, "#filter-flow option")) == 3)  # all, etl, process-order
        Select(css(browser, "#filter-flow")[0]).select_by_value("etl")
        Select(css(browser, "#filter-range")[0]).select_by_value("15m")
        wait_rows(browser, set(runs.etl_ok))

        # a new run shows up without reloading the page
        Select(css(browser, "#filter-flow")[0]).select_by_value("process-order")
        Select(css(browser, "#filter-range")[0]).select_by_value("all")
        wait(browser, lambda d: len(run_rows(d)) == 5)
        created = httpx.post(f"{base}/api/flow-runs/{runs.order_failed}/retry", timeout=10)
        assert created.status_code == 201
        wait(browser, lambda d: run_rows(d)[:1] == [created.json()["id"]])
        assert (
            browser.execute_script(  # highlighted as new
                "return document.querySelector('#runs-body tr.fresh')?.dataset.runId"
            )
            == created.json()["id"]
        )


def test_run_detail_graph_timeline_event_and_retry(
    browser: WebDriver, fresh_sqlite_store: Store, tmp_path: Path
) -> None:
    runs = fresh_sqlite_store.runs
    with serve(create_app(fresh_sqlite_store.url)) as base:
        browser.get(f"{base}/#/runs/{runs.etl_ok[0]}")
        wait(browser, lambda d: len(css(d, "#task-graph g.node")) == 5)
        edges = css(browser, "#task-graph path.edge")
        assert len(edges) == 5
        assert len(css(browser, "#task-graph path.edge.wait_for")) == 1
        assert len(css(browser, "#gantt rect.bar")) == 5
        assert "extracting 3 rows" in css(browser, "#log-table")[0].text
        assert not css(browser, "#retry-button")  # a completed run has no retry
        screenshot(browser, tmp_path, "run-graph")

        browser.get(f"{base}/#/runs/{runs.order_failed}")
        button = wait(browser, lambda d: (css(d, "#retry-button") or [None])[0])
        payload = css(browser, "#event-payload")[0].text
        assert '"password": "***"' in payload and SECRET not in browser.page_source
        assert css(browser, "#run-error")[0].text.endswith("(password ***)")
        screenshot(browser, tmp_path, "run-failed")
        button.click()
        link = wait(browser, lambda d: (css(d, "#retry-link") or [None])[0])
        new_id = link.text
        retry = httpx.get(f"{base}/api/flow-runs/{new_id}", timeout=10).json()
        assert (retry["retry_of"], retry["state_type"]) == (runs.order_failed, "PENDING")

        link.click()
        wait(browser, lambda d: css(d, "#retry-of"))
        assert css(browser, "#run-state")[0].text == "AwaitingReplay"
        css(browser, "#retry-of")[0].click()
        wait(browser, lambda d: len(css(d, "#replays .replay-link")) == 1)

        # the flow's page replays the failed runs not yet retried: only the invalid one is left
        browser.get(f"{base}/#/flows/process-order")
        wait(browser, lambda d: css(d, "#replay-failed"))[0].click()
        notice = wait(browser, lambda d: css(d, "#replay-notice"))[0]
        assert notice.text == "1 failed or crashed run(s) asked to run again."
        pending = httpx.get(f"{base}/api/flow-runs", params={"state": "PENDING"}).json()
        assert {r["retry_of"] for r in pending["items"]} == {runs.order_failed, runs.order_invalid}


def test_flow_overview_charts_and_sources(
    browser: WebDriver, sqlite_store: Store, tmp_path: Path
) -> None:
    with serve(create_app(sqlite_store.url, worker_lease=600)) as base:
        browser.get(base + "/#/flows/process-order")
        wait(browser, lambda d: css(d, "#throughput-chart rect.bar"))
        assert len(css(browser, "#failure-chart circle.point")) >= 1
        row = wait(browser, lambda d: css(d, '[data-subscription="orders->process-order"]'))[0]
        assert row.find_element(By.CSS_SELECTOR, ".lag").text == "7"
        screenshot(browser, tmp_path, "flow")

        browser.get(base + "/#/flows")
        wait(browser, lambda d: len(css(d, "#flows-body tr")) == 2)
        assert "failed 2" in css(browser, "#flows-body")[0].text

        browser.get(base + "/#/workers")
        wait(browser, lambda d: len(css(d, "#workers-body tr[data-worker-id]")) == 2)
        alive = css(browser, '[data-worker-id="w-alive"]')[0].text
        assert "alive" in alive


def test_token_is_asked_for_once_and_kept_in_the_tab(
    browser: WebDriver, sqlite_store: Store
) -> None:
    with serve(create_app(sqlite_store.url, token="ui-token")) as base:
        browser.get(base + "/#/runs")
        dialog = wait(browser, lambda d: d.find_element(By.ID, "token-dialog"))
        wait(browser, lambda d: dialog.get_attribute("open") is not None)
        css(browser, "#token-input")[0].send_keys("ui-token", Keys.ENTER)
        wait(browser, lambda d: len(run_rows(d)) == 7)
        assert browser.execute_script("return sessionStorage.getItem('eventflow-token')") == (
            "ui-token"
        )
        browser.execute_script("sessionStorage.clear()")
