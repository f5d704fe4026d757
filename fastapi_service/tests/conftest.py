"""Fixtures: a real database per backend (SQLite file; PostgreSQL when TEST_DATABASE_URL is set),
the app from create_app(settings) with its lifespan, and an HTTP client bound to it.

Tests run on anyio's pytest plugin (shipped with anyio, which Starlette already needs): the
app, the client and the test share one event loop, so a test can drive concurrent requests
with a task group and look at the database through the app's own session factory.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from fastapi import FastAPI

from fastapi_service import create_app, migrate
from fastapi_service.settings import Settings
from helpers import make_settings, make_user

# The contract's variables; a developer's own values must not leak into a test's Settings.
SERVICE_VARIABLES = (
    "DATABASE_URL", "REDIS_URL", "VAR_DIR", "MIGRATE_ON_START", "JWT_SECRET", "JWT_AUDIENCE",
    "JWT_ISSUER", "ACCESS_TOKEN_TTL_SECONDS", "ENVIRONMENT", "LOG_LEVEL", "HOST", "PORT",
    "WEB_CONCURRENCY", "DB_POOL_SIZE", "DB_MAX_OVERFLOW", "DB_CONNECT_TIMEOUT", "DB_POOL_TIMEOUT",
    "MAX_BODY_BYTES", "CORS_ORIGINS",
    "DOCS_ENABLED", "PROMETHEUS_MULTIPROC_DIR", "CELERY_VISIBILITY_TIMEOUT", "CELERY_CONCURRENCY",
)  # fmt: skip
BACKENDS = ["sqlite"] + (["postgresql"] if os.environ.get("TEST_DATABASE_URL") else [])


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session", autouse=True)
def _clean_environment() -> Iterator[None]:
    saved = {name: os.environ.pop(name) for name in SERVICE_VARIABLES if name in os.environ}
    yield
    os.environ.update(saved)


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


def _libpq(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(("postgresql", *parts[1:]))


@pytest.fixture(scope="session", params=BACKENDS)
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A fresh database for this run: a SQLite file, or a new PostgreSQL database (dropped)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'test.sqlite3'}"
        return
    import psycopg

    admin_url = os.environ["TEST_DATABASE_URL"]
    name = f"fastapi_service_test_{secrets.token_hex(4)}"
    with psycopg.connect(_libpq(admin_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_database(admin_url, name)
    finally:
        with psycopg.connect(_libpq(admin_url), autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


@pytest.fixture(scope="session")
def migrated_settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings on the session's database, migrated to head once."""
    settings = make_settings(tmp_path_factory.mktemp("var"), database_url=database_url)
    migrate.upgrade(settings)
    return settings


@pytest.fixture
def settings(migrated_settings: Settings) -> Settings:
    return migrated_settings


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@pytest.fixture
async def auth(app: FastAPI) -> dict[str, str]:
    return await make_user(app)
