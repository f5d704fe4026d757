"""Problem rendering: every error is the contract's problem+json, in the contract's order."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from fastapi_service import create_app
from fastapi_service.settings import Settings
from helpers import assert_problem, create_item, locations, make_settings

pytestmark = pytest.mark.anyio
ITEM = {"name": "a", "price": 1}
JSON = {"content-type": "application/json"}
SOME_ITEM = "/api/v1/items/0190a000-0000-7000-8000-000000000000"


async def test_unknown_route_is_404(client: httpx.AsyncClient) -> None:
    for path in ("/nope", "/api/v1/items/", "/api/v1/users/me/extra"):
        assert_problem(await client.get(path), 404, "not-found")


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/api/v1/items", "GET, POST"),
        ("POST", "/api/v1/items/01a22348-9907-7e1e-9b02-702c87b37cf5", "DELETE, GET, PATCH, PUT"),
        ("GET", "/api/v1/users", "POST"),
        ("DELETE", "/api/v1/users/me", "GET"),
        ("GET", "/api/v1/auth/token", "POST"),
        ("POST", "/healthz", "GET"),
        ("HEAD", "/readyz", "GET"),
        ("OPTIONS", "/metrics", "GET"),
    ],
)
async def test_wrong_method_is_405_with_every_allowed_method(
    client: httpx.AsyncClient, method: str, path: str, allow: str
) -> None:
    answer = await client.request(method, path)
    assert answer.status_code == 405
    assert answer.headers["allow"] == allow
    if method != "HEAD":
        assert_problem(answer, 405, "method-not-allowed")


async def test_405_comes_before_401_and_413(client: httpx.AsyncClient) -> None:
    answer = await client.put("/api/v1/items", content=b"x" * 2_000_000)
    assert_problem(answer, 405, "method-not-allowed")


async def test_unknown_route_with_a_huge_body_is_still_404(client: httpx.AsyncClient) -> None:
    assert_problem(await client.post("/nope", content=b"x" * 2_000_000), 404, "not-found")


async def test_declared_body_over_the_limit_is_413_before_auth(client: httpx.AsyncClient) -> None:
    answer = await client.post(
        "/api/v1/items", content=b"x" * 1_048_577, headers={"content-type": "application/json"}
    )
    assert_problem(answer, 413, "content-too-large")


async def test_chunked_body_over_the_limit_is_413(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b" " * 65_536

    headers = {**auth, "content-type": "application/json"}
    answer = await client.post("/api/v1/items", content=chunks(), headers=headers)
    assert "content-length" not in answer.request.headers
    assert_problem(answer, 413, "content-too-large")


async def test_a_body_at_the_limit_is_read(
    client: httpx.AsyncClient, auth: dict[str, str], settings: Settings
) -> None:
    body = b'{"name": "a", "price": 1}'
    padded = body + b" " * (settings.max_body_bytes - len(body))
    headers = {**auth, "content-type": "application/json"}
    answer = await client.post("/api/v1/items", content=padded, headers=headers)
    assert answer.status_code == 201, answer.text


async def test_missing_token_is_401_before_415_and_400(client: httpx.AsyncClient) -> None:
    for content_type, body in (("text/plain", b"x"), ("application/json", b"{oops")):
        answer = await client.post(
            "/api/v1/items", content=body, headers={"content-type": content_type}
        )
        assert_problem(answer, 401, "unauthorized")
        assert answer.headers["www-authenticate"] == 'Bearer realm="api"'


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
async def test_non_json_body_is_415(
    client: httpx.AsyncClient, auth: dict[str, str], content_type: str
) -> None:
    answer = await client.post(
        "/api/v1/items",
        content=b'{"name": "a", "price": 1}',
        headers={**auth, "content-type": content_type},
    )
    assert_problem(answer, 415, "unsupported-media-type")


async def test_json_with_charset_is_accepted(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    headers = {**auth, "content-type": "application/json; charset=utf-8"}
    answer = await client.post("/api/v1/items", content=b'{"name":"a","price":1}', headers=headers)
    assert answer.status_code == 201


async def test_415_comes_before_422(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    answer = await client.put(
        "/api/v1/items/not-a-uuid", content=b"{}", headers={**auth, "content-type": "text/plain"}
    )
    assert_problem(answer, 415, "unsupported-media-type")


@pytest.mark.parametrize(
    "body",
    [
        b"{oops",
        b'{"name": "a", "price": NaN}',
        b'{"name": "a", "price": Infinity}',
        b'{"name": "\xff\xfe", "price": 1}',
        b'{"name": "\\ud800", "price": 1}',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"name": "a", "price": 1' + b"0" * 5000 + b"}",
        b"\xef\xbb\xbf{}",
    ],
    ids=["syntax", "nan", "infinity", "bad-utf8", "lone-surrogate", "deep", "huge-int", "bom"],
)
async def test_malformed_json_is_400(
    client: httpx.AsyncClient, auth: dict[str, str], body: bytes
) -> None:
    headers = {**auth, "content-type": "application/json"}
    answer = await client.post("/api/v1/items", content=body, headers=headers)
    assert_problem(answer, 400, "malformed-request")


async def test_validation_problem_lists_every_issue_with_its_location(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    body = {"name": "", "price": "12.5", "tags": ["ok", "x", "y", "NOT OK"], "id": "x"}
    answer = await client.post("/api/v1/items", json=body, headers=auth)
    problem = assert_problem(answer, 422, "validation-error")
    assert problem["title"] == "Validation failed"
    assert sorted(locations(answer)) == ["body.id", "body.name", "body.price", "body.tags.3"]
    assert all(isinstance(issue["message"], str) for issue in problem["errors"])


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "location"),
    [
        ("POST", "/api/v1/items", {"json": []}, "body"),
        ("POST", "/api/v1/items", {"json": "text"}, "body"),
        ("POST", "/api/v1/items", {"content": b"", "headers": JSON}, "body"),
        ("POST", "/api/v1/items", {"content": b""}, "body"),
        ("GET", "/api/v1/items?limit=0", {}, "query.limit"),
        ("GET", "/api/v1/items?limit=1000000000", {}, "query.limit"),
        ("GET", "/api/v1/items?limit=18446744073709551616", {}, "query.limit"),
        ("GET", "/api/v1/items?cursor=nope", {}, "query.cursor"),
        ("GET", "/api/v1/items/not-a-uuid", {}, "path.item_id"),
        ("PATCH", SOME_ITEM, {"json": {}, "headers": {"If-Match": "x" * 201}}, "header.If-Match"),
        ("POST", "/api/v1/items", {"json": ITEM, "headers": {"Idempotency-Key": "a b"}},
         "header.Idempotency-Key"),
    ],
)  # fmt: skip
async def test_validation_locations(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    method: str,
    path: str,
    kwargs: dict[str, object],
    location: str,
) -> None:
    options = dict(kwargs)  # the parameter table is shared by every backend's run
    headers = {**auth, **options.pop("headers", {})}  # type: ignore[dict-item]
    answer = await client.request(method, path, headers=headers, **options)  # type: ignore[arg-type]
    assert_problem(answer, 422, "validation-error")
    assert location in locations(answer)


async def test_rejected_requests_change_nothing(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    item = await create_item(client, auth, name="before")
    url = f"/api/v1/items/{item['id']}"
    for body in ({"name": "x\u0000"}, {"price": -1}, {"name": None}, {"owner_id": "x"}):
        assert (await client.patch(url, json=body, headers=auth)).status_code == 422
    assert (
        await client.patch(url, json={"name": "y"}, headers={**auth, "If-Match": '"9"'})
    ).status_code == 412
    after = (await client.get(url, headers=auth)).json()
    assert after == item


@pytest.fixture
async def failing_app(settings: Settings) -> AsyncIterator[FastAPI]:
    app = create_app(settings)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals")

    async with app.router.lifespan_context(app):
        yield app


async def test_an_unexpected_error_is_a_generic_500(failing_app: FastAPI) -> None:
    transport = httpx.ASGITransport(app=failing_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        answer = await http.get("/boom", headers={"X-Request-ID": "trace-me"})
    problem = assert_problem(answer, 500, "internal-error")
    assert "secret" not in answer.text
    assert problem["title"] == "Internal server error"
    assert answer.headers["x-request-id"] == "trace-me"
    assert answer.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    "down_url",
    ["postgresql://postgres@127.0.0.1:1/nothing", "sqlite:////nonexistent-dir/x/db.sqlite3"],
    ids=["postgresql-refused", "sqlite-unopenable"],
)
async def test_database_down_is_503_with_retry_after(
    down_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    app = create_app(make_settings(tmp_path_factory.mktemp("down"), database_url=down_url))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        answer = await http.post(
            "/api/v1/users", json={"email": "a@b.c", "password": "long enough"}
        )
        ready = await http.get("/readyz")
    await app.state.engine.dispose()
    assert_problem(answer, 503, "service-unavailable")
    assert int(answer.headers["retry-after"]) > 0
    problem = assert_problem(ready, 503, "service-unavailable")
    assert "database" in problem["detail"]


async def test_too_many_connections_is_unavailable_not_a_bug() -> None:
    """asyncpg's "too many clients" (SQLSTATE 53300) is a plain DBAPIError: still a 503."""
    import os
    import secrets

    import psycopg
    from sqlalchemy import text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.ext.asyncio import create_async_engine

    from fastapi_service.errors import is_unavailable

    admin_url = os.environ.get("TEST_DATABASE_URL")
    if not admin_url:
        pytest.skip("TEST_DATABASE_URL is not set")
    role = f"no_connections_{secrets.token_hex(4)}"
    admin = make_url(admin_url).set(drivername="postgresql")
    libpq = admin.render_as_string(hide_password=False)
    with psycopg.connect(libpq, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 0')
    url = admin.set(drivername="postgresql+asyncpg", username=role, password=None)
    engine = create_async_engine(url)
    try:
        with pytest.raises(DBAPIError, match="too many connections") as caught:
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        assert is_unavailable(caught.value), repr(caught.value)
    finally:
        await engine.dispose()
        with psycopg.connect(libpq, autocommit=True) as conn:
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')
