"""The engine's pool: a connection is pinged only when it sat idle (db._ping_idle), PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import create_engine, event, text
from sqlalchemy.pool import NullPool

from conftest import User, data, problem
from flask_service import db
from flask_service.db import database_url
from flask_service.deps import STATE_KEY
from flask_service.settings import Settings


@pytest.fixture
def pool_app(make_app: Callable[..., Flask], base_settings: Settings) -> Flask:
    """An app of its own: its pool starts empty."""
    if base_settings.database_url is None:
        pytest.skip("pool pings: PostgreSQL (SQLite has no server to lose)")
    return make_app()


@pytest.fixture
def pool_pids(pool_app: Flask) -> Iterator[set[int]]:
    """The server pids of the connections the app's pool opens."""
    engine = pool_app.extensions[STATE_KEY].engine
    pids: set[int] = set()

    def opened(dbapi_connection: Any, _record: Any) -> None:
        pids.add(dbapi_connection.info.backend_pid)

    event.listen(engine, "connect", opened)
    yield pids
    event.remove(engine, "connect", opened)


@pytest.fixture
def pings(pool_app: Flask, monkeypatch: pytest.MonkeyPatch) -> list[object]:
    dialect = pool_app.extensions[STATE_KEY].engine.dialect
    original = dialect.do_ping
    seen: list[object] = []

    def counted(dbapi_connection: object) -> bool:
        seen.append(dbapi_connection)
        return bool(original(dbapi_connection))

    monkeypatch.setattr(dialect, "do_ping", counted)
    return seen


def _terminate(settings: Settings, pids: set[int]) -> None:
    """Ends those server sessions from a connection of its own (outside the app's pool)."""
    admin = create_engine(database_url(settings), poolclass=NullPool)
    with admin.connect() as connection:
        for pid in pids:
            connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    admin.dispose()


def _create(pool_app: Flask, user: User) -> dict[str, Any]:
    answer = pool_app.test_client().post(
        "/api/v1/items", json={"name": "pooled", "price": 1}, headers=user.auth
    )
    assert answer.status_code == 201, answer.get_data(as_text=True)
    item: dict[str, Any] = data(answer)
    return item


def test_a_connection_back_in_use_at_once_is_not_pinged(
    pool_app: Flask, user: User, pool_pids: set[int], pings: list[object]
) -> None:
    item = _create(pool_app, user)
    for _ in range(3):
        answer = pool_app.test_client().get(f"/api/v1/items/{item['id']}", headers=user.auth)
        assert answer.status_code == 200
    assert pool_pids  # the reads went through the pool's connections...
    assert pings == []  # ...each checked out again well within PING_IDLE_SECONDS


def test_an_idle_connection_the_database_dropped_is_replaced(
    pool_app: Flask,
    user: User,
    base_settings: Settings,
    pool_pids: set[int],
    pings: list[object],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    item = _create(pool_app, user)
    _terminate(base_settings, set(pool_pids))
    monkeypatch.setattr(db, "PING_IDLE_SECONDS", 0.0)  # every pooled connection counts as idle
    answer = pool_app.test_client().get(f"/api/v1/items/{item['id']}", headers=user.auth)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert pings  # the dead connection failed its ping and a new one was opened


def test_a_connection_dropped_while_in_use_fails_one_request_then_the_pool_reconnects(
    pool_app: Flask, user: User, base_settings: Settings, pool_pids: set[int]
) -> None:
    """The trade-off of pinging idle connections only: one 503, never a 500, then 200s."""
    item = _create(pool_app, user)
    _terminate(base_settings, set(pool_pids))
    client = pool_app.test_client()
    answers = [client.get(f"/api/v1/items/{item['id']}", headers=user.auth) for _ in range(3)]
    problem(answers[0], 503, "service-unavailable")
    assert [answer.status_code for answer in answers[1:]] == [200, 200]
