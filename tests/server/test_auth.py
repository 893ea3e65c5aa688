"""Bearer-token protection: the whole API (and its OpenAPI document) needs the token."""

from __future__ import annotations

import httpx

from eventflow._server import create_app
from tests.server._serve import serve
from tests.server.conftest import Store

TOKEN = "t0ken-for-tests"


def test_every_api_path_needs_the_token(sqlite_store: Store) -> None:
    store = sqlite_store
    with serve(create_app(store.url, token=TOKEN)) as base:
        for path in (
            "/api/flows",
            "/api/flow-runs",
            f"/api/flow-runs/{store.runs.order_failed}",
            "/api/workers",
            "/api/sources",
            "/api/history",
            "/api/openapi.json",
            "/api/docs",
        ):
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
                refused = httpx.get(base + path, headers=headers, timeout=10)
                assert refused.status_code == 401, path
                assert refused.headers["www-authenticate"] == "Bearer"
                assert refused.json() == {"detail": "missing or wrong bearer token"}
            allowed = httpx.get(base + path, headers={"Authorization": f"Bearer {TOKEN}"})
            assert allowed.status_code == 200, path
        retry = httpx.post(f"{base}/api/flow-runs/{store.runs.order_failed}/retry", timeout=10)
        assert retry.status_code == 401
        # the UI's files hold no data: they load, then ask for the token
        assert httpx.get(base + "/", timeout=10).status_code == 200
        assert httpx.get(base + "/static/app.js", timeout=10).status_code == 200


def test_the_token_is_needed_under_a_mount_point_too(sqlite_store: Store) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    outer = Starlette(routes=[Mount("/eventflow", app=create_app(sqlite_store.url, token=TOKEN))])
    with serve(outer) as base:
        refused = httpx.get(f"{base}/eventflow/api/flows", timeout=10)
        allowed = httpx.get(  # (a path that needs no database: a mount runs no lifespan)
            f"{base}/eventflow/api/openapi.json",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=10,
        )
    assert refused.status_code == 401
    assert allowed.status_code == 200
