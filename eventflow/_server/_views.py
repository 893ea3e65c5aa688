"""Store rows to API bodies: decoding JSON columns and masking secrets on the way."""

from __future__ import annotations

import base64
import json
import logging
from datetime import datetime
from typing import Any

import orjson

from .._store._replay import retry_refusal
from .._tracing import trace_id_of
from . import _models as models
from ._masking import SecretMasker, redact

_RUN_FIELDS = tuple(models.FlowRun.model_fields)


def _duration(row: dict[str, Any]) -> float | None:
    start: datetime | None = row.get("started_at")
    end: datetime | None = row.get("ended_at")
    if start is None or end is None:
        return None
    return max(0.0, (end - start).total_seconds())


def run_summary(row: dict[str, Any], masker: SecretMasker, secrets: set[str]) -> models.FlowRun:
    fields = {k: row.get(k) for k in _RUN_FIELDS if k != "duration_seconds"}
    fields["error"] = redact(fields["error"], secrets)
    return models.FlowRun.model_validate({**fields, "duration_seconds": _duration(row)})


def run_ref(row: dict[str, Any]) -> models.RunRef:
    return models.RunRef(
        id=row["id"],
        state_type=row["state_type"],
        state_name=row["state_name"],
        created_at=row["created_at"],
        ended_at=row.get("ended_at"),
    )


def _json_text(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def decode_payload(raw: bytes | None) -> tuple[Any, str]:
    if raw is None:
        return None, "none"
    try:
        return orjson.loads(raw), "json"
    except orjson.JSONDecodeError:
        pass
    try:  # NaN / Infinity: pydantic took them, so a run may have used this payload
        return json.loads(raw), "json"
    except (ValueError, UnicodeDecodeError):
        pass
    try:
        return raw.decode("utf-8"), "text"
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii"), "base64"


def input_secrets(
    parameters_text: str | None, payload_raw: bytes | None, masker: SecretMasker
) -> set[str]:
    """The secret values a run's input holds, to redact from its error text."""
    payload, _ = decode_payload(payload_raw)
    return masker.secret_values(_json_text(parameters_text)) | masker.secret_values(payload)


def _failing_task(run: models.FlowRun, task_runs: list[models.TaskRun]) -> str | None:
    """The task run whose own error the engine made `run`'s headline (see _tracebacks.py)."""
    if run.state_type != "FAILED" or not run.error:
        return None
    for task_run in task_runs:
        if (
            task_run.state_type == "FAILED"
            and task_run.state_name != "NotReady"
            and task_run.error == run.error
        ):
            return task_run.id
    return None


def run_detail(
    run: dict[str, Any],
    replays: list[dict[str, Any]],
    masker: SecretMasker,
    trace_url_template: str | None = None,
    redelivery: str | None = None,
) -> models.FlowRunDetail:
    """The whole run: secret fields masked, and their values redacted from free text;
    its trace id, and a link to the trace when the server has a template for one."""
    payload, encoding = decode_payload(run.get("event_payload"))
    parameters = _json_text(run.get("parameters"))
    if parameters is None and encoding == "json":
        parameters = payload  # an event's parameters are stored once, as its payload
    result = _json_text(run.get("result"))
    secrets = masker.secret_values(parameters) | masker.secret_values(payload)
    if isinstance(result, str):
        result = redact(result, secrets)
    if encoding == "text":
        payload = redact(payload, secrets)
    event = None
    if run.get("event_id") is not None or run.get("event_source") is not None:
        event = models.TriggerEvent(
            source=run.get("event_source"),
            partition=run.get("event_partition"),
            offset=run.get("event_offset"),
            id=run.get("event_id"),
            key=run.get("event_key"),
            time=run.get("event_time"),
            payload=masker.mask(payload),
            payload_encoding=encoding,  # type: ignore[arg-type]
        )
    summary = run_summary(run, masker, secrets)
    task_runs = [
        models.TaskRun(
            **{
                **t,
                "error": redact(t.get("error"), secrets),
                "traceback": redact(t.get("traceback"), secrets),
                "duration_seconds": _duration(t),
            }
        )
        for t in run["task_runs"]
    ]
    return models.FlowRunDetail(
        **summary.model_dump(),
        traceback=redact(run.get("traceback"), secrets),
        error_task_run_id=_failing_task(summary, task_runs),
        parameters=masker.mask(parameters),
        result=masker.mask(result),
        event=event,
        task_runs=task_runs,
        edges=[models.Edge(**e) for e in run["edges"]],
        logs=[
            models.LogEntry(
                id=entry["id"],
                task_run_id=entry["task_run_id"],
                level=entry["level"],
                level_name=logging.getLevelName(entry["level"]),
                logger=entry["logger"],
                message=redact(entry["message"], secrets) or "",
                timestamp=entry["timestamp"],
            )
            for entry in run["logs"]
        ],
        replays=[run_ref(r) for r in replays],
        pruned=run["pruned"],
        retry_refused=retry_refusal(run, replays, redelivery),
        trace_id=(trace_id := trace_id_of(run.get("trace_context"))),
        trace_url=trace_url(trace_url_template, trace_id),
    )


def trace_url(template: str | None, trace_id: str | None) -> str | None:
    """`template` with `{trace_id}` filled in (None without either)."""
    if template is None or trace_id is None:
        return None
    return template.replace("{trace_id}", trace_id)
