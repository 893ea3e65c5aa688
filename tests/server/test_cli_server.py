"""`eventflow server` as a user starts it: a process serving the store's runs on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests._services import free_port
from tests.server.conftest import Store

EVENTFLOW = str(Path(sys.executable).with_name("eventflow"))


def test_server_command_serves_the_store_with_a_token(sqlite_store: Store) -> None:
    port = free_port()
    env = {
        **os.environ,
        "EVENTFLOW_DATABASE_URL": sqlite_store.url,
        "EVENTFLOW_API_TOKEN": "cli-token",
    }
    process = subprocess.Popen(
        [EVENTFLOW, "server", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            try:
                response = httpx.get(base + "/api/health", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)
        assert response.status_code == 401
        auth = {"Authorization": "Bearer cli-token"}
        assert httpx.get(base + "/api/health", headers=auth, timeout=5).json() == {"status": "ok"}
        runs = httpx.get(base + "/api/flow-runs", headers=auth, timeout=5).json()
        assert runs["total"] == 7
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    # uvicorn shuts down gracefully, then re-raises the signal it caught
    assert process.returncode in (0, -signal.SIGTERM), output
    assert "Application shutdown complete." in output
    assert f"http://127.0.0.1:{port}/" in output  # binds loopback unless told otherwise
