"""The request's session: commit before the response, problems (not 500s) when commit fails."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event, func, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from fastapi_service.models import Item
from helpers import assert_problem, create_item

pytestmark = pytest.mark.anyio


@pytest.fixture
def failing_commits() -> Iterator[None]:
    """Every ORM commit fails as if the database went away mid-request."""

    def refuse(session: Session) -> None:
        if not session.in_nested_transaction():  # savepoint releases fire this event too
            raise OperationalError("COMMIT", {}, ConnectionError("connection lost"))

    event.listen(Session, "before_commit", refuse)
    yield
    event.remove(Session, "before_commit", refuse)


async def test_a_failed_commit_is_a_503_and_stores_nothing(
    client: httpx.AsyncClient, auth: dict[str, str], app: FastAPI, failing_commits: None
) -> None:
    name = f"uncommitted-{uuid.uuid4().hex[:6]}"
    answer = await client.post("/api/v1/items", json={"name": name, "price": 1}, headers=auth)
    assert_problem(answer, 503, "service-unavailable")
    assert answer.headers["retry-after"]
    async with app.state.engine.connect() as connection:
        count = await connection.scalar(select(func.count()).where(Item.name == name))
    assert count == 0


async def test_the_commit_happens_before_the_response(
    client: httpx.AsyncClient, auth: dict[str, str], app: FastAPI
) -> None:
    order: list[str] = []

    def committed(session: Session) -> None:
        if not session.in_nested_transaction():  # savepoint releases fire this event too
            order.append("commit")

    event.listen(Session, "after_commit", committed)
    try:
        answer = await client.post("/api/v1/items", json={"name": "a", "price": 1}, headers=auth)
        order.append("response")
    finally:
        event.remove(Session, "after_commit", committed)
    assert answer.status_code == 201
    assert order == ["commit", "response"]


async def test_sqlite_connections_use_wal_and_foreign_keys(app: FastAPI) -> None:
    if app.state.engine.dialect.name != "sqlite":
        pytest.skip("SQLite pragmas")
    async with app.state.engine.connect() as connection:
        assert await connection.scalar(text("PRAGMA journal_mode")) == "wal"
        assert await connection.scalar(text("PRAGMA foreign_keys")) == 1
        assert await connection.scalar(text("PRAGMA busy_timeout")) == 30000


async def test_timestamps_come_back_in_utc(
    client: httpx.AsyncClient, auth: dict[str, str], app: FastAPI
) -> None:
    answer = await client.post("/api/v1/items", json={"name": "tz", "price": 1}, headers=auth)
    async with app.state.session_factory() as session:
        item = await session.get(Item, uuid.UUID(answer.json()["id"]))
        assert item is not None
        assert item.created_at.utcoffset() == dt.timedelta(0)


async def test_a_read_takes_no_write_transaction(
    client: httpx.AsyncClient, auth: dict[str, str], app: FastAPI
) -> None:
    """GET runs without a transaction on PostgreSQL (no BEGIN/COMMIT round trips) and from a
    snapshot on SQLite (never BEGIN IMMEDIATE, so it does not wait for writers)."""
    item = await create_item(client, auth)
    engine = app.state.engine.sync_engine
    seen: list[tuple[str, bool | None]] = []

    def record(connection: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        dbapi = connection.connection.dbapi_connection
        seen.append((statement, getattr(dbapi, "autocommit", None)))

    event.listen(engine, "before_cursor_execute", record)
    try:
        answer = await client.get(f"/api/v1/items/{item['id']}", headers=auth)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert answer.status_code == 200
    assert seen, "the read sent nothing"
    if engine.dialect.name == "sqlite":
        assert [statement for statement, _ in seen if statement.startswith("BEGIN")] == [
            "BEGIN DEFERRED"
        ]
    else:
        assert all(autocommit is True for _, autocommit in seen), seen
