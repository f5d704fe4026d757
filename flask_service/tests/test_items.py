"""Items: CRUD, ETags and preconditions, idempotent creation, cursor pagination."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event

from conftest import User, data, locations, problem
from flask_service.deps import STATE_KEY

ITEM = {"name": "Desk lamp", "description": "brass", "price": 12.5, "tags": ["home", "light"]}


def create(client: FlaskClient, user: User, **fields: Any) -> dict[str, Any]:
    answer = client.post("/api/v1/items", json={**ITEM, **fields}, headers=user.auth)
    assert answer.status_code == 201, answer.get_data(as_text=True)
    body: dict[str, Any] = data(answer)
    return body


def _aware(value: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(value)
    assert moment.utcoffset() == dt.timedelta(0)
    return moment


def test_create_returns_the_item_with_location_and_etag(client: FlaskClient, user: User) -> None:
    answer = client.post("/api/v1/items", json={"name": "x", "price": 3}, headers=user.auth)
    assert answer.status_code == 201
    item = data(answer)
    assert answer.headers["Location"] == f"/api/v1/items/{item['id']}"
    assert answer.headers["ETag"] == '"1"'
    assert item["description"] == ""
    assert item["tags"] == []
    assert item["price"] == 3
    assert item["version"] == 1
    assert uuid.UUID(item["id"]).version == 7
    assert _aware(item["created_at"]) == _aware(item["updated_at"])


def test_read_returns_etag_and_304_on_a_match(client: FlaskClient, user: User) -> None:
    item = create(client, user)
    path = f"/api/v1/items/{item['id']}"
    answer = client.get(path, headers=user.auth)
    assert answer.status_code == 200
    assert answer.json == item
    assert answer.headers["ETag"] == '"1"'
    for tag in ['"1"', 'W/"1"', '"9", "1"', "*"]:
        cached = client.get(path, headers={**user.auth, "If-None-Match": tag})
        assert cached.status_code == 304, tag
        assert cached.headers["ETag"] == '"1"'
        assert cached.get_data() == b""
    assert client.get(path, headers={**user.auth, "If-None-Match": '"2"'}).status_code == 200


def test_a_read_takes_no_write_transaction(app: Flask, client: FlaskClient, user: User) -> None:
    """GET runs without a transaction on PostgreSQL (no BEGIN/COMMIT round trips) and from a
    snapshot on SQLite (never BEGIN IMMEDIATE, so it does not wait for writers)."""
    item = create(client, user)
    engine = app.extensions[STATE_KEY].engine
    seen: list[tuple[str, bool | None]] = []

    def record(connection: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        dbapi = connection.connection.dbapi_connection
        seen.append((statement, getattr(dbapi, "autocommit", None)))

    event.listen(engine, "before_cursor_execute", record)
    try:
        assert client.get(f"/api/v1/items/{item['id']}", headers=user.auth).status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert seen, "the read sent nothing"
    if engine.dialect.name == "sqlite":
        assert [statement for statement, _ in seen if statement.startswith("BEGIN")] == [
            "BEGIN DEFERRED"
        ]
    else:
        assert all(autocommit is True for _, autocommit in seen), seen


def test_put_replaces_and_bumps_the_version(client: FlaskClient, user: User) -> None:
    item = create(client, user)
    answer = client.put(
        f"/api/v1/items/{item['id']}", json={"name": "new", "price": 1}, headers=user.auth
    )
    assert answer.status_code == 200
    replaced = data(answer)
    assert (replaced["name"], replaced["description"], replaced["tags"]) == ("new", "", [])
    assert replaced["version"] == 2
    assert answer.headers["ETag"] == '"2"'
    assert replaced["created_at"] == item["created_at"]
    assert _aware(replaced["updated_at"]) > _aware(item["updated_at"])


def test_patch_changes_only_the_given_fields(client: FlaskClient, user: User) -> None:
    item = create(client, user)
    path = f"/api/v1/items/{item['id']}"
    answer = client.patch(path, json={"price": 99}, headers=user.auth)
    assert answer.status_code == 200
    assert data(answer)["price"] == 99
    assert data(answer)["name"] == item["name"]
    assert data(answer)["tags"] == item["tags"]
    empty = client.patch(path, json={}, headers=user.auth)
    assert empty.status_code == 200
    assert data(empty)["version"] == 3


def test_patch_refuses_null(client: FlaskClient, user: User) -> None:
    item = create(client, user)
    answer = client.patch(f"/api/v1/items/{item['id']}", json={"name": None}, headers=user.auth)
    problem(answer, 422, "validation-error")
    assert locations(answer) == ["body.name"]


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_stale_if_match_is_412_and_changes_nothing(
    client: FlaskClient, user: User, method: str
) -> None:
    item = create(client, user)
    path = f"/api/v1/items/{item['id']}"
    body = {"name": "changed", "price": 2} if method != "DELETE" else None
    for tag in ['"2"', 'W/"1"', '"1', "garbage"]:
        answer = client.open(path, method=method, json=body, headers={**user.auth, "If-Match": tag})
        problem(answer, 412, "precondition-failed")
    assert client.get(path, headers=user.auth).json == item


@pytest.mark.parametrize("tag", ['"1"', "*", '"7", "1"'])
def test_matching_if_match_lets_the_write_through(
    client: FlaskClient, user: User, tag: str
) -> None:
    item = create(client, user)
    path = f"/api/v1/items/{item['id']}"
    answer = client.patch(path, json={"name": "ok"}, headers={**user.auth, "If-Match": tag})
    assert answer.status_code == 200
    assert answer.headers["ETag"] == '"2"'


def test_delete_then_404(client: FlaskClient, user: User) -> None:
    item = create(client, user)
    path = f"/api/v1/items/{item['id']}"
    answer = client.delete(path, headers={**user.auth, "If-Match": '"1"'})
    assert answer.status_code == 204
    assert answer.get_data() == b""
    assert "Content-Type" not in answer.headers
    problem(client.get(path, headers=user.auth), 404, "not-found")
    problem(client.delete(path, headers=user.auth), 404, "not-found")


def test_someone_elses_item_is_404(client: FlaskClient, user: User, other_user: User) -> None:
    item = create(client, user)
    path = f"/api/v1/items/{item['id']}"
    problem(client.get(path, headers=other_user.auth), 404, "not-found")
    problem(client.put(path, json=ITEM, headers=other_user.auth), 404, "not-found")
    problem(client.patch(path, json={}, headers=other_user.auth), 404, "not-found")
    problem(client.delete(path, headers=other_user.auth), 404, "not-found")
    assert data(client.get("/api/v1/items", headers=other_user.auth))["items"] == []
    assert client.get(path, headers=user.auth).json == item


def test_idempotency_key_replays_the_first_item(client: FlaskClient, user: User) -> None:
    headers = {**user.auth, "Idempotency-Key": f"key-{uuid.uuid4()}"}
    first = client.post("/api/v1/items", json={"name": "once", "price": 1}, headers=headers)
    assert first.status_code == 201
    changed = client.patch(
        first.headers["Location"], json={"description": "later"}, headers=user.auth
    )
    assert changed.status_code == 200
    # Same body after defaults ("price": 1 is 1.0, description/tags defaulted): a replay.
    again = client.post(
        "/api/v1/items",
        json={"name": "once", "price": 1.0, "description": "", "tags": []},
        headers=headers,
    )
    assert again.status_code == 201
    assert again.json == data(changed)
    assert again.headers["Location"] == first.headers["Location"]
    assert again.headers["ETag"] == '"2"'
    other = client.post("/api/v1/items", json={"name": "twice", "price": 1}, headers=headers)
    problem(other, 422, "idempotency-key-reused")
    assert len(data(client.get("/api/v1/items", headers=user.auth))["items"]) == 1


def test_idempotency_keys_belong_to_their_user(
    client: FlaskClient, user: User, other_user: User
) -> None:
    key = {"Idempotency-Key": "shared-key"}
    mine = client.post("/api/v1/items", json=ITEM, headers={**user.auth, **key})
    theirs = client.post("/api/v1/items", json=ITEM, headers={**other_user.auth, **key})
    assert mine.status_code == theirs.status_code == 201
    assert data(mine)["id"] != data(theirs)["id"]


def test_concurrent_duplicates_make_one_item(app: Flask, user: User) -> None:
    headers = {**user.auth, "Idempotency-Key": f"race-{uuid.uuid4()}"}
    barrier = threading.Barrier(6)
    answers: list[Any] = []

    def post() -> None:
        client = app.test_client()
        barrier.wait()
        answers.append(client.post("/api/v1/items", json=ITEM, headers=headers))

    threads = [threading.Thread(target=post) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [a.status_code for a in answers] == [201] * 6
    assert len({data(a)["id"] for a in answers}) == 1
    listed = data(app.test_client().get("/api/v1/items", headers=user.auth))["items"]
    assert len(listed) == 1


def test_racing_writers_with_one_etag_one_wins(app: Flask, user: User) -> None:
    item = create(app.test_client(), user)
    barrier = threading.Barrier(4)
    statuses: list[int] = []

    def patch(n: int) -> None:
        client = app.test_client()
        barrier.wait()
        answer = client.patch(
            f"/api/v1/items/{item['id']}",
            json={"name": f"writer {n}"},
            headers={**user.auth, "If-Match": '"1"'},
        )
        statuses.append(answer.status_code)

    threads = [threading.Thread(target=patch, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200, 412, 412, 412]


def test_cursor_pagination_walks_everything_oldest_first(client: FlaskClient, user: User) -> None:
    made = [create(client, user, name=f"item {n}")["id"] for n in range(7)]
    seen: list[str] = []
    url = "/api/v1/items?limit=3"
    pages = 0
    while True:
        page = data(client.get(url, headers=user.auth))
        pages += 1
        seen += [item["id"] for item in page["items"]]
        if page["next_cursor"] is None:
            break
        assert "=" not in page["next_cursor"]
        url = f"/api/v1/items?limit=3&cursor={page['next_cursor']}"
    assert seen == made
    assert pages == 3


def test_list_filters_by_tag_and_name(client: FlaskClient, user: User) -> None:
    create(client, user, name="Red Chair", tags=["chair", "red"])
    create(client, user, name="Blue chair", tags=["chair"])
    create(client, user, name="100% wool_rug", tags=["rug"])

    def names(query: str) -> list[str]:
        answer = client.get(f"/api/v1/items?{query}", headers=user.auth)
        return [item["name"] for item in data(answer)["items"]]

    assert names("tag=chair") == ["Red Chair", "Blue chair"]
    assert names("tag=red") == ["Red Chair"]
    assert names("q=CHAIR") == ["Red Chair", "Blue chair"]
    assert names("q=%25") == ["100% wool_rug"]
    assert names("q=_") == ["100% wool_rug"]
    assert names("tag=chair&q=blue") == ["Blue chair"]
    assert names("tag=nothing") == []


def test_nul_in_text_is_refused_and_nothing_is_stored(client: FlaskClient, user: User) -> None:
    answer = client.post("/api/v1/items", json={"name": "a\x00b", "price": 1}, headers=user.auth)
    problem(answer, 422, "validation-error")
    assert data(client.get("/api/v1/items", headers=user.auth))["items"] == []


@contextmanager
def statements(app: Flask) -> Iterator[list[str]]:
    seen: list[str] = []
    engine = app.extensions[STATE_KEY].engine

    def record(*args: Any) -> None:
        seen.append(str(args[2]))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def test_a_read_costs_one_query_and_never_touches_users(app: Flask, user: User) -> None:
    client = app.test_client()
    item = create(client, user)
    with statements(app) as seen:
        assert client.get(f"/api/v1/items/{item['id']}", headers=user.auth).status_code == 200
    queries = [sql for sql in seen if sql.lstrip().upper().startswith("SELECT")]
    assert len(queries) == 1
    assert "users" not in queries[0]


def test_name_filter_folds_case_beyond_ascii(client: FlaskClient, user: User) -> None:
    wanted = create(client, user, name="Ärger im ÖLHAFEN")
    create(client, user, name="arger im olhafen")
    answer = client.get("/api/v1/items?q=ärger im öl", headers=user.auth)
    assert [item["id"] for item in data(answer)["items"]] == [wanted["id"]]
