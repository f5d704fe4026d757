"""Request-scoped dependencies (session, current user id) and the contract's check order.

The token check decodes the JWT and reads no database row: the user id is the `sub` claim.
"""

from __future__ import annotations

import io
import json
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import wraps
from typing import Any, NoReturn, TypeVar, cast
from urllib.parse import parse_qsl

import flask_smorest
import marshmallow as ma
from celery import Celery
from flask import Request, current_app, g, request
from flask.json.provider import DefaultJSONProvider
from redis import Redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from webargs.flaskparser import FlaskParser
from werkzeug.datastructures import MultiDict

from .db import SNAPSHOT_READ
from .errors import validation_issues
from .observability import Metrics
from .problems import (
    ContentTooLarge,
    MalformedRequest,
    Unauthorized,
    UnsupportedMediaType,
    ValidationFailed,
)
from .ratelimits import RateLimits, client_address
from .security import InvalidToken, decode_access_token
from .settings import Settings

F = TypeVar("F", bound=Callable[..., Any])
JSON_MEDIA_TYPE = "application/json"
FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"
STATE_KEY = "flask_service"
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


@dataclass(frozen=True)
class AppState:
    """What create_app builds once per app (FastAPI keeps the same things in `app.state`)."""

    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    read_session_factory: sessionmaker[Session]
    metrics: Metrics
    redis: Redis | None
    celery: Celery
    rate_limits: RateLimits


def app_state() -> AppState:
    return cast(AppState, current_app.extensions[STATE_KEY])


def get_settings() -> Settings:
    return app_state().settings


def get_session() -> Session:
    """One session per request, opened on first use and closed by `close_session`; a read
    (GET) gets one without a transaction to commit (db.read_only_engine)."""
    if "db_session" not in g:
        state = app_state()
        factory = (
            state.session_factory if request.method in WRITE_METHODS else state.read_session_factory
        )
        g.db_session = factory()
    return cast(Session, g.db_session)


def get_snapshot_session() -> Session:
    """A read-only session for a streamed response, which the caller must close.

    It is connected here, so an unreachable database is a 503 before anything is sent, and
    it reads from a snapshot that never holds a write lock (db.SNAPSHOT_READ).
    """
    session = app_state().session_factory()
    try:
        session.connection(execution_options=SNAPSHOT_READ)
    except BaseException:
        session.close()
        raise
    return session


def close_session(_exc: BaseException | None = None) -> None:
    """Teardown: closing rolls back whatever a failed request left uncommitted."""
    session: Session | None = g.pop("db_session", None)
    if session is not None:
        session.close()


def transactional(view: F) -> F:
    """Commit a write when the view returns; an exception skips the commit and teardown rolls
    back. A read (GET) has nothing to commit.

    The commit runs before the response leaves, so a failed commit becomes its problem
    response (503, 412...) instead of a 2xx for a change that was never stored.
    """

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        response = view(*args, **kwargs)
        if "db_session" in g and request.method in WRITE_METHODS:
            g.db_session.commit()
        return response

    return cast(F, wrapper)


def authenticate(authorization: str | None, settings: Settings) -> uuid.UUID:
    scheme, _, credentials = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        raise Unauthorized()
    try:
        return decode_access_token(credentials.strip(), settings)
    except InvalidToken as exc:
        raise Unauthorized("The access token is invalid or expired.", token_sent=True) from exc


def auth_required(view: F) -> F:
    """401 unless the request carries a valid bearer token (checked before the body is read)."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        g.user_id = authenticate(request.headers.get("Authorization"), get_settings())
        return view(*args, **kwargs)

    return cast(F, wrapper)


def client_ip() -> str:
    """The peer's address, or X-Forwarded-For's from a TRUSTED_PROXIES peer (contract/README.md,
    "Rate limits")."""
    trusted = app_state().rate_limits.trusted_proxies
    return client_address(
        request.remote_addr or "", request.headers.get("X-Forwarded-For"), trusted
    )


def limit_writes(view: F) -> F:
    """429 once the caller's write limits are reached (per user when signed in, per address);
    runs after the token check and before the body is read. Reads are not limited."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if request.method in WRITE_METHODS:
            app_state().rate_limits.check_writes(g.get("user_id"), client_ip())
        return view(*args, **kwargs)

    return cast(F, wrapper)


def limit_logins(view: F) -> F:
    """429 once the client address has used up its login attempts (before the form is read)."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        app_state().rate_limits.check_login(client_ip())
        return view(*args, **kwargs)

    return cast(F, wrapper)


def limit_login_account(email: str) -> None:
    """429 once this account (known or not) has used up its login attempts."""
    app_state().rate_limits.check_login(client_ip(), email)


# MethodView.decorators for every API view: the last one listed runs first, so the token is
# checked before anything else, then the rate limits, and the commit happens after the view
# has answered.
SIGNED_IN: list[Callable[..., Any]] = [transactional, limit_writes, auth_required]
ANONYMOUS: list[Callable[..., Any]] = [transactional, limit_writes]
LOGIN: list[Callable[..., Any]] = [transactional, limit_logins]


def current_user_id() -> uuid.UUID:
    return cast(uuid.UUID, g.user_id)


def path_uuid(name: str, value: str) -> uuid.UUID:
    """A path id, or a 422 at `path.<name>` (werkzeug's uuid converter would answer 404)."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise ValidationFailed(
            [{"location": f"path.{name}", "message": "Not a valid UUID."}]
        ) from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


class StrictJSONProvider(DefaultJSONProvider):
    """Strict UTF-8, no NaN/Infinity, and any parse failure (deep nesting too) is a 400.

    A `\\ud800` escape without its pair parses in Python but is no text UTF-8 can carry
    (the database and argon2 would fail on it later), so it counts as invalid UTF-8.
    """

    sort_keys = False

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        try:
            text = s.decode("utf-8") if isinstance(s, bytes) else s
            value = json.loads(text, parse_constant=_reject_constant)
            if _SURROGATE_ESCAPE.search(text):
                json.dumps(value, ensure_ascii=False).encode("utf-8")
        except (ValueError, RecursionError) as exc:  # JSONDecode-, UnicodeDe/Encode- too
            raise MalformedRequest("The body is not valid JSON.") from exc
        return value


def limit_body_size() -> None:
    """before_request: 413 for a body over MAX_BODY_BYTES, declared or chunked.

    Running before the views puts 413 ahead of 401 (a 404 or 405 from routing still comes
    first). A chunked body is read here, at most one byte past the limit, and handed on as a
    sized body: werkzeug's own limit would cut it at the limit without telling anyone.
    """
    if request.routing_exception is not None:
        return
    limit = get_settings().max_body_bytes
    if request.content_length is not None:
        if request.content_length > limit:
            raise ContentTooLarge()
        return
    environ = request.environ
    if "chunked" not in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        return
    body = environ["wsgi.input"].read(limit + 1)
    if len(body) > limit:
        raise ContentTooLarge()
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    del environ["HTTP_TRANSFER_ENCODING"]  # what follows reads a sized body


def _media_type_ok(req: Request, expected: str, body: bytes) -> bool:
    if not req.content_type:
        return not body  # no body and no type: let validation say the body is missing
    return req.mimetype == expected


class RequestParser(FlaskParser):
    """webargs' parser in the contract's order: 415, then 400, then 422 (after the 401)."""

    def load_json(self, req: Request, schema: ma.Schema) -> Any:
        body = req.get_data(cache=True)
        if not _media_type_ok(req, JSON_MEDIA_TYPE, body):
            raise UnsupportedMediaType(f"This operation takes {JSON_MEDIA_TYPE}.")
        if not body:
            raise ValidationFailed([{"location": "body", "message": "A JSON body is required."}])
        return current_app.json.loads(body)

    def load_form(self, req: Request, schema: ma.Schema) -> Any:
        body = req.get_data(cache=True)
        if not _media_type_ok(req, FORM_MEDIA_TYPE, body):
            raise UnsupportedMediaType(f"This operation takes {FORM_MEDIA_TYPE}.")
        try:  # werkzeug would replace invalid UTF-8 silently; the contract wants a 400
            pairs = parse_qsl(body.decode(), keep_blank_values=True, errors="strict")
        except UnicodeDecodeError:
            raise MalformedRequest("The form body is not valid UTF-8.") from None
        return self._makeproxy(MultiDict(pairs), schema)

    def handle_error(
        self,
        error: ma.ValidationError,
        req: Request,
        schema: ma.Schema,
        *,
        error_status_code: int | None,
        error_headers: Mapping[str, str] | None,
    ) -> NoReturn:
        raise ValidationFailed(validation_issues(error.messages))


class Blueprint(flask_smorest.Blueprint):
    """flask-smorest's Blueprint, parsing with the contract's RequestParser."""

    ARGUMENTS_PARSER = RequestParser()
