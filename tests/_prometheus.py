"""A real Prometheus server for the tests (Debian's `prometheus` package, /usr/bin/prometheus).

    server = Prometheus.start_new(scrape_targets=["127.0.0.1:9400"], scrape_interval="1s")
    server.wait_for("up{job='targets'} == 1")
    server.query("sum(rate(eventflow_runs_total[10s]))")   # the `result` list of /api/v1/query
    server.stop()

It always scrapes itself (job `prometheus`), and `scrape_targets` if any
(job `targets`, path `metrics_path`). Configuration and storage live in a
temporary directory, removed on `stop`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests._services import free_port

BINARY = shutil.which("prometheus") or "/usr/bin/prometheus"


@dataclass
class Prometheus:
    """A Prometheus server on 127.0.0.1 whose process the test session owns."""

    data_dir: Path
    port: int
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @classmethod
    def start_new(
        cls,
        scrape_targets: Sequence[str] = (),
        scrape_interval: str = "1s",
        metrics_path: str = "/metrics",
        timeout: float = 60.0,
    ) -> Prometheus:
        """Start a server (retrying on a port taken meanwhile); returns once /-/ready answers."""
        last_error: Exception | None = None
        for _ in range(3):
            server = cls(Path(tempfile.mkdtemp(prefix="eventflow-prometheus-")), free_port())
            try:
                server.start(scrape_targets, scrape_interval, metrics_path, timeout)
                return server
            except RuntimeError as error:
                server.stop()
                last_error = error
        raise RuntimeError(f"Prometheus did not start: {last_error}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"{self.url}/metrics"

    @property
    def log(self) -> str:
        path = self.data_dir / "prometheus.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(
        self,
        scrape_targets: Sequence[str],
        scrape_interval: str,
        metrics_path: str,
        timeout: float,
    ) -> None:
        config: dict[str, Any] = {  # JSON is YAML: no YAML writer needed
            "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
            "scrape_configs": [
                {
                    "job_name": "prometheus",
                    "static_configs": [{"targets": [f"127.0.0.1:{self.port}"]}],
                },
            ],
        }
        if scrape_targets:
            config["scrape_configs"].append(
                {
                    "job_name": "targets",
                    "metrics_path": metrics_path,
                    "static_configs": [{"targets": list(scrape_targets)}],
                }
            )
        config_file = self.data_dir / "prometheus.yml"
        config_file.write_text(json.dumps(config))
        with (self.data_dir / "prometheus.log").open("wb") as log:
            self.process = subprocess.Popen(
                [
                    BINARY,
                    f"--config.file={config_file}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    f"--storage.tsdb.path={self.data_dir / 'data'}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2) as client:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"exited with {self.process.returncode}: {self.log[-2000:]}")
                try:
                    if client.get(f"{self.url}/-/ready").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"not ready after {timeout}s: {self.log[-2000:]}")
                time.sleep(0.1)

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The `result` list of an instant query (`/api/v1/query`)."""
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        payload = response.json()
        if response.status_code != 200 or payload.get("status") != "success":
            raise RuntimeError(f"query {expr!r} failed: {response.status_code} {payload}")
        result: list[dict[str, Any]] = payload["data"]["result"]
        return result

    def wait_for(self, expr: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Query until the result is not empty (e.g. `up{job="targets"} == 1`); the result."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"{expr!r} still empty after {timeout}s")
            time.sleep(0.2)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        shutil.rmtree(self.data_dir, ignore_errors=True)
