"""/api/v1/items: the signed-in user's items, with ETags and idempotent creation."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from flask import Response, current_app
from flask.views import MethodView
from werkzeug.routing import BaseConverter

from ..deps import (
    SIGNED_IN,
    Blueprint,
    current_user_id,
    get_session,
    get_snapshot_session,
    path_uuid,
)
from ..docs import headers, problems
from ..models import Item as ItemRow
from ..pagination import encode_cursor
from . import service
from .schemas import (
    IdempotencyKeyHeader,
    IfMatchHeader,
    IfNoneMatchHeader,
    Item,
    ItemCreate,
    ItemExportArgs,
    ItemListArgs,
    ItemPage,
    ItemUpdate,
)

blp = Blueprint("items", __name__, url_prefix="/api/v1/items")
JSONL_MEDIA_TYPE = "application/jsonl"


class ItemIdConverter(BaseConverter):
    """Any path segment but `export`: PUT /items/export must be a 405 (that path is GET
    only), not an attempt to replace an item whose id is "export"."""

    regex = r"(?!export$)[^/]+"


blp.record_once(lambda state: state.app.url_map.converters.setdefault("item_id", ItemIdConverter))

ITEM_ID = {
    "in": "path",
    "name": "item_id",
    "required": True,
    "schema": {"type": "string", "format": "uuid"},
}


def _with_etag(item: ItemRow) -> tuple[ItemRow, dict[str, str]]:
    return item, {"ETag": service.etag(item)}


def _json_lines(items: Iterable[ItemRow], dumps: Callable[..., str]) -> Iterator[str]:
    schema = Item()
    for item in items:
        yield dumps(schema.dump(item), separators=(",", ":")) + "\n"


@blp.route("")
class Items(MethodView):
    decorators = SIGNED_IN

    @blp.doc(operationId="list_items", responses=problems(401, 405, 422, 429, 503))
    @blp.arguments(ItemListArgs(), location="query")
    @blp.response(200, ItemPage, description="One page of items, oldest first.")
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """List the signed-in user's items"""
        items, last_id = service.list_items(
            get_session(),
            current_user_id(),
            limit=args["limit"],
            after=args.get("cursor"),
            tag=args.get("tag"),
            q=args.get("q"),
        )
        next_cursor = encode_cursor(last_id) if last_id is not None else None
        return {"items": items, "next_cursor": next_cursor}

    @blp.doc(operationId="create_item", responses=problems(400, 401, 405, 413, 415, 422, 429, 503))
    @blp.arguments(ItemCreate())
    @blp.arguments(IdempotencyKeyHeader(), location="headers")
    @blp.response(
        201,
        Item,
        description="The item was created, or an earlier request's item is returned again.",
        headers=headers("Location", "ETag"),
    )
    def post(self, body: dict[str, Any], header: dict[str, Any]) -> Any:
        """Create an item"""
        item = service.create_item(
            get_session(), current_user_id(), body, header.get("idempotency_key")
        )
        return item, {"Location": f"{blp.url_prefix}/{item.id}", "ETag": service.etag(item)}


@blp.route("/export")
class ItemsExport(MethodView):
    decorators = SIGNED_IN

    @blp.doc(operationId="export_items", responses=problems(401, 405, 422, 429, 503))
    @blp.arguments(ItemExportArgs(), location="query")
    @blp.response(
        200,
        Item,
        content_type=JSONL_MEDIA_TYPE,
        description=(
            "Every item of the caller, oldest first, one JSON object per line (JSON Lines), "
            "streamed from a server-side cursor. The schema describes one line."
        ),
    )
    def get(self, args: dict[str, Any]) -> Response:
        """Export the signed-in user's items as JSON Lines"""
        # The body is sent after the request's teardown has run, so the response owns this
        # session and closes it when the stream ends or the client goes away.
        session = get_snapshot_session()
        try:
            items = service.export_items(session, current_user_id(), tag=args.get("tag"))
        except BaseException:
            session.close()
            raise
        lines = _json_lines(items, current_app.json.dumps)
        response = Response(lines, mimetype=JSONL_MEDIA_TYPE)
        response.call_on_close(session.close)
        return response


@blp.route("/<item_id:item_id>", parameters=[ITEM_ID])
class ItemById(MethodView):
    decorators = SIGNED_IN

    @blp.doc(operationId="read_item", responses=problems(401, 404, 405, 422, 429, 503))
    @blp.arguments(IfNoneMatchHeader(), location="headers")
    @blp.response(200, Item, description="The item.", headers=headers("ETag"))
    @blp.alt_response(
        304,
        description="The item has not changed since the ETag given in If-None-Match.",
        headers=headers("ETag"),
        success=True,
    )
    def get(self, header: dict[str, Any], item_id: str) -> Any:
        """Read an item"""
        item = service.get_item(get_session(), current_user_id(), path_uuid("item_id", item_id))
        if service.if_none_match_hits(item, header.get("if_none_match")):
            return Response(status=304, headers={"ETag": service.etag(item)})
        return _with_etag(item)

    @blp.doc(
        operationId="replace_item",
        responses=problems(400, 401, 404, 405, 412, 413, 415, 422, 429, 503),
    )
    @blp.arguments(ItemCreate())
    @blp.arguments(IfMatchHeader(), location="headers")
    @blp.response(200, Item, description="The replaced item.", headers=headers("ETag"))
    def put(self, body: dict[str, Any], header: dict[str, Any], item_id: str) -> Any:
        """Replace an item"""
        item = service.replace_item(
            get_session(),
            current_user_id(),
            path_uuid("item_id", item_id),
            body,
            header.get("if_match"),
        )
        return _with_etag(item)

    @blp.doc(
        operationId="update_item",
        responses=problems(400, 401, 404, 405, 412, 413, 415, 422, 429, 503),
    )
    @blp.arguments(ItemUpdate())
    @blp.arguments(IfMatchHeader(), location="headers")
    @blp.response(200, Item, description="The updated item.", headers=headers("ETag"))
    def patch(self, body: dict[str, Any], header: dict[str, Any], item_id: str) -> Any:
        """Update some fields of an item"""
        item = service.update_item(
            get_session(),
            current_user_id(),
            path_uuid("item_id", item_id),
            body,
            header.get("if_match"),
        )
        return _with_etag(item)

    @blp.doc(operationId="delete_item", responses=problems(401, 404, 405, 412, 422, 429, 503))
    @blp.arguments(IfMatchHeader(), location="headers")
    @blp.response(204, description="The item was deleted.")
    def delete(self, header: dict[str, Any], item_id: str) -> Response:
        """Delete an item"""
        service.delete_item(
            get_session(), current_user_id(), path_uuid("item_id", item_id), header.get("if_match")
        )
        response = Response(status=204)
        del response.headers["Content-Type"]  # no body, so no media type either
        return response
