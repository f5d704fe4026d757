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

import schemathesis
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

CONTRACT = Path(__file__).resolve().parents[2] / "contract" / "openapi.yaml"
JSONL_TYPES = ("application/jsonl", "application/x-ndjson", "application/json-seq")
_URI = "urn:conformance-contract"


@functools.cache
def _registry() -> Registry:
    document = yaml.safe_load(CONTRACT.read_text(encoding="utf-8"))
    resource = Resource.from_contents(document, default_specification=DRAFT202012)
    registry: Registry = Registry().with_resource(_URI, resource)
    return registry


def _pointer(*parts: str) -> str:
    return "/".join(part.replace("~", "~0").replace("/", "~1") for part in parts)


def line_validator(path: str, method: str, status: int, media_type: str) -> Draft202012Validator:
    """A validator for one line of `method path`'s `status` response in `media_type`."""
    where = _pointer("paths", path, method.lower(), "responses", str(status), "content", media_type)
    return Draft202012Validator({"$ref": f"{_URI}#/{where}/schema"}, registry=_registry())


def validate_lines(text: str, validator: Draft202012Validator) -> list[Any]:
    """Every line parsed and checked; the first bad line raises ValueError saying where."""
    values = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"line {number} is not JSON: {exc}") from exc
        error = next(iter(validator.iter_errors(value)), None)
        if error is not None:
            where = "/".join(map(str, error.absolute_path)) or "<root>"
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
