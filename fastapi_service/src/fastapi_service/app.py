"""create_app(settings): the one factory the server and the tests use."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as redis
from fastapi import FastAPI
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from . import lifecycle
from .auth.routes import router as auth_router
from .db import create_engine, create_session_factory, read_only_engine
from .docs import OPENAPI_URL, install_docs
from .errors import register_error_handlers
from .health.routes import router as health_router
from .items.routes import router as items_router
from .jobs.routes import router as jobs_router
from .observability import REQUEST_ID_HEADER, Metrics, ObservabilityMiddleware
from .ratelimits import RateLimits
from .settings import SERVICE_NAME, SERVICE_VERSION, Settings
from .users.routes import router as users_router
from .worker import make_celery

REDIS_TIMEOUT_SECONDS = 2.0


def _middleware(settings: Settings, metrics: Metrics) -> list[Middleware]:
    # First in the list is outermost: request ids and headers wrap everything, CORS included;
    # outside them, `Connection: close` on every response once a SIGTERM came (lifecycle.py).
    middleware = [
        Middleware(lifecycle.CloseWhenDraining),
        Middleware(ObservabilityMiddleware, metrics=metrics),
    ]
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors_origins),
                allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                allow_headers=["Authorization", "Content-Type", "If-Match", "If-None-Match",
                               "Idempotency-Key", REQUEST_ID_HEADER],
                expose_headers=["ETag", "Location", REQUEST_ID_HEADER, "Retry-After"],
            )
        )  # fmt: skip
    return middleware


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    engine = create_engine(settings)
    metrics = Metrics(SERVICE_NAME, SERVICE_VERSION)
    celery = make_celery(settings, publisher=True)
    broker = (
        redis.from_url(
            settings.redis_url,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        )
        if settings.redis_url
        else None
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.should_migrate_on_start:
            # Imported here: `python -m fastapi_service.migrate` runs that module as __main__,
            # and runpy warns when importing the package has already imported it.
            from . import migrate

            await asyncio.to_thread(migrate.upgrade, settings)
        # SIGTERM: /readyz 503, streams end, uvicorn stops after the delay (lifecycle.py)
        unwatch = lifecycle.watch_signals(settings.shutdown_delay_seconds)
        yield
        unwatch()
        celery.close()
        if broker is not None:
            await broker.aclose()
        await engine.dispose()

    app = FastAPI(
        title="Items service",
        version=SERVICE_VERSION,
        summary=(
            "One API built twice (Flask and FastAPI) - users, token auth, items, jobs, streaming."
        ),
        description="The FastAPI twin. Wire conventions: contract/README.md.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=OPENAPI_URL if settings.docs_enabled else None,
        redirect_slashes=False,  # the contract's unknown route is a 404, not a redirect
        middleware=_middleware(settings, metrics),
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = create_session_factory(engine)
    app.state.read_session_factory = create_session_factory(read_only_engine(engine))
    app.state.redis = broker  # rate limits, readiness and job notifications
    app.state.celery = celery  # publishes job tasks
    app.state.metrics = metrics
    app.state.rate_limits = RateLimits(settings)
    register_error_handlers(app)
    for router in (users_router, auth_router, items_router, jobs_router, health_router):
        app.include_router(router)
    if settings.docs_enabled:
        install_docs(app)
    return app
