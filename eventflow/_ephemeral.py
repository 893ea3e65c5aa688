"""`sqlite:///:memory:`: an ephemeral store that vanishes when the process exits.

SQLite gives every connection to `:memory:` a database of its own, but the
store is many connections (the writer thread or process, the migrations, the
runtime's reads): each would see an empty database without tables. What a
user means by a memory URL is a store nobody else sees and nothing keeps, so
eventflow maps it to a file in a temporary directory, one per process (every
memory URL of a process names the same store), removed at exit.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading

_lock = threading.Lock()
_directory: str | None = None


def is_memory_url(url: str) -> bool:
    """True for SQLite URLs naming an in-memory database (`sqlite://`, `sqlite:///:memory:`)."""
    scheme, separator, rest = url.partition("://")
    if not separator or not scheme.startswith("sqlite"):
        return False
    path = rest.split("?", 1)[0]
    return path in ("", "/:memory:")


def ephemeral_url(url: str) -> str:
    """`url`, or for an in-memory SQLite URL the process's temporary store file in its place."""
    if not is_memory_url(url):
        return url
    scheme, _, rest = url.partition("://")
    _, question, query = rest.partition("?")
    return f"{scheme}:///{os.path.join(_store_directory(), 'memory.db')}{question}{query}"


def _store_directory() -> str:
    global _directory
    with _lock:
        if _directory is None:
            _directory = tempfile.mkdtemp(prefix="eventflow-memory-")
            atexit.register(_remove, _directory, os.getpid())
        return _directory


def _remove(directory: str, owner: int) -> None:
    if os.getpid() == owner:  # not in a forked child that inherited the hook
        shutil.rmtree(directory, ignore_errors=True)
