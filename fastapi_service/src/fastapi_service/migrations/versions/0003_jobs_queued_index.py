"""Jobs: a partial index on queued jobs' updated_at, for the stale-job sweep.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_jobs_queued_updated_at"
QUEUED_ONLY = sa.text("status = 'queued'")


@contextlib.contextmanager
def _concurrently_on_postgresql() -> Iterator[bool]:
    """On PostgreSQL, outside any transaction, so CONCURRENTLY can build the index while the
    jobs table keeps taking writes (a plain CREATE INDEX blocks them for a whole table scan)."""
    context = op.get_context()
    if context.dialect.name != "postgresql":
        yield False
        return
    with context.autocommit_block():
        yield True


def upgrade() -> None:
    with _concurrently_on_postgresql() as concurrently:
        # A CONCURRENTLY build that failed leaves an invalid index behind; start afresh.
        op.drop_index(
            INDEX, table_name="jobs", if_exists=True, postgresql_concurrently=concurrently
        )
        op.create_index(
            INDEX,
            "jobs",
            ["updated_at"],
            postgresql_where=QUEUED_ONLY,
            sqlite_where=QUEUED_ONLY,
            postgresql_concurrently=concurrently,
        )


def downgrade() -> None:
    with _concurrently_on_postgresql() as concurrently:
        op.drop_index(INDEX, table_name="jobs", postgresql_concurrently=concurrently)
