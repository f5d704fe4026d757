"""/api/v1/users: registration and the signed-in user."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from ..deps import ContractRoute, CurrentUserId, SessionDep, limit_anonymous_writes
from ..docs import headers, problems
from ..models import User
from . import service
from .schemas import UserCreate, UserPublic

router = APIRouter(prefix="/api/v1/users", tags=["users"], route_class=ContractRoute)
ME_PATH = "/api/v1/users/me"


@router.post(
    "",
    operation_id="create_user",
    status_code=201,
    response_model=UserPublic,
    response_description="The user was created.",
    responses={201: headers("Location"), **problems(400, 405, 409, 413, 415, 422, 429, 503)},
    openapi_extra={"security": []},
    dependencies=[Depends(limit_anonymous_writes)],
)
async def create_user(body: UserCreate, session: SessionDep, response: Response) -> User:
    """Register a user"""
    user = await service.create_user(session, body.model_dump())
    response.headers["Location"] = ME_PATH
    return user


@router.get(
    "/me",
    operation_id="read_me",
    response_model=UserPublic,
    response_description="The signed-in user.",
    responses=problems(401, 405, 429, 503),
)
async def read_me(user_id: CurrentUserId, session: SessionDep) -> User:
    """Read the signed-in user"""
    return await service.get_user(session, user_id)
