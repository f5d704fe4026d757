"""Every error is the contract's problem+json, and the checks win in the contract's order."""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from conftest import User, locations, problem
from flask_service import create_app
from flask_service.deps import app_state, get_session, transactional
from flask_service.settings import Settings

JSON = {"Content-Type": "application/json"}
ITEM = {"name": "lamp", "price": 12.5}


def test_unknown_route_is_404(client: FlaskClient) -> None:
    body = problem(client.get("/api/v1/nothing-here"), 404, "not-found")
    assert body["title"] == "Not found"
    assert "errors" not in body


def test_trailing_slash_is_not_redirected(client: FlaskClient) -> None:
    problem(client.get("/api/v1/items/"), 404, "not-found")


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/api/v1/items", "GET, POST"),
        ("POST", f"/api/v1/items/{uuid.uuid4()}", "DELETE, GET, PATCH, PUT"),
        ("PUT", "/api/v1/users", "POST"),
        ("GET", "/api/v1/auth/token", "POST"),
        ("POST", "/healthz", "GET"),
        ("HEAD", "/readyz", "GET"),
        ("OPTIONS", "/metrics", "GET"),
        ("TRACE", "/api/v1/users/me", "GET"),
    ],
)
def test_wrong_method_is_405_with_the_contracts_allow(
    client: FlaskClient, method: str, path: str, allow: str
) -> None:
    answer = client.open(path, method=method)
    assert answer.status_code == 405
    assert answer.headers["Allow"] == allow
    if method != "HEAD":
        problem(answer, 405, "method-not-allowed")


def test_405_comes_before_401(client: FlaskClient) -> None:
    problem(client.delete("/api/v1/items"), 405, "method-not-allowed")


def test_body_over_the_limit_is_413_before_401(make_app: Callable[..., Flask]) -> None:
    client = make_app(max_body_bytes=64).test_client()
    answer = client.post("/api/v1/items", data="x" * 65, headers=JSON)
    problem(answer, 413, "content-too-large")


def test_chunked_body_over_the_limit_is_413(make_app: Callable[..., Flask]) -> None:
    client = make_app(max_body_bytes=64).test_client()
    answer = client.post(
        "/api/v1/items",
        input_stream=io.BytesIO(b"x" * 200),
        headers={**JSON, "Transfer-Encoding": "chunked"},
    )
    problem(answer, 413, "content-too-large")


def test_chunked_body_within_the_limit_is_read(make_app: Callable[..., Flask], user: User) -> None:
    client = make_app(max_body_bytes=200).test_client()
    answer = client.post(
        "/api/v1/items",
        input_stream=io.BytesIO(b'{"name": "chunked", "price": 1}'),
        headers={**JSON, **user.auth, "Transfer-Encoding": "chunked"},
    )
    assert answer.status_code == 201, answer.get_data(as_text=True)


def test_401_comes_before_415(client: FlaskClient) -> None:
    answer = client.post("/api/v1/items", data="name=x", headers={"Content-Type": "text/plain"})
    problem(answer, 401, "unauthorized")


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/jsonx"]
)
def test_non_json_body_is_415(client: FlaskClient, user: User, content_type: str) -> None:
    answer = client.post(
        "/api/v1/items", data='{"name": "x"}', headers={**user.auth, "Content-Type": content_type}
    )
    problem(answer, 415, "unsupported-media-type")


def test_json_with_charset_is_accepted(client: FlaskClient, user: User) -> None:
    answer = client.post(
        "/api/v1/items",
        data='{"name": "x", "price": 1}',
        headers={**user.auth, "Content-Type": "application/json; charset=utf-8"},
    )
    assert answer.status_code == 201


def test_token_endpoint_wants_a_form(client: FlaskClient) -> None:
    answer = client.post("/api/v1/auth/token", json={"username": "a@b.c", "password": "x"})
    problem(answer, 415, "unsupported-media-type")


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b'{"name": "x", "price": NaN}',
        b'{"name": "x", "price": Infinity}',
        b'{"name": "x", "price": -Infinity}',
        b'{"name": "\xff\xfe", "price": 1}',
        b'{"name": "\\ud800", "price": 1}',
        b"[" * 10_000 + b"]" * 10_000,
        b'{"price": ' + b"9" * 5000 + b"}",
        b"\xef\xbb\xbf{}",
    ],
    ids=["syntax", "nan", "inf", "-inf", "utf8", "lone-surrogate", "deep", "digits", "bom"],
)
def test_unparseable_json_is_400(client: FlaskClient, user: User, body: bytes) -> None:
    answer = client.post("/api/v1/items", data=body, headers={**user.auth, **JSON})
    problem(answer, 400, "malformed-request")


def test_invalid_utf8_in_a_form_is_400(client: FlaskClient) -> None:
    answer = client.post(
        "/api/v1/auth/token",
        data=b"username=%ff%fe&password=x",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    problem(answer, 400, "malformed-request")


def test_400_comes_before_422(client: FlaskClient, user: User) -> None:
    answer = client.put("/api/v1/items/not-a-uuid", data=b"{", headers={**user.auth, **JSON})
    problem(answer, 400, "malformed-request")


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (b"", ["body"]),
        (b"[]", ["body"]),
        (b'"text"', ["body"]),
        (b"null", ["body"]),
        (b"{}", ["body.name", "body.price"]),
        (b'{"name": "x", "price": "12.5"}', ["body.price"]),
        (b'{"name": "x", "price": true}', ["body.price"]),
        (b'{"name": "x", "price": -1}', ["body.price"]),
        (b'{"name": "x", "price": 1e300}', ["body.price"]),
        (b'{"name": 5, "price": 1}', ["body.name"]),
        (b'{"name": null, "price": 1}', ["body.name"]),
        (b'{"name": "a\\u0000b", "price": 1}', ["body.name"]),
        (b'{"name": "x", "price": 1, "tags": ["ok", "ok", "ok", "Bad"]}', ["body.tags.3"]),
        (b'{"name": "x", "price": 1, "tags": "ok"}', ["body.tags"]),
        (b'{"name": "x", "price": 1, "id": "x"}', ["body.id"]),
        (b'{"name": "x", "price": 1, "version": 3}', ["body.version"]),
    ],
)
def test_invalid_body_is_422_with_locations(
    client: FlaskClient, user: User, body: bytes, where: list[str]
) -> None:
    answer = client.post("/api/v1/items", data=body, headers={**user.auth, **JSON})
    issues = problem(answer, 422, "validation-error")["errors"]
    assert sorted(issue["location"] for issue in issues) == where
    assert all(isinstance(issue["message"], str) for issue in issues)


@pytest.mark.parametrize(
    ("query", "where"),
    [
        ("limit=0", "query.limit"),
        ("limit=101", "query.limit"),
        ("limit=1000000000", "query.limit"),
        (f"limit={2**64}", "query.limit"),
        ("limit=ten", "query.limit"),
        ("cursor=not-a-cursor", "query.cursor"),
        ("tag=Not%20A%20Tag", "query.tag"),
        ("q=", "query.q"),
    ],
)
def test_invalid_query_is_422(client: FlaskClient, user: User, query: str, where: str) -> None:
    answer = client.get(f"/api/v1/items?{query}", headers=user.auth)
    problem(answer, 422, "validation-error")
    assert locations(answer) == [where]


def test_unknown_query_parameters_are_ignored(client: FlaskClient, user: User) -> None:
    assert client.get("/api/v1/items?colour=blue", headers=user.auth).status_code == 200


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
def test_malformed_path_id_is_422(client: FlaskClient, user: User, method: str) -> None:
    answer = client.open(
        "/api/v1/items/12345",
        method=method,
        json=ITEM if method == "PUT" else {},
        headers=user.auth,
    )
    problem(answer, 422, "validation-error")
    assert locations(answer) == ["path.item_id"]


def test_overlong_if_match_is_422_at_the_header(client: FlaskClient, user: User) -> None:
    answer = client.patch(
        f"/api/v1/items/{uuid.uuid4()}", json={}, headers={**user.auth, "If-Match": "x" * 201}
    )
    problem(answer, 422, "validation-error")
    assert locations(answer) == ["header.If-Match"]


@pytest.mark.parametrize("key", ["", "with space", "é", "k" * 201])
def test_bad_idempotency_key_is_422_at_the_header(
    client: FlaskClient, user: User, key: str
) -> None:
    headers = {**user.auth, "Idempotency-Key": key.encode().decode("latin-1")}
    answer = client.post("/api/v1/items", json=ITEM, headers=headers)
    problem(answer, 422, "validation-error")
    assert set(locations(answer)) == {"header.Idempotency-Key"}


def test_form_fields_are_body_locations(client: FlaskClient) -> None:
    answer = client.post("/api/v1/auth/token", data={"username": "a@b.c", "scope": "all"})
    problem(answer, 422, "validation-error")
    assert sorted(locations(answer)) == ["body.password", "body.scope"]


def test_database_down_is_503_with_retry_after(tmp_path: object) -> None:
    # Nothing listens on port 1: the connection is refused for real.
    settings = Settings(
        database_url="postgresql://postgres@127.0.0.1:1/nowhere",
        var_dir=tmp_path,  # type: ignore[arg-type]
        migrate_on_start=False,
    )
    client = create_app(settings).test_client()
    answer = client.post("/api/v1/users", json={"email": "a@b.cd", "password": "password1"})
    problem(answer, 503, "service-unavailable")
    assert answer.headers["Retry-After"].isdigit()
    ready = client.get("/readyz")
    body = problem(ready, 503, "service-unavailable")
    assert "database" in body["detail"]


def test_a_bug_is_a_generic_500(sqlite_settings: Settings) -> None:
    app = create_app(sqlite_settings)

    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError("secret internals")

    answer = app.test_client().get("/boom")
    body = problem(answer, 500, "internal-error")
    assert "secret" not in answer.get_data(as_text=True)
    assert body["detail"] == "The server could not complete the request."
    assert answer.headers["X-Request-ID"]


def test_a_failed_commit_is_a_problem_not_a_success(
    make_app: Callable[..., Flask], base_settings: Settings
) -> None:
    if base_settings.database_url is None:
        pytest.skip("needs PostgreSQL: its server can drop the session's connection for real")
    app = make_app()

    @app.post("/commit-fails")
    @transactional
    def commit_fails() -> dict[str, bool]:
        session = get_session()
        pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with app_state().engine.connect() as admin:
            admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        return {"stored": True}

    problem(app.test_client().post("/commit-fails"), 503, "service-unavailable")


def test_too_many_connections_is_unavailable_not_a_bug() -> None:
    """A real "too many clients" (SQLSTATE 53300) from PostgreSQL is a 503, not a 500."""
    import os
    import secrets

    import psycopg
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import DBAPIError

    from flask_service.errors import is_unavailable

    admin_url = os.environ.get("TEST_DATABASE_URL")
    if not admin_url:
        pytest.skip("TEST_DATABASE_URL is not set")
    role = f"no_connections_{secrets.token_hex(4)}"
    admin = make_url(admin_url).set(drivername="postgresql")
    libpq = admin.render_as_string(hide_password=False)
    with psycopg.connect(libpq, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 0')
    engine = create_engine(admin.set(drivername="postgresql+psycopg", username=role, password=None))
    try:
        with (
            pytest.raises(DBAPIError, match="too many connections") as caught,
            engine.connect() as connection,
        ):
            connection.execute(text("SELECT 1"))
        assert is_unavailable(caught.value), repr(caught.value)
    finally:
        engine.dispose()
        with psycopg.connect(libpq, autocommit=True) as conn:
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')
