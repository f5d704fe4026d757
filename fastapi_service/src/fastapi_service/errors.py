"""The one place that renders `application/problem+json` (contract/README.md, "Errors").

FastAPI's own `{"detail": ...}` answers are replaced here: validation errors, HTTP errors
raised by the router (404, 405), database outages (503) and, last, anything unexpected (500).
"""

from __future__ import annotations

import http
import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm.exc import StaleDataError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from .problems import (
    ContentTooLarge,
    InternalError,
    MalformedRequest,
    MethodNotAllowed,
    NotFound,
    PreconditionFailed,
    ProblemError,
    ServiceUnavailable,
    UnsupportedMediaType,
    ValidationFailed,
)

PROBLEM_MEDIA_TYPE = "application/problem+json"
_SOURCES = ("body", "query", "path", "header")
# Header names whose usual spelling is not one capitalised word per dash-separated part.
_HEADER_SPELLINGS = {"last-event-id": "Last-Event-ID"}
_BY_STATUS: dict[int, type[ProblemError]] = {
    400: MalformedRequest,
    404: NotFound,
    413: ContentTooLarge,
    415: UnsupportedMediaType,
}

logger = logging.getLogger(__name__)


def problem_response(problem: ProblemError) -> JSONResponse:
    return JSONResponse(
        problem.to_dict(),
        status_code=problem.status,
        headers=problem.headers,
        media_type=PROBLEM_MEDIA_TYPE,
    )


async def problem_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProblemError)
    return problem_response(exc)


def issue_location(loc: Sequence[Any]) -> str:
    """Pydantic's `("body", "tags", 3)` as the contract's `body.tags.3`."""
    parts = [str(part) for part in loc]
    if not parts or parts[0] not in _SOURCES:
        return ".".join(["body", *parts])
    if parts[0] == "header" and len(parts) > 1:
        # FastAPI reports header names lower-cased; the contract spells them like HTTP does.
        parts[1] = _HEADER_SPELLINGS.get(parts[1].lower()) or "-".join(
            word.capitalize() for word in parts[1].split("-")
        )
    return ".".join(parts)


async def request_validation_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    issues = exc.errors()
    if any(issue.get("type") == "json_invalid" for issue in issues):
        return problem_response(MalformedRequest("The body is not valid JSON."))
    errors = [
        {"location": issue_location(issue.get("loc", ())), "message": str(issue.get("msg", ""))}
        for issue in issues
    ]
    return problem_response(ValidationFailed(errors))


def allowed_methods(request: Request) -> list[str]:
    """Every method the app routes for the matched path (FastAPI's own Allow names only one:
    it has one route per method)."""
    path = getattr(request.scope.get("route"), "path", None)
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.routes):
        if path is not None and route.path == path:
            methods.update(route.methods or ())
    return sorted(methods)


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 405:
        return problem_response(MethodNotAllowed(allowed_methods(request)))
    problem_class = _BY_STATUS.get(exc.status_code)
    if problem_class is not None:
        return problem_response(problem_class())
    if exc.status_code >= 500:
        return problem_response(InternalError())
    phrase = http.HTTPStatus(exc.status_code).phrase
    body = {
        "type": f"urn:problem:{phrase.lower().replace(' ', '-')}",
        "title": phrase,
        "status": exc.status_code,
        "detail": phrase + ".",
    }
    return JSONResponse(body, exc.status_code, headers=exc.headers, media_type=PROBLEM_MEDIA_TYPE)


# SQLSTATEs that mean "the database cannot serve anyone right now", whatever class a driver
# gives them (asyncpg's "too many clients" reaches SQLAlchemy as a plain DBAPIError): class 08
# connection exception, class 53 insufficient resources (too many connections, disk full, out of
# memory), 57P01-57P03 administrator/crash shutdown and "cannot connect now" (still starting).
UNAVAILABLE_SQLSTATES = ("08", "53", "57P01", "57P02", "57P03")


def _sqlstate(exc: BaseException) -> str:
    """The SQLSTATE a driver attached to `exc` or to what it wraps, or ""."""
    seen: BaseException | None = exc
    for _ in range(4):  # the DBAPIError, the driver's error, what that one wraps
        if seen is None:
            break
        code = getattr(seen, "sqlstate", None) or getattr(seen, "pgcode", None)
        if isinstance(code, str) and code:
            return code
        orig = getattr(seen, "orig", None)
        seen = orig if isinstance(orig, BaseException) else seen.__cause__
    return ""


def is_unavailable(exc: BaseException) -> bool:
    """True when the database cannot be reached (refused, dropped, locked, pool exhausted)."""
    if isinstance(exc, sa_exc.DBAPIError):
        return (
            exc.connection_invalidated
            or isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError)
            or _sqlstate(exc).startswith(UNAVAILABLE_SQLSTATES)
        )
    return isinstance(exc, OSError | sa_exc.TimeoutError | sa_exc.DisconnectionError)


async def database_error_handler(request: Request, exc: Exception) -> Response:
    if isinstance(exc, StaleDataError):
        # Another writer changed the row between our read and our UPDATE ... WHERE version.
        return problem_response(PreconditionFailed("The item changed; read it again."))
    if is_unavailable(exc):
        logger.warning("database unavailable: %s", type(exc).__name__, exc_info=exc)
        return problem_response(ServiceUnavailable("The database is unavailable."))
    return await unhandled_error_handler(request, exc)


async def unhandled_error_handler(request: Request, exc: Exception) -> Response:
    logger.error("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(InternalError())


def register_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ProblemError, problem_error_handler)
    app.add_exception_handler(RequestValidationError, request_validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_exception_handler)
    for database_error in (
        StaleDataError,
        sa_exc.SQLAlchemyError,
        OSError,
    ):
        app.add_exception_handler(database_error, database_error_handler)
