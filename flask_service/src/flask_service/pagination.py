"""Opaque cursors: the URL-safe base64 of the last id on a page, without padding."""

from __future__ import annotations

import base64
import binascii
import uuid

# The form of every cursor encode_cursor issues: 16 bytes are 22 characters whose last one carries
# 2 bits and 4 zero bits (the contract declares this pattern, so clients and fuzzers can see it).
CURSOR_PATTERN = "^[A-Za-z0-9_-]{21}[AQgw]$"


def encode_cursor(last_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(last_id.bytes).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str) -> uuid.UUID:
    """The id a cursor names; ValueError when it is not one of ours."""
    if len(cursor) != 22 or not cursor.isascii():  # 16 bytes -> 22 characters, unpadded
        raise ValueError("not a cursor")
    try:
        raw = base64.urlsafe_b64decode(cursor + "==")
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not a cursor") from exc
    if len(raw) != 16 or encode_cursor(uuid.UUID(bytes=raw)) != cursor:
        raise ValueError("not a cursor")
    return uuid.UUID(bytes=raw)
