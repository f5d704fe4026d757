"""Request and response bodies for /users (contract: UserCreate, UserPublic)."""

from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate

NO_NUL = r"^[^\u0000]*$"


# Explicit ranges, not `\s`: regex engines disagree on what `\s` covers (Python's includes
# \x1c-\x1f, pydantic-core's and ECMA's do not), and the contract must mean one thing.
EMAIL_PATTERN = r"^[^@\x00-\x20\x7f]+@[^@\x00-\x20\x7f]+$"


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
