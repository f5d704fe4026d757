"""The request's session: commit before the response, problems (not 500s) when commit fails."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event, func, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool
from sqlalchemy.util import greenlet_spawn
from sqlalchemy.util.queue import Empty

from fastapi_service import db
from fastapi_service.db import database_url
from fastapi_service.models import Item
from fastapi_service.settings import Settings
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


# The pool pings a connection only when it sat idle (db._ping_idle), PostgreSQL only.


@pytest.fixture
def pool_pids(app: FastAPI) -> Iterator[set[int]]:
    """The server pids of the connections the app's pool opens from now on (pool emptied)."""
    engine = app.state.engine
    if engine.dialect.name != "postgresql":
        pytest.skip("pool pings: PostgreSQL (SQLite has no server to lose)")
    pids: set[int] = set()

    def opened(dbapi_connection: Any, _record: Any) -> None:
        pids.add(dbapi_connection.driver_connection.get_server_pid())

    event.listen(engine.sync_engine, "connect", opened)
    engine.sync_engine.pool.dispose()
    yield pids
    event.remove(engine.sync_engine, "connect", opened)


@pytest.fixture
def pings(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> list[object]:
    dialect = app.state.engine.dialect
    original = dialect.do_ping
    seen: list[object] = []

    def counted(dbapi_connection: object) -> bool:
        seen.append(dbapi_connection)
        return bool(original(dbapi_connection))

    monkeypatch.setattr(dialect, "do_ping", counted)
    return seen


async def _terminate(settings: Settings, pids: set[int]) -> None:
    """Ends those server sessions from a connection of its own (outside the app's pool)."""
    admin = create_async_engine(database_url(settings), poolclass=NullPool)
    async with admin.connect() as connection:
        for pid in pids:
            await connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    await admin.dispose()


async def test_a_connection_back_in_use_at_once_is_not_pinged(
    client: httpx.AsyncClient, auth: dict[str, str], pool_pids: set[int], pings: list[object]
) -> None:
    item = await create_item(client, auth)
    for _ in range(3):
        answer = await client.get(f"/api/v1/items/{item['id']}", headers=auth)
        assert answer.status_code == 200
    assert pool_pids  # the reads went through the pool's connections...
    assert pings == []  # ...each checked out again well within PING_IDLE_SECONDS


async def test_an_idle_connection_the_database_dropped_is_replaced(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    settings: Settings,
    pool_pids: set[int],
    pings: list[object],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    item = await create_item(client, auth)
    await _terminate(settings, set(pool_pids))
    monkeypatch.setattr(db, "PING_IDLE_SECONDS", 0.0)  # every pooled connection counts as idle
    answer = await client.get(f"/api/v1/items/{item['id']}", headers=auth)
    assert answer.status_code == 200, answer.text
    assert pings  # the dead connection failed its ping and a new one was opened


async def test_a_connection_dropped_while_in_use_fails_one_request_then_the_pool_reconnects(
    client: httpx.AsyncClient, auth: dict[str, str], settings: Settings, pool_pids: set[int]
) -> None:
    """The trade-off of pinging idle connections only: one 503, never a 500, then 200s."""
    item = await create_item(client, auth)
    await _terminate(settings, set(pool_pids))
    answers = [await client.get(f"/api/v1/items/{item['id']}", headers=auth) for _ in range(3)]
    assert_problem(answers[0], 503, "service-unavailable")
    assert [answer.status_code for answer in answers[1:]] == [200, 200]


# The pool's queue is first come, first served (db.FairQueue).


async def _get(queue: db.FairQueue, seconds: float) -> Any:
    return await greenlet_spawn(queue.get, True, seconds)


async def test_the_pool_queue_serves_waiting_requests_in_turn() -> None:
    """Twenty requests share two connections for a second, each giving its connection back
    and asking again at once: each gets its turn. SQLAlchemy's own queue lets the one giving
    back take the connection again, past the waiters (sqlalchemy#7679), so two of the twenty
    kept the connections for the whole second."""
    queue = db.FairQueue(maxsize=2)
    for connection in ("a", "b"):
        queue.put_nowait(connection)
    turns = dict.fromkeys(range(20), 0)
    waits: list[float] = []
    deadline = time.monotonic() + 1.0

    async def request(n: int) -> None:
        while time.monotonic() < deadline:
            asked = time.monotonic()
            connection = await _get(queue, 5.0)
            waits.append(time.monotonic() - asked)
            turns[n] += 1
            await asyncio.sleep(0.01)  # the query
            queue.put_nowait(connection)

    async with anyio.create_task_group() as group:
        for n in turns:
            group.start_soon(request, n)
    assert min(turns.values()) >= 3, turns
    assert max(waits) < 0.5


async def test_a_waiting_request_times_out_as_empty() -> None:
    queue = db.FairQueue(maxsize=1)
    with pytest.raises(Empty):
        await _get(queue, 0.05)
    queue.put_nowait("a")  # nobody waits any more: it stays in the queue
    assert await _get(queue, 0.05) == "a"


async def test_a_connection_handed_to_a_request_cancelled_before_it_ran_goes_to_the_next() -> None:
    queue = db.FairQueue(maxsize=1)
    first = asyncio.ensure_future(_get(queue, 5.0))
    second = asyncio.ensure_future(_get(queue, 5.0))
    await asyncio.sleep(0.05)  # both wait, first in line
    queue.put_nowait("a")  # handed to the first...
    first.cancel()  # ...which is cancelled (its client left) before it runs
    assert await second == "a"
    with pytest.raises(asyncio.CancelledError):
        await first
