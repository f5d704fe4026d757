"""One typed Settings class; the environment variable names are the contract's (README table)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import limits
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

SERVICE_NAME = "fastapi_service"
SERVICE_VERSION = "1.0.0"
DEVELOPMENT_JWT_SECRET = "development-secret-change-me-0123456789abcdef"  # noqa: S105
MIN_PRODUCTION_SECRET_BYTES = 32

LogLevel = Literal["critical", "error", "warning", "info", "debug"]


class Settings(BaseSettings):
    """Configuration read from the environment (names are case-insensitive)."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    database_url: str | None = None
    redis_url: str | None = None
    var_dir: Path = Path("var")
    migrate_on_start: bool | None = None
    jwt_secret: SecretStr = SecretStr(DEVELOPMENT_JWT_SECRET)
    jwt_audience: str = "items-api"
    jwt_issuer: str = "items-service"
    access_token_ttl_seconds: int = Field(default=3600, ge=1)
    environment: str = "development"
    log_level: LogLevel = "info"
    host: str = "0.0.0.0"  # noqa: S104 - a container's server listens on every interface
    port: int = Field(default=8002, ge=0, le=65535)
    web_concurrency: int = Field(default=2, ge=1)
    db_pool_size: int = Field(default=10, ge=1)
    db_max_overflow: int = Field(default=5, ge=0)
    db_connect_timeout: int = Field(default=5, ge=1)
    db_pool_timeout: int = Field(default=30, ge=1)
    max_body_bytes: int = Field(default=1_048_576, ge=1)
    cors_origins: Annotated[tuple[str, ...], NoDecode] = ()
    docs_enabled: bool = True
    celery_visibility_timeout: int = Field(default=7200, ge=1)
    celery_concurrency: int = Field(default=2, ge=1)
    job_batch_size: int = Field(default=500, ge=1)
    job_max_retries: int = Field(default=5, ge=0)
    job_requeue_after_seconds: int = Field(default=60, ge=1)
    sse_heartbeat_seconds: int = Field(default=15, ge=1)
    rate_limit_enabled: bool = True
    rate_limit_login: str = "10/minute"
    rate_limit_login_per_ip: str = "30/minute"
    rate_limit_writes: str = "120/minute"
    rate_limit_writes_per_ip: str = "600/minute"
    trusted_proxies: Annotated[tuple[str, ...], NoDecode] = ()
    graceful_timeout_seconds: int = Field(default=30, ge=1)
    shutdown_delay_seconds: float = Field(default=2.0, ge=0, le=60)  # uvicorn only: lifecycle.py

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_log_level(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(origin.strip() for origin in value.split(",") if origin.strip())
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(proxy.strip() for proxy in value.split(",") if proxy.strip())
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_are_networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for proxy in value:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(f"not an address or network: {proxy!r}") from None
        return value

    @field_validator(
        "rate_limit_login",
        "rate_limit_login_per_ip",
        "rate_limit_writes",
        "rate_limit_writes_per_ip",
    )
    @classmethod
    def _one_rate_limit(cls, value: str) -> str:
        """One limit in the `limits` notation (`10/minute`, `100 per hour`)."""
        try:
            parsed = limits.parse_many(value)
        except ValueError:
            parsed = []
        if len(parsed) != 1 or parsed[0].amount < 1:
            raise ValueError(f"must be one limit such as '10/minute', got {value!r}")
        return value.strip()

    @model_validator(mode="after")
    def _refuse_development_secrets_in_production(self) -> Self:
        if self.environment != "production":
            return self
        secret = self.jwt_secret.get_secret_value()
        if secret == DEVELOPMENT_JWT_SECRET:
            raise ValueError("JWT_SECRET must be set when ENVIRONMENT=production")
        if len(secret.encode()) < MIN_PRODUCTION_SECRET_BYTES:
            raise ValueError(f"JWT_SECRET must be at least {MIN_PRODUCTION_SECRET_BYTES} bytes")
        return self

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
