"""Bearer-token protection of the API (pure ASGI, so it covers the OpenAPI document too)."""

from __future__ import annotations

import hmac

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send


class BearerTokenMiddleware:
    """Every request under `/api` must carry `Authorization: Bearer <token>`.

    The UI's static files hold no data and load without it; the UI asks for
    the token once and sends it with every API call.
    """

    def __init__(self, app: ASGIApp, token: str, protected_prefix: str = "/api") -> None:
        self.app = app
        self._expected = f"Bearer {token}".encode()
        self.protected_prefix = protected_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _route_path(scope).startswith(self.protected_prefix):
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self._expected):
                response = JSONResponse(
                    {"detail": "missing or wrong bearer token"},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _route_path(scope: Scope) -> str:
    """The path the routes see: behind `--root-path` or a mount, without that prefix."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        return path[len(root) :] or "/"
    return path
