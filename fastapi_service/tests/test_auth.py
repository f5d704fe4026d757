"""create_token (OAuth2 password form) and the bearer check, which reads no database row."""

from __future__ import annotations

import uuid

import httpx
import jwt
import pytest

from fastapi_service import security
from fastapi_service.settings import Settings
from helpers import PASSWORD, assert_problem, locations, new_email

pytestmark = pytest.mark.anyio


@pytest.fixture
async def email(client: httpx.AsyncClient) -> str:
    address = new_email()
    answer = await client.post("/api/v1/users", json={"email": address, "password": PASSWORD})
    assert answer.status_code == 201
    return address


async def test_token_for_good_credentials(
    client: httpx.AsyncClient, email: str, settings: Settings
) -> None:
    answer = await client.post(
        "/api/v1/auth/token",
        data={"username": email.upper(), "password": PASSWORD, "grant_type": "password"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    body = answer.json()
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == settings.access_token_ttl_seconds
    claims = jwt.decode(
        body["access_token"],
        settings.jwt_secret.get_secret_value(),
        algorithms=["HS256"],
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
    )
    me = await client.get(
        "/api/v1/users/me", headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert claims["sub"] == me.json()["id"]


@pytest.mark.parametrize("who", ["wrong-password", "unknown-email"])
async def test_bad_credentials_are_one_401(client: httpx.AsyncClient, email: str, who: str) -> None:
    username = email if who == "wrong-password" else new_email()
    password = "not the password" if who == "wrong-password" else PASSWORD
    answer = await client.post(
        "/api/v1/auth/token", data={"username": username, "password": password}
    )
    problem = assert_problem(answer, 401, "invalid-credentials")
    assert problem["title"] == "Invalid credentials"
    assert answer.headers["www-authenticate"] == 'Bearer realm="api"'


async def test_token_endpoint_takes_a_form_only(client: httpx.AsyncClient, email: str) -> None:
    answer = await client.post("/api/v1/auth/token", json={"username": email, "password": PASSWORD})
    assert_problem(answer, 415, "unsupported-media-type")


@pytest.mark.parametrize(
    ("form", "location"),
    [
        ({"password": PASSWORD}, "body.username"),
        ({"username": "EMAIL"}, "body.password"),
        ({"username": "EMAIL", "password": PASSWORD, "grant_type": "other"}, "body.grant_type"),
        ({"username": "EMAIL", "password": PASSWORD, "scope": "admin"}, "body.scope"),
        ({"username": "EMAIL", "password": ""}, "body.password"),
    ],
)  # fmt: skip
async def test_invalid_forms_are_422(
    client: httpx.AsyncClient, email: str, form: dict[str, str], location: str
) -> None:
    form = {name: (email if value == "EMAIL" else value) for name, value in form.items()}
    answer = await client.post("/api/v1/auth/token", data=form)
    assert_problem(answer, 422, "validation-error")
    assert location in locations(answer)


async def test_form_with_invalid_utf8_is_400(client: httpx.AsyncClient) -> None:
    answer = await client.post(
        "/api/v1/auth/token",
        content=b"username=a%FF%FE&password=x",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert_problem(answer, 400, "malformed-request")


async def test_non_ascii_password_round_trips(client: httpx.AsyncClient) -> None:
    address, password = new_email(), "pässwörd-ünïcode"
    created = await client.post("/api/v1/users", json={"email": address, "password": password})
    assert created.status_code == 201
    answer = await client.post(
        "/api/v1/auth/token", data={"username": address, "password": password}
    )
    assert answer.status_code == 200, answer.text


async def test_the_token_check_reads_no_user_row(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    # A valid token for a user that was never stored: the item routes still accept it,
    # because only GET /users/me looks the user up.
    token = security.create_access_token(uuid.uuid4(), settings).token
    answer = await client.get("/api/v1/items", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200
    assert answer.json() == {"items": [], "next_cursor": None}


@pytest.mark.parametrize(
    "authorization",
    ["Bearer not.a.token", "Bearer " + "x" * 40],
)
async def test_refused_tokens_say_invalid_token(
    client: httpx.AsyncClient, authorization: str
) -> None:
    answer = await client.get("/api/v1/items", headers={"Authorization": authorization})
    assert_problem(answer, 401, "unauthorized")
    assert answer.headers["www-authenticate"] == 'Bearer realm="api", error="invalid_token"'


@pytest.mark.parametrize("authorization", [None, "Basic dXNlcjpwYXNz", "Bearer", "Bearer  "])
async def test_missing_tokens_do_not_name_an_error(
    client: httpx.AsyncClient, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    answer = await client.post("/api/v1/items", json={"name": "a", "price": 1}, headers=headers)
    assert_problem(answer, 401, "unauthorized")
    assert answer.headers["www-authenticate"] == 'Bearer realm="api"'
