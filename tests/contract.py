"""The contract as data: operation lookup, allowed methods and schema validation.

The suite reads `contract/openapi.yaml` instead of repeating it, so a test about `Allow` or a
response shape follows the contract when the contract changes.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

CONTRACT_PATH = Path(__file__).resolve().parent.parent / "contract" / "openapi.yaml"
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_CONTRACT_URI = "urn:contract"


@functools.cache
def document() -> dict[str, Any]:
    with CONTRACT_PATH.open(encoding="utf-8") as handle:
        loaded: dict[str, Any] = yaml.safe_load(handle)
    return loaded


@functools.cache
def _templates() -> list[tuple[re.Pattern[str], str]]:
    """Path templates as regexes; literal paths first so `/items/export` beats `/items/{id}`."""
    compiled = []
    for template in document()["paths"]:
        pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
        compiled.append((re.compile(f"^{pattern}$"), template))
    compiled.sort(key=lambda pair: pair[1].count("{"))
    return compiled


def path_template(path: str) -> str | None:
    """The contract's path template a concrete path falls under, or None."""
    for pattern, template in _templates():
        if pattern.match(path):
            return template
    return None


def allowed_methods(template: str) -> list[str]:
    """The contract's methods for a path, upper case, alphabetical (the `Allow` rule)."""
    item = document()["paths"][template]
    return sorted(method.upper() for method in item if method in HTTP_METHODS)


def allow_header(template: str) -> str:
    return ", ".join(allowed_methods(template))


def operation_id(method: str, path: str) -> str | None:
    """The operationId answering `method path`, or None when the contract has none."""
    template = path_template(path)
    if template is None:
        return None
    operation = document()["paths"][template].get(method.lower())
    return None if operation is None else str(operation["operationId"])


def operation_ids() -> list[str]:
    ids = []
    for item in document()["paths"].values():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                ids.append(str(operation["operationId"]))
    return ids


@functools.cache
def _registry() -> Registry:
    resource = Resource.from_contents(document(), default_specification=DRAFT202012)
    registry: Registry = Registry().with_resource(_CONTRACT_URI, resource)
    return registry


@functools.cache
def _validator(schema_name: str) -> Draft202012Validator:
    ref = {"$ref": f"{_CONTRACT_URI}#/components/schemas/{schema_name}"}
    return Draft202012Validator(ref, registry=_registry())


def schema_errors(instance: Any, schema_name: str) -> list[str]:
    """Every way `instance` breaks the contract's `components.schemas[schema_name]`."""
    errors = _validator(schema_name).iter_errors(instance)
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]
