"""The one place that renders `application/problem+json` (contract/README.md, "Errors").

flask-smorest's own `{code, status, errors}` answers are replaced here: validation errors,
HTTP errors raised by werkzeug (404, 405, 413), database outages (503) and, last, anything
unexpected (500).
"""

from __future__ import annotations

import http
import json
import logging
from typing import Any

from flask import Flask, Response, request
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm.exc import StaleDataError
from werkzeug.exceptions import HTTPException

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
)

PROBLEM_MEDIA_TYPE = "application/problem+json"
# webargs names its locations after the request attribute; the contract after the source.
_SOURCES = {
    "json": "body",
    "form": "body",
    "query": "query",
    "querystring": "query",
    "headers": "header",
    "path": "path",
    "view_args": "path",
}
_BY_STATUS: dict[int, type[ProblemError]] = {
    400: MalformedRequest,
    404: NotFound,
    413: ContentTooLarge,
    415: UnsupportedMediaType,
}
_IMPLICIT_METHODS = {"HEAD", "OPTIONS"}

logger = logging.getLogger(__name__)


def problem_response(problem: ProblemError) -> Response:
    response = Response(
        json.dumps(problem.to_dict()), status=problem.status, mimetype=PROBLEM_MEDIA_TYPE
    )
    response.headers.update(problem.headers)
    return response


def problem_error_handler(exc: ProblemError) -> Response:
    return problem_response(exc)


def validation_issues(messages: Any, path: tuple[str, ...] = ()) -> list[dict[str, str]]:
    """webargs' `{"json": {"tags": {3: [msg]}}}` as the contract's `body.tags.3` issues."""
    if isinstance(messages, dict):
        issues: list[dict[str, str]] = []
        for key, value in messages.items():
            if not path:
                issues += validation_issues(value, (_SOURCES.get(str(key), str(key)),))
            elif key == "_schema":  # the body as a whole
                issues += validation_issues(value, path)
            else:  # a field named "" is still a field: `body.`
                issues += validation_issues(value, (*path, str(key)))
        return issues
    if isinstance(messages, list | tuple):
        return [issue for message in messages for issue in validation_issues(message, path)]
    return [{"location": ".".join(path) or "body", "message": str(messages)}]


def allowed_methods(exc: HTTPException) -> list[str]:
    """werkzeug's valid methods for the path, less the HEAD/OPTIONS the contract never lists."""
    valid = getattr(exc, "valid_methods", None) or []
    return sorted(set(valid) - _IMPLICIT_METHODS)


def http_exception_handler(exc: HTTPException) -> Response:
    status = exc.code or 500
    if status == 405:
        return problem_response(MethodNotAllowed(allowed_methods(exc)))
    problem_class = _BY_STATUS.get(status)
    if problem_class is not None:
        return problem_response(problem_class())
    if status >= 500:
        return unhandled_error_handler(exc)
    phrase = http.HTTPStatus(status).phrase
    body = {
        "type": f"urn:problem:{phrase.lower().replace(' ', '-')}",
        "title": phrase,
        "status": status,
        "detail": phrase + ".",
    }
    return Response(json.dumps(body), status=status, mimetype=PROBLEM_MEDIA_TYPE)


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


def database_error_handler(exc: Exception) -> Response:
    if isinstance(exc, StaleDataError):
        # Another writer changed the row between our read and our UPDATE ... WHERE version.
        return problem_response(PreconditionFailed("The item changed; read it again."))
    if is_unavailable(exc):
        logger.warning("database unavailable: %s", type(exc).__name__, exc_info=exc)
        return problem_response(ServiceUnavailable("The database is unavailable."))
    return unhandled_error_handler(exc)


def unhandled_error_handler(exc: Exception) -> Response:
    original = getattr(exc, "original_exception", None)
    if isinstance(original, Exception) and original is not exc:
        # Flask wraps an error escaping an after_request or teardown hook in a 500.
        if isinstance(original, ProblemError):
            return problem_response(original)
        return database_error_handler(original)
    logger.error("unhandled error in %s %s", request.method, request.path, exc_info=exc)
    return problem_response(InternalError())


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(ProblemError, problem_error_handler)
    app.register_error_handler(HTTPException, http_exception_handler)
    for database_error in (StaleDataError, sa_exc.SQLAlchemyError, OSError):
        app.register_error_handler(database_error, database_error_handler)
    app.register_error_handler(Exception, unhandled_error_handler)
