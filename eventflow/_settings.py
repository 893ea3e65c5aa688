"""Configuration: one frozen dataclass, built in code or read from `EVENTFLOW_*` variables.

Each field declares its environment variable, how the variable's text is read,
and a sentence for the configuration reference (docs/reference/configuration.md
is generated from these fields). To add a setting, add one field with
`setting(...)`; `from_env` and the reference pick it up.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ._ephemeral import ephemeral_url
from ._errors import ConfigurationError

DEFAULT_DATABASE_URL = "sqlite:///eventflow.db"
SUPPORTED_DATABASES = "sqlite:///path/to/runs.db or postgresql://user:password@host/database"

_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$", re.IGNORECASE)


def parse_duration(text: str, *, require_unit: bool = False) -> float:
    """Seconds in a duration written like `45s`, `30m`, `12h`, `7d` or `2w`.

    A bare number means seconds unless `require_unit` (where a forgotten unit
    would delete or keep far more than meant).
    """
    if text.strip().startswith("-"):
        raise ConfigurationError(f"invalid duration {text!r}: it is negative")
    match = _DURATION.match(text)
    if match is None or (require_unit and not match.group(2)):
        raise ConfigurationError(
            f"invalid duration {text!r}: write a number with a unit s, m, h, d or w (e.g. 7d)"
        )
    return float(match.group(1)) * _DURATION_UNITS[(match.group(2) or "s").lower()]


def normalize_database_url(url: str) -> str:
    """Map the URLs users write to the async drivers eventflow uses.

    An in-memory SQLite URL becomes the process's ephemeral store file (see
    eventflow/_ephemeral.py).
    """
    url = ephemeral_url(url)
    if url.startswith("sqlite:"):
        return "sqlite+aiosqlite:" + url[len("sqlite:") :]
    for prefix in (
        "postgresql://",
        "postgres://",
        "postgresql+psycopg://",
        "postgresql+psycopg2://",
    ):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    return url


def check_database_url(url: str, origin: str = "EVENTFLOW_DATABASE_URL") -> str:
    """`url` normalised, or a ConfigurationError naming `origin` and what is supported."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    normalized = normalize_database_url(url.strip())
    try:
        parsed = make_url(normalized)
    except (ArgumentError, ValueError):
        shown = url if len(url) <= 60 else url[:57] + "..."
        raise ConfigurationError(
            f"{origin}={shown!r} is not a database URL; use {SUPPORTED_DATABASES}"
        ) from None
    if parsed.drivername not in ("sqlite+aiosqlite", "postgresql+asyncpg"):
        raise ConfigurationError(
            f"{origin} names the database {parsed.drivername.split('+')[0]!r}, which eventflow "
            f"does not support; use {SUPPORTED_DATABASES}"
        )
    return normalized


def _text(value: str) -> str:
    return value


def _float(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"must be a number of seconds, not {value!r}") from None


def _int(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"must be a whole number, not {value!r}") from None


def _flag(value: str) -> bool:
    text = value.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"must be 1 or 0 (true/false), not {text!r}")


def _log_format(value: str) -> str:
    text = value.strip().lower()
    if text not in ("text", "json"):
        raise ValueError(f"must be 'text' or 'json', not {text!r}")
    return text


def _retention(value: str) -> float | None:
    return parse_duration(value, require_unit=True) if value.strip() else None


def setting(default: Any, env: str, doc: str, parse: Callable[[str], Any] = _text) -> Any:
    """A Settings field read from the environment variable `env` with `parse`."""
    return dataclasses.field(default=default, metadata={"env": env, "doc": doc, "parse": parse})


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything eventflow reads from the environment, also passable in code.

    `App(settings=Settings(database_url=...))` uses the values given (the
    others keep their defaults); `Settings.from_env()` reads the `EVENTFLOW_*`
    variables, and is what `App()` and the command line use. Every field and
    its variable are listed in the configuration reference.
    """

    database_url: str = setting(
        normalize_database_url(DEFAULT_DATABASE_URL),
        "EVENTFLOW_DATABASE_URL",
        "The store: `sqlite:///path/to/runs.db` or `postgresql://user:password@host/db`. "
        "Default: `eventflow.db` in the working directory.",
        lambda value: check_database_url(value),
    )
    flush_interval: float = setting(
        0.05,
        "EVENTFLOW_FLUSH_INTERVAL",
        "Longest time (seconds) a finished record waits before its group commit.",
        _float,
    )
    log_format: str = setting(
        "text", "EVENTFLOW_LOG_FORMAT", "`text` or `json` (one object per line).", _log_format
    )
    log_level: str = setting(
        "INFO", "EVENTFLOW_LOG_LEVEL", "Level of run logs (`DEBUG`, `INFO`, ...).", str.upper
    )
    max_threads: int = setting(
        256, "EVENTFLOW_MAX_THREADS", "Most threads running sync flows and tasks at once.", _int
    )
    commit_interval: float = setting(
        0.5, "EVENTFLOW_COMMIT_INTERVAL", "Seconds between a worker's offset commits.", _float
    )
    worker_lease: float = setting(
        10.0,
        "EVENTFLOW_WORKER_LEASE",
        "Seconds without a heartbeat after which a worker counts as dead and its runs CRASHED.",
        _float,
    )
    shutdown_grace: float = setting(
        30.0,
        "EVENTFLOW_SHUTDOWN_GRACE",
        "Seconds runs in flight get to finish on SIGTERM before they are cancelled.",
        _float,
    )
    metrics_host: str = setting(
        "127.0.0.1", "EVENTFLOW_METRICS_HOST", "Address of the Prometheus `/metrics` endpoint."
    )
    metrics_port: int = setting(
        9464, "EVENTFLOW_METRICS_PORT", "Port of the `/metrics` endpoint (0: none).", _int
    )
    retention: float | None = setting(
        None,
        "EVENTFLOW_RETENTION",
        "Workers delete finished runs older than this (`7d`, `12h`; a unit is required). "
        "Default: keep everything.",
        _retention,
    )
    writer_process: bool = setting(
        True,
        "EVENTFLOW_WRITER_PROCESS",
        "`1`: a worker writes runs from a child process, off its GIL; `0`: from a thread.",
        _flag,
    )
    stall_seconds: float = setting(
        30.0,
        "EVENTFLOW_STALL_SECONDS",
        "Events wait and none was consumed for this long (seconds): the subscription "
        "shows `stalled`.",
        _float,
    )
    health_stall_seconds: float = setting(
        120.0,
        "EVENTFLOW_HEALTH_STALL_SECONDS",
        "A subscription stalled, or its source down, this long (seconds): `/healthz` "
        "answers 503, so a liveness probe restarts the worker.",
        _float,
    )
    lineage_interval: float = setting(
        5.0,
        "EVENTFLOW_LINEAGE_INTERVAL",
        "Seconds between a worker's lineage evaluations: its datasets' last events to the "
        "store, late and fresh notices (a dataset turns late within this after its due time).",
        _float,
    )

    persist_results: bool = setting(
        True,
        "EVENTFLOW_PERSIST_RESULTS",
        "`1`: each completed task run keeps its result (JSON), so a crashed or retried run "
        "resumes after its completed tasks; `0`: results are not kept and a run starts over.",
        _flag,
    )
    result_max_bytes: int = setting(
        100_000,
        "EVENTFLOW_RESULT_MAX_BYTES",
        "Largest task result kept (bytes of JSON); a larger one is not kept and that task "
        "runs again when its run resumes.",
        _int,
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The defaults, overridden by each `EVENTFLOW_*` variable that is set (not empty)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            name = field.metadata["env"]
            text = env.get(name, "")
            if not text.strip():
                continue
            try:
                values[field.name] = field.metadata["parse"](text)
            except ConfigurationError:
                raise
            except ValueError as error:
                raise ConfigurationError(f"{name} {error}") from None
        return cls(**values)


def settings_reference() -> list[tuple[str, str, str, str]]:
    """(field, environment variable, default, description) of every setting, for the docs."""
    rows = []
    for field in dataclasses.fields(Settings):
        default = field.default
        shown = "eventflow.db here" if field.name == "database_url" else repr(default)
        rows.append((field.name, field.metadata["env"], shown, field.metadata["doc"]))
    return rows
