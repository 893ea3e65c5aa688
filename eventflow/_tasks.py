"""@task: a function whose calls inside a flow run become tracked task runs."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Generic, ParamSpec, TypeVar, overload

from ._context import current_flow_run
from ._errors import MissingContextError
from ._futures import TaskFuture
from ._retries import RetryDelay, RetryPolicy, positive_seconds
from ._task_runs import run_task, submit_task
from ._threads import portal_loop, running_loop

P = ParamSpec("P")
R = TypeVar("R")

logger = logging.getLogger("eventflow")
_warned_blocking = False


@dataclass(frozen=True, slots=True)
class unmapped:
    """Wraps an argument of `task.map()` that is passed whole to every run."""

    value: Any


class Task(Generic[P, R]):
    """A function whose calls inside a flow run are tracked task runs.

    Called inside a flow it runs as a task run and returns the function's value
    (an async task returns an awaitable); `submit()` runs it concurrently and
    returns a `TaskFuture`. Called outside any flow it is the plain function.
    """

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        name: str | None = None,
        description: str | None = None,
        tags: Iterable[str] | None = None,
        retries: int | None = None,
        retry_delay_seconds: RetryDelay | None = None,
        retry_jitter_factor: float | None = None,
        retry_condition_fn: Callable[..., bool] | None = None,
        timeout_seconds: float | None = None,
        task_run_name: str | Callable[..., str] | None = None,
        on_completion: Sequence[Callable[..., Any]] | None = None,
        on_failure: Sequence[Callable[..., Any]] | None = None,
        persist_result: bool = True,
        cache_key_fn: Callable[..., str | None] | None = None,
        cache_expiration: timedelta | float | None = None,
    ) -> None:
        self.fn = fn
        self.name = str(name or getattr(fn, "__name__", "task"))
        self.key = task_key(fn, self.name)
        """The task's identity (module, qualified name, and its name if it was given
        one): `task_input_hash` keys by it, so tasks of one name in two modules differ."""
        self.description = description if description is not None else inspect.getdoc(fn)
        self.tags = frozenset(tags or ())
        self.retries = retries or 0
        self.retry_delay_seconds = retry_delay_seconds
        self.retry_jitter_factor = retry_jitter_factor
        self.retry_condition_fn = retry_condition_fn
        self.retry_policy = RetryPolicy.build(
            retries, retry_delay_seconds, retry_jitter_factor, retry_condition_fn
        )
        self.timeout_seconds = positive_seconds("timeout_seconds", timeout_seconds)
        self.task_run_name = task_run_name
        self.on_completion = tuple(on_completion or ())
        self.on_failure = tuple(on_failure or ())
        self.persist_result = persist_result
        """False: the result is not kept; the task runs again when its run resumes."""
        self.cache_key_fn = cache_key_fn
        """`(context, parameters) -> key`: a call whose key has a kept result returns it."""
        expiration = positive_seconds("cache_expiration", cache_expiration)
        self.cache_expiration = None if expiration is None else timedelta(seconds=expiration)
        """How long a cached result serves (seconds or a timedelta; None: for ever)."""
        self.is_async = inspect.iscoroutinefunction(fn)
        self.signature = inspect.signature(fn)
        self.__doc__ = fn.__doc__
        self.__name__ = self.name
        self.__wrapped__ = fn

    def with_options(self, **options: Any) -> Task[P, R]:
        """A copy of this task with some options changed."""
        current: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "tags": self.tags,
            "retries": self.retries,
            "retry_delay_seconds": self.retry_delay_seconds,
            "retry_jitter_factor": self.retry_jitter_factor,
            "retry_condition_fn": self.retry_condition_fn,
            "timeout_seconds": self.timeout_seconds,
            "task_run_name": self.task_run_name,
            "on_completion": self.on_completion,
            "on_failure": self.on_failure,
            "persist_result": self.persist_result,
            "cache_key_fn": self.cache_key_fn,
            "cache_expiration": self.cache_expiration,
        }
        current.update(options)
        return Task(self.fn, **current)

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        bound = self.signature.bind_partial(*args, **kwargs)
        bound.apply_defaults()
        return dict(bound.arguments)

    def format_run_name(self, parameters: dict[str, Any]) -> str:
        template = self.task_run_name
        if callable(template):
            return str(template(**parameters))
        assert template is not None
        return template.format(**parameters)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return_state = False
        wait_for: tuple[TaskFuture[Any], ...] = ()
        if kwargs:
            return_state = bool(kwargs.pop("return_state", False))
            wait_for = tuple(kwargs.pop("wait_for", None) or ())  # type: ignore[arg-type]
        flow_run = current_flow_run.get()
        if flow_run is None:
            return self.fn(*args, **kwargs)
        loop = running_loop()
        if loop is flow_run.loop and self.is_async:
            # a coroutine: the flow awaits it
            return run_task(self, flow_run, args, kwargs, wait_for, unwrap=not return_state)  # type: ignore[return-value]
        coroutine = run_task(self, flow_run, args, kwargs, wait_for)
        if loop is None:
            state = asyncio.run_coroutine_threadsafe(coroutine, flow_run.loop).result()
        else:
            # A sync task called directly from async code: the caller asked for a
            # value now, so its loop waits while the engine runs elsewhere.
            _warn_blocking(self.name)
            state = asyncio.run_coroutine_threadsafe(coroutine, portal_loop()).result()
        if return_state:
            return state  # type: ignore[return-value]
        result: R = state.result()
        return result

    def submit(self, *args: P.args, **kwargs: P.kwargs) -> TaskFuture[R]:
        """Start a task run concurrently and return its future."""
        wait_for = kwargs.pop("wait_for", None)
        flow_run = current_flow_run.get()
        if flow_run is None:
            raise MissingContextError(f"{self.name}.submit() can only be used inside a flow run")
        return submit_task(self, flow_run, args, kwargs, tuple(wait_for or ()))  # type: ignore[arg-type]

    def map(self, *args: Any, **kwargs: Any) -> list[TaskFuture[R]]:
        """Submit one task run per element of the iterable arguments.

        Lists, tuples and other non-string iterables are mapped over in step; wrap
        an argument in `unmapped()` to pass it whole to every run.
        """
        wait_for = kwargs.pop("wait_for", None)
        mapped: dict[int | str, list[Any]] = {}
        candidates: list[tuple[int | str, Any]] = [*enumerate(args), *kwargs.items()]
        for key, value in candidates:
            if not isinstance(value, unmapped) and _is_mappable(value):
                mapped[key] = list(value)
        lengths = {len(v) for v in mapped.values()}
        if len(lengths) > 1:
            raise ValueError(
                f"{self.name}.map() got iterables of different lengths: {sorted(lengths)}"
            )
        count = lengths.pop() if lengths else 0
        futures = []
        for i in range(count):
            call_args = [mapped[n][i] if n in mapped else _plain(a) for n, a in enumerate(args)]
            call_kwargs = {k: mapped[k][i] if k in mapped else _plain(v) for k, v in kwargs.items()}
            futures.append(self.submit(*call_args, wait_for=wait_for, **call_kwargs))
        return futures

    def __repr__(self) -> str:
        return f"Task({self.name!r})"


def task_key(fn: Callable[..., Any], name: str) -> str:
    """`module.qualname` of `fn`, with `[name]` when the task's name is not the function's."""
    module = getattr(fn, "__module__", None) or "?"
    qualname = getattr(fn, "__qualname__", None) or name
    own = getattr(fn, "__name__", None)
    return f"{module}.{qualname}" + ("" if name == own else f"[{name}]")


def _is_mappable(value: Any) -> bool:
    return isinstance(value, Iterable) and not isinstance(value, (str, bytes, dict))


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, unmapped) else value


def _warn_blocking(name: str) -> None:
    global _warned_blocking
    if not _warned_blocking:
        _warned_blocking = True
        logger.warning(
            "sync task %s was called directly from async code and blocks its event loop "
            "until it finishes; use `await %s.submit(...)` to keep the loop free",
            name,
            name,
        )


@overload
def task(fn: Callable[P, R], /) -> Task[P, R]: ...


@overload
def task(
    *,
    name: str | None = None,
    description: str | None = None,
    tags: Iterable[str] | None = None,
    retries: int | None = None,
    retry_delay_seconds: RetryDelay | None = None,
    retry_jitter_factor: float | None = None,
    retry_condition_fn: Callable[..., bool] | None = None,
    timeout_seconds: float | None = None,
    task_run_name: str | Callable[..., str] | None = None,
    on_completion: Sequence[Callable[..., Any]] | None = None,
    on_failure: Sequence[Callable[..., Any]] | None = None,
    persist_result: bool = True,
    cache_key_fn: Callable[..., str | None] | None = None,
    cache_expiration: timedelta | float | None = None,
) -> Callable[[Callable[P, R]], Task[P, R]]: ...


def task(fn: Callable[P, R] | None = None, /, **options: Any) -> Any:
    """Mark a function as a task: `@task` or `@task(retries=3, ...)`."""
    if fn is None:
        return lambda f: Task(f, **options)
    return Task(fn, **options)
