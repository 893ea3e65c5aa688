"""Where code runs: sync user code on worker threads, sync callers through a portal loop.

Sync flows and tasks never run on an event loop: they run on thread pools of
eventflow's own. A sync flow blocks its thread while its tasks run, so flows and
what they wait for (tasks, subflows, hooks) have a pool each: however many sync
flows are in flight, their tasks always find a thread (with one pool, flows
holding every thread waited forever for tasks that could not start). Sync
callers with no event loop (a script calling a flow) reach the async engine
through anyio's blocking portal, on a daemon thread started on first use (a
daemon: a script that called a flow must still exit when its main thread ends).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, TypeVar

import anyio
from anyio.from_thread import BlockingPortal

from ._settings import Settings

T = TypeVar("T")

Pool = Literal["flows", "tasks"]

_lock = threading.Lock()
_executors: dict[Pool, ThreadPoolExecutor] = {}
_portal: tuple[BlockingPortal, asyncio.AbstractEventLoop] | None = None


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


def busy_threads() -> int:
    """How many calls of user code run on eventflow's threads now (both pools)."""
    busy = 0
    for executor in list(_executors.values()):
        # workers that are not idle (each idle one holds a count of the semaphore)
        busy += max(0, len(executor._threads) - executor._idle_semaphore._value)
    return busy


async def run_sync(fn: Callable[..., T], /, *args: Any, pool: Pool = "tasks", **kwargs: Any) -> T:
    """Run blocking `fn` on a worker thread of `pool` with the caller's context variables."""
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()
    call = functools.partial(context.run, fn, *args, **kwargs)
    return await loop.run_in_executor(user_code_executor(pool), call)


def blocking_portal() -> BlockingPortal:
    """anyio's blocking portal that runs the engine for sync callers (see the module)."""
    return _started_portal()[0]


def portal_loop() -> asyncio.AbstractEventLoop:
    """The event loop of the blocking portal (to hand coroutines to, or compare with)."""
    return _started_portal()[1]


def _started_portal() -> tuple[BlockingPortal, asyncio.AbstractEventLoop]:
    global _portal
    if _portal is None:
        with _lock:
            if _portal is None:
                started: list[tuple[BlockingPortal, asyncio.AbstractEventLoop]] = []
                ready = threading.Event()

                async def serve() -> None:
                    async with BlockingPortal() as portal:
                        started.append((portal, asyncio.get_running_loop()))
                        ready.set()
                        await portal.sleep_until_stopped()

                threading.Thread(
                    target=anyio.run, args=(serve,), name="eventflow-portal", daemon=True
                ).start()
                ready.wait()
                _portal = started[0]
    return _portal


def running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
