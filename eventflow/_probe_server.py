"""The worker's one HTTP port: `/metrics` for Prometheus, `/livez` `/readyz` `/healthz` for probes.

Served from a thread (prometheus-client's WSGI app and server), so a probe is
answered even while the event loop is busy; the health it reports is what the
loop published last (see `App.health`), and a stale one counts as not alive.

- `/livez` (and `/healthz`, its common alias): 200 while the worker is alive,
  503 when a restart is what it needs (a subscription stalled, a source down
  for longer than `EVENTFLOW_HEALTH_STALL_SECONDS`, or the loop stuck).
- `/readyz`: 200 while every subscription is running and the store is up.
Both answer a JSON body saying why.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import orjson
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

logger = logging.getLogger("eventflow.metrics")

HealthCheck = Callable[[], dict[str, Any]]
"""Returns `{"alive": bool, "ready": bool, ...}`; what else it holds is shown to the prober."""

PROBE_PATHS = {"/livez": "alive", "/healthz": "alive", "/readyz": "ready"}


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes come every few seconds: no access log."""


def make_app(registry: CollectorRegistry | None, health: HealthCheck) -> Callable[..., Any]:
    """A WSGI app: the probe paths answered from `health()`, everything else is metrics."""
    metrics = make_wsgi_app(registry) if registry is not None else make_wsgi_app()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        verdict_key = PROBE_PATHS.get(environ.get("PATH_INFO", ""))
        if verdict_key is None:
            result: Iterable[bytes] = metrics(environ, start_response)
            return result
        try:
            report = health()
            ok = bool(report.get(verdict_key))
        except Exception as error:  # a probe must get an answer, and a failing check is one
            report, ok = {"error": f"{type(error).__name__}: {error}"}, False
        body = orjson.dumps(report)
        start_response(
            "200 OK" if ok else "503 Service Unavailable",
            [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
        )
        return [body]

    return app


def serve(
    host: str, port: int, health: HealthCheck, registry: CollectorRegistry | None = None
) -> ThreadingWSGIServer:
    """Serve metrics and probes on `host:port` from a daemon thread; raises OSError if taken."""

    class Server(ThreadingWSGIServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    server = make_server(
        host, port, make_app(registry, health), Server, handler_class=_QuietHandler
    )
    thread = threading.Thread(target=server.serve_forever, name="eventflow-http", daemon=True)
    thread.start()
    return server
