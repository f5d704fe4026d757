"""Auth hardening (contract/README.md, "Auth"): pinned algorithm, required claims, login timing,
hash upgrades at login, and no secret in any answer.

The other refused tokens (forged, expired, `alg: none`, HS512, wrong audience or issuer, no
`exp`, no `sub`) are in test_users_auth.py.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import statistics
import time
from collections.abc import Callable
from typing import Any

import argon2
import pytest
from conftest import secret_leaks

from apiclient import Api, User
from checks import assert_problem

CURRENT_ARGON2 = "$argon2id$v=19$m=65536,t=3,p=4$"  # pwdlib's recommended() parameters


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hmac_signed(api: Api, header: dict[str, Any], claims: dict[str, Any]) -> str:
    """A token signed with the server's own key (HMAC-SHA256) under any header."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    key = api.jwt.secret.encode()
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def _claims(api: Api, sub: str, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"sub": sub, "aud": api.jwt.audience, "iss": api.jwt.issuer, "iat": now}
    claims["exp"] = now + 600
    claims.update(changes)
    return {name: value for name, value in claims.items() if value is not None}


HARDENED = ["hmac-control", "rs256-header", "es256-header", "no-aud", "no-iss", "no-iat"]
HARDENED += ["aud-list-of-others", "sub-not-a-uuid", "exp-as-text"]


def _token(api: Api, sub: str, kind: str) -> str:
    hs256 = {"alg": "HS256", "typ": "JWT"}
    tokens = {
        # The positive control: built by hand like the refusals, accepted by the server.
        "hmac-control": lambda: _hmac_signed(api, hs256, _claims(api, sub)),
        # Algorithm confusion: the right key and a valid HMAC, but the header names RS256 or
        # ES256. A server that took the algorithm from the header would accept it.
        "rs256-header": lambda: _hmac_signed(api, {**hs256, "alg": "RS256"}, _claims(api, sub)),
        "es256-header": lambda: _hmac_signed(api, {**hs256, "alg": "ES256"}, _claims(api, sub)),
        "no-aud": lambda: api.token(sub, aud=None),
        "no-iss": lambda: api.token(sub, iss=None),
        "no-iat": lambda: api.token(sub, iat=None),
        "aud-list-of-others": lambda: api.token(sub, aud=["someone-else", "another"]),
        "sub-not-a-uuid": lambda: api.token("not-a-uuid"),
        "exp-as-text": lambda: _hmac_signed(api, hs256, _claims(api, sub, exp="tomorrow")),
    }
    return tokens[kind]()


@pytest.mark.parametrize("kind", HARDENED)
def test_tokens_are_checked_beyond_the_signature(api: Api, alice: User, kind: str) -> None:
    headers = {"Authorization": f"Bearer {_token(api, alice.id, kind)}"}
    answer = api.http.get("/api/v1/users/me", headers=headers)
    if kind == "hmac-control":
        assert answer.status_code == 200, answer.text
        return
    assert_problem(answer, "unauthorized")
    assert answer.headers["www-authenticate"] == 'Bearer realm="api", error="invalid_token"'
    # A refused token writes nothing either.
    before = api.items(alice)
    write = api.http.post("/api/v1/items", json={"name": "x", "price": 1}, headers=headers)
    assert_problem(write, "unauthorized")
    assert api.items(alice) == before


def test_unknown_email_costs_the_same_as_a_wrong_password(api: Api, alice: User) -> None:
    # Medians of 9 interleaved pairs; within 0.5x-2x of each other on a noisy shared machine.
    # Without the dummy-hash verify an unknown email answers in a small fraction of the time.
    def timed(email: str) -> float:
        started = time.perf_counter()
        answer = api.http.post(
            "/api/v1/auth/token", data={"username": email, "password": "wrong password"}
        )
        assert answer.status_code == 401, answer.text
        return time.perf_counter() - started

    pairs = [(timed(alice.email), timed(f"nobody-{secrets.token_hex(6)}@example.test"))]
    pairs += [(timed(alice.email), timed(f"nobody-{secrets.token_hex(6)}@example.test"))
              for _ in range(8)]  # fmt: skip
    wrong = statistics.median(pair[0] for pair in pairs)
    unknown = statistics.median(pair[1] for pair in pairs)
    assert 0.5 <= unknown / wrong <= 2.0, f"unknown {unknown:.3f}s, wrong password {wrong:.3f}s"


def test_an_older_hash_is_upgraded_at_login(
    api: Api, user: User, stored_hash: Callable[..., str]
) -> None:
    # A hash made with weaker argon2 parameters, as an older release would have stored it.
    weak = argon2.PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(user.password)
    assert stored_hash(user.email, weak) == weak
    assert api.login(user.email, user.password)
    upgraded = stored_hash(user.email)
    assert upgraded != weak
    assert upgraded.startswith(CURRENT_ARGON2), upgraded
    assert argon2.PasswordHasher().verify(upgraded, user.password)
    assert api.login(user.email, user.password)  # and the new hash works
    assert stored_hash(user.email) == upgraded  # a current hash is left alone


def test_a_wrong_password_upgrades_nothing(
    api: Api, user: User, stored_hash: Callable[..., str]
) -> None:
    weak = argon2.PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(user.password)
    stored_hash(user.email, weak)
    answer = api.http.post(
        "/api/v1/auth/token", data={"username": user.email, "password": "wrong password"}
    )
    assert_problem(answer, "invalid-credentials")
    assert stored_hash(user.email) == weak


def test_no_answer_carries_a_secret(api: Api, user: User) -> None:
    """Every operation once, streams included; JSON bodies are also checked on every call of
    the suite (conftest `api`), this adds the JSON Lines and SSE bodies."""
    secret = api.jwt.secret
    bodies: list[Any] = []

    def keep(answer: Any) -> Any:
        assert secret not in answer.text and "$argon2" not in answer.text, answer.request.url
        if answer.headers.get("content-type", "").startswith(
            ("application/json", "application/problem")
        ):
            bodies.append(answer.json())
        return answer

    email = f"walk-{secrets.token_hex(6)}@example.test"
    keep(api.http.post("/api/v1/users", json={"email": email, "password": "a" * 12}))
    keep(api.http.post("/api/v1/users", json={"email": email, "password": "a" * 12}))  # 409
    keep(api.http.post("/api/v1/auth/token", data={"username": email, "password": "a" * 12}))
    keep(api.http.post("/api/v1/auth/token", data={"username": email, "password": "b" * 12}))
    keep(api.http.get("/api/v1/users/me", headers=user.auth))
    item = keep(api.http.post("/api/v1/items", json={"name": "x", "price": 1}, headers=user.auth))
    path = f"/api/v1/items/{item.json()['id']}"
    keep(api.http.get(path, headers=user.auth))
    keep(api.http.put(path, json={"name": "y", "price": 2}, headers=user.auth))
    keep(api.http.patch(path, json={"price": 3}, headers=user.auth))
    keep(api.http.get("/api/v1/items", headers=user.auth))
    export = api.http.get("/api/v1/items/export", headers=user.auth)
    assert secret not in export.text and "$argon2" not in export.text
    bodies += [json.loads(line) for line in export.text.splitlines()]
    job = keep(api.post_job(user, {"kind": "items_report"}))
    finished = api.wait_for_job(user, job.json()["id"])
    keep(api.http.get("/api/v1/jobs", headers=user.auth))
    events = api.http.get(f"/api/v1/jobs/{finished['id']}/events", headers=user.auth)
    assert secret not in events.text and "$argon2" not in events.text
    bodies += [
        json.loads(line[5:]) for line in events.text.splitlines() if line.startswith("data:")
    ]
    keep(api.http.delete(f"/api/v1/jobs/{finished['id']}", headers=user.auth))  # 409
    keep(api.http.delete(path, headers=user.auth))
    for probe in ("/healthz", "/readyz"):
        keep(api.http.get(probe))
    assert len(bodies) >= 15
    leaks = [leak for body in bodies for leak in secret_leaks(body, secret)]
    assert not leaks, leaks
