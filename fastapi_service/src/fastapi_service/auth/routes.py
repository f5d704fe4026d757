"""/api/v1/auth/token: the OAuth2 password grant."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request, Response

from ..deps import ContractRoute, SessionDep, SettingsDep, limit_login_account, limit_logins
from ..docs import problems
from . import service
from .schemas import Token, TokenRequest

router = APIRouter(prefix="/api/v1/auth", tags=["auth"], route_class=ContractRoute)
NO_STORE_HEADER = {
    "description": "Always `no-store` for a token response.",
    "required": True,
    "schema": {"type": "string", "const": "no-store"},
}


@router.post(
    "/token",
    operation_id="create_token",
    response_model=Token,
    response_description="An access token (OAuth2 password grant, RFC 6749 section 4.3).",
    responses={
        200: {"headers": {"Cache-Control": NO_STORE_HEADER}},
        **problems(400, 401, 405, 413, 415, 422, 429, 503),
    },
    openapi_extra={"security": []},
    dependencies=[Depends(limit_logins)],
)
async def create_token(
    form: Annotated[TokenRequest, Form()],
    session: SessionDep,
    settings: SettingsDep,
    request: Request,
    response: Response,
) -> Token:
    """Exchange email and password for an access token"""
    await limit_login_account(request, form.username)
    token = await service.create_token(session, form.username, form.password, settings)
    response.headers["Cache-Control"] = "no-store"
    body = {"access_token": token.token, "token_type": "bearer", "expires_in": token.expires_in}
    return Token.model_validate(body)
