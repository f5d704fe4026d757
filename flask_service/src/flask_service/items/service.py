"""Items: CRUD with ETags, optimistic concurrency and idempotent creation.

Functions only flush; the view's transaction commits (deps.transactional). Someone else's
item is indistinguishable from a missing one (404).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from sqlalchemy import ColumnElement, exists, func, literal, select, type_coerce
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..db import utcnow
from ..models import IdempotencyKey, Item
from ..problems import IdempotencyKeyReused, NotFound, PreconditionFailed

ITEM_FIELDS = ("name", "description", "price", "tags")
# Rows fetched from the server-side cursor at a time: memory stays flat however many items.
EXPORT_BATCH = 500


def etag(item: Item) -> str:
    return f'"{item.version}"'


def _listed_tags(header: str) -> list[str]:
    return [tag.strip() for tag in header.split(",") if tag.strip()]


def if_none_match_hits(item: Item, header: str | None) -> bool:
    """If-None-Match uses the weak comparison: `W/"3"` matches `"3"`; `*` matches anything."""
    if header is None:
        return False
    current = etag(item)
    return any(tag == "*" or tag.removeprefix("W/") == current for tag in _listed_tags(header))


def check_if_match(item: Item, header: str | None) -> None:
    """If-Match uses the strong comparison: a weak tag never matches."""
    if header is None:
        return
    current = etag(item)
    if not any(tag in ("*", current) for tag in _listed_tags(header)):
        raise PreconditionFailed(f"The item's current ETag is {current}.")


def tag_filter(session: Session, tag: str) -> ColumnElement[bool]:
    if session.get_bind().dialect.name == "postgresql":
        return type_coerce(Item.tags, JSONB).contains([tag])
    elements = func.json_each(Item.tags).table_valued("value")
    return exists(select(literal(1)).select_from(elements).where(elements.c.value == tag))


def list_items(
    session: Session,
    owner_id: uuid.UUID,
    *,
    limit: int,
    after: uuid.UUID | None = None,
    tag: str | None = None,
    q: str | None = None,
) -> tuple[list[Item], uuid.UUID | None]:
    """One page, oldest first (UUIDv7 ids sort by creation), and the last id if more follow."""
    query = select(Item).where(Item.owner_id == owner_id).order_by(Item.id).limit(limit + 1)
    if after is not None:
        query = query.where(Item.id > after)
    if tag is not None:
        query = query.where(tag_filter(session, tag))
    if q is not None:
        query = query.where(Item.name.icontains(q, autoescape=True))
    items = list(session.scalars(query))
    if len(items) > limit:
        return items[:limit], items[limit - 1].id
    return items, None


def export_items(
    session: Session, owner_id: uuid.UUID, *, tag: str | None = None
) -> Iterator[Item]:
    """Every item of the owner, oldest first, read lazily from a server-side cursor.

    The query runs here, so a database error is raised before anything is streamed; the rows
    then arrive in batches of EXPORT_BATCH as the caller iterates.
    """
    query = (
        select(Item)
        .where(Item.owner_id == owner_id)
        .order_by(Item.id)
        .execution_options(yield_per=EXPORT_BATCH)
    )
    if tag is not None:
        query = query.where(tag_filter(session, tag))
    return iter(session.scalars(query))


def _request_hash(fields: Mapping[str, Any]) -> str:
    canonical = json.dumps({name: fields[name] for name in ITEM_FIELDS}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _replay(session: Session, owner_id: uuid.UUID, key: str, request_hash: str) -> Item | None:
    """The item an earlier request with this key created, if any."""
    record = session.scalar(
        select(IdempotencyKey).where(IdempotencyKey.owner_id == owner_id, IdempotencyKey.key == key)
    )
    if record is None:
        return None
    if record.request_hash != request_hash:
        raise IdempotencyKeyReused()
    return session.get(Item, record.item_id, populate_existing=True)


def create_item(
    session: Session,
    owner_id: uuid.UUID,
    fields: Mapping[str, Any],
    idempotency_key: str | None = None,
) -> Item:
    """A new item; with a key, the first request's item when the body is the same."""
    request_hash = _request_hash(fields)
    if idempotency_key is not None:
        earlier = _replay(session, owner_id, idempotency_key, request_hash)
        if earlier is not None:
            return earlier
    now = utcnow()
    item = Item(owner_id=owner_id, created_at=now, updated_at=now, **_values(fields))
    try:
        # A savepoint: losing the race on the unique (owner_id, key) index must not undo
        # the whole transaction, only this attempt.
        with session.begin_nested():
            session.add(item)
            session.flush()
            if idempotency_key is not None:
                session.add(
                    IdempotencyKey(
                        owner_id=owner_id,
                        key=idempotency_key,
                        request_hash=request_hash,
                        item_id=item.id,
                    )
                )
                session.flush()
    except IntegrityError:
        if idempotency_key is None:
            raise
        earlier = _replay(session, owner_id, idempotency_key, request_hash)
        if earlier is None:
            raise
        return earlier
    return item


def _values(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {name: fields[name] for name in ITEM_FIELDS if name in fields}


def get_item(session: Session, owner_id: uuid.UUID, item_id: uuid.UUID) -> Item:
    item = session.get(Item, item_id)
    if item is None or item.owner_id != owner_id:
        raise NotFound("No such item.")
    return item


def _change(
    session: Session,
    owner_id: uuid.UUID,
    item_id: uuid.UUID,
    values: Mapping[str, Any],
    if_match: str | None,
) -> Item:
    item = get_item(session, owner_id, item_id)
    check_if_match(item, if_match)
    for name, value in values.items():
        setattr(item, name, value)
    # Always a new updated_at, so even an empty PATCH is an UPDATE and bumps the version;
    # the UPDATE's WHERE carries the version read above (StaleDataError -> 412).
    item.updated_at = utcnow()
    session.flush()
    return item


def replace_item(
    session: Session,
    owner_id: uuid.UUID,
    item_id: uuid.UUID,
    fields: Mapping[str, Any],
    if_match: str | None = None,
) -> Item:
    return _change(session, owner_id, item_id, _values(fields), if_match)


def update_item(
    session: Session,
    owner_id: uuid.UUID,
    item_id: uuid.UUID,
    changes: Mapping[str, Any],
    if_match: str | None = None,
) -> Item:
    return _change(session, owner_id, item_id, _values(changes), if_match)


def delete_item(
    session: Session, owner_id: uuid.UUID, item_id: uuid.UUID, if_match: str | None = None
) -> None:
    item = get_item(session, owner_id, item_id)
    check_if_match(item, if_match)
    session.delete(item)
    session.flush()
