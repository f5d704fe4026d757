"""/api/v1/auth/token: the OAuth2 password grant."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from ..deps import LOGIN, Blueprint, get_session, get_settings, limit_login_account
from ..docs import problems
from . import service
from .schemas import Token, TokenRequest

blp = Blueprint("auth", __name__, url_prefix="/api/v1/auth")
NO_STORE_HEADER = {
    "description": "Always `no-store` for a token response.",
    "required": True,
    "schema": {"type": "string", "const": "no-store"},
}


@blp.route("/token")
class AccessTokens(MethodView):
    decorators = LOGIN

    @blp.doc(
        operationId="create_token",
        security=[],
        responses=problems(400, 401, 405, 413, 415, 422, 429, 503),
    )
    @blp.arguments(TokenRequest(), location="form")
    @blp.response(
        200,
        Token,
        description="An access token (OAuth2 password grant, RFC 6749 section 4.3).",
        headers={"Cache-Control": NO_STORE_HEADER},
    )
    def post(self, form: dict[str, Any]) -> Any:
        """Exchange email and password for an access token"""
        limit_login_account(form["username"])
        token = service.create_token(
            get_session(), form["username"], form["password"], get_settings()
        )
        body = {"access_token": token.token, "token_type": "bearer", "expires_in": token.expires_in}
        return body, {"Cache-Control": "no-store"}
