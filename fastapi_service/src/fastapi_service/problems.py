"""The contract's problem types as exceptions, free of any web framework.

Services raise these; `errors.py` is the one place that turns them into
`application/problem+json` responses (contract/README.md, "Errors").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

RETRY_AFTER_SECONDS = 5
BEARER_CHALLENGE = 'Bearer realm="api"'


class ProblemError(Exception):
    """An RFC 9457 problem: one subclass per slug, with the contract's fixed title."""

    status: ClassVar[int] = 500
    slug: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal server error"
    default_detail: ClassVar[str] = "The server could not complete the request."

    def __init__(
        self,
        detail: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        errors: Sequence[Mapping[str, str]] | None = None,
    ) -> None:
        self.detail = detail or self.default_detail
        self.headers = dict(headers or {})
        self.errors = [dict(error) for error in errors] if errors is not None else None
        super().__init__(self.detail)

    @property
    def type(self) -> str:
        return f"urn:problem:{self.slug}"

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": self.type,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.errors is not None:
            body["errors"] = self.errors
        return body


class MalformedRequest(ProblemError):
    status = 400
    slug = "malformed-request"
    title = "Malformed request"
    default_detail = "The request body could not be parsed."


class Unauthorized(ProblemError):
    status = 401
    slug = "unauthorized"
    title = "Unauthorized"
    default_detail = "A valid bearer token is required."

    def __init__(self, detail: str | None = None, *, token_sent: bool = False) -> None:
        # RFC 6750: name the error only when a token was sent and refused.
        challenge = f'{BEARER_CHALLENGE}, error="invalid_token"' if token_sent else BEARER_CHALLENGE
        super().__init__(detail, headers={"WWW-Authenticate": challenge})


class InvalidCredentials(ProblemError):
    status = 401
    slug = "invalid-credentials"
    title = "Invalid credentials"
    default_detail = "The email or the password is wrong."

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": BEARER_CHALLENGE})


class NotFound(ProblemError):
    status = 404
    slug = "not-found"
    title = "Not found"
    default_detail = "No such resource."


class MethodNotAllowed(ProblemError):
    status = 405
    slug = "method-not-allowed"
    title = "Method not allowed"
    default_detail = "The resource does not support this method."

    def __init__(self, allowed: Sequence[str], detail: str | None = None) -> None:
        allow = ", ".join(sorted({method.upper() for method in allowed}))
        super().__init__(detail, headers={"Allow": allow})


class EmailTaken(ProblemError):
    status = 409
    slug = "email-taken"
    title = "Email already registered"
    default_detail = "A user with this email already exists."


class JobFinished(ProblemError):
    status = 409
    slug = "job-finished"
    title = "Job already finished"
    default_detail = "The job has already finished; there is nothing to cancel."


class PreconditionFailed(ProblemError):
    status = 412
    slug = "precondition-failed"
    title = "Precondition failed"
    default_detail = "If-Match does not match the current ETag."


class ContentTooLarge(ProblemError):
    status = 413
    slug = "content-too-large"
    title = "Content too large"
    default_detail = "The request body is too large."


class UnsupportedMediaType(ProblemError):
    status = 415
    slug = "unsupported-media-type"
    title = "Unsupported media type"
    default_detail = "The request body has an unsupported Content-Type."


class ValidationFailed(ProblemError):
    status = 422
    slug = "validation-error"
    title = "Validation failed"
    default_detail = "The request is invalid."

    def __init__(self, errors: Sequence[Mapping[str, str]], detail: str | None = None) -> None:
        super().__init__(detail, errors=errors)


class IdempotencyKeyReused(ProblemError):
    status = 422
    slug = "idempotency-key-reused"
    title = "Idempotency key reused"
    default_detail = "This Idempotency-Key was already used with another body."


class RateLimited(ProblemError):
    status = 429
    slug = "rate-limited"
    title = "Too many requests"
    default_detail = "Too many requests; slow down."

    def __init__(self, retry_after: int, detail: str | None = None) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})


class ServiceUnavailable(ProblemError):
    status = 503
    slug = "service-unavailable"
    title = "Service unavailable"
    default_detail = "A dependency is unavailable; try again later."

    def __init__(
        self, detail: str | None = None, *, retry_after: int = RETRY_AFTER_SECONDS
    ) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})


class InternalError(ProblemError):
    """A bug: the detail stays generic, whatever happened."""
