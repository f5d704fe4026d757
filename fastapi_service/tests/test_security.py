"""Passwords (argon2id) and access tokens (HS256 pinned, every claim required)."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from typing import Any

import jwt
import pytest
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from fastapi_service import security
from fastapi_service.settings import Settings
from helpers import TEST_SECRET

SETTINGS = Settings(jwt_secret=TEST_SECRET)


def test_passwords_hash_with_argon2id_and_verify() -> None:
    hashed = security.hash_password("correct horse")
    assert hashed.startswith("$argon2id$")
    assert security.verify_password("correct horse", hashed) == (True, None)
    assert security.verify_password("wrong horse", hashed)[0] is False


def test_unknown_user_still_costs_a_verification() -> None:
    started = time.perf_counter()
    assert security.verify_password("anything", None) == (False, None)
    miss = time.perf_counter() - started
    hashed = security.hash_password("correct horse")
    started = time.perf_counter()
    security.verify_password("wrong", hashed)
    wrong = time.perf_counter() - started
    assert miss > wrong / 3  # same work: a full argon2 verification, not an early return


def test_outdated_hash_parameters_ask_for_a_rehash() -> None:
    weak = PasswordHash((Argon2Hasher(time_cost=1, memory_cost=8192),)).hash("pw-123456")
    valid, new_hash = security.verify_password("pw-123456", weak)
    assert valid is True
    assert new_hash is not None
    assert new_hash != weak


def test_token_round_trip_carries_the_user_id() -> None:
    user_id = uuid.uuid4()
    token = security.create_access_token(user_id, SETTINGS)
    assert token.expires_in == 3600
    assert security.decode_access_token(token.token, SETTINGS) == user_id
    header = jwt.get_unverified_header(token.token)
    assert header["alg"] == "HS256"
    claims = jwt.decode(token.token, options={"verify_signature": False})
    assert set(claims) == {"sub", "aud", "iss", "iat", "exp"}
    assert claims["exp"] - claims["iat"] == 3600


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
    assert security.decode_access_token(token, SETTINGS) == user_id
    hits = security._verified.cache_info().hits
    assert security.decode_access_token(token, SETTINGS) == user_id
    assert security._verified.cache_info().hits == hits + 1
    time.sleep(max(0.0, expires - time.time()) + 0.05)
    with pytest.raises(security.InvalidToken, match="expired"):
        security.decode_access_token(token, SETTINGS)


def test_a_remembered_token_is_refused_under_another_key() -> None:
    token = security.create_access_token(uuid.uuid4(), SETTINGS).token
    security.decode_access_token(token, SETTINGS)
    other = Settings(jwt_secret="another-secret-0123456789-abcdefghijkl")
    with pytest.raises(security.InvalidToken):
        security.decode_access_token(token, other)


def _token(key: str = TEST_SECRET, algorithm: str = "HS256", **claims: Any) -> str:
    now = dt.datetime.now(dt.UTC)
    payload: dict[str, Any] = {
        "sub": str(uuid.uuid4()),
        "aud": "items-api",
        "iss": "items-service",
        "iat": now,
        "exp": now + dt.timedelta(minutes=5),
        **claims,
    }
    payload = {name: value for name, value in payload.items() if value is not None}
    return jwt.encode(payload, key, algorithm=algorithm)


def _alg_none() -> str:
    return _token(key="", algorithm="none")


BAD_TOKENS = {
    "forged": lambda: _token(key="another-secret-" + "y" * 32),
    "expired": lambda: _token(
        iat=dt.datetime.now(dt.UTC) - dt.timedelta(hours=2),
        exp=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1),
    ),
    "alg-none": _alg_none,
    "other-algorithm": lambda: _token(algorithm="HS512"),
    "wrong-audience": lambda: _token(aud="someone-else"),
    "wrong-issuer": lambda: _token(iss="someone-else"),
    "no-exp": lambda: _token(exp=None),
    "no-iat": lambda: _token(iat=None),
    "no-sub": lambda: _token(sub=None),
    "no-aud": lambda: _token(aud=None),
    "no-iss": lambda: _token(iss=None),
    "sub-not-a-uuid": lambda: _token(sub="alice"),
    "garbage": lambda: "not.a.token",
    "tampered": lambda: _token()[:-4] + "AAAA",
}


def test_a_well_made_token_passes() -> None:
    assert isinstance(security.decode_access_token(_token(), SETTINGS), uuid.UUID)


@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
def test_refused_tokens(kind: str) -> None:
    with pytest.raises(security.InvalidToken):
        security.decode_access_token(BAD_TOKENS[kind](), SETTINGS)
