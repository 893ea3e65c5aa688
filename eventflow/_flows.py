"""@flow: a function whose every call (or event) is one tracked flow run."""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import signal
import sys
import threading
import typing
from collections.abc import Callable, Coroutine, Mapping, Sequence
from datetime import timedelta
from typing import Any, Generic, ParamSpec, TypeVar, overload

import pydantic

from ._context import current_flow_run
from ._crashed_calls import resume_crashed
from ._datasets import dataset_names, period_seconds
from ._defaults import batch_lease, default_writer_async
from ._engine import run_flow
from ._errors import ConfigurationError, ParameterValidationError, SyncInAsyncError
from ._interruption import CURRENT_RUN, Interruption
from ._logging import enable_print_logging
from ._retries import RetryDelay, RetryPolicy, positive_seconds
from ._states import State
from ._threads import busy_threads, portal_loop, running_loop
from ._tracing import TRACING

logger = logging.getLogger("eventflow.engine")

P = ParamSpec("P")
R = TypeVar("R")

FreshWithin = timedelta | float | Mapping[str, timedelta | float]
"""One period for every dataset a flow writes, or one per written dataset."""


class Flow(Generic[P, R]):
    """A function whose calls are tracked flow runs.

    Calling it runs it once and returns its value (batch mode; an async flow
    returns an awaitable); a worker calls it once per event. With
    `return_state=True` a call returns the final `State` instead.
    """

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        name: str | None = None,
        version: str | None = None,
        description: str | None = None,
        flow_run_name: str | Callable[..., str] | None = None,
        retries: int | None = None,
        retry_delay_seconds: RetryDelay | None = None,
        retry_resumes: bool = True,
        timeout_seconds: float | None = None,
        validate_parameters: bool = True,
        log_prints: bool = False,
        on_completion: Sequence[Callable[..., Any]] | None = None,
        on_failure: Sequence[Callable[..., Any]] | None = None,
        on_crashed: Sequence[Callable[..., Any]] | None = None,
        reads: Sequence[str] | None = None,
        writes: Sequence[str] | None = None,
        fresh_within: FreshWithin | None = None,
    ) -> None:
        self.fn = fn
        self.reads = dataset_names(reads, "reads")
        """Datasets the flow reads besides its subscription's source (lineage)."""
        self.writes = dataset_names(writes, "writes")
        """Datasets the flow writes: each completed run is a write (lineage)."""
        self.fresh_within = _fresh_within(fresh_within, self.writes)
        """Written dataset -> seconds within which the next write is due after the last."""
        self.name: str = name or getattr(fn, "__name__", "flow").replace("_", "-")
        self.version = version
        self.description = description if description is not None else inspect.getdoc(fn)
        self.flow_run_name = flow_run_name
        self.retries = retries or 0
        self.retry_policy = RetryPolicy.build(retries, retry_delay_seconds)
        self.retry_resumes = retry_resumes
        """A flow retry (`retries`) resumes after the task calls the failed attempt
        completed, as a crashed run does; False: every attempt calls every task."""
        self.timeout_seconds = positive_seconds("timeout_seconds", timeout_seconds)
        self.validate_parameters = validate_parameters
        self.log_prints = log_prints
        self.on_completion = tuple(on_completion or ())
        self.on_failure = tuple(on_failure or ())
        self.on_crashed = tuple(on_crashed or ())
        self.is_async = inspect.iscoroutinefunction(fn)
        self.signature = inspect.signature(fn)
        self._model: type[pydantic.BaseModel] | None = None
        self._event_parameters_model: type[pydantic.BaseModel] | None = None
        simple = all(
            p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            for p in self.signature.parameters.values()
        )
        positional = [
            n for n, p in self.signature.parameters.items() if p.kind is p.POSITIONAL_OR_KEYWORD
        ]
        # names a call's positional arguments bind to, when binding needs no inspect.Signature
        self._positional_names: tuple[str, ...] | None = tuple(positional) if simple else None
        self._event_model: type[pydantic.BaseModel] | None = None
        self._event_model_parameter: str | None = None
        self.__doc__ = fn.__doc__
        self.__name__ = self.name
        self.__wrapped__ = fn
        if log_prints:
            enable_print_logging()

    # -- parameters ------------------------------------------------------------------

    @property
    def parameters_model(self) -> type[pydantic.BaseModel]:
        """A pydantic model of the flow's signature (unknown arguments are errors)."""
        if self._model is None:
            self._model = _signature_model(self.fn, self.signature, extra="forbid")
        return self._model

    @property
    def event_parameters_model(self) -> type[pydantic.BaseModel]:
        """The same model for events, whose fields the flow does not take are ignored."""
        if self._event_parameters_model is None:
            self._event_parameters_model = _signature_model(self.fn, self.signature, extra="ignore")
        return self._event_parameters_model

    def validate(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """Bind a call's arguments to the signature and validate (and coerce) them."""
        arguments = self._bind(args, kwargs)
        if not self.validate_parameters:
            return arguments
        return self._validated(arguments)

    def _bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        names = self._positional_names
        if names is not None and len(args) <= len(names) and not kwargs.keys() & names[: len(args)]:
            arguments = dict(zip(names, args, strict=False))
            arguments.update(kwargs)
            if self.validate_parameters:  # pydantic fills defaults and reports what is missing
                return arguments
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as error:
            raise ParameterValidationError(f"{self.name}: {error}") from None
        bound.apply_defaults()
        return dict(bound.arguments)

    def validate_json(self, document: bytes | str) -> dict[str, Any]:
        """Parameters from a JSON document, as an event carries them.

        If the flow's first parameter is a pydantic model and the others have
        defaults, the document is that model; otherwise it is an object whose
        keys are the flow's keyword parameters.
        """
        return self._validate_event(lambda model: model.model_validate_json(document))

    def validate_decoded(self, document: Any) -> dict[str, Any]:
        """Like `validate_json`, from a document already decoded (by a flow control)."""
        return self._validate_event(lambda model: model.model_validate(document))

    def _validate_event(
        self, validate: Callable[[type[pydantic.BaseModel]], pydantic.BaseModel]
    ) -> dict[str, Any]:
        self._prepare_event_model()
        try:
            if self._event_model_parameter:
                assert self._event_model is not None
                value = validate(self._event_model)
                parameters = {self._event_model_parameter: value}
                if len(self.signature.parameters) > 1:
                    return self.validate((), parameters)
                return parameters
            validated = validate(self.event_parameters_model)
        except pydantic.ValidationError as error:
            raise ParameterValidationError(_describe_validation(self.name, error)) from None
        return dict(validated.__dict__)

    def _prepare_event_model(self) -> None:
        if self._event_model is not None or self._event_model_parameter == "":
            return
        params = list(self.signature.parameters.values())
        hints = typing.get_type_hints(self.fn)
        first = params[0] if params else None
        annotation = hints.get(first.name) if first else None
        others_optional = all(p.default is not p.empty for p in params[1:])
        if (
            first is not None
            and inspect.isclass(annotation)
            and issubclass(annotation, pydantic.BaseModel)
            and others_optional
        ):
            self._event_model = annotation
            self._event_model_parameter = first.name
        else:
            self._event_model_parameter = ""

    def _validated(self, arguments: dict[str, Any]) -> dict[str, Any]:
        model = self.parameters_model
        try:
            validated = model.model_validate(arguments)
        except pydantic.ValidationError as error:
            raise ParameterValidationError(_describe_validation(self.name, error)) from None
        result = dict(validated.__dict__)
        if self._positional_names is None:  # *args / **kwargs pass through unvalidated
            for name, value in arguments.items():
                result.setdefault(name, value)
        return result

    def format_run_name(self, parameters: dict[str, Any]) -> str:
        template = self.flow_run_name
        if callable(template):
            return str(template(**parameters))
        assert template is not None
        return template.format(**parameters)

    # -- calling ---------------------------------------------------------------------

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return_state = bool(kwargs.pop("return_state", False))
        if self.is_async:
            return self._call_async(args, kwargs, return_state)  # type: ignore[return-value]
        parent = current_flow_run.get()
        loop = running_loop()
        target = parent.loop if parent is not None and loop is None else portal_loop()
        if loop is target:
            raise SyncInAsyncError(
                f"sync flow {self.name} was called on the event loop that would run it; "
                "call it from a thread (await asyncio.to_thread(...))"
            )
        if parent is None and threading.current_thread() is threading.main_thread():
            state = _run_to_the_end(self._run(args, kwargs), target)
        else:
            state = asyncio.run_coroutine_threadsafe(self._run(args, kwargs), target).result()
        return _outcome(state, return_state)  # type: ignore[no-any-return]

    async def _call_async(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], return_state: bool
    ) -> Any:
        state = await self._run(args, kwargs)
        return _outcome(state, return_state)

    async def _run(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> State:
        parent = current_flow_run.get()
        if parent is not None:
            return await run_flow(self, parent.writer, args=args, kwargs=kwargs, parent=parent)
        if not TRACING.on:
            TRACING.setup()  # a provider set up since the last direct call counts
        writer = await default_writer_async()
        lease = batch_lease()
        try:
            resume = await resume_crashed(self, writer.database_url, args, kwargs)
            return await run_flow(
                self,
                writer,
                args=args,
                kwargs=kwargs,
                worker_id=None if lease is None else lease.worker_id,
                resume=resume,
            )
        finally:
            await writer.flush()  # a direct call returns once its run is durable (crashed too)

    def __repr__(self) -> str:
        return f"Flow({self.name!r})"


INTERRUPT_GRACE_SECONDS = 10.0
"""How long an interrupted top-level run may take to record that it crashed."""


class _Terminated(BaseException):
    """SIGTERM arrived while the main thread waited for a flow run."""


def _run_to_the_end(run: Coroutine[Any, Any, State], loop: asyncio.AbstractEventLoop) -> State:
    """Wait in the main thread for a top-level sync run; on Ctrl-C or SIGTERM it ends CRASHED.

    Without this, the process ends with its run RUNNING in the store for ever
    (SIGTERM's default ends the process at once; after Ctrl-C the run went on
    unrecorded). The run is cancelled, recorded and flushed (up to
    `INTERRUPT_GRACE_SECONDS`), then the interrupt goes on: KeyboardInterrupt is
    raised again, and SIGTERM is delivered again with its default action. A
    SIGTERM handler of the program's own is left alone.

    After Ctrl-C, Python waits at exit for the sync tasks still running on
    eventflow's threads (a thread cannot be stopped): the worker says so, and a
    second Ctrl-C ends the process at once (exit status 130), the run recorded.
    """
    ended = threading.Event()
    runs: list[Interruption] = []

    async def tracked() -> State:
        interruption = Interruption(asyncio.current_task())
        CURRENT_RUN.set(interruption)  # this task's own context: the run reads why it ended
        runs.append(interruption)
        try:
            return await run
        finally:
            interruption.task = None  # (the task's context holds it: no reference cycle)
            ended.set()

    def terminate(signum: int, frame: object) -> None:
        raise _Terminated

    ours = signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    if ours:
        signal.signal(signal.SIGTERM, terminate)
    try:
        return asyncio.run_coroutine_threadsafe(tracked(), loop).result()
    except (KeyboardInterrupt, _Terminated) as interrupt:
        why = "SIGTERM" if isinstance(interrupt, _Terminated) else "KeyboardInterrupt"
        if runs:
            loop.call_soon_threadsafe(runs[0].cancel, why)
            ended.wait(INTERRUPT_GRACE_SECONDS)
        if isinstance(interrupt, _Terminated):
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.raise_signal(signal.SIGTERM)
        _second_interrupt_quits()
        raise
    finally:
        if ours:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _second_interrupt_quits() -> None:
    """After a Ctrl-C that stopped a run: if sync tasks still hold threads, which the
    interpreter joins at exit, say so and let the next Ctrl-C end the process now."""
    busy = busy_threads()
    if not busy or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return
    logger.warning(
        "interrupted: the run is recorded CRASHED; Python waits for %d sync flow or task"
        " call(s) still running on their threads before it exits: press Ctrl-C again to"
        " quit now",
        busy,
    )

    def quit_now(signum: int, frame: object) -> None:
        sys.stderr.flush()
        os._exit(130)  # 128 + SIGINT, as a shell reports an interrupted command

    signal.signal(signal.SIGINT, quit_now)


def _outcome(state: State, return_state: bool) -> Any:
    if return_state:
        return state
    return state.result()


def _fresh_within(value: FreshWithin | None, writes: tuple[str, ...]) -> dict[str, float]:
    """`fresh_within=` per written dataset, checked: positive, and only for `writes`."""
    if value is None:
        return {}
    if not writes:
        raise ConfigurationError("fresh_within needs writes=[...]: the datasets it is about")
    if not isinstance(value, Mapping):
        seconds = period_seconds(value, "fresh_within")
        assert seconds is not None
        return dict.fromkeys(writes, seconds)
    periods: dict[str, float] = {}
    for name, period in value.items():
        if name not in writes:
            raise ConfigurationError(f"fresh_within names {name!r}, which is not in writes=")
        seconds = period_seconds(period, f"fresh_within[{name!r}]")
        assert seconds is not None
        periods[name] = seconds
    return periods


def _describe_validation(flow_name: str, error: pydantic.ValidationError) -> str:
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '<input>'}: {e['msg']}" for e in error.errors()
    )
    return f"invalid parameters for flow {flow_name}: {problems}"


def _signature_model(
    fn: Callable[..., Any], signature: inspect.Signature, extra: typing.Literal["forbid", "ignore"]
) -> type[pydantic.BaseModel]:
    hints = typing.get_type_hints(fn)
    fields: dict[str, Any] = {}
    for name, parameter in signature.parameters.items():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        annotation = hints.get(name, Any)
        default = ... if parameter.default is parameter.empty else parameter.default
        fields[name] = (annotation, default)
    return pydantic.create_model(
        f"{getattr(fn, '__name__', 'flow')}_parameters",
        __config__=pydantic.ConfigDict(
            arbitrary_types_allowed=True, protected_namespaces=(), extra=extra
        ),
        **fields,
    )


@overload
def flow(fn: Callable[P, R], /) -> Flow[P, R]: ...


@overload
def flow(
    *,
    name: str | None = None,
    version: str | None = None,
    description: str | None = None,
    flow_run_name: str | Callable[..., str] | None = None,
    retries: int | None = None,
    retry_delay_seconds: RetryDelay | None = None,
    retry_resumes: bool = True,
    timeout_seconds: float | None = None,
    validate_parameters: bool = True,
    log_prints: bool = False,
    on_completion: Sequence[Callable[..., Any]] | None = None,
    on_failure: Sequence[Callable[..., Any]] | None = None,
    on_crashed: Sequence[Callable[..., Any]] | None = None,
    reads: Sequence[str] | None = None,
    writes: Sequence[str] | None = None,
    fresh_within: FreshWithin | None = None,
) -> Callable[[Callable[P, R]], Flow[P, R]]: ...


def flow(fn: Callable[P, R] | None = None, /, **options: Any) -> Any:
    """Mark a function as a flow: `@flow` or `@flow(name=..., retries=...)`."""
    if fn is None:
        return lambda f: Flow(f, **options)
    return Flow(fn, **options)
