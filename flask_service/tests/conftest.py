"""Fixtures: the app on a temporary SQLite file, and on PostgreSQL when TEST_DATABASE_URL is set.

With TEST_DATABASE_URL (an admin URL such as postgresql://postgres@127.0.0.1:5432/postgres)
every database-backed test runs twice; the PostgreSQL run gets a fresh database that is
dropped at the end of the session.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient
from psycopg import sql
from sqlalchemy.engine import make_url
from werkzeug.test import TestResponse

from flask_service import create_app, models
from flask_service.deps import STATE_KEY
from flask_service.migrate import upgrade
from flask_service.security import create_access_token, hash_password
from flask_service.settings import Settings

TEST_SECRET = "unit-test-secret-0123456789-abcdefghijklmnop"
PASSWORD = "correct horse battery"


@dataclass(frozen=True)
class User:
    id: str
    email: str
    password: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def _admin_execute(admin_url: str, statement: str, database: str) -> None:
    query = sql.SQL(statement).format(sql.Identifier(database))
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(query)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this run, migrated, dropped afterwards."""
    admin_url = os.environ.get("TEST_DATABASE_URL")
    if not admin_url:
        pytest.skip("TEST_DATABASE_URL is not set")
    name = f"flask_service_test_{uuid.uuid4().hex[:12]}"
    admin = make_url(admin_url).set(drivername="postgresql")
    _admin_execute(admin.render_as_string(hide_password=False), "CREATE DATABASE {}", name)
    url = admin.set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        _admin_execute(
            admin.render_as_string(hide_password=False), "DROP DATABASE {} WITH (FORCE)", name
        )


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def base_settings(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    """Settings for one backend; the schema is migrated once per session."""
    var_dir = tmp_path_factory.mktemp(f"var-{request.param}")
    if request.param == "postgresql":
        database_url: str | None = request.getfixturevalue("postgres_url")
    else:
        database_url = None
    settings = Settings(
        database_url=database_url,
        var_dir=var_dir,
        jwt_secret=TEST_SECRET,
        migrate_on_start=False,
        log_level="warning",
    )
    upgrade(settings)
    return settings


@pytest.fixture(scope="session")
def app(base_settings: Settings) -> Iterator[Flask]:
    application = create_app(base_settings)
    yield application
    application.extensions[STATE_KEY].engine.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def make_app(base_settings: Settings) -> Iterator[Callable[..., Flask]]:
    """Build an app on the same database with some settings changed."""
    built: list[Flask] = []

    def build(**changes: Any) -> Flask:
        application = create_app(replace(base_settings, **changes))
        built.append(application)
        return application

    yield build
    for application in built:
        application.extensions[STATE_KEY].engine.dispose()


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> Settings:
    """A private SQLite database (migrated by create_app) for tests that need their own."""
    return Settings(var_dir=tmp_path / "var", jwt_secret=TEST_SECRET, log_level="warning")


def register(client: FlaskClient, email: str | None = None, password: str = PASSWORD) -> User:
    email = email or f"user-{uuid.uuid4().hex[:12]}@example.test"
    created = client.post("/api/v1/users", json={"email": email, "password": password})
    assert created.status_code == 201, created.get_data(as_text=True)
    token = client.post("/api/v1/auth/token", data={"username": email, "password": password})
    assert token.status_code == 200, token.get_data(as_text=True)
    return User(data(created)["id"], email.lower(), password, data(token)["access_token"])


@pytest.fixture(scope="session")
def password_hash() -> str:
    return hash_password(PASSWORD)


def quick_user(app: Flask, password_hash: str) -> User:
    """A stored user and a token for it, without argon2 on every test (register() has it)."""
    state = app.extensions[STATE_KEY]
    email = f"user-{uuid.uuid4().hex[:12]}@example.test"
    with state.session_factory() as session, session.begin():
        row = models.User(email=email, password_hash=password_hash)
        session.add(row)
        session.flush()
        user_id = row.id
    token = create_access_token(user_id, state.settings).token
    return User(str(user_id), email, PASSWORD, token)


@pytest.fixture
def user(app: Flask, password_hash: str) -> User:
    return quick_user(app, password_hash)


@pytest.fixture
def other_user(app: Flask, password_hash: str) -> User:
    return quick_user(app, password_hash)


def data(response: TestResponse) -> Any:
    """The JSON body of a response (werkzeug types `.json` as possibly None)."""
    body = response.get_json()
    assert body is not None, response.get_data(as_text=True)
    return body


def problem(response: Any, status: int, slug: str) -> dict[str, Any]:
    """Assert `response` is the contract's problem document for `slug`, and return it."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body: dict[str, Any] = response.get_json(force=True)
    assert body["type"] == f"urn:problem:{slug}"
    assert body["status"] == status
    assert isinstance(body["title"], str)
    assert isinstance(body["detail"], str)
    return body


def locations(response: Any) -> list[str]:
    return [issue["location"] for issue in data(response)["errors"]]


StartWorker = Callable[[Settings], subprocess.Popen[bytes]]


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[StartWorker]:
    """Starts `python -m flask_service.worker` for some settings; stops it in teardown."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(settings: Settings) -> subprocess.Popen[bytes]:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in {"REDIS_URL", "VAR_DIR", "DATABASE_URL", "JWT_SECRET"}
        }
        env |= {
            "VAR_DIR": str(settings.var_dir),
            "CELERY_CONCURRENCY": "1",
            "JOB_BATCH_SIZE": str(settings.job_batch_size),
            "JOB_REQUEUE_AFTER_SECONDS": str(settings.job_requeue_after_seconds),
        }
        if settings.redis_url:
            env["REDIS_URL"] = settings.redis_url
        if settings.database_url:
            env["DATABASE_URL"] = settings.database_url
        log = tmp_path / "worker.log"
        with log.open("wb") as out:
            # A session of its own, so teardown reaches the pool's child processes too.
            process = subprocess.Popen(
                [sys.executable, "-m", "flask_service.worker"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        processes.append(process)
        return process

    yield start
    for process in processes:
        process.send_signal(signal.SIGTERM)  # warm shutdown: the worker stops its own pool
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
