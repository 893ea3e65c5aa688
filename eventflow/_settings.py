"""Configuration from environment variables, read once into a frozen dataclass."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from ._errors import ConfigurationError
from ._store._ephemeral import ephemeral_url

DEFAULT_DATABASE_URL = "sqlite:///eventflow.db"

_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """Seconds in a duration written like `90`, `45s`, `30m`, `12h`, `7d` or `2w`."""
    value = text.strip().lower()
    unit = _DURATION_UNITS.get(value[-1:])
    number = value[:-1] if unit is not None else value
    try:
        seconds = float(number) * (unit or 1)
    except ValueError:
        raise ConfigurationError(
            f"invalid duration {text!r}: write a number with s, m, h, d or w (e.g. 7d)"
        ) from None
    if seconds < 0:
        raise ConfigurationError(f"invalid duration {text!r}: it is negative")
    return seconds


def normalize_database_url(url: str) -> str:
    """Map the URLs users write to the async drivers eventflow uses.

    An in-memory SQLite URL becomes the process's ephemeral store file (see
    eventflow/_store/_ephemeral.py).
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


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything eventflow reads from the environment.

    `EVENTFLOW_DATABASE_URL` picks the store (default: `eventflow.db` in the
    working directory); `EVENTFLOW_FLUSH_INTERVAL` is the longest a finished
    record waits before its group commit; `EVENTFLOW_LOG_FORMAT` is `text` or
    `json`; `EVENTFLOW_LOG_LEVEL` the level of run logs; `EVENTFLOW_MAX_THREADS`
    bounds the threads that run sync user code. For workers:
    `EVENTFLOW_COMMIT_INTERVAL` (seconds between offset commits),
    `EVENTFLOW_WORKER_LEASE` (seconds without a heartbeat after which a worker
    is dead and its runs CRASHED), `EVENTFLOW_SHUTDOWN_GRACE` (seconds runs in
    flight get to finish on SIGTERM), `EVENTFLOW_WRITER_PROCESS` (`1`, the
    default: a worker writes runs from a child process, off its GIL; `0`: from
    a thread). Liveness: `EVENTFLOW_STALL_SECONDS` (default 30: events wait
    and none was consumed for that long, the subscription shows `stalled`),
    `EVENTFLOW_HEALTH_STALL_SECONDS` (default 120: stalled that long, or its
    source down that long, `/healthz` answers 503 so a liveness probe restarts
    the worker).
    """

    database_url: str = normalize_database_url(DEFAULT_DATABASE_URL)
    flush_interval: float = 0.05
    log_format: str = "text"
    log_level: str = "INFO"
    max_threads: int = 256
    commit_interval: float = 0.5
    worker_lease: float = 10.0
    shutdown_grace: float = 30.0
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9464
    retention: float | None = None
    writer_process: bool = True
    stall_seconds: float = 30.0
    health_stall_seconds: float = 120.0

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        log_format = env.get("EVENTFLOW_LOG_FORMAT", "text").lower()
        if log_format not in ("text", "json"):
            raise ConfigurationError(
                f"EVENTFLOW_LOG_FORMAT must be 'text' or 'json', not {log_format!r}"
            )
        try:
            flush_interval = float(env.get("EVENTFLOW_FLUSH_INTERVAL", "0.05"))
            max_threads = int(env.get("EVENTFLOW_MAX_THREADS", "256"))
            commit_interval = float(env.get("EVENTFLOW_COMMIT_INTERVAL", "0.5"))
            worker_lease = float(env.get("EVENTFLOW_WORKER_LEASE", "10"))
            shutdown_grace = float(env.get("EVENTFLOW_SHUTDOWN_GRACE", "30"))
            metrics_port = int(env.get("EVENTFLOW_METRICS_PORT", "9464"))
            retention_text = env.get("EVENTFLOW_RETENTION", "").strip()
            retention = parse_duration(retention_text) if retention_text else None
            stall_seconds = float(env.get("EVENTFLOW_STALL_SECONDS", "30"))
            health_stall_seconds = float(env.get("EVENTFLOW_HEALTH_STALL_SECONDS", "120"))
        except ValueError as error:
            raise ConfigurationError(f"invalid numeric setting: {error}") from None
        return cls(
            database_url=normalize_database_url(
                env.get("EVENTFLOW_DATABASE_URL", DEFAULT_DATABASE_URL)
            ),
            flush_interval=flush_interval,
            log_format=log_format,
            log_level=env.get("EVENTFLOW_LOG_LEVEL", "INFO").upper(),
            max_threads=max_threads,
            commit_interval=commit_interval,
            worker_lease=worker_lease,
            shutdown_grace=shutdown_grace,
            metrics_host=env.get("EVENTFLOW_METRICS_HOST", "127.0.0.1"),
            metrics_port=metrics_port,
            retention=retention,
            writer_process=_flag(env, "EVENTFLOW_WRITER_PROCESS", default=True),
            stall_seconds=stall_seconds,
            health_stall_seconds=health_stall_seconds,
        )


def _flag(env: Mapping[str, str], name: str, *, default: bool) -> bool:
    text = env.get(name, "").strip().lower()
    if not text:
        return default
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{name} must be 1 or 0 (true/false), not {text!r}")
