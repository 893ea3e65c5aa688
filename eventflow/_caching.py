"""Task caching across runs, workers and restarts (Prefect's `cache_key_fn`).

A task with a `cache_key_fn` asks it for a key before each call; a result kept
under that key in the store, and not expired (`cache_expiration`), is returned
without calling the function: the task run is COMPLETED, named `Cached`, and
linked to the task run that computed it. Otherwise the task runs and its result
(when it can be kept, see eventflow/_results.py) is stored under the key.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import TYPE_CHECKING, Any

import orjson
from pydantic_core import to_jsonable_python

from ._context import TaskRunContext

if TYPE_CHECKING:
    from ._context import FlowRunContext
    from ._tasks import Task

logger = logging.getLogger("eventflow.engine")

_KEY_LIMIT = 500
"""Longest key stored as it is (the column's width); longer ones are hashed."""


def task_input_hash(context: TaskRunContext, arguments: dict[str, Any]) -> str | None:
    """A cache key from the task and its arguments: same task, same inputs, same key.

    Use it as `@task(cache_key_fn=task_input_hash)`. Arguments that are not JSON
    (after pydantic's encoding) give no key: the call is not cached.
    """
    try:
        data = orjson.dumps(
            [context.task_name, arguments],
            default=to_jsonable_python,
            option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS,
        )
    except (TypeError, ValueError):
        return None
    return hashlib.sha256(data).hexdigest()


def cache_key(
    task: Task[Any, Any], flow_run: FlowRunContext, run_id: str, parameters: dict[str, Any]
) -> str | None:
    """The key of this call from the task's `cache_key_fn`, or None (not cached)."""
    assert task.cache_key_fn is not None
    try:
        key = task.cache_key_fn(TaskRunContext(run_id, task.name, flow_run), parameters)
    except Exception:
        logger.exception("cache_key_fn of task %s failed; the call is not cached", task.name)
        return None
    if key is None:
        return None
    key = str(key)
    return key if len(key) <= _KEY_LIMIT else hashlib.sha256(key.encode()).hexdigest()


async def lookup(url: str, key: str, task_name: str) -> tuple[str, str] | None:
    """(source task run id, result JSON) cached under `key`; None when absent or unreadable."""
    from ._store._cache import cache_engine, cached_result

    try:
        return await cached_result(cache_engine(url), key)
    except Exception as error:  # the store is down: the task runs
        logger.warning("task %s: cannot read the task cache (%s); it runs", task_name, error)
        return None


async def keep(
    task: Task[Any, Any], url: str, key: str, result: str, task_run_id: str, flow_run_id: str
) -> None:
    """Store a completed call's result under its key; a failure is logged, never raised."""
    from ._store._cache import cache_engine, store_result

    expiration = task.cache_expiration
    now = time.time()
    expires_at = None if expiration is None else now + expiration.total_seconds()
    engine = cache_engine(url)
    try:
        await store_result(engine, key, result, task_run_id, flow_run_id, now, expires_at)
    except Exception as error:
        logger.warning("task %s: cannot write the task cache (%s)", task.name, error)
