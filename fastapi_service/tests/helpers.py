"""Helpers the tests share: settings, users, items and problem assertions."""

from __future__ import annotations

import functools
import secrets
import uuid
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from fastapi_service import security
from fastapi_service.models import User
from fastapi_service.settings import Settings

TEST_SECRET = "unit-test-secret-" + "x" * 32
PASSWORD = "correct horse battery"


def make_settings(var_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "var_dir": var_dir,
        "jwt_secret": TEST_SECRET,
        "migrate_on_start": False,
        "log_level": "warning",
        **overrides,
    }
    return Settings(**values)


def new_email() -> str:
    return f"user-{secrets.token_hex(6)}@example.test"


@functools.cache
def _password_hash() -> str:
    return security.hash_password(PASSWORD)


async def make_user(app: FastAPI) -> dict[str, str]:
    """A user stored directly (argon2 once per run, not per test); its Authorization header."""
    async with app.state.session_factory() as session:
        user = User(email=new_email(), password_hash=_password_hash())
        session.add(user)
        await session.commit()
    token = security.create_access_token(user.id, app.state.settings).token
    return {"Authorization": f"Bearer {token}"}


async def sign_up(client: httpx.AsyncClient) -> dict[str, str]:
    """A new user; returns the Authorization header of a fresh token for it."""
    email = new_email()
    created = await client.post("/api/v1/users", json={"email": email, "password": PASSWORD})
    assert created.status_code == 201, created.text
    answer = await client.post("/api/v1/auth/token", data={"username": email, "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


async def create_item(
    client: httpx.AsyncClient, auth: dict[str, str], **fields: Any
) -> dict[str, Any]:
    body = {"name": f"item {uuid.uuid4().hex[:6]}", "price": 10, **fields}
    answer = await client.post("/api/v1/items", json=body, headers=auth)
    assert answer.status_code == 201, answer.text
    item: dict[str, Any] = answer.json()
    return item


def assert_problem(answer: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = answer.json()
    assert body["type"] == f"urn:problem:{slug}"
    assert body["status"] == status
    assert isinstance(body["title"], str)
    assert isinstance(body["detail"], str)
    assert "Traceback" not in answer.text
    return body


def locations(answer: httpx.Response) -> list[str]:
    return [issue["location"] for issue in answer.json()["errors"]]
