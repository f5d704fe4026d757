"""Item bodies (contract: ItemCreate, ItemUpdate, Item, ItemPage) and request parameters.

`price` is strict (no numeric strings, no booleans); no field allows `null`, PATCH included;
unknown body fields are refused (marshmallow's default `unknown=RAISE`).
"""

from __future__ import annotations

import uuid
from typing import Any

import marshmallow as ma
from marshmallow import fields, validate

from ..pagination import CURSOR_PATTERN, decode_cursor

NO_NUL = r"^[^\u0000]*$"
TAG_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7E]+$"
MAX_PRICE = 1_000_000_000


class StrictFloat(fields.Float):
    """A JSON number only: marshmallow's Float would also take "12.5"."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> float:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


class CursorField(fields.Field[uuid.UUID]):
    """The opaque `next_cursor` of the previous page, decoded to the id it names."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> uuid.UUID:
        try:
            return decode_cursor(value)
        except (TypeError, ValueError):
            raise ma.ValidationError("Unknown cursor.") from None


def Name(**kwargs: Any) -> fields.String:
    return fields.String(validate=[validate.Length(1, 200), validate.Regexp(NO_NUL)], **kwargs)


def Description(**kwargs: Any) -> fields.String:
    return fields.String(validate=[validate.Length(max=2000), validate.Regexp(NO_NUL)], **kwargs)


def Price(**kwargs: Any) -> StrictFloat:
    return StrictFloat(allow_nan=False, validate=validate.Range(0, MAX_PRICE), **kwargs)


def Tag(**kwargs: Any) -> fields.String:
    return fields.String(validate=[validate.Length(1, 32), validate.Regexp(TAG_PATTERN)], **kwargs)


def Tags(**kwargs: Any) -> fields.List:
    return fields.List(Tag(), validate=validate.Length(max=10), **kwargs)


class ItemCreate(ma.Schema):
    name = Name(required=True)
    description = Description(load_default="")
    price = Price(required=True)
    tags = Tags(load_default=list, metadata={"default": []})


class ItemUpdate(ma.Schema):
    """The fields to change; absent fields keep their value. `null` is not allowed."""

    name = Name()
    description = Description()
    price = Price()
    tags = Tags()


class Item(ma.Schema):
    id = fields.UUID(required=True)
    name = fields.String(required=True)
    description = fields.String(required=True)
    price = fields.Float(required=True)
    tags = fields.List(fields.String(), required=True)
    created_at = fields.DateTime(required=True)
    updated_at = fields.DateTime(required=True)
    version = fields.Integer(required=True, validate=validate.Range(min=1))


class ItemPage(ma.Schema):
    items = fields.List(fields.Nested(Item), required=True)
    next_cursor = fields.String(
        required=True,
        allow_none=True,
        metadata={"description": "Pass as `cursor` for the next page; null on the last page."},
    )


class ItemListArgs(ma.Schema):
    limit = fields.Integer(
        load_default=20, validate=validate.Range(1, 100), metadata={"description": "Page size."}
    )
    cursor = CursorField(
        metadata={
            "description": "The `next_cursor` of the previous page; opaque.",
            "type": "string",
            "minLength": 22,
            "maxLength": 22,
            "pattern": CURSOR_PATTERN,
        },
    )
    tag = Tag(metadata={"description": "Only items carrying this tag."})
    q = fields.String(
        validate=[validate.Length(1, 200), validate.Regexp(NO_NUL)],
        metadata={"description": "Only items whose name contains this text (case-insensitive)."},
    )


class ItemExportArgs(ma.Schema):
    tag = Tag(metadata={"description": "Only items carrying this tag."})


class IfMatchHeader(ma.Schema):
    if_match = fields.String(
        data_key="If-Match",
        validate=validate.Length(max=200),
        metadata={"description": "Apply the change only if the item's current ETag is this one."},
    )


class IfNoneMatchHeader(ma.Schema):
    if_none_match = fields.String(
        data_key="If-None-Match",
        validate=validate.Length(max=200),
        metadata={"description": "Answer 304 without a body if the item's ETag is this one."},
    )


class IdempotencyKeyHeader(ma.Schema):
    idempotency_key = fields.String(
        data_key="Idempotency-Key",
        validate=[validate.Length(1, 200), validate.Regexp(IDEMPOTENCY_KEY_PATTERN)],
        metadata={"description": "Repeat a create safely: same key and body, same item."},
    )
