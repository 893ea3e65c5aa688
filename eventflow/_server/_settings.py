"""The server's settings: the API token and the secret field names, from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass

from .._settings import Settings
from ._masking import DEFAULT_SECRET_FIELDS


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """`EVENTFLOW_API_TOKEN` (bearer token required on every API call when set),
    `EVENTFLOW_SECRET_FIELDS` (comma-separated field names masked in responses),
    `EVENTFLOW_WORKER_LEASE` (a worker silent for longer is not alive) and
    `EVENTFLOW_TRACE_URL_TEMPLATE` (a run's trace in a tracing UI, `{trace_id}`
    filled in, e.g. `http://127.0.0.1:16686/trace/{trace_id}` for Jaeger).
    """

    token: str | None = None
    secret_fields: tuple[str, ...] = DEFAULT_SECRET_FIELDS
    worker_lease: float = 10.0
    trace_url_template: str | None = None

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> ServerSettings:
        env = os.environ if environ is None else environ
        fields = env.get("EVENTFLOW_SECRET_FIELDS")
        return cls(
            token=env.get("EVENTFLOW_API_TOKEN") or None,
            secret_fields=(
                tuple(f.strip() for f in fields.split(",") if f.strip())
                if fields is not None
                else DEFAULT_SECRET_FIELDS
            ),
            worker_lease=Settings.from_env(dict(env)).worker_lease,
            trace_url_template=env.get("EVENTFLOW_TRACE_URL_TEMPLATE") or None,
        )
