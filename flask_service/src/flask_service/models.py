"""Tables: users, items (optimistic concurrency on `version`), idempotency keys and jobs."""

from __future__ import annotations

import datetime as dt
import secrets
import threading
import time
import uuid
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from .db import Base, UTCDateTime, utcnow

_id_lock = threading.Lock()
_last_stamp = 0


def new_id() -> uuid.UUID:
    """A UUIDv7 (RFC 9562): 48-bit Unix ms time, 12 bits of sub-ms time, 62 random bits.

    The 60-bit time stamp never repeats or goes back within a process, so ids made one after
    the other sort in creation order even inside one millisecond (RFC 9562, method 3).
    """
    global _last_stamp
    now_ns = time.time_ns()
    sub_ms = (now_ns % 1_000_000) * 4096 // 1_000_000
    with _id_lock:
        _last_stamp = max((now_ns // 1_000_000) << 12 | sub_ms, _last_stamp + 1)
        stamp = _last_stamp
    value = (stamp >> 12) << 80 | 0x7 << 76 | (stamp & 0xFFF) << 64 | 0b10 << 62
    return uuid.UUID(int=value | secrets.randbits(62))


# JSONB on PostgreSQL so the tag filter can use `@>` (and a GIN index if one is ever needed).
TagList = JSON().with_variant(JSONB(), "postgresql")
# A job's request, result and error documents.
JSONDocument = JSON().with_variant(JSONB(), "postgresql")

# The predicate of the sweep's partial index; the sweep's WHERE must imply it.
QUEUED_ONLY = text("status = 'queued'")


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    full_name: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Item(Base):
    __tablename__ = "items"
    # Pages are "this owner's items after this id, in id order": one index answers them.
    __table_args__ = (Index("ix_items_owner_id_id", "owner_id", "id"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    owner_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    price: Mapped[float] = mapped_column(Float(precision=53))
    tags: Mapped[list[str]] = mapped_column(TagList, default=list)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    version: Mapped[int] = mapped_column(Integer, nullable=False)

    # The ORM adds `AND version = :old` to every UPDATE/DELETE and raises StaleDataError when
    # no row matched, so two writers holding the same ETag cannot both win.
    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012 - read once, by the mapper


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"
    # The unique index, not a check before the insert, is what keeps duplicates out.
    __table_args__ = (UniqueConstraint("owner_id", "key"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    owner_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("users.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(200))
    request_hash: Mapped[str] = mapped_column(String(64))
    # Indexed so deleting an item finds its keys (ON DELETE CASCADE) without a table scan.
    item_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("items.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Job(Base):
    """A background job; its state lives here, never in Celery's result backend.

    `event_seq` grows by one with every change a client may want to hear about; it is the
    `id:` of the stream's events, and the payload of the Redis notification.
    """

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_owner_id_id", "owner_id", "id"),
        # The stale-job sweep (tasks.claim_stale): queued jobs, oldest first. Partial, so it
        # holds only the few queued jobs, however many finished ones the table keeps.
        Index(
            "ix_jobs_queued_updated_at",
            "updated_at",
            postgresql_where=QUEUED_ONLY,
            sqlite_where=QUEUED_ONLY,
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    owner_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    params: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    progress_done: Mapped[int] = mapped_column(Integer, default=0)
    progress_total: Mapped[int] = mapped_column(Integer, default=0)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument, nullable=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    event_seq: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
