"""Real HTTP servers on loopback for the connector tests: uvicorn in a thread, a scripted app."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import orjson
import uvicorn

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]


class ServerThread:
    """uvicorn serving `app` on 127.0.0.1 from a thread (port 0 unless given)."""

    def __init__(self, app: ASGIApp, port: int = 0) -> None:
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self, timeout: float = 10.0) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    @property
    def port(self) -> int:
        port: int = self.server.servers[0].sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        if self.thread.is_alive():
            raise RuntimeError("uvicorn did not stop")


@dataclass(frozen=True)
class Request:
    """A request the scripted app received, with the server's monotonic clock."""

    at: float
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]


@dataclass(frozen=True)
class Reply:
    status: int = 200
    json: Any = None
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    chunks: int = 0
    """Stream this many 64 KiB chunks without a Content-Length (after `body`, if any)."""


Handler = Callable[[Request], Reply]


def replies(*script: Reply) -> Handler:
    """A handler answering each request with the next reply; the last one repeats."""
    counter = itertools.count()

    def handle(_request: Request) -> Reply:
        return script[min(next(counter), len(script) - 1)]

    return handle


class ScriptedApp:
    """An ASGI app answering each path with its handler and recording every request."""

    def __init__(self) -> None:
        self.routes: dict[str, Handler] = {}
        self.requests: list[Request] = []

    def route(self, path: str, handler: Handler) -> str:
        self.routes[path] = handler
        return path

    def requests_to(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        request = Request(
            at=time.monotonic(),
            method=scope["method"],
            path=scope["path"],
            query={k: v[-1] for k, v in parse_qs(scope["query_string"].decode()).items()},
            headers={k.decode().lower(): v.decode() for k, v in scope["headers"]},
        )
        self.requests.append(request)
        handler = self.routes.get(request.path)
        reply = handler(request) if handler else Reply(404, json={"error": "no route"})
        if reply.delay:
            await asyncio.sleep(reply.delay)
        body = reply.body if reply.body is not None else b""
        if reply.json is not None:
            body = orjson.dumps(reply.json)
        headers = [(k.lower().encode(), v.encode()) for k, v in reply.headers.items()]
        if reply.json is not None:
            headers.append((b"content-type", b"application/json"))
        if not reply.chunks:
            headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        if not reply.chunks:
            await send({"type": "http.response.body", "body": body})
            return
        await send({"type": "http.response.body", "body": body, "more_body": True})
        chunk = b"x" * 65536
        for _ in range(reply.chunks):  # uvicorn drops writes once the client has gone
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


def serve(app: ASGIApp, port: int = 0) -> Iterator[ServerThread]:
    """For fixtures: a started server, stopped afterwards."""
    server = ServerThread(app, port).start()
    try:
        yield server
    finally:
        server.stop()
