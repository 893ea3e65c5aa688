"""Task results as stored JSON: kept with each COMPLETED task run, read back on resume.

A result is kept when it serialises to JSON (orjson, with pydantic's encoder for
models, dates and the like) within `EVENTFLOW_RESULT_MAX_BYTES`. One that does
not is not kept (that task runs again when its run resumes), said once per task.
Reading a result back validates it into the task's return annotation when it
has one, so a task returning a pydantic model gets a model again. Without a
usable annotation a result is kept only if it is plain JSON (it reads back
equal): a model, a tuple or a date would come back as a dict, a list or a string.

Encoding runs on the event loop only for a result that is surely small (a bounded
look at it: `encodes_quickly`); a larger one is encoded on a worker thread, so a
task returning megabytes does not stall every other run of the worker.
"""

from __future__ import annotations

import inspect
import logging
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import BaseModel, TypeAdapter
from pydantic_core import to_jsonable_python

from ._settings import Settings
from ._threads import run_sync

if TYPE_CHECKING:
    from ._tasks import Task

logger = logging.getLogger("eventflow.engine")

_limits: tuple[bool, int] | None = None
_warned: set[str] = set()


def _settings() -> tuple[bool, int]:
    global _limits
    if _limits is None:
        settings = Settings.from_env()
        _limits = (settings.persist_results, settings.result_max_bytes)
    return _limits


def configure(persist: bool, max_bytes: int) -> None:
    """Set what results are kept (`App` passes its settings; tests and benches too)."""
    global _limits
    _limits = (persist, max_bytes)


def encode_result(task: Task[Any, Any], value: Any) -> str | None:
    """`value` as the JSON to keep with its task run, or None when it is not kept."""
    persist, limit = _limits or _settings()
    if not persist or not task.persist_result:
        return None
    try:
        data = orjson.dumps(value, default=to_jsonable_python)
    except (TypeError, ValueError) as error:
        _skip(task, f"it is not JSON-serialisable ({error})")
        return None
    if len(data) > limit:
        _skip(task, f"it is larger ({len(data):,} bytes) than EVENTFLOW_RESULT_MAX_BYTES")
        return None
    if type(value) not in _SCALARS and _adapter(task) is None and orjson.loads(data) != value:
        _skip(
            task,
            f"it has no return annotation to read it back as ({type(value).__name__} is not"
            " plain JSON: annotate the task's return type)",
        )
        return None
    return data.decode()


_SCALARS = frozenset((str, int, float, bool, type(None)))

INLINE_NODES = 256
"""Most values (containers, items, strings) a result encoded on the event loop has."""
INLINE_BYTES = 64 * 1024
"""Most bytes of strings a result encoded on the event loop has."""


def encodes_quickly(value: Any) -> bool:
    """Whether `value` is surely small enough to encode on the event loop: at most
    `INLINE_NODES` values and `INLINE_BYTES` of text, seen in a look that stops as
    soon as either is passed (so it costs little whatever the value's size)."""
    stack, nodes, size = [value], 0, 0
    while stack:
        item = stack.pop()
        nodes += 1
        if isinstance(item, (str, bytes, bytearray)):
            size += len(item)
        elif isinstance(item, (dict, list, tuple, set, frozenset)):
            if nodes + len(stack) + len(item) > INLINE_NODES:
                return False
            stack.extend(item.values() if isinstance(item, dict) else item)
        elif isinstance(item, BaseModel):
            stack.extend(item.__dict__.values())
        else:
            size += 16  # a number, a date, None
        if nodes > INLINE_NODES or size > INLINE_BYTES:
            return False
    return True


async def encode_result_async(task: Task[Any, Any], value: Any) -> str | None:
    """`encode_result`, on a worker thread unless `value` `encodes_quickly`."""
    if encodes_quickly(value):
        return encode_result(task, value)
    return await run_sync(encode_result, task, value)


def decode_result(task: Task[Any, Any], text: str) -> Any:
    """A kept result as the task's return type (its annotation) or as plain JSON."""
    value = orjson.loads(text)
    adapter = _adapter(task)
    return value if adapter is None else adapter.validate_python(value)


def _adapter(task: Task[Any, Any]) -> TypeAdapter[Any] | None:
    """The task's return-type adapter (None: the plain JSON value), built on first use
    and kept on the task (one attribute read per result on the hot path)."""
    adapter: TypeAdapter[Any] | object | None = task.__dict__.get("_result_adapter", _UNSET)
    if adapter is _UNSET:
        adapter = None
        annotation = task.signature.return_annotation
        if annotation is not inspect.Signature.empty:
            try:
                hint = inspect.get_annotations(task.fn, eval_str=True).get("return", annotation)
                # `Any` and `object` say nothing of the type to read back: plain JSON only
                adapter = None if hint is Any or hint is object else TypeAdapter(hint)
            except Exception:  # an annotation pydantic cannot use: the plain JSON value
                adapter = None
        task.__dict__["_result_adapter"] = adapter
    return adapter  # type: ignore[return-value]


_UNSET = object()


def _skip(task: Task[Any, Any], why: str) -> None:
    if task.name not in _warned:
        _warned.add(task.name)
        logger.warning(
            "task %s: its result is not kept because %s; the task runs again when a run "
            "that called it resumes (said once per task)",
            task.name,
            why,
        )
