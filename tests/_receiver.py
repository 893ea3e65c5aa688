"""A real HTTP receiver on 127.0.0.1 that records what is POSTed to it (webhooks)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    """Bodies received, in order; answers `fail_first` requests with 503 first."""

    def __init__(self, fail_first: int = 0) -> None:
        self.bodies: list[Any] = []
        self.attempts = 0
        self.fail_first = fail_first
        self.lock = threading.Lock()
        self.url = ""


@contextmanager
def receiving(fail_first: int = 0) -> Iterator[Receiver]:
    receiver = Receiver(fail_first)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            with receiver.lock:
                receiver.attempts += 1
                failing = receiver.attempts <= receiver.fail_first
                if not failing:
                    receiver.bodies.append(json.loads(body))
            self.send_response(503 if failing else 200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
