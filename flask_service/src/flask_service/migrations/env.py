"""Alembic environment (synchronous): migrate.py hands over the Settings; the alembic CLI
(alembic.ini) falls back to reading them from the environment."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from flask_service import models  # noqa: F401 - registers the tables on Base.metadata
from flask_service.db import Base, database_url
from flask_service.settings import Settings

config = context.config
target_metadata = Base.metadata


def _settings() -> Settings:
    settings = config.attributes.get("settings")
    return settings if isinstance(settings, Settings) else Settings.from_env()


def run_migrations_offline() -> None:
    context.configure(
        url=database_url(_settings()), target_metadata=target_metadata, literal_binds=True
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(database_url(_settings()), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
