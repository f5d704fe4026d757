"""Cursors: URL-safe base64 of a UUID, unpadded; anything else is refused."""

from __future__ import annotations

import uuid

import pytest

from flask_service.pagination import decode_cursor, encode_cursor


def test_round_trip_is_unpadded_and_url_safe() -> None:
    for _ in range(200):
        value = uuid.uuid4()
        cursor = encode_cursor(value)
        assert len(cursor) == 22
        assert "=" not in cursor
        assert "+" not in cursor
        assert "/" not in cursor
        assert decode_cursor(cursor) == value


@pytest.mark.parametrize(
    "cursor",
    ["", "abc", "A" * 21, "A" * 23, "!" * 22, "é" * 22, encode_cursor(uuid.uuid4()) + "=="],
)
def test_anything_else_is_refused(cursor: str) -> None:
    with pytest.raises(ValueError, match="not a cursor"):
        decode_cursor(cursor)


def test_non_canonical_encodings_are_refused() -> None:
    cursor = encode_cursor(uuid.UUID(int=0))
    # The last character carries 2 spare bits; setting them gives another string, same bytes.
    tampered = cursor[:-1] + "B"
    with pytest.raises(ValueError, match="not a cursor"):
        decode_cursor(tampered)
