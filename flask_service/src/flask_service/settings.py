"""One typed Settings class; the environment variable names are the contract's (README table)."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import limits

SERVICE_NAME = "flask_service"
SERVICE_VERSION = "1.0.0"
DEVELOPMENT_JWT_SECRET = "development-secret-change-me-0123456789abcdef"  # noqa: S105
MIN_PRODUCTION_SECRET_BYTES = 32
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
RATE_LIMITS = {
    "RATE_LIMIT_LOGIN": "rate_limit_login",
    "RATE_LIMIT_LOGIN_PER_IP": "rate_limit_login_per_ip",
    "RATE_LIMIT_WRITES": "rate_limit_writes",
    "RATE_LIMIT_WRITES_PER_IP": "rate_limit_writes_per_ip",
}


class SettingsError(ValueError):
    """A configuration value is missing, malformed or unsafe."""


def _boolean(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


def _rate_limit(name: str, raw: str) -> str:
    """One limit in the `limits` notation (`10/minute`, `100 per hour`)."""
    try:
        parsed = limits.parse_many(raw)
    except ValueError:
        parsed = []
    if len(parsed) != 1 or parsed[0].amount < 1:
        raise SettingsError(f"{name} must be one limit such as '10/minute', got {raw!r}")
    return raw.strip()


def _integer(name: str, raw: str, minimum: int) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    return value


@dataclass(frozen=True)
class Settings:
    """Configuration read from the environment by `Settings.from_env()`."""

    database_url: str | None = None
    redis_url: str | None = None
    var_dir: Path = Path("var")
    migrate_on_start: bool | None = None
    jwt_secret: str = DEVELOPMENT_JWT_SECRET
    jwt_audience: str = "items-api"
    jwt_issuer: str = "items-service"
    access_token_ttl_seconds: int = 3600
    environment: str = "development"
    log_level: str = "info"
    host: str = "0.0.0.0"  # noqa: S104 - a container's server listens on every interface
    port: int = 8001
    web_concurrency: int = 2
    db_pool_size: int = 10
    db_max_overflow: int = 5
    db_connect_timeout: int = 5
    db_pool_timeout: int = 30
    max_body_bytes: int = 1_048_576
    cors_origins: tuple[str, ...] = field(default_factory=tuple)
    docs_enabled: bool = True
    celery_visibility_timeout: int = 7200
    celery_concurrency: int = 2
    job_batch_size: int = 500
    job_max_retries: int = 5
    job_requeue_after_seconds: int = 60
    sse_heartbeat_seconds: int = 15
    rate_limit_enabled: bool = True
    rate_limit_login: str = "10/minute"
    rate_limit_login_per_ip: str = "30/minute"
    rate_limit_writes: str = "120/minute"
    rate_limit_writes_per_ip: str = "600/minute"
    trusted_proxies: tuple[str, ...] = field(default_factory=tuple)
    graceful_timeout_seconds: int = 30

    def __post_init__(self) -> None:
        if self.log_level not in LOG_LEVELS:
            raise SettingsError(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}")
        for name, value in RATE_LIMITS.items():
            _rate_limit(name, getattr(self, value))
        for proxy in self.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise SettingsError(
                    f"TRUSTED_PROXIES: not an address or network: {proxy!r}"
                ) from None
        if self.environment != "production":
            return
        if self.jwt_secret == DEVELOPMENT_JWT_SECRET:
            raise SettingsError("JWT_SECRET must be set when ENVIRONMENT=production")
        if len(self.jwt_secret.encode()) < MIN_PRODUCTION_SECRET_BYTES:
            raise SettingsError(f"JWT_SECRET must be at least {MIN_PRODUCTION_SECRET_BYTES} bytes")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the environment; unset variables keep their defaults."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        text = {
            "DATABASE_URL": "database_url",
            "REDIS_URL": "redis_url",
            "JWT_SECRET": "jwt_secret",
            "JWT_AUDIENCE": "jwt_audience",
            "JWT_ISSUER": "jwt_issuer",
            "ENVIRONMENT": "environment",
            "LOG_LEVEL": "log_level",
            "HOST": "host",
        }
        for name, attr in text.items():
            if env.get(name):
                values[attr] = env[name].strip()
        if "log_level" in values:
            values["log_level"] = str(values["log_level"]).lower()
        integers = {
            "ACCESS_TOKEN_TTL_SECONDS": ("access_token_ttl_seconds", 1),
            "PORT": ("port", 0),
            "WEB_CONCURRENCY": ("web_concurrency", 1),
            "DB_POOL_SIZE": ("db_pool_size", 1),
            "DB_MAX_OVERFLOW": ("db_max_overflow", 0),
            "DB_CONNECT_TIMEOUT": ("db_connect_timeout", 1),
            "DB_POOL_TIMEOUT": ("db_pool_timeout", 1),
            "MAX_BODY_BYTES": ("max_body_bytes", 1),
            "CELERY_VISIBILITY_TIMEOUT": ("celery_visibility_timeout", 1),
            "CELERY_CONCURRENCY": ("celery_concurrency", 1),
            "JOB_BATCH_SIZE": ("job_batch_size", 1),
            "JOB_MAX_RETRIES": ("job_max_retries", 0),
            "JOB_REQUEUE_AFTER_SECONDS": ("job_requeue_after_seconds", 1),
            "SSE_HEARTBEAT_SECONDS": ("sse_heartbeat_seconds", 1),
            "GRACEFUL_TIMEOUT_SECONDS": ("graceful_timeout_seconds", 1),
        }
        for name, (attr, minimum) in integers.items():
            if env.get(name):
                values[attr] = _integer(name, env[name], minimum)
        if env.get("VAR_DIR"):
            values["var_dir"] = Path(env["VAR_DIR"])
        if env.get("MIGRATE_ON_START"):
            values["migrate_on_start"] = _boolean("MIGRATE_ON_START", env["MIGRATE_ON_START"])
        for name, attr in RATE_LIMITS.items():
            if env.get(name):
                values[attr] = _rate_limit(name, env[name])
        if env.get("RATE_LIMIT_ENABLED"):
            values["rate_limit_enabled"] = _boolean("RATE_LIMIT_ENABLED", env["RATE_LIMIT_ENABLED"])
        if env.get("DOCS_ENABLED"):
            values["docs_enabled"] = _boolean("DOCS_ENABLED", env["DOCS_ENABLED"])
        proxies = env.get("TRUSTED_PROXIES", "")
        values["trusted_proxies"] = tuple(p.strip() for p in proxies.split(",") if p.strip())
        origins = env.get("CORS_ORIGINS", "")
        values["cors_origins"] = tuple(o.strip() for o in origins.split(",") if o.strip())
        return cls(**values)  # type: ignore[arg-type]

    @property
    def is_sqlite(self) -> bool:
        return self.database_url is None or self.database_url.startswith("sqlite")

    @property
    def should_migrate_on_start(self) -> bool:
        if self.migrate_on_start is not None:
            return self.migrate_on_start
        return self.is_sqlite

    @property
    def broker_dir(self) -> Path:
        return self.var_dir / "broker"
