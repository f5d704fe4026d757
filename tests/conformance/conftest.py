"""Conformance fixtures: each service as a real server on PostgreSQL (+ Redis), one per session.

Only PostgreSQL rows: the issue runs Schemathesis against the production-like backend. SERVICES
narrows them as in the rest of the suite; BACKENDS without `postgresql` skips this folder.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import Row, Server, ServerFailed, create_database, drop_database, selected_rows


def conformance_rows() -> list[Row]:
    return [row for row in selected_rows() if row.backend == "postgresql"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "service_row" in metafunc.fixturenames:
        rows = conformance_rows()
        metafunc.parametrize("service_row", rows, ids=[r.id for r in rows], scope="session")


def start_service(
    row: Row, admin_url: str, workdir: Path, redis_url: str | None
) -> tuple[Server, str]:
    """A fresh database, migrated, and the service started on it."""
    database_url = create_database(admin_url, f"conformance_{row.service}")
    srv = Server(row, workdir, database_url, redis_url)
    try:
        srv.migrate()
        srv.start()
    except ServerFailed:
        srv.stop()
        drop_database(admin_url, database_url)
        raise
    return srv, database_url


def stop_service(srv: Server, admin_url: str, database_url: str) -> list[str]:
    """Stop it, drop its database; the error lines it logged (a request must never cause one)."""
    srv.stop()
    drop_database(admin_url, database_url)
    return srv.logged_errors()


@pytest.fixture(scope="session")
def live_service(
    service_row: Row, backends: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The row's service on a fresh PostgreSQL database, ready."""
    admin_url = backends.postgres()
    if admin_url is None:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"CI=true forbids skipping: {backends.missing_postgres}")
        pytest.skip(backends.missing_postgres)
    workdir = tmp_path_factory.mktemp(f"conformance-{service_row.id}")
    redis_url = backends.redis_for(service_row)
    try:
        srv, database_url = start_service(service_row, admin_url, workdir, redis_url)
    except ServerFailed as exc:
        pytest.fail(str(exc), pytrace=False)
    yield srv
    crashes = stop_service(srv, admin_url, database_url)
    if crashes:
        shown = "\n".join(crashes[:5])
        pytest.fail(
            f"{service_row.id} logged {len(crashes)} error line(s):\n{shown}", pytrace=False
        )
