"""Request and response bodies for /users (contract: UserCreate, UserPublic)."""

from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate

NO_NUL = r"^[^\u0000]*$"


EMAIL_PATTERN = r"^[^@\s\u0000]+@[^@\s\u0000]+$"


class UserCreate(ma.Schema):
    email = fields.String(
        required=True,
        validate=[validate.Length(3, 254), validate.Regexp(EMAIL_PATTERN)],
    )
    password = fields.String(
        required=True, validate=[validate.Length(8, 128), validate.Regexp(NO_NUL)]
    )
    full_name = fields.String(
        load_default="", validate=[validate.Length(max=100), validate.Regexp(NO_NUL)]
    )


class UserPublic(ma.Schema):
    id = fields.UUID(required=True)
    email = fields.String(required=True)
    full_name = fields.String(required=True)
    created_at = fields.DateTime(required=True)
