"""Running a batch job again resumes its crashed run.

A direct call (no event, no parent run) whose flow has a run that CRASHED with
the same parameters (its process was killed, or interrupted), and that no run
resumed or retried yet, resumes that run: the task calls it completed return
their kept results, and only the rest runs (as a redelivered event's run does).
The crashed runs of a flow are read once per process, at its first direct
call, right after a crash sweep (so a job run again after its killed process's
lease has lapsed finds that process's run CRASHED even with no worker about).
Each crashed run is resumed at most once.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ._defaults import batch_lease
from ._engine import parameters_json
from ._errors import ParameterValidationError
from ._store._cache import cache_engine
from ._store._recovery import sweep_crashed
from ._store._results import crashed_calls, run_results

if TYPE_CHECKING:
    from ._flows import Flow
    from ._resume import Resume

RESUME_WITHIN = 7 * 24 * 3600.0
"""Crashed direct calls older than this (seconds) are not resumed: their job moved on."""

_crashed: dict[tuple[str, str], dict[str, str]] = {}
"""(store, flow) -> parameters JSON -> the crashed run a call with them resumes."""


async def resume_crashed(
    flow: Flow[Any, Any], url: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Resume | None:
    """The plan of the crashed run a direct call of `flow` with these arguments resumes."""
    key = (url, flow.name)
    crashed = _crashed.get(key)
    if crashed is None:  # two first calls at once both read; one dict is kept for both
        crashed = _crashed.setdefault(key, await _load(url, flow.name))
    if not crashed:
        return None
    try:
        parameters = parameters_json(flow.validate(args, kwargs or {}))
    except ParameterValidationError:
        return None  # the call fails as it would anyway
    run_id = crashed.pop(parameters or "", None)
    if run_id is None:
        return None
    return await run_results(cache_engine(url), run_id)


async def _load(url: str, flow_name: str) -> dict[str, str]:
    engine = cache_engine(url)
    lease = batch_lease()
    if lease is not None:  # end the runs of processes that died (this one's lease is fresh)
        await sweep_crashed(engine, lease.lease_seconds, lease.worker_id)
    return await crashed_calls(engine, flow_name, time.time() - RESUME_WITHIN)
