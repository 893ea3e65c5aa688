"""The web UI in headless Chromium (Debian's chromium + chromium-driver, driven by Selenium)
over a store with real runs: lists, filters, live updates, graph, retry, charts, token.

The page refreshes itself every 1.5 s. Tests never hold an element across a refresh on
trust: they read in one step (`text`, `run_rows`), click through `click` (which looks the
element up again if a refresh replaced it), and wait for what they assert."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import (
    ElementClickInterceptedException,
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait

from eventflow._server import create_app
from tests._services import ROOT
from tests.server._data import SECRET, resumed_etl
from tests.server._serve import serve
from tests.server.conftest import Store
from tests.server.test_dashboard import expected

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
    """Poll `condition` until it is truthy; on a timeout, keep what the page showed."""
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition)
    except TimeoutException:
        ARTIFACTS.mkdir(exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "ui-timeout.png"))
        shown = driver.execute_script("return document.body.innerText")
        raise AssertionError(
            f"timed out at {driver.current_url}; the page shows:\n{shown}"
        ) from None


def css(driver: WebDriver, selector: str) -> list[Any]:
    return list(driver.find_elements(By.CSS_SELECTOR, selector))


def text(driver: WebDriver, selector: str) -> str | None:
    """The text of the first element matching `selector` (None if there is none), in one step."""
    found: str | None = driver.execute_script(
        "const el = document.querySelector(arguments[0]);"
        " return el ? el.innerText ?? el.textContent : null",  # SVG text has no innerText
        selector,
    )
    return found


def wait_text(driver: WebDriver, selector: str, expected: str) -> None:
    wait(driver, lambda d: text(d, selector) == expected)


def click(driver: WebDriver, selector: str) -> None:
    """Click the element `selector` finds once it is there and stays put (a click aims at
    coordinates: content arriving above a button moves it), finding it again if it went."""
    seen: dict[str, Any] = {}

    def attempt(d: WebDriver) -> bool:
        found = css(d, selector)
        if not found:
            return False
        try:
            rect = found[0].rect
            if rect != seen.get("rect"):
                seen["rect"] = rect
                return False
            found[0].click()
        except (StaleElementReferenceException, ElementClickInterceptedException):
            return False
        return True

    wait(driver, attempt)


def refreshes(driver: WebDriver) -> int:
    count: str | None = driver.execute_script("return document.body.dataset.refreshes || '0'")
    return int(count or 0)


def wait_refreshes(driver: WebDriver, n: int = 2) -> None:
    """Wait until the page has refreshed itself `n` more times."""
    start = refreshes(driver)
    wait(driver, lambda d: refreshes(d) >= start + n)


def labels_fit(driver: WebDriver) -> bool:
    """Whether every text of the task graph's nodes ends inside its box."""
    fit: bool = driver.execute_script(
        """return [...document.querySelectorAll('#task-graph g.node')].every((g) => {
            const box = g.querySelector('rect').getBBox();
            return [...g.querySelectorAll('text')].every((t) =>
                t.getBBox().x + t.getBBox().width <= box.width - 4);
        })"""
    )
    return fit


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
        wait_text(browser, "#runs-total", "1\u20137 of 7")
        screenshot(browser, tmp_path, "runs")

        wait(
            browser,
            lambda d: (
                (text(d, "#state-summary") or "").split()[:4] == ["completed", "5", "failed", "2"]
            ),
        )
        click(browser, '#state-summary a[data-state="FAILED"]')
        wait_rows(browser, {runs.order_failed, runs.order_invalid})
        assert "state=FAILED" in browser.current_url  # filters live in the URL
        assert Select(css(browser, "#filter-state")[0]).first_selected_option.text == "FAILED"
        Select(css(browser, "#filter-state")[0]).select_by_value("")
        key = css(browser, "#filter-key")[0]  # the filters are built once, never refreshed
        key.send_keys("c1", Keys.ENTER)
        wait_rows(browser, {runs.order_ok[1], runs.order_failed})
        key.clear()
        key.send_keys(Keys.ENTER)
        wait(browser, lambda d: len(run_rows(d)) == 7)
        wait(browser, lambda d: len(css(d, "#filter-flow option")) == 3)  # all, etl, process-order
        Select(css(browser, "#filter-flow")[0]).select_by_value("etl")
        Select(css(browser, "#filter-range")[0]).select_by_value("15m")
        wait_rows(browser, set(runs.etl_ok))

        # a new run shows up without reloading the page, and the rows already there stay
        Select(css(browser, "#filter-flow")[0]).select_by_value("process-order")
        Select(css(browser, "#filter-range")[0]).select_by_value("all")
        wait(browser, lambda d: len(run_rows(d)) == 5)
        browser.execute_script(
            """const row = document.querySelector('#runs-body tr[data-run-id]:last-child');
            row.__probe = true;
            const range = document.createRange();
            range.selectNodeContents(row.querySelector('td:nth-child(3)'));
            getSelection().removeAllRanges();
            getSelection().addRange(range);"""
        )
        created = httpx.post(f"{base}/api/flow-runs/{runs.order_failed}/retry", timeout=10)
        assert created.status_code == 201
        wait(browser, lambda d: run_rows(d)[:1] == [created.json()["id"]])
        assert (
            browser.execute_script(  # highlighted as new
                "return document.querySelector('#runs-body tr.fresh')?.dataset.runId"
            )
            == created.json()["id"]
        )
        # the refresh patched the list: the old row is the same node, the selection intact
        assert browser.execute_script(
            "return document.querySelector('#runs-body tr[data-run-id]:last-child').__probe"
        )
        assert browser.execute_script("return getSelection().toString()") == "process-order"


def test_run_detail_graph_timeline_event_and_retry(
    browser: WebDriver, fresh_sqlite_store: Store, tmp_path: Path
) -> None:
    runs = fresh_sqlite_store.runs
    with serve(create_app(fresh_sqlite_store.url)) as base:
        browser.get(f"{base}/#/runs/{runs.etl_ok[0]}")
        wait(browser, lambda d: len(css(d, "#task-graph g.node")) == 5)
        assert len(css(browser, "#task-graph path.edge")) == 5
        assert len(css(browser, "#task-graph path.edge.wait_for")) == 1
        assert len(css(browser, "#gantt rect.bar")) == 5
        assert "extracting 3 rows" in (text(browser, "#log-table") or "")
        assert not css(browser, "#retry-button")  # a completed run has no retry
        # every label fits its node; every bar of the timeline is visible
        assert labels_fit(browser)
        widths = browser.execute_script(
            "return [...document.querySelectorAll('#gantt rect.bar')].map((r) => r.getBBox().width)"
        )
        assert min(widths) >= 6
        screenshot(browser, tmp_path, "run-graph")

        browser.get(f"{base}/#/runs/{runs.order_failed}")
        wait(browser, lambda d: css(d, "#retry-button"))
        assert text(browser, "#full-retry-button") == "Full re-run"  # Retry resumes
        payload = text(browser, "#event-payload") or ""
        assert '"password": "***"' in payload and SECRET not in browser.page_source
        assert (text(browser, "#run-error") or "").endswith("(password ***)")
        assert text(browser, "#task-graph g.node .node-status") == "Failed · 2 attempts"
        assert labels_fit(browser)
        # the flow failed in task run charge-0: its error is the headline, linked
        assert text(browser, "#error-task-link") == "charge-0"
        assert not css(browser, "#run-traceback")[0].get_attribute("open")  # folded
        click(browser, "#run-traceback summary")
        wait(browser, lambda d: "raise RuntimeError" in d.find_element(By.ID, "run-traceback").text)
        wait_refreshes(browser)
        assert css(browser, "#run-traceback")[0].get_attribute("open") is not None  # still open
        screenshot(browser, tmp_path, "run-failed")
        click(browser, "#retry-button")
        wait(browser, lambda d: text(d, "#retry-link"))
        new_id = text(browser, "#retry-link")
        retry = httpx.get(f"{base}/api/flow-runs/{new_id}", timeout=10).json()
        assert (retry["retry_of"], retry["state_type"]) == (runs.order_failed, "PENDING")

        click(browser, "#retry-link")
        wait_text(browser, "#run-state", "AwaitingReplay")
        # a pending run is refreshed on every tick: its nodes stay the same nodes
        browser.execute_script("document.querySelector('#retry-of').__probe = true")
        wait_refreshes(browser)
        assert browser.execute_script("return document.querySelector('#retry-of').__probe")
        click(browser, "#retry-of")
        wait(browser, lambda d: len(css(d, "#replays .replay-link")) == 1)

        # the flow's page replays the failed runs not yet retried: only the invalid one is left
        browser.get(f"{base}/#/flows/process-order")
        wait(browser, lambda d: css(d, "#throughput-chart"))  # its content is in: nothing moves
        click(browser, "#replay-failed")
        wait_text(browser, "#replay-notice", "1 failed or crashed run(s) asked to run again.")
        pending = httpx.get(f"{base}/api/flow-runs", params={"state": "PENDING"}).json()
        assert {r["retry_of"] for r in pending["items"]} == {runs.order_failed, runs.order_invalid}


def test_flow_overview_charts_and_sources(
    browser: WebDriver, sqlite_store: Store, tmp_path: Path
) -> None:
    with serve(create_app(sqlite_store.url, worker_lease=600)) as base:
        browser.get(base + "/#/flows/process-order")
        wait(browser, lambda d: css(d, "#throughput-chart rect.bar"))
        wait(browser, lambda d: len(css(d, "#failure-chart circle.point")) >= 1)
        # one mark per run that ran (the invalid one never started), failures as crosses
        wait(browser, lambda d: len(css(d, "#duration-chart .point")) == 4)
        assert len(css(browser, "#duration-chart .point.failed")) == 1
        wait_text(browser, '[data-subscription="orders->process-order"] .lag', "7")
        screenshot(browser, tmp_path, "flow")

        browser.get(base + "/#/flows")
        wait(browser, lambda d: len(css(d, "#flows-body tr")) == 2)
        assert "failed 2" in (text(browser, "#flows-body") or "")

        browser.get(base + "/#/workers")
        wait(browser, lambda d: len(css(d, "#workers-body tr[data-worker-id]")) == 2)
        assert "alive" in (text(browser, '[data-worker-id="w-alive"] .status') or "")


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


def test_dashboard_is_the_landing_page_with_the_stores_figures(
    browser: WebDriver, sqlite_store: Store, tmp_path: Path
) -> None:
    with serve(create_app(sqlite_store.url, worker_lease=600)) as base:
        browser.get(base + "/")
        wait_text(browser, "#stat-runs .value", "7")
        api = httpx.get(f"{base}/api/dashboard", timeout=10).json()
        want = expected(
            sqlite_store,
            datetime.fromisoformat(api["since"]),
            datetime.fromisoformat(api["until"]),
        )
        assert sum(want["counts"].values()) == 7
        wait_text(browser, "#stat-failed .value", str(want["counts"]["FAILED"]))
        assert text(browser, "#stat-failed .note") == "28.6% of finished"
        for tile in ("p50", "p95"):
            # equal to the store's to the microsecond (float seconds in SQLite, rounded by
            # Python); the page shows what the API said
            figure = api[f"duration_{tile}"]
            assert figure == pytest.approx(want[tile], abs=2e-6)
            shown = browser.execute_async_script(
                "const [figure, done] = arguments;"
                "import('/static/format.js').then((m) => done(m.fmtDuration(figure)));",
                figure,
            )
            assert text(browser, f"#stat-{tile} .value") == shown
        assert text(browser, "#stat-workers .value") == "1 / 2"
        assert len(css(browser, "#dashboard-runs-chart rect.bar")) >= 2  # completed and failed
        row = '#dash-subscriptions-body tr[data-subscription="orders->process-order"]'
        assert text(browser, f"{row} .lag") == "7"
        assert text(browser, f"{row} .dead") == "2"
        assert text(browser, f"{row} .state") == "running"  # the state in words, not only colour
        flows = browser.execute_script(
            "return [...document.querySelectorAll('#dash-flows-body tr')]"
            ".map((r) => [r.dataset.flow, r.querySelector('.runs').innerText,"
            " r.querySelector('.failed').innerText])"
        )
        assert flows == [["process-order", "5", "2"], ["etl", "2", "0"]]
        screenshot(browser, tmp_path, "dashboard")

        # keyboard: the rows are focusable, arrows move, Enter opens
        browser.execute_script("document.querySelector('#dash-flows-body tr').focus()")
        browser.switch_to.active_element.send_keys(Keys.ARROW_DOWN)
        wait(browser, lambda d: d.switch_to.active_element.get_attribute("data-flow") == "etl")
        browser.switch_to.active_element.send_keys(Keys.ENTER)
        wait(browser, lambda d: d.current_url.endswith("#/flows/etl"))

        browser.get(base + "/#/dashboard")
        Select(wait(browser, lambda d: css(d, "#dashboard-window"))[0]).select_by_value("24h")
        wait(browser, lambda d: "window=24h" in d.current_url)
        wait_text(browser, "#stat-runs .note", "last day · 7 finished")
        assert text(browser, "#stat-runs .value") == "7"


def test_subscription_page_partitions_and_dead_letters_replay(
    browser: WebDriver, fresh_sqlite_store: Store, tmp_path: Path
) -> None:
    runs = fresh_sqlite_store.runs
    with serve(create_app(fresh_sqlite_store.url, worker_lease=600)) as base:
        browser.get(base + "/")
        click(browser, '#dash-subscriptions-body a[href*="subscriptions"]')
        wait_text(browser, "#subscription-name", "orders->process-order")
        wait(browser, lambda d: len(css(d, "#partitions-body tr")) == 2)
        assert text(browser, "#sub-state .sub-state") == "running"
        assert text(browser, "#sub-lag") == "7"
        assert text(browser, '#partitions-body tr[data-partition="orders/0"] .stored') == "5"
        assert text(browser, '#partitions-body tr[data-partition="orders/0"] .committed') == "4"
        assert text(browser, "#sub-failed-events") == "2"
        wait(browser, lambda d: len(css(d, "#dead-letters .dead-letter")) == 2)
        assert SECRET not in browser.page_source
        screenshot(browser, tmp_path, "subscription")

        click(browser, "#replay-dead-letters")
        wait_text(browser, "#dead-letter-notice", "2 dead letter(s) asked to run again.")
        pending = httpx.get(f"{base}/api/flow-runs", params={"state": "PENDING"}).json()
        assert {r["retry_of"] for r in pending["items"]} == {runs.order_failed, runs.order_invalid}


def test_a_resumed_run_shows_its_reused_task_runs_and_their_run(
    browser: WebDriver, tmp_path: Path
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'runs.db'}"
    first, resumed = resumed_etl(url)
    with serve(create_app(url)) as base:
        browser.get(f"{base}/#/runs/{resumed}")
        wait(browser, lambda d: len(css(d, "#task-table .reused-from")) == 5)
        assert text(browser, "#resumed-from") == first[-8:]
        links = {a.get_attribute("href") for a in css(browser, "#task-table .reused-from")}
        assert links == {f"{base}/#/runs/{first}"}
        assert "Reused" in (text(browser, "#task-table") or "")
        screenshot(browser, tmp_path, "run-resumed")
