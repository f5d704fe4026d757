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


def assert_job(job: Any, **expected: Any) -> dict[str, Any]:
    """A body that is a contract `Job` (UTC timestamps, status-consistent), with `expected` fields.

    started_at is set once the job ran; finished_at and nothing else is set for a terminal job;
    result only when it succeeded, error only when it failed.
    """
    assert contract.schema_errors(job, "Job") == [], job
    assert isinstance(job, dict)
    found: dict[str, Any] = job
    created = assert_utc_timestamp(job["created_at"])
    assert assert_utc_timestamp(job["updated_at"]) >= created, job
    terminal = job["status"] in {"succeeded", "failed", "cancelled"}
    assert (job["finished_at"] is not None) == terminal, job
    if job["started_at"] is not None:
        assert assert_utc_timestamp(job["started_at"]) >= created, job
    if job["status"] in {"running", "succeeded"}:
        assert job["started_at"] is not None, job
    if job["status"] == "queued":
        assert job["started_at"] is None, job
    if terminal:
        assert assert_utc_timestamp(job["finished_at"]) >= created, job
        if job["started_at"] is not None:
            started = assert_utc_timestamp(job["started_at"])
            assert assert_utc_timestamp(job["finished_at"]) >= started, job
    assert (job["result"] is not None) == (job["status"] == "succeeded"), job
    assert (job["error"] is not None) == (job["status"] == "failed"), job
    assert job["progress"]["done"] <= job["progress"]["total"], job
    for name, value in expected.items():
        assert job[name] == value, f"{name}: expected {value!r}, got {job[name]!r} in {job}"
    return found


def assert_utc_timestamp(value: str) -> datetime:
    assert re.search(r"(Z|[+-]\d\d:\d\d)$", value), f"{value!r} has no UTC offset"
    parsed = datetime.fromisoformat(value)
    assert parsed.utcoffset() == timedelta(0), f"{value!r} is not UTC"
    return parsed


def etag_of(item: dict[str, Any]) -> str:
    return f'"{item["version"]}"'
