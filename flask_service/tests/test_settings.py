"""Settings: the contract's variable names, defaults, and refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from flask_service.db import database_url
from flask_service.settings import DEVELOPMENT_JWT_SECRET, Settings, SettingsError


def test_defaults_match_the_contract_table() -> None:
    settings = Settings.from_env({})
    assert settings.database_url is None
    assert settings.redis_url is None
    assert settings.var_dir == Path("var")
    assert settings.jwt_audience == "items-api"
    assert settings.jwt_issuer == "items-service"
    assert settings.access_token_ttl_seconds == 3600
    assert settings.environment == "development"
    assert settings.log_level == "info"
    assert (settings.host, settings.port) == ("0.0.0.0", 8001)  # noqa: S104
    assert settings.web_concurrency == 2
    assert (settings.db_pool_size, settings.db_max_overflow) == (10, 5)
    assert (settings.db_connect_timeout, settings.db_pool_timeout) == (5, 30)
    assert settings.max_body_bytes == 1_048_576
    assert settings.cors_origins == ()
    assert settings.docs_enabled is True
    assert settings.celery_visibility_timeout == 7200
    assert settings.celery_concurrency == 2
    assert (settings.job_batch_size, settings.job_max_retries) == (500, 5)
    assert settings.sse_heartbeat_seconds == 15


def test_every_variable_is_read() -> None:
    settings = Settings.from_env(
        {
            "DATABASE_URL": "postgresql://u:p@db:5432/items",
            "REDIS_URL": "redis://cache:6379/3",
            "VAR_DIR": "/srv/var",
            "MIGRATE_ON_START": "true",
            "JWT_SECRET": "x" * 40,
            "JWT_AUDIENCE": "aud",
            "JWT_ISSUER": "iss",
            "ACCESS_TOKEN_TTL_SECONDS": "60",
            "ENVIRONMENT": "production",
            "LOG_LEVEL": "WARNING",
            "HOST": "127.0.0.1",
            "PORT": "9000",
            "WEB_CONCURRENCY": "4",
            "DB_POOL_SIZE": "3",
            "DB_MAX_OVERFLOW": "0",
            "DB_CONNECT_TIMEOUT": "2",
            "DB_POOL_TIMEOUT": "3",
            "MAX_BODY_BYTES": "2048",
            "CORS_ORIGINS": "https://a.example, https://b.example,",
            "DOCS_ENABLED": "false",
            "CELERY_VISIBILITY_TIMEOUT": "90",
            "CELERY_CONCURRENCY": "3",
            "JOB_BATCH_SIZE": "7",
            "JOB_MAX_RETRIES": "0",
            "SSE_HEARTBEAT_SECONDS": "2",
        }
    )
    assert settings.database_url == "postgresql://u:p@db:5432/items"
    assert settings.redis_url == "redis://cache:6379/3"
    assert settings.var_dir == Path("/srv/var")
    assert settings.migrate_on_start is True
    assert (settings.jwt_audience, settings.jwt_issuer) == ("aud", "iss")
    assert settings.access_token_ttl_seconds == 60
    assert settings.log_level == "warning"
    assert (settings.host, settings.port, settings.web_concurrency) == ("127.0.0.1", 9000, 4)
    assert (settings.db_pool_size, settings.db_max_overflow) == (3, 0)
    assert (settings.db_connect_timeout, settings.db_pool_timeout) == (2, 3)
    assert settings.max_body_bytes == 2048
    assert settings.cors_origins == ("https://a.example", "https://b.example")
    assert settings.docs_enabled is False
    assert settings.celery_visibility_timeout == 90
    assert settings.celery_concurrency == 3
    assert (settings.job_batch_size, settings.job_max_retries) == (7, 0)
    assert settings.sse_heartbeat_seconds == 2


@pytest.mark.parametrize(
    ("database", "migrate", "expected"),
    [
        (None, None, True),
        ("sqlite:///x.db", None, True),
        ("postgresql://h/db", None, False),
        ("postgresql://h/db", "true", True),
        (None, "false", False),
    ],
)
def test_migrate_on_start_defaults_by_backend(
    database: str | None, migrate: str | None, expected: bool
) -> None:
    env = {"DATABASE_URL": database, "MIGRATE_ON_START": migrate}
    settings = Settings.from_env({k: v for k, v in env.items() if v is not None})
    assert settings.should_migrate_on_start is expected


@pytest.mark.parametrize(
    "env",
    [
        {"ENVIRONMENT": "production"},
        {"ENVIRONMENT": "production", "JWT_SECRET": DEVELOPMENT_JWT_SECRET},
        {"ENVIRONMENT": "production", "JWT_SECRET": "short"},
        {"PORT": "eighty"},
        {"WEB_CONCURRENCY": "0"},
        {"JOB_BATCH_SIZE": "0"},
        {"JOB_MAX_RETRIES": "-1"},
        {"SSE_HEARTBEAT_SECONDS": "0"},
        {"CELERY_CONCURRENCY": "0"},
        {"DOCS_ENABLED": "perhaps"},
        {"LOG_LEVEL": "loud"},
    ],
)
def test_unsafe_or_malformed_values_are_refused(env: dict[str, str]) -> None:
    with pytest.raises(SettingsError):
        Settings.from_env(env)


def test_production_accepts_a_long_secret() -> None:
    settings = Settings.from_env({"ENVIRONMENT": "production", "JWT_SECRET": "s" * 32})
    assert settings.environment == "production"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u:p%40ss@h:5432/db", "postgresql+psycopg://u:p%40ss@h:5432/db"),
        ("postgres://u@h/db", "postgresql+psycopg://u@h/db"),
        ("sqlite:////tmp/x.db", "sqlite+pysqlite:////tmp/x.db"),
    ],
)
def test_database_url_picks_this_services_drivers(given: str, expected: str) -> None:
    assert database_url(Settings(database_url=given)) == expected


def test_default_database_is_a_sqlite_file_in_var_dir(tmp_path: Path) -> None:
    url = database_url(Settings(var_dir=tmp_path))
    assert url == f"sqlite+pysqlite:///{tmp_path.resolve()}/flask_service.sqlite3"
