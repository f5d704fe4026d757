"""Assertions on the contract's conventions, shared by the behaviour tests."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any, Protocol

import contract

# contract/README.md, "Errors": slug -> (status, fixed title)
PROBLEMS = {
    "malformed-request": (400, "Malformed request"),
    "unauthorized": (401, "Unauthorized"),
    "invalid-credentials": (401, "Invalid credentials"),
    "not-found": (404, "Not found"),
    "method-not-allowed": (405, "Method not allowed"),
    "email-taken": (409, "Email already registered"),
    "job-finished": (409, "Job already finished"),
    "precondition-failed": (412, "Precondition failed"),
    "content-too-large": (413, "Content too large"),
    "unsupported-media-type": (415, "Unsupported media type"),
    "validation-error": (422, "Validation failed"),
    "idempotency-key-reused": (422, "Idempotency key reused"),
    "rate-limited": (429, "Too many requests"),
    "service-unavailable": (503, "Service unavailable"),
    "internal-error": (500, "Internal server error"),
}
STRICT_CSP = "default-src 'none'; frame-ancestors 'none'"
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-resource-policy": "same-origin",
}
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
LEAKS = ("Traceback", 'File "', "sqlalchemy", "psycopg", "sqlite3.", "Exception")


class Answer(Protocol):
    """An httpx.Response or an apiclient.RawResponse."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Any: ...

    @property
    def text(self) -> str: ...

    def json(self) -> Any: ...


def describe(answer: Answer) -> str:
    request = getattr(answer, "request", None)
    where = f"{request.method} {request.url.path}" if request is not None else "raw request"
    return f"{where} -> {answer.status_code} {answer.text[:600]!r}"


def media_type(answer: Answer) -> str:
    return str(answer.headers.get("content-type", "")).split(";")[0].strip().lower()


def assert_problem(answer: Answer, slug: str, *, location: str | None = None) -> dict[str, Any]:
    """`answer` is the contract's problem for `slug`; with `location`, `errors` names it."""
    status, title = PROBLEMS[slug]
    assert answer.status_code == status, f"expected {status} {slug}; got {describe(answer)}"
    assert media_type(answer) == "application/problem+json", describe(answer)
    body: dict[str, Any] = answer.json()
    assert contract.schema_errors(body, "Problem") == [], describe(answer)
    assert body["type"] == f"urn:problem:{slug}", describe(answer)
    assert body["title"] == title, describe(answer)
    assert body["status"] == status, describe(answer)
    assert isinstance(body["detail"], str) and body["detail"], describe(answer)
    for leak in LEAKS:
        assert leak not in answer.text, f"internal detail {leak!r} leaked: {describe(answer)}"
    assert REQUEST_ID.match(answer.headers.get("x-request-id", "")), describe(answer)
    if slug == "validation-error":
        errors = body.get("errors")
        assert isinstance(errors, list) and errors, f"422 without errors: {describe(answer)}"
    if location is not None:
        locations = [issue["location"] for issue in body.get("errors", [])]
        assert location in locations, f"expected location {location!r} in {locations}"
    return body


def assert_item(item: Any) -> dict[str, Any]:
    """A body that is a contract `Item` with UTC RFC 3339 timestamps."""
    assert contract.schema_errors(item, "Item") == [], item
    for field in ("created_at", "updated_at"):
        assert_utc_timestamp(item[field])
    assert isinstance(item, dict)
    found: dict[str, Any] = item
    return found


def assert_utc_timestamp(value: str) -> datetime:
    assert re.search(r"(Z|[+-]\d\d:\d\d)$", value), f"{value!r} has no UTC offset"
    parsed = datetime.fromisoformat(value)
    assert parsed.utcoffset() == timedelta(0), f"{value!r} is not UTC"
    return parsed


def etag_of(item: dict[str, Any]) -> str:
    return f'"{item["version"]}"'
