"""The dashboard and subscription pages' API: what is flowing, what is failing, and why."""

from __future__ import annotations

import math
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, HTTPException, Query, Request

from .._states import FINAL_STATE_TYPES
from .._store._operator import OperatorStore
from . import _models as models
from . import _views as views
from ._history import FAILURE_STATES, bucket_size, buckets
from ._masking import SecretMasker, redact
from ._settings import ServerSettings

router = APIRouter(prefix="/api")

RATE_SECONDS = 60
"""Events per second are counted over the last minute."""

DASHBOARD_BUCKETS = 60
RECENT_DEAD_LETTERS = 10
DURATION_SAMPLE = 20_000
"""p50/p95 are of the newest runs of the window, at most this many."""


_STATE_RANK = {"stalled": 3, "reconnecting": 2, "running": 1, "stopped": 0}
"""The worst state of a subscription's workers is the one it shows."""


def _store(request: Request) -> OperatorStore:
    store: OperatorStore = request.app.state.store
    return store


def _settings(request: Request) -> ServerSettings:
    settings: ServerSettings = request.app.state.settings
    return settings


def _masker(request: Request) -> SecretMasker:
    masker: SecretMasker = request.app.state.masker
    return masker


def nearest_rank(ordered: list[float], q: float) -> float | None:
    """The `q` quantile of sorted values by nearest rank (a value that occurred)."""
    return ordered[max(1, math.ceil(q * len(ordered))) - 1] if ordered else None


def _alive(row: dict[str, Any], cutoff: float) -> bool:
    return row["stopped_at"] is None and row["heartbeat_at"].timestamp() >= cutoff


def _worst_state(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return max(rows, key=lambda r: _STATE_RANK.get(r.get("state") or "running", 1))


def _latest_error(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    errors = [r for r in rows if r["last_error_at"] is not None]
    return max(errors, key=lambda r: r["last_error_at"]) if errors else None


def _sum_lag(rows: list[dict[str, Any]]) -> int | None:
    lags = [r["lag"] for r in rows if r["lag"] is not None]
    return sum(lags) if lags else None


def _streams(rows: list[dict[str, Any]]) -> list[str]:
    """What a subscription's runs have as `event_source`: the topics of its partitions
    (Kafka: an event's stream), and the source's name (a source without streams)."""
    streams = {row["source"] for row in rows}
    for row in rows:
        for partition in _partitions(row):
            streams.add(partition.partition.rpartition("/")[0] or partition.partition)
    return sorted(streams)


def _rate(events: dict[tuple[str, str], int], streams: list[str], flow: str) -> float:
    return sum(events.get((stream, flow), 0) for stream in streams) / RATE_SECONDS


@router.get("/dashboard", response_model=models.Dashboard, summary="Everything at a glance")
async def dashboard(
    request: Request,
    window: Annotated[models.Window, Query(description="The last hour, day or week.")] = "1h",
) -> models.Dashboard:
    """Runs created in the window (per bucket, state and flow), failure rate (failed and
    crashed over finished), p50/p95 duration, runs in flight, each subscription's events/s,
    lag and dead letters, workers alive."""
    reader = _store(request)
    until = datetime.now(UTC)
    since = until - timedelta(seconds=models.WINDOW_SECONDS[window])
    size = bucket_size(models.WINDOW_SECONDS[window], DASHBOARD_BUCKETS)
    aligned = datetime.fromtimestamp(math.floor(since.timestamp() / size) * size, UTC)
    counts = await reader.dashboard.created_histogram_by_flow(
        since=since, until=until, bucket_seconds=size
    )
    all_flows = buckets(((b, s, n) for b, _f, s, n in counts), since=since, until=until, size=size)
    starts = [b.start.timestamp() for b in all_flows]
    per_flow: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    series: dict[str, dict[float, int]] = defaultdict(lambda: defaultdict(int))
    for start, flow, state, n in counts:
        if start >= aligned.timestamp():
            per_flow[flow][state] += n
            series[flow][start] += n
    totals: dict[str, int] = defaultdict(int)
    for bucket in all_flows:
        for state, n in bucket.counts.items():
            totals[state] += n
        bucket.failure_rate = _failure_rate(bucket.counts)
    durations = sorted(
        await reader.dashboard.newest_durations(since=since, until=until, limit=DURATION_SAMPLE)
    )
    active = await reader.dashboard.count_active_runs()
    events = await reader.dashboard.events_by_source(
        since=until - timedelta(seconds=RATE_SECONDS), until=until
    )
    workers = await reader.list_workers()
    cutoff = time.time() - _settings(request).worker_lease
    alive_since = datetime.fromtimestamp(cutoff, UTC)
    status = await reader.list_source_status(alive_since=alive_since)
    per_subscription: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in status:
        per_subscription[row["subscription"]].append(row)
    failed = sum(totals.get(s, 0) for s in FAILURE_STATES)
    return models.Dashboard(
        window=window,
        since=since,
        until=until,
        bucket_seconds=size,
        buckets=all_flows,
        runs=sum(totals.values()),
        finished=_finished(totals),
        counts=dict(totals),
        failed=failed,
        failure_rate=_failure_rate(totals),
        duration_p50=nearest_rank(durations, 0.5),
        duration_p95=nearest_rank(durations, 0.95),
        duration_runs=len(durations),
        active=active,
        flows=sorted(
            (
                _flow_summary(name, dict(states), [series[name].get(s, 0) for s in starts])
                for name, states in per_flow.items()
            ),
            key=lambda f: (-f.failed, -f.runs, f.name),
        ),
        subscriptions=[
            _subscription_health(name, rows, events) for name, rows in per_subscription.items()
        ],
        workers_alive=sum(_alive(w, cutoff) for w in workers),
        workers_total=len(workers),
    )


def _finished(counts: dict[str, int]) -> int:
    return sum(counts.get(s, 0) for s in FINAL_STATE_TYPES)


def _failure_rate(counts: dict[str, int]) -> float | None:
    finished = _finished(counts)
    return sum(counts.get(s, 0) for s in FAILURE_STATES) / finished if finished else None


def _flow_summary(name: str, counts: dict[str, int], series: list[int]) -> models.FlowSummary:
    return models.FlowSummary(
        name=name,
        runs=sum(counts.values()),
        finished=_finished(counts),
        failed=sum(counts.get(s, 0) for s in FAILURE_STATES),
        failure_rate=_failure_rate(counts),
        counts=counts,
        series=series,
    )


def _subscription_health(
    name: str, rows: list[dict[str, Any]], events: dict[tuple[str, str], int]
) -> models.SubscriptionHealth:
    first, worst, error = rows[0], _worst_state(rows), _latest_error(rows)
    stamps = [r["last_event_at"] for r in rows if r["last_event_at"] is not None]
    return models.SubscriptionHealth(
        subscription=name,
        source=first["source"],
        flow_name=first["flow_name"],
        state=worst.get("state") or "running",
        state_since=worst.get("state_since"),
        workers=len(rows),
        events_per_second=_rate(events, _streams(rows), first["flow_name"]),
        lag=_sum_lag(rows),
        in_flight=sum(r["in_flight"] for r in rows),
        dead_lettered=sum(r["dead_lettered"] for r in rows),
        last_event_at=max(stamps) if stamps else None,
        last_error=error["last_error"] if error else None,
        last_error_at=error["last_error_at"] if error else None,
    )


@router.get(
    "/subscriptions/{name:path}",
    response_model=models.SubscriptionDetail,
    responses={404: {"model": models.Problem}},
    summary="One subscription: partitions, throughput, state, dead letters",
)
async def subscription(request: Request, name: str) -> models.SubscriptionDetail:
    """Per-partition lag and offsets of its live workers (stored with the runs vs committed
    to the broker), events/s over the last hour, and its newest dead letters: FAILED runs of
    its events, which the default failure policy sends to the dead-letter topic."""
    reader = _store(request)
    rows = await reader.dashboard.subscription_status(name) if "\x00" not in name else []
    if not rows:
        raise HTTPException(404, f"no subscription {name!r}")
    cutoff = time.time() - _settings(request).worker_lease
    live = [r for r in rows if _alive(r, cutoff)]
    shown = live or rows  # no live worker: its last known state
    first, worst, error = rows[0], _worst_state(shown), _latest_error(rows)
    source, flow, streams = first["source"], first["flow_name"], _streams(rows)
    until = datetime.now(UTC)
    since = until - timedelta(hours=1)
    size = bucket_size(3600, DASHBOARD_BUCKETS)
    counts = dict(
        await reader.dashboard.events_histogram(
            streams=streams, flow=flow, since=since, until=until, bucket_seconds=size
        )
    )
    first_bucket = math.floor(since.timestamp() / size) * size
    throughput = [
        counts.get(float(first_bucket + i * size), 0) / size
        for i in range(math.ceil((until.timestamp() - first_bucket) / size))
    ]
    events = await reader.dashboard.events_by_source(
        since=until - timedelta(seconds=RATE_SECONDS), until=until
    )
    failed_count, failed_runs = await reader.dashboard.failed_events(
        streams=streams, flow=flow, limit=RECENT_DEAD_LETTERS
    )
    masker = _masker(request)
    return models.SubscriptionDetail(
        subscription=name,
        source=source,
        flow_name=flow,
        state=(worst.get("state") or "running") if live else "stopped",
        state_since=worst.get("state_since"),
        store_up=all(r.get("store_up", True) for r in shown),
        lag=_sum_lag(live),
        events_per_second=_rate(events, streams, flow),
        last_error=error["last_error"] if error else None,
        last_error_at=error["last_error_at"] if error else None,
        workers=[models.SubscriptionWorker(**{**r, "alive": _alive(r, cutoff)}) for r in rows],
        partitions=[p for r in live for p in _partitions(r)],
        since=since,
        until=until,
        bucket_seconds=size,
        throughput=throughput,
        dead_lettered=sum(r["dead_lettered"] for r in live),
        failed_events=failed_count,
        recent_dead_letters=[_dead_letter(run, masker) for run in failed_runs],
    )


def _partitions(row: dict[str, Any]) -> list[models.PartitionHealth]:
    text = row.get("partitions")
    if not text:
        return []
    try:
        found = orjson.loads(text)
    except orjson.JSONDecodeError:
        return []
    if not isinstance(found, dict):
        return []
    return [
        models.PartitionHealth(
            partition=str(key),
            worker_id=row["worker_id"],
            **{k: _integer(value.get(k)) for k in ("lag", "position", "stored", "committed")},
        )
        for key, value in sorted(found.items(), key=lambda kv: _partition_order(kv[0]))
        if isinstance(value, dict)
    ]


def _integer(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _partition_order(key: str) -> tuple[str, int]:
    topic, _, number = key.rpartition("/")
    return (topic, int(number)) if number.isdigit() else (key, -1)


def _dead_letter(run: dict[str, Any], masker: SecretMasker) -> models.DeadLetter:
    """The run with the headers eventflow's dead-letter records carry (see README)."""
    secrets = views.input_secrets(run.get("parameters"), run.get("event_payload"), masker)
    payload, encoding = views.decode_payload(run.get("event_payload"))
    if encoding == "text":
        payload = redact(payload, secrets)
    summary = views.run_summary(run, masker, secrets)
    return models.DeadLetter(
        run=summary,
        headers={
            "eventflow-error": summary.error,
            "eventflow-flow-run-id": run["id"],
            "eventflow-original-topic": run["event_source"],
            "eventflow-original-partition": _text(run["event_partition"]),
            "eventflow-original-offset": _text(run["event_offset"]),
            "key": run["event_key"],
        },
        payload=masker.mask(payload),
        payload_encoding=encoding,  # type: ignore[arg-type]
    )


def _text(value: int | None) -> str | None:
    return None if value is None else str(value)
