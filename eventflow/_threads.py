"""Where code runs: sync user code on worker threads, sync callers through a portal loop.

Sync flows and tasks never run on an event loop: they run on a thread pool of
eventflow's own, sized generously because a sync flow blocks its thread while its
tasks run. Sync callers with no event loop (a script calling a flow) reach the
async engine through one background "portal" loop, started on first use.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from ._settings import Settings

T = TypeVar("T")

_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None
_portal_loop: asyncio.AbstractEventLoop | None = None


def user_code_executor() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        with _lock:
            if _executor is None:
                _executor = ThreadPoolExecutor(
                    max_workers=Settings.from_env().max_threads,
                    thread_name_prefix="eventflow-sync",
                )
    return _executor


async def run_sync(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run blocking `fn` on a worker thread with the caller's context variables."""
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()
    call = functools.partial(context.run, fn, *args, **kwargs)
    return await loop.run_in_executor(user_code_executor(), call)


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
