"""Migrations: upgrade head, under a lock, matching the models; the command-line entry point."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, create_engine, inspect, text

from fastapi_service import create_app, migrate
from fastapi_service.db import Base
from fastapi_service.settings import Settings
from helpers import make_settings

TABLES = {"users", "items", "idempotency_keys", "jobs", "alembic_version"}
HEAD = "0003"


def _sync_url(settings: Settings) -> str:
    # A plain synchronous engine, so the check does not share the service's own code path.
    url = settings.database_url or f"sqlite:///{settings.var_dir / 'fastapi_service.sqlite3'}"
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


def _tables_and_revision(settings: Settings) -> tuple[set[str], str]:
    engine = create_engine(_sync_url(settings))
    try:
        with engine.connect() as connection:
            tables = set(inspect(connection).get_table_names())
            revision = connection.scalar(text("SELECT version_num FROM alembic_version"))
    finally:
        engine.dispose()
    return tables, str(revision)


def test_upgrade_creates_the_schema_and_is_repeatable(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    migrate.upgrade(settings)
    assert _tables_and_revision(settings) == (TABLES, HEAD)
    migrate.upgrade(settings)
    assert _tables_and_revision(settings) == (TABLES, HEAD)
    assert (tmp_path / "migrate.lock").exists()


def test_the_migrated_schema_matches_the_models(migrated_settings: Settings) -> None:
    engine = create_engine(_sync_url(migrated_settings))

    def differences(connection: Connection) -> list[object]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))

    try:
        with engine.connect() as connection:
            assert differences(connection) == []
    finally:
        engine.dispose()


def test_concurrent_upgrades_take_turns(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    failures: list[BaseException] = []

    def run() -> None:
        try:
            migrate.upgrade(settings)
        except BaseException as exc:  # collected and asserted below
            failures.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert failures == []
    assert _tables_and_revision(settings) == (TABLES, HEAD)


def test_the_command_line_entry_point(tmp_path: Path) -> None:
    env = {**os.environ, "VAR_DIR": str(tmp_path), "LOG_LEVEL": "warning"}
    done = subprocess.run(
        [sys.executable, "-m", "fastapi_service.migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert _tables_and_revision(make_settings(tmp_path)) == (TABLES, HEAD)


@pytest.mark.anyio
async def test_the_app_migrates_at_start_when_asked(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, migrate_on_start=True)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        pass
    assert _tables_and_revision(settings) == (TABLES, HEAD)
