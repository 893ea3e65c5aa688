"""Where code runs: sync user code on worker threads, sync callers through a portal loop.

Sync flows and tasks never run on an event loop: they run on thread pools of
eventflow's own. A sync flow blocks its thread while its tasks run, so flows and
what they wait for (tasks, subflows, hooks) have a pool each: however many sync
flows are in flight, their tasks always find a thread (with one pool, flows
holding every thread waited forever for tasks that could not start). Sync
callers with no event loop (a script calling a flow) reach the async engine
through one background "portal" loop, started on first use.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, TypeVar

from ._settings import Settings

T = TypeVar("T")

Pool = Literal["flows", "tasks"]

_lock = threading.Lock()
_executors: dict[Pool, ThreadPoolExecutor] = {}
_portal_loop: asyncio.AbstractEventLoop | None = None


def user_code_executor(pool: Pool = "tasks") -> ThreadPoolExecutor:
    """The pool for top-level sync flows (`"flows"`) or for the rest (`"tasks"`)."""
    executor = _executors.get(pool)
    if executor is None:
        with _lock:
            executor = _executors.get(pool)
            if executor is None:
                executor = _executors[pool] = ThreadPoolExecutor(
                    max_workers=Settings.from_env().max_threads,
                    thread_name_prefix=f"eventflow-sync-{pool}",
                )
    return executor


async def run_sync(fn: Callable[..., T], /, *args: Any, pool: Pool = "tasks", **kwargs: Any) -> T:
    """Run blocking `fn` on a worker thread of `pool` with the caller's context variables."""
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()
    call = functools.partial(context.run, fn, *args, **kwargs)
    return await loop.run_in_executor(user_code_executor(pool), call)


def portal_loop() -> asyncio.AbstractEventLoop:
    """The background event loop that runs the engine for sync callers."""
    global _portal_loop
    if _portal_loop is None:
        with _lock:
            if _portal_loop is None:
                loop = asyncio.new_event_loop()
                started = threading.Event()

                def serve() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(started.set)
                    loop.run_forever()

                threading.Thread(target=serve, name="eventflow-portal", daemon=True).start()
                started.wait()
                _portal_loop = loop
    return _portal_loop


def running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
