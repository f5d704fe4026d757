"""Schemathesis hooks for the conformance runs (loaded by schemathesis.toml's `hooks`).

JSON Lines: Schemathesis has no deserializer for `application/jsonl`, and without one a JSONL body
is never validated. This one checks EVERY line against the operation's declared response schema
(the contract's schema describes one line) and fails naming the first line that breaks it.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jsonschema_rs
import schemathesis
import yaml

CONTRACT = Path(__file__).resolve().parents[2] / "contract" / "openapi.yaml"
JSONL_TYPES = ("application/jsonl", "application/x-ndjson", "application/json-seq")
_URI = "urn:conformance-contract"


@functools.cache
def _registry() -> jsonschema_rs.Registry:
    document = yaml.safe_load(CONTRACT.read_text(encoding="utf-8"))
    return jsonschema_rs.Registry([(_URI, document)])


def _pointer(*parts: str) -> str:
    return "/".join(part.replace("~", "~0").replace("/", "~1") for part in parts)


@functools.cache
def line_validator(path: str, method: str, status: int, media_type: str) -> jsonschema_rs.Validator:
    """A validator for one line of `method path`'s `status` response in `media_type`.

    jsonschema-rs (Schemathesis' own validator) checks a line about 100 times faster than the
    pure-Python `jsonschema`; an export of tens of thousands of lines made that the run's cost.
    """
    where = _pointer("paths", path, method.lower(), "responses", str(status), "content", media_type)
    return jsonschema_rs.validator_for({"$ref": f"{_URI}#/{where}/schema"}, registry=_registry())


def validate_lines(text: str, validator: jsonschema_rs.Validator) -> list[Any]:
    """Every line parsed and checked; the first bad line raises ValueError saying where."""
    values = []
    # JSON Lines separates values by "\n" only (a "\r" before it is allowed). `str.splitlines`
    # would also split at U+2028, U+0085 and friends, which JSON strings may carry unescaped.
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.removesuffix("\r")
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"line {number} is not JSON: {exc}") from exc
        error = next(iter(validator.iter_errors(value)), None)
        if error is not None:
            where = "/".join(map(str, error.instance_path)) or "<root>"
            raise ValueError(f"line {number} breaks the schema at {where}: {error.message}")
        values.append(value)
    return values


@schemathesis.deserializer(*JSONL_TYPES)
def deserialize_jsonl(ctx: schemathesis.DeserializationContext, response: Any) -> Any:
    media_type = response.headers.get("content-type", [JSONL_TYPES[0]])[0].split(";")[0].strip()
    operation = ctx.operation
    validator = line_validator(operation.path, operation.method, response.status_code, media_type)
    values = validate_lines(response.content.decode("utf-8"), validator)
    if not values:
        # An empty export (no items) has no line to validate; Schemathesis skips what it cannot
        # deserialize, which is the right answer for an empty body.
        raise NotImplementedError("empty JSON Lines body")
    # Every line is already checked; Schemathesis validates the first one once more.
    return values[0]
