"""A real HTTP receiver on 127.0.0.1 that records what is POSTed to it (webhooks)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    """Bodies received, in order; answers the first `fail_first` requests with `fail_status`."""

    def __init__(self, fail_first: int = 0, fail_status: int = 503) -> None:
        self.bodies: list[Any] = []
        self.headers: list[dict[str, str]] = []
        """The headers of each request `bodies` holds the body of (names in lower case)."""
        self.attempts = 0
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.lock = threading.Lock()
        self.url = ""


@contextmanager
def receiving(fail_first: int = 0, fail_status: int = 503) -> Iterator[Receiver]:
    receiver = Receiver(fail_first, fail_status)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            with receiver.lock:
                receiver.attempts += 1
                failing = receiver.attempts <= receiver.fail_first
                if not failing:
                    receiver.bodies.append(json.loads(body))
                    receiver.headers.append({k.lower(): v for k, v in self.headers.items()})
            self.send_response(receiver.fail_status if failing else 200)
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
