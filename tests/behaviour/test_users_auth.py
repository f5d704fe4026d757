"""Users, tokens and the signed-in user: create_user, create_token, read_me."""

from __future__ import annotations

import secrets
import time
from typing import Any

import jwt as pyjwt
import pytest

import contract
from apiclient import Api, User
from checks import assert_problem, assert_utc_timestamp


def _new_email() -> str:
    return f"user-{secrets.token_hex(6)}@example.test"


def _cannot_log_in(api: Api, email: str, password: str) -> None:
    """The user was not stored: logging in with it is refused."""
    answer = api.http.post("/api/v1/auth/token", data={"username": email, "password": password})
    assert_problem(answer, "invalid-credentials")


# -- create_user ------------------------------------------------------------------------------


def test_create_user_answers_201_with_location_and_public_fields(api: Api) -> None:
    email = _new_email()
    answer = api.http.post(
        "/api/v1/users", json={"email": email, "password": "correct horse", "full_name": "Ann"}
    )
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert contract.schema_errors(body, "UserPublic") == []
    assert body["email"] == email and body["full_name"] == "Ann"
    assert_utc_timestamp(body["created_at"])
    assert answer.headers["location"] in {"/api/v1/users/me", f"{api.base_url}/api/v1/users/me"}
    assert "password" not in answer.text


def test_create_user_lower_cases_email_and_defaults_full_name(api: Api) -> None:
    email = _new_email()
    answer = api.http.post("/api/v1/users", json={"email": email.upper(), "password": "x" * 8})
    assert answer.status_code == 201, answer.text
    assert answer.json()["email"] == email
    assert answer.json()["full_name"] == ""


def test_create_user_with_taken_email_any_case_is_409(api: Api) -> None:
    email = _new_email()
    first = api.http.post("/api/v1/users", json={"email": email, "password": "first-pass"})
    assert first.status_code == 201, first.text
    again = api.http.post("/api/v1/users", json={"email": email.upper(), "password": "other-pass"})
    assert_problem(again, "email-taken")
    _cannot_log_in(api, email, "other-pass")
    api.login(email, "first-pass")  # the first account is intact


@pytest.mark.parametrize(
    ("body", "location"),
    [
        ({"email": "not-an-email", "password": "long enough"}, "body.email"),
        ({"email": "@example.test", "password": "long enough"}, "body.email"),
        ({"password": "long enough"}, "body.email"),
        ({"email": "EMAIL", "password": "short"}, "body.password"),
        ({"email": "EMAIL", "password": "x" * 129}, "body.password"),
        ({"email": "EMAIL", "password": "nul\u0000byte-pass"}, "body.password"),
        ({"email": "EMAIL", "password": "long enough", "full_name": "a\u0000b"}, "body.full_name"),
        ({"email": "EMAIL", "password": "long enough", "full_name": None}, "body.full_name"),
        ({"email": "EMAIL", "password": "long enough", "full_name": "x" * 101}, "body.full_name"),
        ({"email": "EMAIL", "password": 12345678}, "body.password"),
        ({"email": "EMAIL", "password": "long enough", "is_admin": True}, "body.is_admin"),
        ({"email": "EMAIL", "password": "long enough", "id": "x"}, "body.id"),
        # A control character: Python's `\s` covers \x1f, pydantic-core's does not (differential).
        ({"email": "a\x1fb@example.com", "password": "long enough"}, "body.email"),
    ],
    ids=[
        "bad-email",
        "no-local-part",
        "missing-email",
        "short-password",
        "long-password",
        "nul-password",
        "nul-full-name",
        "null-full-name",
        "long-full-name",
        "number-password",
        "unknown-field",
        "server-owned-id",
        "control-character-email",
    ],
)
def test_create_user_rejects_invalid_bodies(api: Api, body: dict[str, Any], location: str) -> None:
    email = _new_email()
    body = {k: (email if v == "EMAIL" else v) for k, v in body.items()}
    answer = api.http.post("/api/v1/users", json=body)
    assert_problem(answer, "validation-error", location=location)
    password = body.get("password")
    if isinstance(password, str) and 0 < len(password) <= 128 and "\u0000" not in password:
        _cannot_log_in(api, email, password)  # a password the token form accepts


def test_create_user_with_form_body_is_415(api: Api) -> None:
    email = _new_email()
    answer = api.http.post("/api/v1/users", data={"email": email, "password": "long enough"})
    assert_problem(answer, "unsupported-media-type")
    _cannot_log_in(api, email, "long enough")


# -- create_token -----------------------------------------------------------------------------


def test_create_token_answers_a_bearer_token_not_to_be_cached(api: Api, alice: User) -> None:
    answer = api.http.post(
        "/api/v1/auth/token",
        data={"username": alice.email, "password": alice.password, "grant_type": "password"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    body = answer.json()
    assert contract.schema_errors(body, "Token") == []
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 3600  # ACCESS_TOKEN_TTL_SECONDS default


@pytest.mark.parametrize("which", ["wrong-password", "unknown-email"])
def test_create_token_refuses_bad_credentials_alike(api: Api, alice: User, which: str) -> None:
    email = alice.email if which == "wrong-password" else _new_email()
    answer = api.http.post(
        "/api/v1/auth/token", data={"username": email, "password": "not the password"}
    )
    assert_problem(answer, "invalid-credentials")
    assert answer.headers["www-authenticate"] == 'Bearer realm="api"'


@pytest.mark.parametrize(
    ("form", "location"),
    [
        ({"username": "EMAIL"}, "body.password"),
        ({"password": "whatever1"}, "body.username"),
        (
            {"username": "EMAIL", "password": "whatever1", "grant_type": "client_credentials"},
            "body.grant_type",
        ),
        ({"username": "EMAIL", "password": "nul\u0000"}, "body.password"),
    ],
    ids=["no-password", "no-username", "other-grant", "nul-password"],
)
def test_create_token_rejects_invalid_forms(
    api: Api, alice: User, form: dict[str, str], location: str
) -> None:
    form = {k: (alice.email if v == "EMAIL" else v) for k, v in form.items()}
    answer = api.http.post("/api/v1/auth/token", data=form)
    assert_problem(answer, "validation-error", location=location)


def test_create_token_with_json_body_is_415(api: Api, alice: User) -> None:
    answer = api.http.post(
        "/api/v1/auth/token", json={"username": alice.email, "password": alice.password}
    )
    assert_problem(answer, "unsupported-media-type")


# -- read_me and the token check --------------------------------------------------------------


def test_read_me_answers_the_signed_in_user(api: Api, alice: User) -> None:
    answer = api.http.get("/api/v1/users/me", headers=alice.auth)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert contract.schema_errors(body, "UserPublic") == []
    assert body["id"] == alice.id and body["email"] == alice.email
    assert body["full_name"] == "Alice"


def test_read_me_without_token_is_401_with_challenge(api: Api) -> None:
    answer = api.http.get("/api/v1/users/me")
    assert_problem(answer, "unauthorized")
    assert answer.headers["www-authenticate"] == 'Bearer realm="api"'


def test_a_token_built_from_the_configuration_is_accepted(api: Api, alice: User) -> None:
    # The positive control for the refusals below: same secret and claims as the server's.
    token = api.token(alice.id)
    answer = api.http.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["id"] == alice.id


def _bad_tokens(api: Api, sub: str) -> dict[str, str]:
    now = int(time.time())
    return {
        "forged": api.token(sub, key=secrets.token_urlsafe(36)),
        "expired": api.token(sub, iat=now - 7200, exp=now - 3600),
        "alg-none": api.token(sub, key="", algorithm="none"),
        "other-algorithm": api.token(sub, algorithm="HS512"),
        "wrong-audience": api.token(sub, aud="someone-else"),
        "wrong-issuer": api.token(sub, iss="someone-else"),
        "no-exp": api.token(sub, exp=None),
        "no-sub": api.token(sub, sub=None),
        "garbage": "not.a.token",
        "tampered": api.token(sub)[:-4] + "AAAA",
    }


BAD_TOKENS = [
    "forged",
    "expired",
    "alg-none",
    "other-algorithm",
    "wrong-audience",
    "wrong-issuer",
    "no-exp",
    "no-sub",
    "garbage",
    "tampered",
]


@pytest.mark.parametrize("kind", BAD_TOKENS)
def test_refused_tokens_are_401_invalid_token(api: Api, alice: User, kind: str) -> None:
    token = _bad_tokens(api, alice.id)[kind]
    headers = {"Authorization": f"Bearer {token}"}
    answer = api.http.get("/api/v1/users/me", headers=headers)
    assert_problem(answer, "unauthorized")
    assert answer.headers["www-authenticate"] == 'Bearer realm="api", error="invalid_token"'


@pytest.mark.parametrize("kind", ["forged", "expired", "alg-none", "wrong-audience"])
def test_refused_tokens_write_nothing(api: Api, alice: User, kind: str) -> None:
    before = api.items(alice)
    headers = {"Authorization": f"Bearer {_bad_tokens(api, alice.id)[kind]}"}
    answer = api.http.post("/api/v1/items", json={"name": "x", "price": 1}, headers=headers)
    assert_problem(answer, "unauthorized")
    assert "www-authenticate" in answer.headers
    if before:
        target = before[0]["id"]
        for method in ("PUT", "PATCH", "DELETE"):
            body = {"name": "x", "price": 1} if method != "DELETE" else None
            answer = api.http.request(method, f"/api/v1/items/{target}", json=body, headers=headers)
            assert_problem(answer, "unauthorized")
    assert api.items(alice) == before


def test_non_bearer_authorization_is_401(api: Api, alice: User) -> None:
    answer = api.http.get("/api/v1/users/me", headers={"Authorization": f"Basic {alice.token}"})
    assert_problem(answer, "unauthorized")
    assert answer.headers["www-authenticate"].startswith('Bearer realm="api"')


def test_read_me_for_a_user_that_does_not_exist_is_401(api: Api) -> None:
    token = api.token("01900000-0000-7000-8000-000000000000")
    answer = api.http.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})
    assert_problem(answer, "unauthorized")


def test_issued_token_carries_the_contracts_claims(api: Api, alice: User) -> None:
    header = pyjwt.get_unverified_header(alice.token)
    assert header["alg"] == "HS256"
    claims = pyjwt.decode(
        alice.token,
        api.jwt.secret,
        algorithms=["HS256"],
        audience=api.jwt.audience,
        issuer=api.jwt.issuer,
        options={"require": ["exp", "iat", "sub", "aud", "iss"]},
    )
    assert claims["sub"] == alice.id
    assert claims["exp"] - claims["iat"] == 3600
    assert abs(claims["iat"] - time.time()) < 600


def test_unknown_email_costs_as_much_as_a_wrong_password(api: Api, alice: User) -> None:
    # The dummy-hash verify: without it an unknown email answers in a fraction of the time.
    def timed(email: str) -> float:
        started = time.perf_counter()
        answer = api.http.post(
            "/api/v1/auth/token", data={"username": email, "password": "wrong password"}
        )
        assert answer.status_code == 401
        return time.perf_counter() - started

    # Interleaved, so that both see the same load on the machine; medians of five.
    pairs = [(timed(alice.email), timed(_new_email())) for _ in range(5)]
    wrong = sorted(pair[0] for pair in pairs)[2]
    unknown = sorted(pair[1] for pair in pairs)[2]
    assert unknown > 0.5 * wrong, f"unknown email {unknown:.3f}s vs wrong password {wrong:.3f}s"
