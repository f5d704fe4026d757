"""create_user and read_me."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import delete, func, select

from fastapi_service.models import User
from helpers import PASSWORD, assert_problem, locations, new_email, sign_up

pytestmark = pytest.mark.anyio


async def _count_users(app: FastAPI, email: str) -> int:
    async with app.state.session_factory() as session:
        return int(await session.scalar(select(func.count()).where(User.email == email)) or 0)


async def test_create_user_answers_201_with_location(client: httpx.AsyncClient) -> None:
    email = new_email().upper()
    answer = await client.post(
        "/api/v1/users", json={"email": email, "password": PASSWORD, "full_name": "Ann"}
    )
    assert answer.status_code == 201, answer.text
    assert answer.headers["location"] == "/api/v1/users/me"
    body = answer.json()
    assert set(body) == {"id", "email", "full_name", "created_at"}
    assert body["email"] == email.lower()
    assert body["full_name"] == "Ann"
    assert dt.datetime.fromisoformat(body["created_at"]).utcoffset() == dt.timedelta(0)
    assert PASSWORD not in answer.text


async def test_full_name_defaults_to_empty(client: httpx.AsyncClient) -> None:
    answer = await client.post("/api/v1/users", json={"email": new_email(), "password": PASSWORD})
    assert answer.json()["full_name"] == ""


async def test_email_is_unique_case_insensitively(client: httpx.AsyncClient, app: FastAPI) -> None:
    email = new_email()
    first = await client.post("/api/v1/users", json={"email": email, "password": PASSWORD})
    assert first.status_code == 201
    again = await client.post("/api/v1/users", json={"email": email.upper(), "password": PASSWORD})
    problem = assert_problem(again, 409, "email-taken")
    assert problem["title"] == "Email already registered"
    assert await _count_users(app, email) == 1


async def test_concurrent_sign_ups_make_one_user(client: httpx.AsyncClient, app: FastAPI) -> None:
    import anyio

    email = new_email()
    statuses: list[int] = []

    async def sign_up_once() -> None:
        answer = await client.post("/api/v1/users", json={"email": email, "password": PASSWORD})
        statuses.append(answer.status_code)

    async with anyio.create_task_group() as group:
        for _ in range(4):
            group.start_soon(sign_up_once)
    assert sorted(statuses) == [201, 409, 409, 409]
    assert await _count_users(app, email) == 1


@pytest.mark.parametrize(
    ("body", "location"),
    [
        ({"email": "not-an-email", "password": PASSWORD}, "body.email"),
        ({"email": "a b@c.d", "password": PASSWORD}, "body.email"),
        ({"email": "EMAIL", "password": "short"}, "body.password"),
        ({"email": "EMAIL", "password": "x" * 129}, "body.password"),
        ({"email": "EMAIL", "password": "nul\u0000password"}, "body.password"),
        ({"email": "EMAIL", "password": 12345678}, "body.password"),
        ({"email": "EMAIL", "password": PASSWORD, "full_name": None}, "body.full_name"),
        ({"email": "EMAIL", "password": PASSWORD, "full_name": "x" * 101}, "body.full_name"),
        ({"email": "EMAIL", "password": PASSWORD, "id": "x"}, "body.id"),
        ({"email": "EMAIL"}, "body.password"),
    ],
)
async def test_invalid_bodies_are_422_and_store_nothing(
    client: httpx.AsyncClient, app: FastAPI, body: dict[str, object], location: str
) -> None:
    email = new_email()
    body = {name: (email if value == "EMAIL" else value) for name, value in body.items()}
    answer = await client.post("/api/v1/users", json=body)
    assert_problem(answer, 422, "validation-error")
    assert location in locations(answer)
    assert await _count_users(app, email) == 0


async def test_read_me_answers_the_signed_in_user(client: httpx.AsyncClient) -> None:
    auth = await sign_up(client)
    answer = await client.get("/api/v1/users/me", headers=auth)
    assert answer.status_code == 200
    assert set(answer.json()) == {"id", "email", "full_name", "created_at"}


async def test_read_me_needs_a_token(client: httpx.AsyncClient) -> None:
    answer = await client.get("/api/v1/users/me")
    assert_problem(answer, 401, "unauthorized")
    assert answer.headers["www-authenticate"] == 'Bearer realm="api"'


async def test_read_me_for_a_deleted_user_is_401(client: httpx.AsyncClient, app: FastAPI) -> None:
    auth = await sign_up(client)
    me = (await client.get("/api/v1/users/me", headers=auth)).json()
    async with app.state.session_factory() as session:
        await session.execute(delete(User).where(User.email == me["email"]))
        await session.commit()
    answer = await client.get("/api/v1/users/me", headers=auth)
    assert_problem(answer, 401, "unauthorized")
    assert 'error="invalid_token"' in answer.headers["www-authenticate"]
