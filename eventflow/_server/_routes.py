"""The REST API under /api: flows, flow runs, history, workers, sources, replay."""

from __future__ import annotations

import math
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request
from pydantic import FiniteFloat

from .._store._operator import OperatorStore
from .._store._reader import RunFilter, RunNotFoundError
from .._store._replay import ReplayError, ReplayFilter
from . import _models as models
from . import _views as views
from ._history import bucket_size, buckets
from ._masking import SecretMasker
from ._settings import ServerSettings

router = APIRouter(prefix="/api")

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": models.Problem}}

_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(9000, 1, 1, tzinfo=UTC)
_DEFAULT_RANGE = timedelta(hours=1)

Since = Annotated[
    models.DateTime | FiniteFloat | None,
    Query(description="From this time (ISO 8601 or epoch seconds); naive times are UTC."),
]
Until = Annotated[models.DateTime | FiniteFloat | None, Query(description="Before this time.")]
State = Annotated[models.StateTypeName | None, Query(description="Only runs in this state.")]


def _store(request: Request) -> OperatorStore:
    store: OperatorStore = request.app.state.store
    return store


def _masker(request: Request) -> SecretMasker:
    masker: SecretMasker = request.app.state.masker
    return masker


def _settings(request: Request) -> ServerSettings:
    settings: ServerSettings = request.app.state.settings
    return settings


def _utc(value: datetime | float | None) -> datetime | None:
    """An aware UTC time within what both databases store."""
    if value is None:
        return None
    if isinstance(value, float | int):
        value = datetime.fromtimestamp(
            max(_EARLIEST.timestamp(), min(_LATEST.timestamp(), value)), UTC
        )
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return max(_EARLIEST, min(_LATEST, value)).astimezone(UTC)


def _matches_nothing(*filters: str | None) -> bool:
    """A filter with a NUL character: no stored text has one (PostgreSQL refuses them)."""
    return any(f is not None and "\x00" in f for f in filters)


@router.get("/health", summary="Liveness and store reachability")
async def health(request: Request) -> dict[str, str]:
    await _store(request).count_flow_runs(RunFilter(state="RUNNING"))
    return {"status": "ok"}


@router.get("/flows", response_model=list[models.Flow], summary="Flows with run counts")
async def list_flows(request: Request) -> list[models.Flow]:
    reader = _store(request)
    found = await reader.list_flows()
    last = await reader.last_runs()
    return [
        models.Flow(
            **flow,
            last_run=views.run_ref(last[flow["name"]]) if flow["name"] in last else None,
        )
        for flow in found
    ]


@router.get(
    "/flows/{name}", response_model=models.Flow, responses=NOT_FOUND, summary="One flow's counts"
)
async def get_flow(request: Request, name: str) -> models.Flow:
    for flow in await list_flows(request):
        if flow.name == name:
            return flow
    raise HTTPException(404, f"no flow {name!r}")


async def _history(
    request: Request,
    flow: str | None,
    since: datetime | float | None,
    until: datetime | float | None,
) -> models.FlowHistory:
    end = _utc(until) or datetime.now(UTC)
    start = _utc(since) or end - _DEFAULT_RANGE
    size = bucket_size(max(1.0, (end - start).total_seconds()))
    aligned = datetime.fromtimestamp(math.floor(start.timestamp() / size) * size, UTC)
    counts: list[tuple[float, str, int]] = []
    if start < end and not _matches_nothing(flow):
        counts = await _store(request).final_state_histogram(
            flow=flow, since=max(aligned, _EARLIEST), until=end, bucket_seconds=size
        )
    return models.FlowHistory(
        flow=flow,
        since=start,
        until=end,
        bucket_seconds=size,
        buckets=buckets(counts, since=start, until=end, size=size),
    )


@router.get(
    "/flows/{name}/history",
    response_model=models.FlowHistory,
    summary="Runs ended per time bucket and final state, throughput and failure rate",
)
async def flow_history(
    request: Request, name: str, since: Since = None, until: Until = None
) -> models.FlowHistory:
    """The bucket size is chosen from the range (default: the last hour), at most 120 buckets."""
    return await _history(request, name, since, until)


@router.get("/history", response_model=models.FlowHistory, summary="History of all flows")
async def history(
    request: Request, flow: str | None = None, since: Since = None, until: Until = None
) -> models.FlowHistory:
    return await _history(request, flow, since, until)


@router.get("/flow-runs", response_model=models.FlowRunPage, summary="Flow runs, newest first")
async def list_flow_runs(
    request: Request,
    flow: Annotated[str | None, Query(description="Only runs of this flow.")] = None,
    state: State = None,
    key: Annotated[str | None, Query(description="Only runs of events with this key.")] = None,
    since: Since = None,
    until: Until = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> models.FlowRunPage:
    reader = _store(request)
    if _matches_nothing(flow, key):
        return models.FlowRunPage(
            items=[], total=0, states={}, limit=limit, offset=offset, next_offset=None
        )
    matching = RunFilter(
        flow=flow, state=state, event_key=key, since=_utc(since), until=_utc(until)
    )
    rows = await reader.list_flow_runs(matching, limit=limit, offset=offset)
    states = await reader.count_flow_runs_by_state(matching)
    total = states.get(state, 0) if state is not None else sum(states.values())
    masker = _masker(request)
    inputs = await reader.run_inputs([r["id"] for r in rows if r["error"]])
    items = [
        views.run_summary(
            row,
            masker,
            views.input_secrets(*inputs[row["id"]], masker) if row["id"] in inputs else set(),
        )
        for row in rows
    ]
    more = offset + len(items) < total and len(items) == limit
    return models.FlowRunPage(
        items=items,
        total=total,
        states=states,
        limit=limit,
        offset=offset,
        next_offset=offset + len(items) if more else None,
    )


@router.post(
    "/flow-runs/replay",
    status_code=201,
    response_model=models.ReplayResponse,
    responses={400: {"model": models.Problem, "description": "The body is not JSON."}},
    summary="Run again every failed run matching a filter (oldest first)",
)
async def replay_flow_runs(request: Request, body: models.ReplayRequest) -> models.ReplayResponse:
    """Runs that already have a retry are skipped, so asking twice runs nothing twice;
    so are flow-control records that are not runs (an event of a batch run, a
    Duplicate, a CancelSignal, an event Abandoned while it waited for a control).
    Each replay resumes its run after its completed tasks unless `full`."""
    if _matches_nothing(body.flow_name, body.key):
        return models.ReplayResponse(ids=[], count=0)
    since, until = _utc(body.since), _utc(body.until)
    matching = ReplayFilter(
        flow_name=body.flow_name,
        state_types=list(body.state_types),
        since=since.timestamp() if since else None,
        until=until.timestamp() if until else None,
        key=body.key,
    )
    ids = await _store(request).replay(matching, limit=body.limit, full=body.full)
    return models.ReplayResponse(ids=ids, count=len(ids))


# before /flow-runs/{run_id}: the first route whose path matches answers 405 with its methods
RunId = Annotated[str, Path(description="A run id, or a unique prefix or suffix of one.")]
FullRetry = Annotated[
    bool, Query(description="Run every task again, not only those that did not complete.")
]


@router.get(
    "/flow-runs/{run_id}",
    response_model=models.FlowRunDetail,
    responses=NOT_FOUND,
    summary="One run with its task runs, graph edges, logs and trigger event",
)
async def get_flow_run(request: Request, run_id: RunId) -> models.FlowRunDetail:
    reader = _store(request)
    try:
        run = await reader.get_flow_run(_resolvable(run_id))
    except RunNotFoundError as error:
        raise HTTPException(404, str(error)) from None
    replays = await reader.list_replays(run["id"])
    redelivery = await reader.redelivery_of(run)
    return views.run_detail(
        run, replays, _masker(request), _settings(request).trace_url_template, redelivery
    )


@router.post(
    "/flow-runs/{run_id}/retry",
    status_code=201,
    response_model=models.RetryResponse,
    responses={**NOT_FOUND, 409: {"model": models.Problem}},
    summary="Run a failed, crashed or cancelled run again (a new linked run)",
)
async def retry_flow_run(
    request: Request, run_id: RunId, full: FullRetry = False
) -> models.RetryResponse:
    """The new run is PENDING until a worker running the flow picks it up.

    It resumes the old run: task calls whose task run completed return the kept
    result without running again; with `full=true` every task runs again. 409:
    the run has not ended FAILED, CRASHED or CANCELLED, or it is a flow-control
    record that is not a run (an event of a batch run, a Duplicate, a CancelSignal).
    """
    reader = _store(request)
    try:
        full_id = await reader.resolve_run_id(_resolvable(run_id))
        new_id = await reader.retry(full_id, full=full)
    except RunNotFoundError as error:
        raise HTTPException(404, str(error)) from None
    except ReplayError as error:
        raise HTTPException(409, str(error)) from None
    return models.RetryResponse(id=new_id, retry_of=full_id, resumed_from=None if full else full_id)


def _resolvable(run_id: str) -> str:
    if _matches_nothing(run_id):
        raise RunNotFoundError(f"no flow run {run_id!r}")
    return run_id


@router.get("/workers", response_model=list[models.Worker], summary="Workers and their liveness")
async def list_workers(request: Request) -> list[models.Worker]:
    cutoff = time.time() - _settings(request).worker_lease
    return [
        models.Worker(
            **row,
            alive=row["stopped_at"] is None and row["heartbeat_at"].timestamp() >= cutoff,
        )
        for row in await _store(request).list_workers()
    ]


@router.get(
    "/sources",
    response_model=models.Sources,
    summary="Live state of each subscription (lag, last event, errors) over live workers",
)
async def list_sources(
    request: Request,
    flow: Annotated[str | None, Query(description="Only subscriptions of this flow.")] = None,
) -> models.Sources:
    alive_since = datetime.now(UTC) - timedelta(seconds=_settings(request).worker_lease)
    rows = await _store(request).list_source_status(alive_since=alive_since)
    if flow is not None:
        rows = [r for r in rows if r["flow_name"] == flow]
    per_subscription: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        per_subscription[row["subscription"]].append(row)
    return models.Sources(
        subscriptions=[_totals(name, group) for name, group in per_subscription.items()],
        workers=[models.SourceStatus(**row) for row in rows],
    )


def _totals(subscription: str, rows: list[dict[str, Any]]) -> models.SubscriptionTotals:
    lags = [r["lag"] for r in rows if r["lag"] is not None]
    events = [r["last_event_at"] for r in rows if r["last_event_at"] is not None]
    errors = [r for r in rows if r["last_error_at"] is not None]
    latest_error = max(errors, key=lambda r: r["last_error_at"]) if errors else None
    return models.SubscriptionTotals(
        subscription=subscription,
        source=rows[0]["source"],
        flow_name=rows[0]["flow_name"],
        workers=len(rows),
        received=sum(r["received"] for r in rows),
        completed=sum(r["completed"] for r in rows),
        failed=sum(r["failed"] for r in rows),
        dead_lettered=sum(r["dead_lettered"] for r in rows),
        in_flight=sum(r["in_flight"] for r in rows),
        lag=sum(lags) if lags else None,
        last_event_at=max(events) if events else None,
        last_error=latest_error["last_error"] if latest_error else None,
        last_error_at=latest_error["last_error_at"] if latest_error else None,
    )
