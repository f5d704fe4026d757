"""Registration and the signed-in user."""

from __future__ import annotations

import datetime as dt
import uuid

from flask.testing import FlaskClient

from conftest import PASSWORD, User, data, locations, problem, register


def test_register_lowercases_the_email_and_hides_the_hash(client: FlaskClient) -> None:
    email = f"Mixed.{uuid.uuid4().hex[:8]}@Example.TEST"
    answer = client.post(
        "/api/v1/users", json={"email": email, "password": PASSWORD, "full_name": "Ada"}
    )
    assert answer.status_code == 201
    assert answer.headers["Location"] == "/api/v1/users/me"
    body = data(answer)
    assert set(body) == {"id", "email", "full_name", "created_at"}
    assert body["email"] == email.lower()
    assert body["full_name"] == "Ada"
    assert dt.datetime.fromisoformat(body["created_at"]).utcoffset() == dt.timedelta(0)


def test_email_is_unique_case_insensitively(client: FlaskClient, user: User) -> None:
    answer = client.post("/api/v1/users", json={"email": user.email.upper(), "password": PASSWORD})
    problem(answer, 409, "email-taken")


def test_short_password_and_bad_email_are_422(client: FlaskClient) -> None:
    answer = client.post("/api/v1/users", json={"email": "not-an-email", "password": "short"})
    problem(answer, 422, "validation-error")
    assert sorted(locations(answer)) == ["body.email", "body.password"]


def test_register_login_read_me(client: FlaskClient) -> None:
    user = register(client, email=f"Me-{uuid.uuid4().hex[:8]}@example.test")
    answer = client.get("/api/v1/users/me", headers=user.auth)
    assert answer.status_code == 200
    assert data(answer)["id"] == user.id
    assert data(answer)["email"] == user.email
