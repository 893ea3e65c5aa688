"""Task caching across runs, workers and restarts (Prefect's `cache_key_fn`).

A task with a `cache_key_fn` asks it for a key before each call; a result kept
under that key in the store, and not expired (`cache_expiration`), is returned
without calling the function: the task run is COMPLETED, named `Cached`, and
linked to the task run that computed it. Otherwise the task runs and its result
(when it can be kept, see eventflow/_results.py) is stored under the key.

Keys are global, across tasks (Prefect's behaviour): two tasks whose
`cache_key_fn` give one key share its entry. `task_input_hash` puts the task's
identity in the key, so it never does; a task that hits an entry another task
(by name) made is warned of once per pair of tasks.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson
from pydantic_core import to_jsonable_python

from ._context import TaskRunContext

if TYPE_CHECKING:
    from ._context import FlowRunContext
    from ._tasks import Task

logger = logging.getLogger("eventflow.engine")

_KEY_LIMIT = 500
"""Longest key stored as it is (the column's width); longer ones are hashed."""


_SHARED_WARNED: set[tuple[str, str]] = set()
"""(task, task whose entry it hit) pairs warned of already."""
_WRITTEN: dict[str, str] = {}
"""The task (`Task.key`) that wrote each key from this process, newest last: its task
run may not be in the store yet when another task hits the entry."""
_WRITTEN_LIMIT = 10_000


class CacheHit(NamedTuple):
    """A result found in the task cache: the task run that computed it, and its task."""

    task_run_id: str
    result: str
    task_name: str | None
    """None when that task run was pruned."""


def task_input_hash(context: TaskRunContext, arguments: dict[str, Any]) -> str | None:
    """A cache key from the task and its arguments: same task, same inputs, same key.

    Use it as `@task(cache_key_fn=task_input_hash)`. The task is its identity
    (module and qualified name, `Task.key`), not its name: two tasks of one name
    in different modules never share an entry. Arguments that are not JSON
    (after pydantic's encoding) give no key: the call is not cached.
    """
    try:
        data = orjson.dumps(
            [context.task_key or context.task_name, arguments],
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
        key = task.cache_key_fn(TaskRunContext(run_id, task.name, flow_run, task.key), parameters)
    except Exception:
        logger.exception("cache_key_fn of task %s failed; the call is not cached", task.name)
        return None
    if key is None:
        return None
    key = str(key)
    return key if len(key) <= _KEY_LIMIT else hashlib.sha256(key.encode()).hexdigest()


async def lookup(url: str, key: str, task: Task[Any, Any]) -> CacheHit | None:
    """The result cached under `key`; None when absent or unreadable. A hit on an entry
    another task made is warned of (once per pair): cache keys are global."""
    from ._store._cache import cache_engine, cached_result

    try:
        found = await cached_result(cache_engine(url), key)
    except Exception as error:  # the store is down: the task runs
        logger.warning("task %s: cannot read the task cache (%s); it runs", task.name, error)
        return None
    if found is None:
        return None
    hit = CacheHit(*found)
    _warn_shared(task, key, hit)
    return hit


def _warn_shared(task: Task[Any, Any], key: str, hit: CacheHit) -> None:
    """Warn once per pair of tasks when `task` hit an entry another task wrote: by its
    identity when this process wrote it, else by the name of its task run in the store."""
    writer = _WRITTEN.get(key)
    if writer is not None:
        other = None if writer == task.key else writer
    else:
        other = None if hit.task_name in (None, task.name) else hit.task_name
    if other is None or (task.key, other) in _SHARED_WARNED:
        return
    _SHARED_WARNED.add((task.key, other))
    logger.warning(
        "task %s returned the result task %s cached under the same key (cache keys are"
        " shared by all tasks): if they must not share it, put the task in the key"
        " (task_input_hash does)",
        task.key,
        other,
    )


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
        return
    _WRITTEN.pop(key, None)
    _WRITTEN[key] = task.key
    if len(_WRITTEN) > _WRITTEN_LIMIT:
        del _WRITTEN[next(iter(_WRITTEN))]
