"""Password hashing (argon2id through pwdlib) and access tokens (PyJWT, HS256 pinned)."""

from __future__ import annotations

import datetime as dt
import functools
import time
import uuid
from dataclasses import dataclass

import jwt
from pwdlib import PasswordHash

from .settings import Settings

ALGORITHM = "HS256"
REQUIRED_CLAIMS = ["exp", "iat", "sub", "aud", "iss"]
# Tokens whose signature and claims were checked once, per process: a client sends the same
# token with every request, and PyJWT's checks cost more than the rest of the auth step.
# Only valid tokens are kept (a failure raises, and lru_cache keeps no exceptions), keyed by
# the key and claims they were checked against; expiry is checked again on every request.
VERIFIED_TOKENS_CACHED = 4096

password_hash = PasswordHash.recommended()
# Verified when the email is unknown, so a miss costs what a wrong password costs.
_DUMMY_HASH = password_hash.hash("not-a-real-password-only-here-to-spend-time")


def hash_password(password: str) -> str:
    return password_hash.hash(password)


def verify_password(password: str, hashed: str | None) -> tuple[bool, str | None]:
    """(valid, new hash or None); a None `hashed` still runs a full verification."""
    if hashed is None:
        password_hash.verify(password, _DUMMY_HASH)
        return False, None
    return password_hash.verify_and_update(password, hashed)


@dataclass(frozen=True)
class AccessToken:
    token: str
    expires_in: int


def create_access_token(user_id: uuid.UUID, settings: Settings) -> AccessToken:
    now = dt.datetime.now(dt.UTC)
    ttl = settings.access_token_ttl_seconds
    claims = {
        "sub": str(user_id),
        "aud": settings.jwt_audience,
        "iss": settings.jwt_issuer,
        "iat": now,
        "exp": now + dt.timedelta(seconds=ttl),
    }
    token = jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm=ALGORITHM)
    return AccessToken(token=token, expires_in=ttl)


class InvalidToken(Exception):
    """The token is forged, expired, malformed or made for someone else."""


@functools.lru_cache(maxsize=VERIFIED_TOKENS_CACHED)
def _verified(token: str, secret: str, audience: str, issuer: str) -> tuple[uuid.UUID, float]:
    """(user id, expiry as a Unix time) of a token that passed every check; raises otherwise."""
    claims = jwt.decode(
        token,
        secret,
        algorithms=[ALGORITHM],
        audience=audience,
        issuer=issuer,
        options={"require": REQUIRED_CLAIMS},
    )
    return uuid.UUID(str(claims["sub"])), float(claims["exp"])


def decode_access_token(token: str, settings: Settings) -> uuid.UUID:
    """The user id in a valid token's `sub`; reads no database row."""
    try:
        secret = settings.jwt_secret.get_secret_value()
        user_id, expires_at = _verified(token, secret, settings.jwt_audience, settings.jwt_issuer)
    except (jwt.PyJWTError, ValueError) as exc:
        raise InvalidToken(str(exc)) from exc
    if time.time() >= expires_at:  # PyJWT's own rule: expired once `exp` <= now (no leeway)
        raise InvalidToken("Signature has expired")
    return user_id
