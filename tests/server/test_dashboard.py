"""The dashboard's and the subscription page's API: every figure equals what the store holds
(computed here from the raw rows), on SQLite and PostgreSQL, through a real server."""

from __future__ import annotations

import math
from collections import Counter
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from eventflow._store import _schema as schema
from tests._store import rows, sync
from tests.server._data import PARTITIONS, SECRET
from tests.server.conftest import Store

FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def get(base: str, path: str, **params: Any) -> Any:
    response = httpx.get(base + path, params=params, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def nearest_rank(values: list[float], q: float) -> float | None:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1] if ordered else None


def expected(store: Store, since: datetime, until: datetime) -> dict[str, Any]:
    """The dashboard's figures, from the rows of the store."""
    runs = sync(rows(store.url, schema.flow_runs))
    window = [r for r in runs if since <= r["created_at"] < until]
    durations = [
        (r["ended_at"] - r["started_at"]).total_seconds()
        for r in window
        if r["state_type"] in FINAL and r["started_at"] and r["ended_at"]
    ]
    per_flow: dict[str, Counter[str]] = {}
    for r in window:
        per_flow.setdefault(r["flow_name"], Counter())[r["state_type"]] += 1
    recent = until - timedelta(seconds=60)
    orders = [
        r for r in runs if r["event_source"] == "orders" and recent <= r["created_at"] < until
    ]
    return {
        "counts": Counter(r["state_type"] for r in window),
        "p50": nearest_rank(durations, 0.5),
        "p95": nearest_rank(durations, 0.95),
        "flows": {name: dict(c) for name, c in per_flow.items()},
        "orders_rate": len(orders) / 60,
    }


def test_dashboard_figures_equal_the_store(server: str, store: Store) -> None:
    dashboard = get(server, "/api/dashboard", window="1h")
    since = datetime.fromisoformat(dashboard["since"])
    until = datetime.fromisoformat(dashboard["until"])
    assert until - since == timedelta(hours=1) and dashboard["bucket_seconds"] == 60
    want = expected(store, since, until)

    assert dashboard["counts"] == dict(want["counts"]) == {"COMPLETED": 5, "FAILED": 2}
    assert (dashboard["runs"], dashboard["finished"], dashboard["failed"]) == (7, 7, 2)
    assert dashboard["failure_rate"] == pytest.approx(2 / 7)
    assert sum(b["total"] for b in dashboard["buckets"]) == 7
    assert dashboard["duration_p50"] == pytest.approx(want["p50"], abs=2e-6)
    assert dashboard["duration_p95"] == pytest.approx(want["p95"], abs=2e-6)
    assert dashboard["duration_runs"] == 6  # the invalid run never started
    assert dashboard["active"] == {}
    flows = {f["name"]: f for f in dashboard["flows"]}
    assert {name: f["counts"] for name, f in flows.items()} == want["flows"]
    assert [f["name"] for f in dashboard["flows"]] == ["process-order", "etl"]  # failures first
    assert sum(flows["etl"]["series"]) == 2 and len(flows["etl"]["series"]) == len(
        dashboard["buckets"]
    )
    (orders,) = dashboard["subscriptions"]  # w-dead's row is not a live worker's
    assert orders["subscription"] == "orders->process-order"
    assert (orders["state"], orders["lag"], orders["dead_lettered"], orders["workers"]) == (
        "running",
        7,
        2,
        1,
    )
    assert orders["events_per_second"] == pytest.approx(want["orders_rate"])
    assert (dashboard["workers_alive"], dashboard["workers_total"]) == (1, 2)


def test_dashboard_windows(server: str) -> None:
    for window, bucket in (("24h", 1800), ("7d", 3 * 3600)):
        body = get(server, "/api/dashboard", window=window)
        assert body["bucket_seconds"] == bucket and body["runs"] == 7
    assert httpx.get(server + "/api/dashboard?window=2h", timeout=10).status_code == 422


def test_subscription_partitions_state_and_dead_letters(server: str, store: Store) -> None:
    sub = get(server, "/api/subscriptions/" + quote("orders->process-order", safe=""))
    assert (sub["source"], sub["flow_name"], sub["state"], sub["lag"]) == (
        "orders",
        "process-order",
        "running",
        7,
    )
    assert sub["store_up"] is True and sub["last_error"] == "card declined"
    assert [(p["partition"], p["worker_id"]) for p in sub["partitions"]] == [
        ("orders/0", "w-alive"),
        ("orders/1", "w-alive"),
    ]
    for p in sub["partitions"]:
        assert {k: p[k] for k in ("lag", "position", "stored", "committed")} == PARTITIONS[
            p["partition"]
        ]
    assert {w["worker_id"]: (w["alive"], w["state"]) for w in sub["workers"]} == {
        "w-alive": (True, "running"),
        "w-dead": (False, "stalled"),
    }
    assert len(sub["throughput"]) in (60, 61) and sub["bucket_seconds"] == 60
    assert sum(sub["throughput"]) * 60 == pytest.approx(5)  # the 5 order events of the last hour

    runs = store.runs
    assert sub["dead_lettered"] == 2 and sub["failed_events"] == 2
    letters = {d["run"]["id"]: d for d in sub["recent_dead_letters"]}
    assert set(letters) == {runs.order_failed, runs.order_invalid}
    failed = letters[runs.order_failed]
    assert failed["headers"]["eventflow-original-offset"] == "3"
    assert failed["headers"]["eventflow-error"].endswith("(password ***)")
    assert failed["payload"]["password"] == "***" and SECRET not in str(sub)

    missing = httpx.get(server + "/api/subscriptions/nope", timeout=10)
    assert missing.status_code == 404
