"""`eventflow runs show` names a traced run's trace, and where to open it."""

from __future__ import annotations

import os
import subprocess

from eventflow._testing._spans import SpanCollector
from tests.test_cli import EVENTFLOW, cli, cli_flow


def test_runs_show_prints_the_trace_and_its_link(default_store: str) -> None:
    untraced = cli_flow(1, return_state=True)
    collector = SpanCollector()
    collector.start()
    try:
        traced = cli_flow(2, return_state=True)
    finally:
        collector.stop()
    (span,) = [s for s in collector.spans() if s.name == "flow cli-flow"]
    assert span.context is not None
    trace_id = f"{span.context.trace_id:032x}"

    assert f"trace      {trace_id}\n" in cli(default_store, "runs", "show", traced.run_id)
    assert "trace " not in cli(default_store, "runs", "show", untraced.run_id)
    env = {
        **os.environ,
        "EVENTFLOW_DATABASE_URL": default_store,
        "EVENTFLOW_TRACE_URL_TEMPLATE": "http://127.0.0.1:16686/trace/{trace_id}",
    }
    shown = subprocess.run(
        [EVENTFLOW, "runs", "show", traced.run_id], capture_output=True, text=True, env=env
    )
    assert f"trace      {trace_id}  http://127.0.0.1:16686/trace/{trace_id}" in shown.stdout
