"""/api/v1/items: the signed-in user's items, with ETags and idempotent creation."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Response
from starlette.convertors import StringConvertor, register_url_convertor

from ..deps import ContractRoute, CurrentUserId, LimitWrites, SessionDep, SnapshotSessionDep
from ..docs import headers, problems
from ..models import Item as ItemRow
from ..pagination import CURSOR_PATTERN, decode_cursor, encode_cursor
from ..problems import ValidationFailed
from . import service
from .schemas import NO_NUL, Item, ItemCreate, ItemPage, ItemUpdate, Tag

router = APIRouter(
    prefix="/api/v1/items",
    tags=["items"],
    route_class=ContractRoute,
)


class ItemIdConvertor(StringConvertor):
    """Any path segment but `export`: PUT /items/export must be a 405 (that path is GET
    only), not an attempt to replace an item whose id is "export"."""

    regex = r"(?!export$)[^/]+"


register_url_convertor("item_id", ItemIdConvertor())

ItemId = Annotated[uuid.UUID, Path()]
Limit = Annotated[int, Query(ge=1, le=100, description="Page size.")]
Cursor = Annotated[
    str | None,
    Query(
        min_length=22,
        max_length=22,
        pattern=CURSOR_PATTERN,
        description="The `next_cursor` of the previous page.",
    ),
]
TagFilter = Annotated[Tag | None, Query(description="Only items carrying this tag.")]
NameFilter = Annotated[
    str | None,
    Query(min_length=1, max_length=200, pattern=NO_NUL, description="Only names with this text."),
]
IfMatch = Annotated[str | None, Header(alias="If-Match", max_length=200)]
IfNoneMatch = Annotated[str | None, Header(alias="If-None-Match", max_length=200)]
IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", min_length=1, max_length=200, pattern=r"^[\x21-\x7E]+$"),
]


def _with_etag(response: Response, item: ItemRow) -> ItemRow:
    response.headers["ETag"] = service.etag(item)
    return item


@router.get(
    "",
    operation_id="list_items",
    response_model=ItemPage,
    response_description="One page of items, oldest first.",
    responses=problems(401, 405, 422, 429, 503),
)
async def list_items(
    user_id: CurrentUserId,
    session: SessionDep,
    limit: Limit = 20,
    cursor: Cursor = None,
    tag: TagFilter = None,
    q: NameFilter = None,
) -> dict[str, Any]:
    """List the signed-in user's items"""
    try:
        after = decode_cursor(cursor) if cursor is not None else None
    except ValueError:
        raise ValidationFailed(
            [{"location": "query.cursor", "message": "Unknown cursor."}]
        ) from None
    items, last_id = await service.list_items(
        session, user_id, limit=limit, after=after, tag=tag, q=q
    )
    next_cursor = encode_cursor(last_id) if last_id is not None else None
    return {"items": items, "next_cursor": next_cursor}


@router.post(
    "",
    operation_id="create_item",
    dependencies=[LimitWrites],
    status_code=201,
    response_model=Item,
    response_description="The item was created, or an earlier request's item is returned again.",
    responses={
        201: headers("Location", "ETag"),
        **problems(400, 401, 405, 413, 415, 422, 429, 503),
    },
)
async def create_item(
    body: ItemCreate,
    user_id: CurrentUserId,
    session: SessionDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> ItemRow:
    """Create an item"""
    item = await service.create_item(session, user_id, body.model_dump(), idempotency_key)
    response.headers["Location"] = f"{router.prefix}/{item.id}"
    return _with_etag(response, item)


@router.get(
    "/export",
    operation_id="export_items",
    response_description=(
        "Every item of the caller, oldest first, one JSON object per line (JSON Lines), "
        "streamed from a server-side cursor. The schema describes one line."
    ),
    responses=problems(401, 405, 422, 429, 503),
)
async def export_items(
    user_id: CurrentUserId, session: SnapshotSessionDep, tag: TagFilter = None
) -> AsyncIterator[Item]:
    """Export the signed-in user's items as JSON Lines"""
    # A generator endpoint: FastAPI validates each yielded row as an Item and sends it as one
    # line of application/jsonl while the next rows are still being read.
    async for item in await service.export_items(session, user_id, tag=tag):
        yield Item.model_validate(item)


@router.get(
    "/{item_id:item_id}",
    operation_id="read_item",
    response_model=Item,
    response_description="The item.",
    responses={
        200: headers("ETag"),
        304: {"description": "The item has not changed since the ETag given.", **headers("ETag")},
        **problems(401, 404, 405, 422, 429, 503),
    },
)
async def read_item(
    item_id: ItemId,
    user_id: CurrentUserId,
    session: SessionDep,
    response: Response,
    if_none_match: IfNoneMatch = None,
) -> ItemRow | Response:
    """Read an item"""
    item = await service.get_item(session, user_id, item_id)
    if service.if_none_match_hits(item, if_none_match):
        return Response(status_code=304, headers={"ETag": service.etag(item)})
    return _with_etag(response, item)


@router.put(
    "/{item_id:item_id}",
    operation_id="replace_item",
    dependencies=[LimitWrites],
    response_model=Item,
    response_description="The replaced item.",
    responses={200: headers("ETag"), **problems(400, 401, 404, 405, 412, 413, 415, 422, 429, 503)},
)
async def replace_item(
    item_id: ItemId,
    body: ItemCreate,
    user_id: CurrentUserId,
    session: SessionDep,
    response: Response,
    if_match: IfMatch = None,
) -> ItemRow:
    """Replace an item"""
    item = await service.replace_item(session, user_id, item_id, body.model_dump(), if_match)
    return _with_etag(response, item)


@router.patch(
    "/{item_id:item_id}",
    operation_id="update_item",
    dependencies=[LimitWrites],
    response_model=Item,
    response_description="The updated item.",
    responses={200: headers("ETag"), **problems(400, 401, 404, 405, 412, 413, 415, 422, 429, 503)},
)
async def update_item(
    item_id: ItemId,
    body: ItemUpdate,
    user_id: CurrentUserId,
    session: SessionDep,
    response: Response,
    if_match: IfMatch = None,
) -> ItemRow:
    """Update some fields of an item"""
    item = await service.update_item(session, user_id, item_id, body.model_dump(), if_match)
    return _with_etag(response, item)


@router.delete(
    "/{item_id:item_id}",
    operation_id="delete_item",
    dependencies=[LimitWrites],
    status_code=204,
    # A bare Response: a 204 has no body, so it carries no Content-Type either.
    response_class=Response,
    response_description="The item was deleted.",
    responses=problems(401, 404, 405, 412, 422, 429, 503),
)
async def delete_item(
    item_id: ItemId,
    user_id: CurrentUserId,
    session: SessionDep,
    if_match: IfMatch = None,
) -> None:
    """Delete an item"""
    await service.delete_item(session, user_id, item_id, if_match)
