"""GET /api/v1/items/export: JSON Lines from a server-side cursor, streamed."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event
from werkzeug.test import TestResponse

from conftest import TEST_SECRET, User, data, problem
from flask_service import create_app
from flask_service.deps import STATE_KEY
from flask_service.items import service
from flask_service.security import create_access_token
from flask_service.settings import Settings
from test_items import create

EXPORT = "/api/v1/items/export"


def lines(answer: TestResponse) -> list[dict[str, Any]]:
    """The body's lines, parsed; the response is closed (it owns a database session)."""
    with answer:
        text = answer.get_data(as_text=True)
    assert text == "" or text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_export_equals_the_list_oldest_first(client: FlaskClient, user: User) -> None:
    for n in range(5):
        create(client, user, name=f"item {n}")
    answer = client.get(EXPORT, headers=user.auth)
    assert answer.status_code == 200
    assert answer.mimetype == "application/jsonl"
    assert answer.is_streamed
    listed = data(client.get("/api/v1/items?limit=100", headers=user.auth))["items"]
    assert lines(answer) == listed
    assert [item["name"] for item in listed] == [f"item {n}" for n in range(5)]


def test_export_filters_by_tag_and_shows_only_the_callers_items(
    client: FlaskClient, user: User, other_user: User
) -> None:
    red = create(client, user, tags=["red"])
    create(client, user, tags=["blue"])
    create(client, other_user, tags=["red"])
    answer = client.get(f"{EXPORT}?tag=red", headers=user.auth)
    assert [item["id"] for item in lines(answer)] == [red["id"]]
    empty = client.get(EXPORT, headers={"Authorization": f"Bearer {other_user.token}"})
    assert len(lines(empty)) == 1


def test_an_empty_export_is_an_empty_body(client: FlaskClient, user: User) -> None:
    answer = client.get(EXPORT, headers=user.auth)
    assert answer.status_code == 200
    assert lines(answer) == []


def test_export_needs_a_token_and_a_valid_tag(client: FlaskClient, user: User) -> None:
    problem(client.get(EXPORT), 401, "unauthorized")
    invalid = client.get(f"{EXPORT}?tag=Not%20a%20tag", headers=user.auth)
    assert problem(invalid, 422, "validation-error")["errors"][0]["location"] == "query.tag"


def test_export_streams_from_a_cursor_without_blocking_writers(
    app: Flask, user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "EXPORT_BATCH", 2)
    client = app.test_client()
    made = [create(client, user, name=f"item {n}")["id"] for n in range(5)]
    engine = app.extensions[STATE_KEY].engine
    idle = engine.pool.checkedout()
    options: list[dict[str, Any]] = []

    def record(*args: Any) -> None:
        if "FROM items" in str(args[2]):
            options.append(dict(args[4].execution_options))

    event.listen(engine, "before_cursor_execute", record)
    try:
        answer = client.get(EXPORT, headers=user.auth)
        chunks = iter(answer.response)
        first: Any = next(chunks)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert json.loads(first)["id"] == made[0]
    assert options
    assert options[0]["stream_results"]
    assert options[0]["yield_per"] == 2
    # While the export's read transaction is open, a writer is not kept waiting.
    create(app.test_client(), user, name="written meanwhile")
    assert engine.pool.checkedout() == idle + 1  # the export still holds its connection
    answer.close()  # a client that goes away: the session closes, the connection returns
    assert engine.pool.checkedout() == idle


def test_export_with_the_database_down_is_a_503_before_streaming(tmp_path: Path) -> None:
    settings = Settings(
        database_url="postgresql://postgres@127.0.0.1:1/nowhere",  # nothing listens on port 1
        var_dir=tmp_path,
        jwt_secret=TEST_SECRET,
        migrate_on_start=False,
    )
    token = create_access_token(uuid.uuid4(), settings).token
    answer = (
        create_app(settings).test_client().get(EXPORT, headers={"Authorization": f"Bearer {token}"})
    )
    problem(answer, 503, "service-unavailable")
