"""A real Jaeger for the tracing tests: scripts/jaeger.sh builds it from its Go module
(cached) and runs it on loopback with in-memory storage.

    jaeger = Jaeger.start_new()
    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = jaeger.otlp_endpoint
    trace = await jaeger.wait_for_trace(trace_id, lambda t: len(t.spans) >= 5)
    jaeger.stop()
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests._services import ROOT, free_port


@dataclass(frozen=True)
class JaegerSpan:
    """One span of a trace as Jaeger's query API returns it."""

    span_id: str
    name: str
    service: str
    parent_id: str | None
    links: tuple[tuple[str, str], ...]
    """(trace id, span id) of each FOLLOWS_FROM reference: the span's links."""
    tags: dict[str, Any]
    logs: tuple[dict[str, Any], ...]
    """Each event: its fields by key (`event` is its name)."""


@dataclass(frozen=True)
class JaegerTrace:
    trace_id: str
    spans: tuple[JaegerSpan, ...]

    def named(self, name: str) -> list[JaegerSpan]:
        return [s for s in self.spans if s.name == name]

    def one(self, name: str) -> JaegerSpan:
        found = self.named(name)
        assert len(found) == 1, f"{len(found)} spans named {name!r} in {self.names()}"
        return found[0]

    def names(self) -> list[str]:
        return sorted(s.name for s in self.spans)


def _trace(data: dict[str, Any]) -> JaegerTrace:
    processes = {k: v["serviceName"] for k, v in data["processes"].items()}
    spans = []
    for span in data["spans"]:
        parent = None
        links = []
        for ref in span.get("references") or ():
            if ref["refType"] == "CHILD_OF" and parent is None:
                parent = ref["spanID"]
            else:
                links.append((ref["traceID"], ref["spanID"]))
        spans.append(
            JaegerSpan(
                span_id=span["spanID"],
                name=span["operationName"],
                service=processes[span["processID"]],
                parent_id=parent,
                links=tuple(links),
                tags={t["key"]: t["value"] for t in span.get("tags") or ()},
                logs=tuple(
                    {f["key"]: f["value"] for f in log["fields"]} for log in span.get("logs") or ()
                ),
            )
        )
    return JaegerTrace(data["traceID"], tuple(spans))


@dataclass
class Jaeger:
    """A Jaeger on 127.0.0.1 whose process the test session owns."""

    data_dir: Path
    query_port: int
    otlp_http_port: int
    otlp_grpc_port: int

    @classmethod
    def start_new(cls) -> Jaeger:
        last = ""
        for _ in range(3):  # a port taken meanwhile: again with others
            jaeger = cls(
                Path(tempfile.mkdtemp(prefix="eventflow-jaeger-")),
                free_port(),
                free_port(),
                free_port(),
            )
            done = jaeger._script(
                "start",
                str(jaeger.data_dir),
                str(jaeger.query_port),
                str(jaeger.otlp_http_port),
                str(jaeger.otlp_grpc_port),
            )
            if done.returncode == 0:
                return jaeger
            last = done.stderr + done.stdout
            jaeger.stop()
        raise RuntimeError(f"jaeger did not start: {last}")

    @staticmethod
    def _script(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(ROOT / "scripts" / "jaeger.sh"), *args],
            capture_output=True,
            text=True,
            timeout=1800,  # the first start builds it
            check=False,
        )

    def stop(self) -> None:
        self._script("stop", str(self.data_dir))
        shutil.rmtree(self.data_dir, ignore_errors=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.query_port}"

    @property
    def otlp_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.otlp_http_port}"

    async def trace(self, trace_id: str) -> JaegerTrace | None:
        """The trace as the query API has it now; None while it has none of it."""
        async with httpx.AsyncClient(timeout=5) as client:
            response = await client.get(f"{self.url}/api/traces/{trace_id}")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        data = response.json().get("data") or []
        return _trace(data[0]) if data else None

    async def wait_for_trace(
        self, trace_id: str, ready: Callable[[JaegerTrace], bool], timeout: float = 60
    ) -> JaegerTrace:
        """Poll the query API until the trace satisfies `ready`; the last one seen, or an
        AssertionError naming its spans."""
        deadline = time.monotonic() + timeout
        trace = None
        while time.monotonic() < deadline:
            trace = await self.trace(trace_id)
            if trace is not None and ready(trace):
                return trace
            await asyncio.sleep(0.2)
        seen = "nothing" if trace is None else trace.names()
        raise AssertionError(f"trace {trace_id} not complete after {timeout}s: {seen}")
