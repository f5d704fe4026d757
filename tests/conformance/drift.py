"""Spec drift: a service's generated OpenAPI document against the contract, after normalisation.

Both documents are reduced to what a client relies on: operations (method, path, operationId),
parameters (name, location, required, schema), request bodies, status codes, media types,
response schemas and response headers. Normalising resolves every `$ref`, ignores prose
(descriptions, summaries, titles, examples), spells "may be null" one way, and orders what has no
order. `differences()` lists each remaining difference with its JSON path.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
# Prose and tooling hints: none of them changes what is valid on the wire.
IGNORED_KEYS = frozenset(
    {"description", "summary", "title", "example", "examples", "externalDocs", "deprecated"}
    | {"discriminator", "xml", "$comment", "contentMediaType"}
)
UNORDERED_LISTS = frozenset({"required", "enum", "type"})


def _resolve(node: Any, root: dict[str, Any], seen: tuple[str, ...] = ()) -> Any:
    """Every local `$ref` replaced by its target (a cycle is left as the bare ref)."""
    if isinstance(node, list):
        return [_resolve(item, root, seen) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        if ref in seen:
            return {"$ref": ref}
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        merged = {**target, **siblings} if isinstance(target, dict) else target
        return _resolve(merged, root, (*seen, ref))
    return {key: _resolve(value, root, seen) for key, value in node.items()}


def _nullable_forms(schema: dict[str, Any]) -> dict[str, Any]:
    """`nullable: true`, `anyOf/oneOf: [X, {type: null}]` and `type: [X, null]` read alike."""
    if schema.pop("nullable", False) and "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        schema["type"] = [*types, "null"]
    for combinator in ("anyOf", "oneOf"):
        options = schema.get(combinator)
        if not isinstance(options, list) or {"type": "null"} not in options:
            continue
        others = [option for option in options if option != {"type": "null"}]
        if len(others) != 1 or "type" not in others[0]:
            continue
        if {"anyOf", "oneOf", "allOf"} & set(others[0]):
            continue
        del schema[combinator]
        other = others[0]
        types = other["type"] if isinstance(other["type"], list) else [other["type"]]
        schema.update({key: value for key, value in other.items() if key != "type"})
        schema["type"] = [*types, "null"]
    if isinstance(schema.get("type"), list) and len(schema["type"]) == 1:
        schema["type"] = schema["type"][0]
    if "enum" in schema and len(schema["enum"]) == 1 and "const" not in schema:
        schema["const"] = schema.pop("enum")[0]
    return schema


def normalise_schema(node: Any) -> Any:
    if isinstance(node, list):
        return [normalise_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: normalise_schema(v) for k, v in node.items() if k not in IGNORED_KEYS}
    out = _nullable_forms(out)
    for key in UNORDERED_LISTS & set(out):
        if isinstance(out[key], list):
            out[key] = sorted(out[key], key=repr)
    return out


def _parameters(path_item: dict[str, Any], operation: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for parameter in [*path_item.get("parameters", []), *operation.get("parameters", [])]:
        name = parameter["name"]
        if parameter["in"] == "header":
            name = name.lower()  # header names are case-insensitive
        found[f"{parameter['in']}:{name}"] = {
            "required": bool(parameter.get("required", False)),
            "schema": normalise_schema(parameter.get("schema", {})),
        }
    return found


def _content(content: dict[str, Any]) -> dict[str, Any]:
    return {media: normalise_schema(body.get("schema", {})) for media, body in content.items()}


def _responses(responses: dict[str, Any]) -> dict[str, Any]:
    found = {}
    for status, response in responses.items():
        headers = {
            name.lower(): {
                "required": bool(header.get("required", False)),
                "schema": normalise_schema(header.get("schema", {})),
            }
            for name, header in response.get("headers", {}).items()
        }
        found[str(status)] = {"content": _content(response.get("content", {})), "headers": headers}
    return found


def normalise(document: dict[str, Any], skip_operation_ids: Iterable[str] = ()) -> dict[str, Any]:
    """The parts of a document the contract binds, keyed by `METHOD path`."""
    skipped = set(skip_operation_ids)
    resolved = _resolve(document, document)
    operations = {}
    for path, path_item in resolved.get("paths", {}).items():
        for method in HTTP_METHODS:
            operation = path_item.get(method)
            if operation is None or operation.get("operationId") in skipped:
                continue
            body = operation.get("requestBody")
            operations[f"{method.upper()} {path}"] = {
                "operationId": operation.get("operationId"),
                "parameters": _parameters(path_item, operation),
                "requestBody": None
                if body is None
                else {"required": bool(body.get("required", False)), **_content(body["content"])},
                "responses": _responses(operation.get("responses", {})),
            }
    return operations


def _diff(expected: Any, actual: Any, where: str) -> Iterable[str]:
    if isinstance(expected, dict) and isinstance(actual, dict):
        for key in sorted(set(expected) | set(actual), key=str):
            here = f"{where}/{str(key).replace('~', '~0').replace('/', '~1')}"
            if key not in actual:
                yield f"{here}: in the contract, missing from the service"
            elif key not in expected:
                yield f"{here}: in the service, not in the contract ({actual[key]!r:.120})"
            else:
                yield from _diff(expected[key], actual[key], here)
    elif isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        for index, (left, right) in enumerate(zip(expected, actual, strict=True)):
            yield from _diff(left, right, f"{where}/{index}")
    elif expected != actual:
        yield f"{where}: contract {expected!r:.120}, service {actual!r:.120}"


def differences(
    contract: dict[str, Any], generated: dict[str, Any], skip_operation_ids: Iterable[str] = ()
) -> list[str]:
    """Each difference between the two normalised documents, as `<JSON path>: <what>`."""
    skipped = list(skip_operation_ids)
    return list(_diff(normalise(contract, skipped), normalise(generated, skipped), ""))
