"""Cursors: URL-safe base64 of a UUID without padding; anything else is refused."""

from __future__ import annotations

import uuid

import pytest

from fastapi_service.pagination import decode_cursor, encode_cursor


def test_round_trip() -> None:
    for _ in range(200):
        value = uuid.uuid4()
        cursor = encode_cursor(value)
        assert len(cursor) == 22
        assert "=" not in cursor
        assert set(cursor) <= set(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        )
        assert decode_cursor(cursor) == value


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "nope",
        "A" * 21,
        "A" * 23,
        "AAAAAAAAAAAAAAAAAAAAAA==",
        "+" * 22,
        "é" * 22,
        "AAAAAAAAAAAAAAAAAAAAA/",
    ],
)
def test_foreign_cursors_are_refused(cursor: str) -> None:
    with pytest.raises(ValueError, match="not a cursor"):
        decode_cursor(cursor)


def test_non_canonical_trailing_bits_are_refused() -> None:
    cursor = encode_cursor(uuid.UUID(int=0))
    assert cursor == "A" * 22
    with pytest.raises(ValueError, match="not a cursor"):
        decode_cursor("A" * 21 + "B")  # decodes to the same bytes, but we never made it
