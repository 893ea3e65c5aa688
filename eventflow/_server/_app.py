"""The ASGI app: the REST API under /api and the web UI's static files at /."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import anyio
from fastapi import FastAPI
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import DBAPIError
from starlette.requests import Request

from .._errors import describe_error
from .._settings import normalize_database_url
from .._store._migrate import upgrade
from .._store._operator import OperatorStore
from ._auth import BearerTokenMiddleware
from ._dashboard import router as dashboard_router
from ._lineage import router as lineage_router
from ._masking import SecretMasker
from ._routes import router
from ._settings import ServerSettings

STATIC = Path(__file__).with_name("static")

logger = logging.getLogger("eventflow.server")


def create_app(
    database_url: str,
    token: str | None = None,
    *,
    secret_fields: Sequence[str] | None = None,
    worker_lease: float | None = None,
    migrate: bool = True,
    sweep: bool = False,
) -> FastAPI:
    """The eventflow server for the store at `database_url`.

    With `token`, every API call needs `Authorization: Bearer <token>`.
    `secret_fields` and `worker_lease` default to `EVENTFLOW_SECRET_FIELDS` and
    `EVENTFLOW_WORKER_LEASE`. With `migrate`, the schema is brought up to date
    when the server starts. With `sweep` (`eventflow server` does), it ends the
    runs of workers and batch jobs silent for a lease `CRASHED`, as every
    worker does: a store with no worker running still has them swept.
    """
    settings = ServerSettings.from_env()
    settings = replace(
        settings,
        token=token,
        secret_fields=tuple(secret_fields) if secret_fields is not None else settings.secret_fields,
        worker_lease=worker_lease if worker_lease is not None else settings.worker_lease,
    )
    url = normalize_database_url(database_url)
    store = OperatorStore(url)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if migrate:
            await asyncio.to_thread(upgrade, url)
        try:
            async with anyio.create_task_group() as background:
                if sweep:
                    background.start_soon(_sweep, store, settings.worker_lease)
                yield
                background.cancel_scope.cancel()
        finally:
            await store.close()

    app = FastAPI(
        title="eventflow",
        summary="Flow runs, their task graphs, logs and events; workers and sources; replay.",
        version="0.1.0",
        openapi_url="/api/openapi.json",
        docs_url="/api/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.store = store
    app.state.masker = SecretMasker(settings.secret_fields)
    app.state.settings = settings
    app.include_router(router)
    app.include_router(dashboard_router)
    app.include_router(lineage_router)
    app.add_exception_handler(DBAPIError, _store_unavailable)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    if settings.token:
        app.add_middleware(BearerTokenMiddleware, token=settings.token)
    return app


async def _sweep(store: OperatorStore, lease: float) -> None:
    """Every half lease, end the runs of dead workers and batch jobs CRASHED."""
    while True:
        await asyncio.sleep(lease / 2)
        try:
            sweep = await store.sweep_crashed(lease)
        except Exception as error:
            logger.warning("crash sweep failed: %s", describe_error(error))
            continue
        if sweep.workers:
            logger.warning(
                "marked %d in-flight runs of dead worker(s) %s CRASHED",
                len(sweep.runs),
                ", ".join(sweep.workers),
            )


async def _store_unavailable(request: Request, error: Exception) -> JSONResponse:
    """503, naming only the driver's error class: its message may quote SQL and values."""
    cause = getattr(error, "orig", None) or error
    logger.warning("%s %s: the store failed: %s", request.method, request.url.path, error)
    return JSONResponse(
        {"detail": f"the store is unavailable ({type(cause).__name__})"}, status_code=503
    )
