"""Run logs: `get_run_logger()` writes to stdout and into the store with the run.

Run logs go through the standard `logging` hierarchy, one logger per flow
(`eventflow.runs.<flow name>`), so handlers a user attaches anywhere on the way
to the root see them. eventflow prints to stdout itself only when the process
has no logging set up of its own; the worker's live status line is cleared
before such a record is printed and redrawn after it.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import sys
import threading
from collections.abc import Iterator, MutableMapping
from typing import Any

import orjson

from ._context import current_flow_run, current_task_run
from ._errors import MissingContextError
from ._tracing import TRACING

RUN_LOGGER_NAME = "eventflow.runs"
_configured = threading.Lock()
_is_configured = False


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the run ids when the record has them, and the
    trace and span ids (hex, as OpenTelemetry prints them) while tracing is on."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("flow_run_id", "task_run_id", "flow_name", "task_name"):
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        if TRACING.on:  # the span current where the record is formatted: the run's
            ids = TRACING.current_ids()
            if ids is not None:
                entry["trace_id"], entry["span_id"] = ids
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        where = getattr(record, "task_name", None) or getattr(record, "flow_name", None)
        run_id = getattr(record, "task_run_id", None) or getattr(record, "flow_run_id", None)
        prefix = f"{where} {run_id[-8:]} | " if where and run_id else ""
        record.run_prefix = prefix
        return super().format(record)


class StatusLine:
    """One line on stderr rewritten in place, which log lines never share.

    eventflow's log handler writes each record inside `suspended()`: the line
    is erased first and drawn again after the record.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._text = ""

    def show(self, text: str) -> None:
        with self._lock:
            self._text = text
            sys.stderr.write(f"\r\x1b[K{text}")
            sys.stderr.flush()

    def close(self) -> None:
        """Leave the last status where it is and end its line."""
        with self._lock:
            if self._text:
                sys.stderr.write("\n")
                sys.stderr.flush()
            self._text = ""

    @contextlib.contextmanager
    def suspended(self) -> Iterator[None]:
        with self._lock:
            if not self._text:
                yield
                return
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
            try:
                yield
            finally:
                sys.stderr.write(self._text)
                sys.stderr.flush()


STATUS_LINE = StatusLine()


class _StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stdout` is at the time, not the one seen at set-up."""

    @property
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass

    def emit(self, record: logging.LogRecord) -> None:
        with STATUS_LINE.suspended():
            super().emit(record)


class StoreLogHandler(logging.Handler):
    """Sends records that belong to a run to that run's store writer."""

    def emit(self, record: logging.LogRecord) -> None:
        writer = getattr(record, "eventflow_writer", None)
        if writer is None:
            return
        try:
            message = record.getMessage()
            if record.exc_info:
                message = f"{message}\n{logging.Formatter().formatException(record.exc_info)}"
            writer.put_log(
                {
                    "flow_run_id": getattr(record, "flow_run_id", None),
                    "task_run_id": getattr(record, "task_run_id", None),
                    "level": record.levelno,
                    "logger": record.name,
                    "message": message,
                    "timestamp": record.created,
                }
            )
        except Exception:  # pragma: no cover - logging must never raise into user code
            self.handleError(record)


def configure_logging(log_format: str = "text", level: str = "INFO") -> None:
    """Store run logs with their runs, and print eventflow's logs unless the user does; once.

    Records propagate to the root logger as usual. If the root logger has
    handlers (the user set logging up, e.g. `logging.basicConfig()`), those
    print them; otherwise eventflow adds its own stdout handler to `eventflow`.
    """
    global _is_configured
    with _configured:
        if _is_configured:
            return
        runs = logging.getLogger(RUN_LOGGER_NAME)
        runs.setLevel(level)
        runs.addHandler(StoreLogHandler())
        package = logging.getLogger("eventflow")
        if package.level == logging.NOTSET:
            package.setLevel(logging.INFO)
        if not package.handlers and not _user_configured_logging():
            stream = _StdoutHandler()
            if log_format == "json":
                stream.setFormatter(JsonFormatter())
            else:
                stream.setFormatter(
                    _TextFormatter("%(asctime)s | %(levelname)-7s | %(run_prefix)s%(message)s")
                )
            package.addHandler(stream)
        _is_configured = True


def _user_configured_logging() -> bool:
    """Whether the root logger has handlers of the user's (pytest's capturing ones are not)."""
    return any(
        not type(handler).__module__.startswith("_pytest")
        for handler in logging.getLogger().handlers
    )


_flow_loggers: dict[str, logging.Logger] = {}


def flow_logger(flow_name: str) -> logging.Logger:
    """The logger of a flow's runs, `eventflow.runs.<flow_name>`."""
    logger = _flow_loggers.get(flow_name)
    if logger is None:
        logger = _flow_loggers[flow_name] = logging.getLogger(f"{RUN_LOGGER_NAME}.{flow_name}")
    return logger


class RunLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger bound to one flow run (and task run): records carry their ids."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        extra = dict(self.extra or {})
        extra.update(kwargs.get("extra") or {})
        kwargs["extra"] = extra
        return msg, kwargs


def get_run_logger() -> logging.LoggerAdapter:  # type: ignore[type-arg]
    """The logger of the current flow run or task run.

    Its records are stored with the run (level, time, flow run, task run) and
    go through `logging` as `eventflow.runs.<flow name>`: to stdout, or to the
    handlers of the user's own logging set-up.
    """
    flow_run = current_flow_run.get()
    if flow_run is None:
        raise MissingContextError(
            "get_run_logger() was called outside a flow run or task run; "
            "use logging.getLogger(__name__) in code that is not part of a run"
        )
    task_run = current_task_run.get()
    extra: dict[str, Any] = {
        "flow_run_id": flow_run.flow_run_id,
        "flow_name": flow_run.flow_name,
        "eventflow_writer": flow_run.writer,
    }
    if task_run is not None:
        extra["task_run_id"] = task_run.task_run_id
        extra["task_name"] = task_run.task_name
    return RunLogger(flow_logger(flow_run.flow_name), extra)


_original_print = builtins.print
_print_patch = threading.Lock()
_print_patched = False


def _logging_print(*args: Any, **kwargs: Any) -> None:
    flow_run = current_flow_run.get()
    if flow_run is None or not flow_run.log_prints or kwargs.get("file") not in (None, sys.stdout):
        _original_print(*args, **kwargs)
        return
    sep = kwargs.get("sep", " ")
    get_run_logger().info((" " if sep is None else sep).join(str(arg) for arg in args))


def enable_print_logging() -> None:
    """Route `print()` inside runs with `log_prints=True` to the run logger.

    The builtin is replaced once, lazily, by a function that prints as usual
    outside such runs.
    """
    global _print_patched
    with _print_patch:
        if not _print_patched:
            builtins.print = _logging_print
            _print_patched = True
