"""Settings: the contract's variable names, defaults, parsing and the production guard."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from fastapi_service.db import database_url
from fastapi_service.settings import DEVELOPMENT_JWT_SECRET, Settings


def test_defaults_are_the_contracts() -> None:
    settings = Settings()
    assert settings.database_url is None
    assert settings.redis_url is None
    assert settings.var_dir == Path("var")
    assert settings.jwt_audience == "items-api"
    assert settings.jwt_issuer == "items-service"
    assert settings.access_token_ttl_seconds == 3600
    assert settings.environment == "development"
    assert settings.log_level == "info"
    assert settings.host == "0.0.0.0"  # noqa: S104 - the contract's default
    assert (settings.port, settings.web_concurrency) == (8002, 2)
    assert (settings.db_pool_size, settings.db_max_overflow) == (10, 5)
    assert (settings.db_connect_timeout, settings.db_pool_timeout) == (5, 30)
    assert settings.max_body_bytes == 1_048_576
    assert settings.cors_origins == ()
    assert settings.docs_enabled is True


def test_reads_the_contracts_variable_names(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "DATABASE_URL": "postgresql://u@db:5432/items",
        "REDIS_URL": "redis://cache:6379/3",
        "VAR_DIR": "/srv/state",
        "MIGRATE_ON_START": "true",
        "JWT_SECRET": "s" * 40,
        "JWT_AUDIENCE": "aud",
        "JWT_ISSUER": "iss",
        "ACCESS_TOKEN_TTL_SECONDS": "60",
        "LOG_LEVEL": "WARNING",
        "HOST": "127.0.0.1",
        "PORT": "9000",
        "WEB_CONCURRENCY": "4",
        "DB_POOL_SIZE": "3",
        "DB_MAX_OVERFLOW": "1",
        "DB_CONNECT_TIMEOUT": "2",
        "DB_POOL_TIMEOUT": "3",
        "MAX_BODY_BYTES": "2048",
        "CORS_ORIGINS": "https://a.example, https://b.example",
        "DOCS_ENABLED": "false",
        "CELERY_VISIBILITY_TIMEOUT": "90",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.database_url == env["DATABASE_URL"]
    assert settings.redis_url == env["REDIS_URL"]
    assert settings.var_dir == Path("/srv/state")
    assert settings.migrate_on_start is True
    assert settings.jwt_secret.get_secret_value() == "s" * 40
    assert (settings.jwt_audience, settings.jwt_issuer) == ("aud", "iss")
    assert settings.access_token_ttl_seconds == 60
    assert settings.log_level == "warning"
    assert (settings.host, settings.port, settings.web_concurrency) == ("127.0.0.1", 9000, 4)
    assert (settings.db_pool_size, settings.db_max_overflow) == (3, 1)
    assert (settings.db_connect_timeout, settings.db_pool_timeout) == (2, 3)
    assert settings.max_body_bytes == 2048
    assert settings.cors_origins == ("https://a.example", "https://b.example")
    assert settings.docs_enabled is False
    assert settings.celery_visibility_timeout == 90


def test_migrate_on_start_defaults_to_true_on_sqlite_only() -> None:
    assert Settings().should_migrate_on_start is True
    assert Settings(database_url="sqlite:////tmp/x.db").should_migrate_on_start is True
    assert Settings(database_url="postgresql://h/db").should_migrate_on_start is False
    assert Settings(database_url="postgresql://h/db", migrate_on_start=True).should_migrate_on_start


def test_production_refuses_the_development_secret() -> None:
    with pytest.raises(ValidationError, match="JWT_SECRET must be set"):
        Settings(environment="production")
    with pytest.raises(ValidationError, match="at least 32 bytes"):
        Settings(environment="production", jwt_secret="short")
    accepted = Settings(environment="production", jwt_secret="p" * 32)
    assert accepted.jwt_secret.get_secret_value() != DEVELOPMENT_JWT_SECRET


def test_development_accepts_the_development_secret() -> None:
    assert Settings().jwt_secret.get_secret_value() == DEVELOPMENT_JWT_SECRET


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u:p@h:5432/db", "postgresql+asyncpg://u:p@h:5432/db"),
        ("postgres://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("sqlite:////srv/items.sqlite3", "sqlite+aiosqlite:////srv/items.sqlite3"),
    ],
)
def test_database_urls_get_the_async_drivers(given: str, expected: str) -> None:
    assert database_url(Settings(database_url=given)) == expected


def test_default_database_is_a_sqlite_file_in_var_dir(tmp_path: Path) -> None:
    url = database_url(Settings(var_dir=tmp_path))
    assert url == f"sqlite+aiosqlite:///{tmp_path.resolve()}/fastapi_service.sqlite3"


def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "not-a-port")
    with pytest.raises(ValidationError):
        Settings()


def test_job_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = Settings()
    assert (defaults.job_batch_size, defaults.job_max_retries) == (500, 5)
    assert (defaults.sse_heartbeat_seconds, defaults.celery_concurrency) == (15, 2)
    for name, value in {
        "JOB_BATCH_SIZE": "7",
        "JOB_MAX_RETRIES": "0",
        "SSE_HEARTBEAT_SECONDS": "1",
        "CELERY_CONCURRENCY": "3",
    }.items():
        monkeypatch.setenv(name, value)
    configured = Settings()
    assert (configured.job_batch_size, configured.job_max_retries) == (7, 0)
    assert (configured.sse_heartbeat_seconds, configured.celery_concurrency) == (1, 3)
    for name in ("JOB_BATCH_SIZE", "SSE_HEARTBEAT_SECONDS", "CELERY_CONCURRENCY"):
        monkeypatch.setenv(name, "0")
        with pytest.raises(ValidationError):
            Settings()
        monkeypatch.setenv(name, "1")
