"""GET /api/v1/items/export: JSON Lines from a server-side cursor, streamed."""

from __future__ import annotations

import json
import uuid
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event
from starlette.types import Message

from fastapi_service import create_app, security
from fastapi_service.items import service
from helpers import assert_problem, create_item, make_settings, make_user

pytestmark = pytest.mark.anyio
EXPORT = "/api/v1/items/export"


def lines(answer: httpx.Response) -> list[dict[str, Any]]:
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/jsonl"
    assert answer.text == "" or answer.text.endswith("\n")
    return [json.loads(line) for line in answer.text.splitlines()]


async def test_export_equals_the_list_oldest_first(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    for n in range(5):
        await create_item(client, auth, name=f"item {n}")
    exported = lines(await client.get(EXPORT, headers=auth))
    listed = (await client.get("/api/v1/items?limit=100", headers=auth)).json()["items"]
    assert exported == listed
    assert [item["name"] for item in listed] == [f"item {n}" for n in range(5)]


async def test_export_filters_by_tag_and_shows_only_the_callers_items(
    app: FastAPI, client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    other = await make_user(app)
    red = await create_item(client, auth, tags=["red"])
    await create_item(client, auth, tags=["blue"])
    await create_item(client, other, tags=["red"])
    answer = await client.get(f"{EXPORT}?tag=red", headers=auth)
    assert [item["id"] for item in lines(answer)] == [red["id"]]
    assert len(lines(await client.get(EXPORT, headers=other))) == 1


async def test_an_empty_export_is_an_empty_body(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    assert lines(await client.get(EXPORT, headers=auth)) == []


async def test_export_needs_a_token_and_a_valid_tag(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    assert_problem(await client.get(EXPORT), 401, "unauthorized")
    invalid = await client.get(f"{EXPORT}?tag=Not%20a%20tag", headers=auth)
    body = assert_problem(invalid, 422, "validation-error")
    assert body["errors"][0]["location"] == "query.tag"


def _scope(auth: dict[str, str]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": EXPORT,
        "raw_path": EXPORT.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), (b"authorization", auth["Authorization"].encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }


async def test_export_streams_from_a_cursor_without_blocking_writers(
    app: FastAPI, client: httpx.AsyncClient, auth: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first line is sent before the last row is read; a client that leaves frees the
    connection; meanwhile a writer goes through (the read holds no SQLite write lock)."""
    monkeypatch.setattr(service, "EXPORT_BATCH", 2)
    made = [(await create_item(client, auth))["id"] for _ in range(5)]
    engine = app.state.engine.sync_engine
    idle = engine.pool.checkedout()
    options: list[dict[str, Any]] = []
    bodies: list[bytes] = []
    gone = anyio.Event()
    requested = False

    def record(*args: Any) -> None:
        if "FROM items" in str(args[2]):
            options.append(dict(args[4].execution_options))

    async def receive() -> Message:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body" and message.get("body") and not bodies:
            bodies.append(message["body"])
            assert engine.pool.checkedout() == idle + 1  # the export holds its connection
            await create_item(client, auth, name="written meanwhile")
            gone.set()  # the client goes away after the first line

    event.listen(engine, "before_cursor_execute", record)
    try:
        with anyio.fail_after(10):
            await app(_scope(auth), receive, send)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert json.loads(bodies[0])["id"] == made[0]
    assert options[0]["stream_results"]
    assert options[0]["yield_per"] == 2
    assert engine.pool.checkedout() == idle


async def test_export_with_the_database_down_is_a_503_before_streaming(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    down_url = "postgresql://postgres@127.0.0.1:1/nothing"  # nothing listens on port 1
    app = create_app(make_settings(tmp_path_factory.mktemp("down"), database_url=down_url))
    token = security.create_access_token(uuid.uuid4(), app.state.settings).token
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        answer = await http.get(EXPORT, headers={"Authorization": f"Bearer {token}"})
    await app.state.engine.dispose()
    assert_problem(answer, 503, "service-unavailable")
