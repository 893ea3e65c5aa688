"""The REST API over a store with real runs, on SQLite and PostgreSQL, through a real server."""

from __future__ import annotations

import itertools
import posixpath
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from eventflow._server import create_app
from tests.server._data import SECRET
from tests.server._serve import serve
from tests.server.conftest import Store


def get(base: str, path: str, **params: Any) -> Any:
    response = httpx.get(base + path, params=params, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def test_flows_have_counts_per_state_and_last_run(server: str, store: Store) -> None:
    flows = {f["name"]: f for f in get(server, "/api/flows")}
    assert set(flows) == {"etl", "process-order"}
    assert flows["etl"]["runs"] == 2 and flows["etl"]["states"] == {"COMPLETED": 2}
    orders = flows["process-order"]
    assert orders["states"] == {"COMPLETED": 3, "FAILED": 2}
    assert orders["last_run"]["id"] == store.runs.order_invalid  # the newest
    assert orders["last_run"]["state_type"] == "FAILED"
    assert get(server, "/api/flows/etl")["runs"] == 2
    assert httpx.get(server + "/api/flows/nope", timeout=10).status_code == 404


def ids(page: dict[str, Any]) -> list[str]:
    return [r["id"] for r in page["items"]]


def test_flow_runs_filter_by_flow_state_key_and_time(server: str, store: Store) -> None:
    runs = store.runs
    everything = get(server, "/api/flow-runs")
    assert everything["total"] == 7 and len(everything["items"]) == 7
    assert ids(everything)[0] == runs.order_invalid  # newest first

    assert set(ids(get(server, "/api/flow-runs", flow="etl"))) == set(runs.etl_ok)
    failed = get(server, "/api/flow-runs", state="FAILED")
    assert set(ids(failed)) == {runs.order_failed, runs.order_invalid} and failed["total"] == 2
    # the per-state summary ignores the state filter, and follows the others
    assert failed["states"] == {"COMPLETED": 5, "FAILED": 2}
    assert get(server, "/api/flow-runs", flow="etl")["states"] == {"COMPLETED": 2}
    by_key = get(server, "/api/flow-runs", key="c1")
    assert set(ids(by_key)) == {runs.order_ok[1], runs.order_failed}
    assert ids(get(server, "/api/flow-runs", key="c1", state="COMPLETED")) == [runs.order_ok[1]]

    hour_ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    in_future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert get(server, "/api/flow-runs", since=hour_ago)["total"] == 7
    assert get(server, "/api/flow-runs", since=in_future) == {
        "items": [],
        "total": 0,
        "states": {},
        "limit": 50,
        "offset": 0,
        "next_offset": None,
    }
    assert get(server, "/api/flow-runs", until=hour_ago)["total"] == 0
    # the boundary: `since` the newest run's creation time includes it, `until` excludes it
    newest = everything["items"][0]["created_at"]
    assert ids(get(server, "/api/flow-runs", since=newest)) == [runs.order_invalid]
    assert runs.order_invalid not in ids(get(server, "/api/flow-runs", until=newest))
    bad = httpx.get(server + "/api/flow-runs", params={"state": "SLEEPY"}, timeout=10)
    assert bad.status_code == 422


def test_pagination_walks_every_run_once(server: str) -> None:
    seen: list[str] = []
    offset: int | None = 0
    pages = 0
    while offset is not None and pages < 10:
        page = get(server, "/api/flow-runs", limit=3, offset=offset)
        assert page["total"] == 7 and page["limit"] == 3
        seen += ids(page)
        offset = page["next_offset"]
        pages += 1
    assert pages == 3 and len(seen) == 7 and len(set(seen)) == 7
    assert seen == ids(get(server, "/api/flow-runs", limit=100))


def test_run_detail_has_task_runs_edges_and_logs(server: str, store: Store) -> None:
    run = get(server, f"/api/flow-runs/{store.runs.etl_ok[0]}")
    assert run["state_type"] == "COMPLETED" and run["parameters"] == {"n": 3} and run["result"] == 6
    names = {t["id"]: t["name"] for t in run["task_runs"]}
    assert sorted(names.values()) == [
        "audit-0",
        "extract-0",
        "load-0",
        "transform-0",
        "transform-1",
    ]
    edges = {(names[e["upstream_id"]], names[e["downstream_id"]], e["kind"]) for e in run["edges"]}
    assert edges == {
        ("extract-0", "transform-0", "data"),
        ("extract-0", "transform-1", "data"),
        ("transform-0", "load-0", "data"),
        ("transform-1", "load-0", "data"),
        ("load-0", "audit-0", "wait_for"),
    }
    assert [(entry["level_name"], entry["message"]) for entry in run["logs"]] == [
        ("INFO", "extracting 3 rows"),
        ("INFO", "audited"),
    ]
    assert run["event"] is None and run["replays"] == []
    # a unique suffix is enough, as in the CLI
    assert get(server, f"/api/flow-runs/{store.runs.etl_ok[0][-10:]}")["id"] == run["id"]


def test_run_detail_has_its_event_and_masks_secrets(server: str, store: Store) -> None:
    response = httpx.get(f"{server}/api/flow-runs/{store.runs.order_failed}", timeout=10)
    assert SECRET not in response.text and "key-abcdef-123" not in response.text
    run = response.json()
    assert run["event"] == {
        "source": "orders",
        "partition": 0,
        "offset": 3,
        "id": "orders/0/3",
        "key": "c1",
        "time": run["event"]["time"],
        "payload": {
            "id": "o3",
            "amount": 500,
            "password": "***",
            "customer": {"name": "Ada", "api_key": "***"},
        },
        "payload_encoding": "json",
    }
    assert run["parameters"] == run["event"]["payload"]
    # the secret quoted in an error or a log line is redacted too
    assert run["error"] == "RuntimeError: card declined for 500 (password ***)"
    assert run["task_runs"][0]["run_count"] == 2  # one retry
    messages = [entry["message"] for entry in run["logs"]]
    assert "order o3, password ***" in messages
    # the retry's, the task run's and the flow run's failure lines, redacted as well
    assert sum("card declined for 500 (password ***)" in m for m in messages) == 3


def test_no_response_carries_a_secret(server: str) -> None:
    listing = httpx.get(server + "/api/flow-runs", params={"limit": 100}, timeout=10)
    assert listing.status_code == 200 and SECRET not in listing.text
    assert "(password ***)" in listing.text  # the failed run's error, redacted in the list too
    for run in listing.json()["items"]:
        detail = httpx.get(f"{server}/api/flow-runs/{run['id']}", timeout=10)
        assert detail.status_code == 200 and SECRET not in detail.text


def test_unknown_run_is_404(server: str) -> None:
    for response in (
        httpx.get(server + "/api/flow-runs/0123456789abcdef", timeout=10),
        httpx.post(server + "/api/flow-runs/0123456789abcdef/retry", timeout=10),
    ):
        assert response.status_code == 404
        assert response.json() == {"detail": "no flow run '0123456789abcdef'"}


def test_history_counts_ended_runs_per_bucket(server: str) -> None:
    now = datetime.now(UTC)
    history = get(
        server,
        "/api/flows/process-order/history",
        since=(now - timedelta(minutes=10)).isoformat(),
        until=(now + timedelta(minutes=1)).isoformat(),
    )
    assert history["bucket_seconds"] == 10  # 660 s in at most 120 buckets
    starts = [datetime.fromisoformat(b["start"]) for b in history["buckets"]]
    assert all(b - a == timedelta(seconds=10) for a, b in itertools.pairwise(starts))
    assert 66 <= len(starts) <= 67
    totals: dict[str, int] = {}
    for bucket in history["buckets"]:
        for state, count in bucket["counts"].items():
            totals[state] = totals.get(state, 0) + count
        assert bucket["throughput_per_second"] == bucket["total"] / 10
        if bucket["total"]:
            failed = bucket["counts"].get("FAILED", 0)
            assert bucket["failure_rate"] == failed / bucket["total"]
        else:
            assert bucket["failure_rate"] is None
    assert totals == {"COMPLETED": 3, "FAILED": 2}
    everything = get(server, "/api/history", since=(now - timedelta(days=1)).isoformat())
    assert everything["bucket_seconds"] == 900
    assert sum(b["total"] for b in everything["buckets"]) == 7
    default = get(server, "/api/history")
    assert default["bucket_seconds"] == 30 and sum(b["total"] for b in default["buckets"]) == 7


def test_workers_alive_by_heartbeat(server: str, store: Store) -> None:
    workers = {w["id"]: w for w in get(server, "/api/workers")}
    assert workers[store.runs.worker_alive]["alive"] is True
    assert workers[store.runs.worker_dead]["alive"] is False
    assert workers[store.runs.worker_alive]["runs_in_flight"] == 0


def test_sources_only_of_live_workers_with_totals(server: str, store: Store) -> None:
    sources = get(server, "/api/sources")
    assert [row["worker_id"] for row in sources["workers"]] == [store.runs.worker_alive]
    [orders] = sources["subscriptions"]
    assert orders["subscription"] == "orders->process-order"
    assert (orders["workers"], orders["received"], orders["lag"], orders["dead_lettered"]) == (
        1,
        5,
        7,
        2,
    )
    assert orders["last_error"] == "card declined"
    assert get(server, "/api/sources", flow="etl") == {"subscriptions": [], "workers": []}


def test_openapi_document_lists_every_operation(server: str) -> None:
    document = get(server, "/api/openapi.json")
    assert set(document["paths"]) == {
        "/api/health",
        "/api/flows",
        "/api/flows/{name}",
        "/api/flows/{name}/history",
        "/api/history",
        "/api/flow-runs",
        "/api/flow-runs/{run_id}",
        "/api/flow-runs/{run_id}/retry",
        "/api/flow-runs/replay",
        "/api/workers",
        "/api/sources",
        "/api/dashboard",
        "/api/subscriptions/{name}",
        "/api/lineage",
    }


def test_ui_is_served(server: str) -> None:
    index = httpx.get(server + "/", timeout=10)
    assert index.status_code == 200 and '<script type="module" src="/static/app.js">' in index.text
    # Every module app.js reaches through its imports is served as JavaScript (a browser
    # refuses a module of another type).
    seen: set[str] = set()
    todo = ["/static/app.js"]
    while todo:
        path = todo.pop()
        seen.add(path)
        script = httpx.get(server + path, timeout=10)
        assert script.status_code == 200 and "javascript" in script.headers["content-type"], path
        for target in re.findall(r'^import .* from "(\.{1,2}/[\w/]+\.js)";$', script.text, re.M):
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
            if resolved not in seen:
                todo.append(resolved)
    assert {"/static/views/run.js", "/static/dom.js", "/static/api.js"} <= seen


@pytest.mark.parametrize("path", ["/api/flows", "/api/flow-runs", "/api/openapi.json"])
def test_no_token_needed_when_none_is_set(server: str, path: str) -> None:
    assert httpx.get(server + path, timeout=10).status_code == 200


def test_a_store_without_tables_is_a_503_that_quotes_no_sql(tmp_path: Path) -> None:
    app = create_app(f"sqlite:///{tmp_path / 'empty.db'}", migrate=False)
    with serve(app) as base:
        response = httpx.get(base + "/api/flow-runs", params={"key": "c1"}, timeout=10)
    assert response.status_code == 503
    assert response.json() == {"detail": "the store is unavailable (OperationalError)"}
