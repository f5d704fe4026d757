"""Streaming checks registered now, before the streaming operations exist.

The JSON Lines deserializer (hooks.py) must validate EVERY line: without one, Schemathesis lets a
wrong JSONL body pass. The SSE bound (`max-stream-events`) comes from schemathesis.toml.
"""

from __future__ import annotations

import json
import tomllib

import pytest
from schemathesis.core.deserialization import has_deserializer

from conformance import hooks, runner

GOOD_ITEM = {
    "id": "0190a5a0-0000-7000-8000-000000000001",
    "name": "a",
    "description": "",
    "price": 1.5,
    "tags": [],
    "created_at": "2026-11-28T10:00:00Z",
    "updated_at": "2026-11-28T10:00:00Z",
    "version": 1,
}


def _export_validator() -> hooks.jsonschema_rs.Validator:
    return hooks.line_validator("/api/v1/items/export", "GET", 200, "application/jsonl")


def test_the_jsonl_deserializer_is_registered() -> None:
    assert has_deserializer("application/jsonl")


def test_every_line_of_a_good_body_passes() -> None:
    body = "\n".join(json.dumps({**GOOD_ITEM, "version": n}) for n in (1, 2, 3)) + "\n"
    assert len(hooks.validate_lines(body, _export_validator())) == 3


@pytest.mark.parametrize(
    ("wrong_line", "says"),
    [
        (json.dumps({**GOOD_ITEM, "price": "1.5"}), "line 2 breaks the schema at price"),
        (json.dumps({k: v for k, v in GOOD_ITEM.items() if k != "version"}), "line 2 breaks"),
        ("{not json", "line 2 is not JSON"),
    ],
)
def test_a_wrong_line_after_a_good_one_fails(wrong_line: str, says: str) -> None:
    body = f"{json.dumps(GOOD_ITEM)}\n{wrong_line}\n{json.dumps(GOOD_ITEM)}\n"
    with pytest.raises(ValueError, match=says):
        hooks.validate_lines(body, _export_validator())


def test_sse_streams_are_bounded() -> None:
    with runner.CONFIG.open("rb") as handle:
        assert 0 < tomllib.load(handle)["max-stream-events"] <= 100


def test_lines_split_at_newlines_only() -> None:
    """U+2028, U+0085 and U+001C are legal unescaped inside JSON strings: not line breaks."""
    names = ["para\u2028graph", "next\x85line", "file\x1cseparator"]
    body = "".join(json.dumps({**GOOD_ITEM, "name": n}, ensure_ascii=False) + "\n" for n in names)
    values = hooks.validate_lines(body, _export_validator())
    assert [value["name"] for value in values] == names
