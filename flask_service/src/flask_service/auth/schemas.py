"""The token endpoint's form and answer (contract: TokenRequest, Token)."""

from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate

NO_NUL = r"^[^\u0000]*$"


class TokenRequest(ma.Schema):
    """OAuth2 password grant form fields (RFC 6749 section 4.3)."""

    grant_type = fields.String(validate=validate.OneOf(["password"]))
    username = fields.String(
        required=True,
        validate=[validate.Length(1, 254), validate.Regexp(NO_NUL)],
        metadata={"description": "The email."},
    )
    password = fields.String(
        required=True, validate=[validate.Length(1, 128), validate.Regexp(NO_NUL)]
    )


class Token(ma.Schema):
    access_token = fields.String(required=True)
    token_type = fields.String(required=True, validate=validate.OneOf(["bearer"]))
    expires_in = fields.Integer(required=True, validate=validate.Range(min=1))
