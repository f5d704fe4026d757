"""What both bare apps share: the items table mapped to a class, and the row as JSON.

No middleware, no auth, no logging, no metrics: one query by primary key through the same driver
and ORM as the template (a SQLAlchemy ORM `Session.get`; sync + psycopg for Flask, async +
asyncpg for FastAPI), so the template's own cost shows as a ratio in the same run.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Float, Integer, MetaData, String, Table, Text, Uuid
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase

metadata = MetaData()
items = Table(
    "items",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("owner_id", Uuid),
    Column("name", String(200)),
    Column("description", Text),
    Column("price", Float(precision=53)),
    Column("tags", JSON().with_variant(JSONB(), "postgresql")),
    Column("created_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True)),
    Column("version", Integer),
)


class Base(DeclarativeBase):
    metadata = metadata


class Item(Base):
    """The row the template's `session.get(Item, id)` loads, without its model's validators."""

    __table__ = items


def database_url() -> str:
    """BARE_DATABASE_URL: a full SQLAlchemy URL, driver included (the runner builds it)."""
    url = os.environ.get("BARE_DATABASE_URL", "")
    if not url:
        raise RuntimeError("BARE_DATABASE_URL is not set")
    return url


def pool_size() -> int:
    return int(os.environ.get("DB_POOL_SIZE", "10"))


def max_overflow() -> int:
    return int(os.environ.get("DB_MAX_OVERFLOW", "5"))


def pool_timeout() -> int:
    return int(os.environ.get("DB_POOL_TIMEOUT", "30"))


def _timestamp(value: Any) -> str:
    if isinstance(value, dt.datetime):
        stamp: dt.datetime = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return stamp.isoformat().replace("+00:00", "Z")
    return str(value)


def row_json(row: Any) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "name": row.name,
        "description": row.description,
        "price": row.price,
        "tags": list(row.tags or []),
        "created_at": _timestamp(row.created_at),
        "updated_at": _timestamp(row.updated_at),
        "version": row.version,
    }
