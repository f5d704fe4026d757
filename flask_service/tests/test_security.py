"""Passwords and tokens, directly and through the API (refused tokens are 401s)."""

from __future__ import annotations

import datetime as dt
import time
import uuid
import warnings

import jwt
import pytest
from flask.testing import FlaskClient

from conftest import TEST_SECRET, User, data, problem
from flask_service.security import (
    InvalidToken,
    _verified,
    create_access_token,
    decode_access_token,
    hash_password,
    verify_password,
)
from flask_service.settings import Settings

SETTINGS = Settings(jwt_secret=TEST_SECRET)


def _claims(**changes: object) -> dict[str, object]:
    now = dt.datetime.now(dt.UTC)
    claims: dict[str, object] = {
        "sub": str(uuid.uuid4()),
        "aud": "items-api",
        "iss": "items-service",
        "iat": now,
        "exp": now + dt.timedelta(minutes=5),
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def test_password_hash_is_argon2id_and_verifies() -> None:
    hashed = hash_password("s3cret-password")
    assert hashed.startswith("$argon2id$")
    assert verify_password("s3cret-password", hashed) == (True, None)
    assert verify_password("wrong-password", hashed)[0] is False


def test_unknown_user_still_runs_a_verification() -> None:
    assert verify_password("anything", None) == (False, None)


def test_token_round_trip() -> None:
    user_id = uuid.uuid4()
    token = create_access_token(user_id, SETTINGS)
    assert token.expires_in == 3600
    assert decode_access_token(token.token, SETTINGS) == user_id
    header = jwt.get_unverified_header(token.token)
    assert header["alg"] == "HS256"


def test_a_checked_token_is_remembered_but_still_expires() -> None:
    """Valid tokens are checked once per process; expiry is checked on every request."""
    user_id = uuid.uuid4()
    expires = int(time.time()) + 2
    token = jwt.encode(
        {"sub": str(user_id), "aud": "items-api", "iss": "items-service", "iat": expires - 60,
         "exp": expires},
        TEST_SECRET,
        algorithm="HS256",
    )  # fmt: skip
    assert decode_access_token(token, SETTINGS) == user_id
    hits = _verified.cache_info().hits
    assert decode_access_token(token, SETTINGS) == user_id
    assert _verified.cache_info().hits == hits + 1
    time.sleep(max(0.0, expires - time.time()) + 0.05)
    with pytest.raises(InvalidToken, match="expired"):
        decode_access_token(token, SETTINGS)


def test_a_remembered_token_is_refused_under_another_key() -> None:
    token = create_access_token(uuid.uuid4(), SETTINGS).token
    decode_access_token(token, SETTINGS)
    other = Settings(jwt_secret="another-secret-0123456789-abcdefghijkl")
    with pytest.raises(InvalidToken):
        decode_access_token(token, other)


def _other_algorithm() -> str:
    with warnings.catch_warnings():  # PyJWT warns that this key is short for HS512: it is
        warnings.simplefilter("ignore")
        return jwt.encode(_claims(), TEST_SECRET, algorithm="HS512")


REFUSED = {
    "forged": jwt.encode(_claims(), "another-secret-0123456789-abcdefghijkl", algorithm="HS256"),
    "expired": jwt.encode(
        _claims(exp=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)), TEST_SECRET, "HS256"
    ),
    "alg-none": jwt.encode(_claims(), "", algorithm="none"),
    "other-algorithm": _other_algorithm(),
    "wrong-audience": jwt.encode(_claims(aud="someone-else"), TEST_SECRET, algorithm="HS256"),
    "wrong-issuer": jwt.encode(_claims(iss="someone-else"), TEST_SECRET, algorithm="HS256"),
    "no-exp": jwt.encode(_claims(exp=None), TEST_SECRET, algorithm="HS256"),
    "no-sub": jwt.encode(_claims(sub=None), TEST_SECRET, algorithm="HS256"),
    "sub-not-a-uuid": jwt.encode(_claims(sub="admin"), TEST_SECRET, algorithm="HS256"),
    "garbage": "not.a.jwt",
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_tokens_do_not_decode(name: str) -> None:
    with pytest.raises(InvalidToken):
        decode_access_token(REFUSED[name], SETTINGS)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_tokens_are_401_invalid_token(client: FlaskClient, name: str) -> None:
    answer = client.get("/api/v1/items", headers={"Authorization": f"Bearer {REFUSED[name]}"})
    problem(answer, 401, "unauthorized")
    assert answer.headers["WWW-Authenticate"] == 'Bearer realm="api", error="invalid_token"'


@pytest.mark.parametrize("header", [None, "Basic dXNlcjpwYXNz", "Bearer", "Bearer   "])
def test_missing_token_is_401_without_error(client: FlaskClient, header: str | None) -> None:
    headers = {"Authorization": header} if header is not None else {}
    answer = client.get("/api/v1/items", headers=headers)
    problem(answer, 401, "unauthorized")
    assert answer.headers["WWW-Authenticate"] == 'Bearer realm="api"'


def test_token_endpoint_answers_no_store(client: FlaskClient, user: User) -> None:
    answer = client.post(
        "/api/v1/auth/token",
        data={"username": user.email.upper(), "password": user.password, "grant_type": "password"},
    )
    assert answer.status_code == 200
    assert answer.headers["Cache-Control"] == "no-store"
    assert data(answer)["token_type"] == "bearer"
    assert data(answer)["expires_in"] == 3600


@pytest.mark.parametrize("which", ["unknown-email", "wrong-password"])
def test_bad_credentials_are_one_answer(client: FlaskClient, user: User, which: str) -> None:
    email = "nobody@example.test" if which == "unknown-email" else user.email
    password = user.password if which == "unknown-email" else "wrong-password"
    answer = client.post("/api/v1/auth/token", data={"username": email, "password": password})
    body = problem(answer, 401, "invalid-credentials")
    assert answer.headers["WWW-Authenticate"] == 'Bearer realm="api"'
    assert body["detail"] == "The email or the password is wrong."


def test_token_for_a_deleted_user_cannot_read_me(client: FlaskClient) -> None:
    token = create_access_token(uuid.uuid4(), SETTINGS).token
    answer = client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})
    problem(answer, 401, "unauthorized")


def test_token_check_reads_no_database_row(client: FlaskClient) -> None:
    # A well-signed token for a user that does not exist passes the token check itself:
    # the item list (which never loads the user) is simply empty.
    token = create_access_token(uuid.uuid4(), SETTINGS).token
    answer = client.get("/api/v1/items", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200
    assert answer.json == {"items": [], "next_cursor": None}
