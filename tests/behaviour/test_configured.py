"""A second server per row, configured otherwise (conftest `configured`, CONFIGURED).

It runs with one dependency down (PostgreSQL rows: the database; SQLite rows: the Redis broker),
CORS on, docs off, a 120 s token lifetime, a 4 KiB body limit, its own JWT audience and issuer,
and info-level logs. Liveness stays up; readiness and whatever needs the missing dependency
answer 503; every configuration variable takes effect; logs are JSON lines.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import jwt as pyjwt
import pytest

from apiclient import Api, Configured
from checks import assert_problem

SOME_ID = "01900000-0000-7000-8000-000000000000"


def _retry_after(headers: Any) -> int:
    value = headers.get("retry-after")
    assert value is not None and value.isdigit(), f"Retry-After: {value!r}"
    return int(value)


def _bearer(api: Api, **claims: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {api.token(SOME_ID, **claims)}"}


# -- a dependency down ------------------------------------------------------------------------


def test_liveness_needs_no_dependency(configured: Configured) -> None:
    answer = configured.api.http.get("/healthz")
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok"}


def test_readiness_is_503_naming_the_failed_dependency(configured: Configured) -> None:
    answer = configured.api.http.get("/readyz")
    assert_problem(answer, "service-unavailable")
    _retry_after(answer.headers)
    assert configured.failed in answer.text, f"503 does not name {configured.failed}: {answer.text}"


def test_the_api_with_the_dependency_down(configured: Configured) -> None:
    """Database down: 503 + Retry-After wherever a row is needed. Broker down: the API works."""
    if configured.failed == "database":
        _database_down(configured.api)
    else:
        _broker_down(configured.api)


def _broker_down(api: Api) -> None:
    """CRUD works; a job cannot be queued, so POST /jobs is a quick 503 and leaves no job."""
    user = api.new_user()
    item = api.create_item(user)
    assert api.item(user, item["id"]) == item
    started = time.monotonic()
    answer = api.http.post(
        "/api/v1/jobs",
        json={"kind": "import_items", "items": [{"name": "queued?", "price": 1}]},
        headers=user.auth,
    )
    elapsed = time.monotonic() - started
    assert_problem(answer, "service-unavailable")
    _retry_after(answer.headers)
    assert elapsed < 2.0, f"POST /jobs took {elapsed:.2f}s with the broker down"
    listed = api.http.get("/api/v1/jobs", headers=user.auth)
    assert listed.status_code == 200, listed.text
    assert listed.json()["items"] == [], "a job the broker never took is still stored"
    assert api.items(user) == [item]


def _database_down(api: Api) -> None:
    email = f"down-{secrets.token_hex(4)}@example.test"
    created = api.http.post("/api/v1/users", json={"email": email, "password": "long enough"})
    assert_problem(created, "service-unavailable")
    _retry_after(created.headers)
    login = api.http.post("/api/v1/auth/token", data={"username": email, "password": "x" * 9})
    assert_problem(login, "service-unavailable")

    for method, path, body in (
        ("GET", "/api/v1/items", None),
        ("POST", "/api/v1/items", {"name": "x", "price": 1}),
        ("GET", f"/api/v1/items/{SOME_ID}", None),
        ("GET", "/api/v1/users/me", None),
    ):
        answer = api.http.request(method, path, json=body, headers=_bearer(api))
        assert_problem(answer, "service-unavailable")
        _retry_after(answer.headers)

    # A refused token is still a 401 and invalid input still a 422: neither reads a row (the
    # token check does not touch the database).
    forged = _bearer(api, key=secrets.token_urlsafe(36))
    assert_problem(api.http.get("/api/v1/items", headers=forged), "unauthorized")
    answer = api.http.get("/api/v1/items", params={"limit": 0}, headers=_bearer(api))
    assert_problem(answer, "validation-error", location="query.limit")


# -- configuration takes effect ---------------------------------------------------------------


def test_jwt_audience_and_issuer_are_configurable(configured: Configured) -> None:
    api = configured.api
    # Accepted: past the token check (200 on SQLite; 503 where the database is down).
    answer = api.http.get("/api/v1/items", headers=_bearer(api))
    assert answer.status_code in {200, 503}, answer.text
    for claim in ("aud", "iss"):
        default = {"aud": "items-api", "iss": "items-service"}[claim]
        refused = api.http.get("/api/v1/items", headers=_bearer(api, **{claim: default}))
        assert_problem(refused, "unauthorized")


def test_access_token_ttl_is_configurable(configured: Configured) -> None:
    if configured.failed == "database":
        pytest.skip("issuing a token needs the database, which this server lacks")
    api = configured.api
    user = api.new_user()
    answer = api.http.post(
        "/api/v1/auth/token", data={"username": user.email, "password": user.password}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["expires_in"] == 120
    claims = pyjwt.decode(
        user.token,
        api.jwt.secret,
        algorithms=["HS256"],
        audience=api.jwt.audience,
        issuer=api.jwt.issuer,
    )
    assert claims["exp"] - claims["iat"] == 120


def test_max_body_bytes_is_configurable(configured: Configured) -> None:
    api = configured.api
    body = b'{"name": "' + b"x" * 5000 + b'", "price": 1}'
    answer = api.raw(
        "POST",
        "/api/v1/items",
        body,
        {**_bearer(api), "Content-Type": "application/json"},
    )
    assert_problem(answer, "content-too-large")


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json"])
def test_docs_can_be_turned_off(configured: Configured, path: str) -> None:
    assert_problem(configured.api.http.get(path), "not-found")


def test_rate_limits_can_be_switched_off(configured: Configured) -> None:
    # RATE_LIMIT_ENABLED=false with 1/minute per address: no answer is a 429 (the writes answer
    # 201, or 503 where the database is down: the limit would have come before the database).
    api = configured.api
    for _ in range(3):
        body = {"email": f"off-{secrets.token_hex(6)}@example.test", "password": "a" * 12}
        answer = api.http.post("/api/v1/users", json=body)
        assert answer.status_code in {201, 503}, answer.text
        login = {"username": body["email"], "password": "wrong password"}
        answer = api.http.post("/api/v1/auth/token", data=login)
        assert answer.status_code in {401, 503}, answer.text


@pytest.mark.parametrize("origin", ["https://allowed.example", "https://also-allowed.example"])
def test_cors_answers_the_configured_origins(configured: Configured, origin: str) -> None:
    api = configured.api
    simple = api.http.get("/healthz", headers={"Origin": origin})
    assert simple.headers.get("access-control-allow-origin") == origin
    preflight = api.http.options(
        "/api/v1/items",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status_code in {200, 204}, preflight.text
    assert preflight.headers.get("access-control-allow-origin") == origin
    allowed = preflight.headers.get("access-control-allow-methods", "").upper()
    assert "POST" in allowed, preflight.headers
    allowed_headers = preflight.headers.get("access-control-allow-headers", "").lower()
    assert "authorization" in allowed_headers or allowed_headers == "*", preflight.headers


def test_cors_ignores_other_origins(configured: Configured) -> None:
    answer = configured.api.http.get("/healthz", headers={"Origin": "https://elsewhere.example"})
    assert answer.status_code == 200
    assert "access-control-allow-origin" not in answer.headers


# -- logs -------------------------------------------------------------------------------------


def test_logs_are_json_lines_carrying_the_request_id(configured: Configured) -> None:
    request_id = f"log-{secrets.token_hex(8)}"
    for path in ("/healthz", "/readyz", "/nowhere"):
        configured.api.http.get(path, headers={"X-Request-ID": request_id})
    deadline = time.monotonic() + 5
    mine: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        records = []
        for line in configured.log_lines():
            try:
                records.append(json.loads(line))
            except ValueError:
                pytest.fail(f"a log line that is not JSON: {line[:300]!r}")
        assert all(isinstance(record, dict) for record in records)
        mine = [record for record in records if record.get("request_id") == request_id]
        if len(mine) >= 3:
            break
        time.sleep(0.2)
    assert len(mine) >= 3, f"expected a log line per request carrying {request_id}: {mine}"
    paths = " ".join(json.dumps(record) for record in mine)
    for path in ("/healthz", "/readyz", "/nowhere"):
        assert path in paths, f"no log line for {path} with {request_id}"
