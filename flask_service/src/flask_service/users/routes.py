"""/api/v1/users: registration and the signed-in user."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from ..deps import ANONYMOUS, SIGNED_IN, Blueprint, current_user_id, get_session
from ..docs import headers, problems
from . import service
from .schemas import UserCreate, UserPublic

blp = Blueprint("users", __name__, url_prefix="/api/v1/users")
ME_PATH = "/api/v1/users/me"


@blp.route("")
class Users(MethodView):
    decorators = ANONYMOUS

    @blp.doc(
        operationId="create_user",
        security=[],
        responses=problems(400, 405, 409, 413, 415, 422, 429, 503),
    )
    @blp.arguments(UserCreate())
    @blp.response(201, UserPublic, description="The user was created.", headers=headers("Location"))
    def post(self, body: dict[str, Any]) -> Any:
        """Register a user"""
        user = service.create_user(get_session(), body)
        return user, {"Location": ME_PATH}


@blp.route("/me")
class Me(MethodView):
    decorators = SIGNED_IN

    @blp.doc(operationId="read_me", responses=problems(401, 405, 429, 503))
    @blp.response(200, UserPublic, description="The signed-in user.")
    def get(self) -> Any:
        """Read the signed-in user"""
        return service.get_user(get_session(), current_user_id())
