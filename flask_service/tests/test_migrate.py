"""Migrations: upgrade head creates the schema the models describe, idempotently, under a lock."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from flask_service.db import Base, database_url
from flask_service.migrate import upgrade
from flask_service.settings import Settings


def test_upgrade_creates_the_tables_and_is_idempotent(sqlite_settings: Settings) -> None:
    upgrade(sqlite_settings)
    upgrade(sqlite_settings)
    engine = create_engine(database_url(sqlite_settings))
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert {"users", "items", "idempotency_keys", "alembic_version"} <= tables
    assert (sqlite_settings.var_dir / "migrate.lock").exists()


def test_migrations_match_the_models(base_settings: Settings) -> None:
    engine = create_engine(database_url(base_settings))
    try:
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    finally:
        engine.dispose()
    assert differences == []


def test_concurrent_upgrades_wait_for_each_other(sqlite_settings: Settings) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            upgrade(sqlite_settings)
        except BaseException as exc:  # collected and asserted on below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_module_entry_point_migrates(tmp_path: Path) -> None:
    env = {"VAR_DIR": str(tmp_path), "LOG_LEVEL": "warning", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "flask_service.migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr + done.stdout
    assert (tmp_path / "flask_service.sqlite3").exists()
