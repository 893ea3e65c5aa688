"""Run logs: `get_run_logger()` writes to stdout and into the store with the run."""

from __future__ import annotations

import builtins
import logging
import sys
import threading
from collections.abc import MutableMapping
from typing import Any

import orjson

from ._context import current_flow_run, current_task_run
from ._errors import MissingContextError

RUN_LOGGER_NAME = "eventflow.runs"
_configured = threading.Lock()
_is_configured = False


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the run ids when the record has them."""

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


class _StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stdout` is at the time, not the one seen at set-up."""

    @property
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


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
    """Send eventflow's own logs and run logs to stdout, run logs to the store too; once."""
    global _is_configured
    with _configured:
        if _is_configured:
            return
        stream = _StdoutHandler()
        if log_format == "json":
            stream.setFormatter(JsonFormatter())
        else:
            stream.setFormatter(
                _TextFormatter("%(asctime)s | %(levelname)-7s | %(run_prefix)s%(message)s")
            )
        runs = logging.getLogger(RUN_LOGGER_NAME)
        runs.setLevel(level)
        runs.propagate = False
        runs.addHandler(stream)
        runs.addHandler(StoreLogHandler())
        package = logging.getLogger("eventflow")
        if not package.handlers:
            package.setLevel(logging.INFO)
            package.addHandler(stream)
        _is_configured = True


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

    Its records go to stdout and are stored with the run (level, time, flow run,
    task run).
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
    return RunLogger(logging.getLogger(RUN_LOGGER_NAME), extra)


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
