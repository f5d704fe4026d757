"""Request-scoped dependencies (`SessionDep`, `CurrentUserId`) and the contract's check order.

The token check decodes the JWT and reads no database row: the user id is the `sub` claim.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import Depends, Request, params
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import FormData, UploadFile
from starlette.responses import Response
from starlette.types import Message, Receive

from .db import SNAPSHOT_READ
from .problems import ContentTooLarge, MalformedRequest, Unauthorized, UnsupportedMediaType
from .ratelimits import client_address
from .security import InvalidToken, decode_access_token
from .settings import Settings

JSON_MEDIA_TYPE = "application/json"
FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


async def get_settings(request: Request) -> Settings:
    # async although it awaits nothing: FastAPI runs a plain `def` dependency in its thread
    # pool, a hop that cost more than the whole lookup on every request.
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request: a write commits on success and rolls back (on close) on any
    error; a read (GET) gets one without a transaction to commit (db.read_only_engine)."""
    if request.method not in WRITE_METHODS:
        async with request.app.state.read_session_factory() as session:
            yield session
        return
    async with request.app.state.session_factory() as session:
        yield session
        await session.commit()


# scope="function": the commit runs before the response is sent, so a failed commit becomes
# its problem response instead of a 200 for a change that was never stored.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


async def get_snapshot_session(request: Request) -> AsyncIterator[AsyncSession]:
    """A read-only session for a streamed response, closed once the response is done.

    It is connected here, so an unreachable database is a 503 before anything is sent, and
    it reads from a snapshot that never holds a write lock (db.SNAPSHOT_READ).
    """
    async with request.app.state.session_factory() as session:
        await session.connection(execution_options=SNAPSHOT_READ)
        yield session


# scope="request": the session stays open while the body streams, and closes when the stream
# ends or the client goes away.
SnapshotSessionDep = Annotated[AsyncSession, Depends(get_snapshot_session, scope="request")]


def authenticate(credentials: HTTPAuthorizationCredentials | None, settings: Settings) -> uuid.UUID:
    if credentials is None:
        raise Unauthorized()
    try:
        return decode_access_token(credentials.credentials, settings)
    except InvalidToken as exc:
        raise Unauthorized("The access token is invalid or expired.", token_sent=True) from exc


class BearerUser(HTTPBearer):
    """The bearer scheme (`bearerAuth` in the spec) whose value is the signed-in user's id.

    One dependency where a function taking the scheme's credentials and SettingsDep would be
    three: FastAPI solves each sub-dependency on every request (the two cost 6 % of an item
    read's instructions, loadtests/profile_read.py).
    """

    async def __call__(self, request: Request) -> uuid.UUID:  # type: ignore[override]
        settings: Settings = request.app.state.settings
        return authenticate(await super().__call__(request), settings)


current_user_id = BearerUser(
    scheme_name="bearerAuth",
    bearerFormat="JWT",
    description="An access token from `POST /api/v1/auth/token`.",
    auto_error=False,  # a missing token is the contract's 401 problem, not FastAPI's
)
CurrentUserId = Annotated[uuid.UUID, Depends(current_user_id)]
_RATE_LIMITED = "fastapi_service.rate_limited"


def client_ip(request: Request) -> str:
    """The peer's address, or X-Forwarded-For's from a TRUSTED_PROXIES peer (contract/README.md,
    "Rate limits")."""
    peer = request.client.host if request.client else ""
    trusted = request.app.state.rate_limits.trusted_proxies
    return client_address(peer, request.headers.get("X-Forwarded-For"), trusted) or "unknown"


def _first_check(request: Request) -> bool:
    """True once per request: ContractRoute runs a route's limit before FastAPI would."""
    if request.scope.get(_RATE_LIMITED):
        return False
    request.scope[_RATE_LIMITED] = True
    return True


async def limit_writes(request: Request, user_id: CurrentUserId) -> None:
    """429 once the caller's write limits are reached (per user, per address); runs after the
    token check and before the body is read. Reads are not limited."""
    if request.method in WRITE_METHODS and _first_check(request):
        await request.app.state.rate_limits.check_writes(user_id, client_ip(request))


# On each write route (not the router): a router's dependencies are solved for its reads too,
# where this one has nothing to do but still costs FastAPI a dependency to solve per request.
LimitWrites = Depends(limit_writes)


async def limit_anonymous_writes(request: Request) -> None:
    """429 once the client address has used up its writes (sign-up: nobody is signed in)."""
    if request.method in WRITE_METHODS and _first_check(request):
        await request.app.state.rate_limits.check_writes(None, client_ip(request))


async def limit_logins(request: Request) -> None:
    """429 once the client address has used up its login attempts (before the form is read)."""
    if _first_check(request):
        await request.app.state.rate_limits.check_login(client_ip(request))


async def limit_login_account(request: Request, email: str) -> None:
    """429 once this account (known or not) has used up its login attempts."""
    await request.app.state.rate_limits.check_login(client_ip(request), email)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


class ContractRequest(Request):
    """A request whose body counts against MAX_BODY_BYTES and whose JSON and form are strict.

    A `\\ud800` escape without its pair parses in Python but is no text UTF-8 can carry (the
    database and argon2 would fail on it later), so it counts as invalid UTF-8, as in Flask.
    """

    def __init__(self, request: Request, max_body_bytes: int) -> None:
        super().__init__(request.scope, _limited(request.receive, max_body_bytes))

    async def json(self) -> Any:
        # Strict UTF-8, and no NaN/Infinity: Python's json module would accept both.
        text = (await self.body()).decode("utf-8")
        value = json.loads(text, parse_constant=_reject_constant)
        if _SURROGATE_ESCAPE.search(text):
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        return value

    async def form(self, **_limits: Any) -> FormData:  # type: ignore[override]
        # Starlette decodes form bytes as Latin-1 and replaces bad UTF-8; a 400 is the contract.
        try:
            text = (await self.body()).decode("utf-8")
            fields: list[tuple[str, str | UploadFile]] = []
            fields.extend(parse_qsl(text, keep_blank_values=True, errors="strict"))
            return FormData(fields)
        except UnicodeError:
            raise MalformedRequest("The form body is not valid UTF-8.") from None


def _limited(receive: Receive, max_body_bytes: int) -> Receive:
    received = 0

    async def receive_within_limit() -> Message:
        nonlocal received
        message = await receive()
        received += len(message.get("body", b""))
        if received > max_body_bytes:
            raise ContentTooLarge()
        return message

    return receive_within_limit


def _depends_on(dependant: Dependant, call: Callable[..., Any]) -> bool:
    return any(sub.call is call or _depends_on(sub, call) for sub in dependant.dependencies)


def _media_type_ok(content_type: str | None, expected: str, body: bytes) -> bool:
    if not content_type:
        return not body  # no body and no type: let validation say the body is missing
    return content_type.split(";", 1)[0].strip().lower() == expected


class ContractRoute(APIRoute):
    """An APIRoute that runs the contract's early checks, in its order, before FastAPI reads
    the body: 413 (declared or streamed), 401 (protected routes), 429 (the route's rate limit),
    415, then 400 and 422.

    FastAPI parses the body before it solves dependencies, so on its own a malformed body
    would beat a missing token.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()
        if self.body_field is None:
            return handle
        is_form = isinstance(self.body_field.field_info, params.Form)
        media_type = FORM_MEDIA_TYPE if is_form else JSON_MEDIA_TYPE
        protected = _depends_on(self.dependant, current_user_id)
        writes = _depends_on(self.dependant, limit_writes)
        anonymous_writes = _depends_on(self.dependant, limit_anonymous_writes)
        logins = _depends_on(self.dependant, limit_logins)

        async def contract_handler(request: Request) -> Response:
            settings: Settings = request.app.state.settings
            declared = request.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > settings.max_body_bytes:
                raise ContentTooLarge()
            request = ContractRequest(request, settings.max_body_bytes)
            body = await request.body()
            if protected:
                user_id = await current_user_id(request)
                if writes:
                    await limit_writes(request, user_id)
            if anonymous_writes:
                await limit_anonymous_writes(request)
            if logins:
                await limit_logins(request)
            if not _media_type_ok(request.headers.get("content-type"), media_type, body):
                raise UnsupportedMediaType(f"This operation takes {media_type}.")
            return await handle(request)

        return contract_handler
