"""The process-wide store that direct flow calls (batch mode) record into.

Created on first use from `Settings.from_env()`: the schema is migrated, the
writer thread started, and an exit hook flushes what is still queued.
"""

from __future__ import annotations

import asyncio
import atexit
import threading

from ._logging import configure_logging
from ._settings import Settings
from ._store._migrate import upgrade
from ._store._writer import RunWriter

_lock = threading.Lock()
_writer: RunWriter | None = None


def default_writer() -> RunWriter:
    """The default writer, created and started on first call (blocking)."""
    global _writer
    if _writer is None:
        with _lock:
            if _writer is None:
                settings = Settings.from_env()
                configure_logging(settings.log_format, settings.log_level)
                upgrade(settings.database_url)
                writer = RunWriter(settings.database_url, flush_interval=settings.flush_interval)
                writer.start()
                atexit.register(writer.close)
                _writer = writer
    return _writer


async def default_writer_async() -> RunWriter:
    """`default_writer()` without blocking the caller's event loop on the first call."""
    if _writer is not None:
        return _writer
    return await asyncio.to_thread(default_writer)


def reset_default_writer() -> None:
    """Close the default writer so the next call builds one from the environment again."""
    global _writer
    with _lock:
        if _writer is not None:
            _writer.close()
            atexit.unregister(_writer.close)
            _writer = None
