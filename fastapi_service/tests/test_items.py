"""Items: CRUD, strict input, ETags and preconditions, idempotency, pagination and filters."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from fastapi_service.models import IdempotencyKey, Item
from helpers import assert_problem, create_item, locations, make_user

pytestmark = pytest.mark.anyio
ITEM_KEYS = {"id", "name", "description", "price", "tags", "created_at", "updated_at", "version"}


def _url(item: dict[str, Any]) -> str:
    return f"/api/v1/items/{item['id']}"


async def _count_items(app: FastAPI, name: str) -> int:
    async with app.state.session_factory() as session:
        return int(await session.scalar(select(func.count()).where(Item.name == name)) or 0)


# -- create and read --------------------------------------------------------------------------


async def test_create_item_answers_201_with_location_and_etag(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    body = {"name": "lamp", "price": 12.5, "tags": ["home", "light_2"], "description": "bright"}
    answer = await client.post("/api/v1/items", json=body, headers=auth)
    assert answer.status_code == 201, answer.text
    item = answer.json()
    assert set(item) == ITEM_KEYS
    assert {k: item[k] for k in body} == body
    assert item["version"] == 1
    assert answer.headers["etag"] == '"1"'
    assert answer.headers["location"] == f"/api/v1/items/{item['id']}"
    assert uuid.UUID(item["id"]).version == 7
    created = dt.datetime.fromisoformat(item["created_at"])
    assert created.utcoffset() == dt.timedelta(0)
    assert item["created_at"] == item["updated_at"]


async def test_defaults_apply_and_integers_are_prices(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    item = await create_item(client, auth, price=3)
    assert item["description"] == ""
    assert item["tags"] == []
    assert item["price"] == 3


async def test_read_item(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    item = await create_item(client, auth)
    answer = await client.get(_url(item), headers=auth)
    assert answer.status_code == 200
    assert answer.json() == item
    assert answer.headers["etag"] == '"1"'


async def test_someone_elses_item_is_not_found(
    client: httpx.AsyncClient, auth: dict[str, str], app: FastAPI
) -> None:
    item = await create_item(client, auth)
    other = await make_user(app)
    for method in ("GET", "PUT", "PATCH", "DELETE"):
        kwargs: dict[str, Any] = {"json": {"name": "x", "price": 1}} if method == "PUT" else {}
        if method == "PATCH":
            kwargs = {"json": {}}
        answer = await client.request(method, _url(item), headers=other, **kwargs)
        assert_problem(answer, 404, "not-found")
    assert (await client.get(_url(item), headers=auth)).json() == item


async def test_unknown_item_is_404(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    answer = await client.get(f"/api/v1/items/{uuid.uuid4()}", headers=auth)
    assert_problem(answer, 404, "not-found")


@pytest.mark.parametrize(
    ("body", "location"),
    [
        ({"name": "a", "price": "12.5"}, "body.price"),
        ({"name": "a", "price": True}, "body.price"),
        ({"name": "a", "price": -0.01}, "body.price"),
        ({"name": "a", "price": 1_000_000_001}, "body.price"),
        ({"name": "", "price": 1}, "body.name"),
        ({"name": "x" * 201, "price": 1}, "body.name"),
        ({"name": "nul\u0000", "price": 1}, "body.name"),
        ({"name": "a", "price": 1, "description": "nul\u0000"}, "body.description"),
        ({"name": "a", "price": 1, "description": None}, "body.description"),
        ({"name": "a", "price": 1, "tags": ["Upper"]}, "body.tags.0"),
        ({"name": "a", "price": 1, "tags": [f"t{i}" for i in range(11)]}, "body.tags"),
        ({"name": "a", "price": 1, "tags": "solo"}, "body.tags"),
        ({"name": "a", "price": 1, "version": 5}, "body.version"),
        ({"name": "a", "price": 1, "owner_id": str(uuid.uuid4())}, "body.owner_id"),
        ({"name": 5, "price": 1}, "body.name"),
        ({"price": 1}, "body.name"),
    ],
)
async def test_create_rejects_invalid_bodies(
    client: httpx.AsyncClient, auth: dict[str, str], app: FastAPI, body: Any, location: str
) -> None:
    name = f"never-{uuid.uuid4().hex[:8]}"
    if isinstance(body.get("name"), str) and body["name"] == "a":
        body = {**body, "name": name}
    answer = await client.post("/api/v1/items", json=body, headers=auth)
    assert_problem(answer, 422, "validation-error")
    assert location in locations(answer)
    assert await _count_items(app, name) == 0


async def test_a_price_that_overflows_to_infinity_is_422(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    headers = {**auth, "content-type": "application/json"}
    answer = await client.post(
        "/api/v1/items", content=b'{"name":"a","price":1e400}', headers=headers
    )
    assert_problem(answer, 422, "validation-error")
    assert locations(answer) == ["body.price"]


# -- replace, update, delete -----------------------------------------------------------------


async def test_put_replaces_every_field_and_bumps_the_version(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    item = await create_item(client, auth, description="old", tags=["a"])
    answer = await client.put(_url(item), json={"name": "new", "price": 2}, headers=auth)
    assert answer.status_code == 200, answer.text
    replaced = answer.json()
    assert (replaced["name"], replaced["price"], replaced["description"], replaced["tags"]) == (
        "new",
        2,
        "",
        [],
    )
    assert replaced["version"] == 2
    assert answer.headers["etag"] == '"2"'
    assert replaced["created_at"] == item["created_at"]
    assert replaced["updated_at"] > item["updated_at"]


async def test_patch_changes_only_given_fields(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    item = await create_item(client, auth, description="keep", tags=["x"])
    answer = await client.patch(_url(item), json={"price": 99}, headers=auth)
    assert answer.status_code == 200
    patched = answer.json()
    assert patched["price"] == 99
    assert (patched["name"], patched["description"], patched["tags"]) == (
        item["name"],
        "keep",
        ["x"],
    )
    assert patched["version"] == 2


async def test_an_empty_patch_still_bumps_version_and_updated_at(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    item = await create_item(client, auth)
    answer = await client.patch(_url(item), json={}, headers=auth)
    assert answer.status_code == 200
    assert answer.json()["version"] == 2
    assert answer.json()["updated_at"] > item["updated_at"]


@pytest.mark.parametrize("field", ["name", "description", "price", "tags"])
async def test_patch_never_accepts_null(
    client: httpx.AsyncClient, auth: dict[str, str], field: str
) -> None:
    item = await create_item(client, auth)
    answer = await client.patch(_url(item), json={field: None}, headers=auth)
    assert_problem(answer, 422, "validation-error")
    assert locations(answer) == [f"body.{field}"]


async def test_delete_then_gone(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    item = await create_item(client, auth)
    answer = await client.delete(_url(item), headers=auth)
    assert answer.status_code == 204
    assert answer.content == b""
    assert_problem(await client.get(_url(item), headers=auth), 404, "not-found")
    assert_problem(await client.delete(_url(item), headers=auth), 404, "not-found")


# -- ETag, If-None-Match, If-Match ------------------------------------------------------------


@pytest.mark.parametrize("header", ['"1"', 'W/"1"', '"7", "1"', "*", '"0", W/"1"'])
async def test_if_none_match_hit_is_304(
    client: httpx.AsyncClient, auth: dict[str, str], header: str
) -> None:
    item = await create_item(client, auth)
    answer = await client.get(_url(item), headers={**auth, "If-None-Match": header})
    assert answer.status_code == 304
    assert answer.content == b""
    assert answer.headers["etag"] == '"1"'


async def test_if_none_match_miss_is_200(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    item = await create_item(client, auth)
    answer = await client.get(_url(item), headers={**auth, "If-None-Match": '"2"'})
    assert answer.status_code == 200


@pytest.mark.parametrize("header", ['"1"', "*", '"5", "1"'])
async def test_if_match_hit_applies(
    client: httpx.AsyncClient, auth: dict[str, str], header: str
) -> None:
    item = await create_item(client, auth)
    answer = await client.patch(
        _url(item), json={"name": "b"}, headers={**auth, "If-Match": header}
    )
    assert answer.status_code == 200


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize("header", ['"2"', 'W/"1"', "1", '"1'])
async def test_if_match_miss_is_412_and_changes_nothing(
    client: httpx.AsyncClient, auth: dict[str, str], method: str, header: str
) -> None:
    item = await create_item(client, auth)
    body = {"name": "changed", "price": 5} if method != "DELETE" else None
    answer = await client.request(
        method, _url(item), headers={**auth, "If-Match": header}, json=body
    )
    assert_problem(answer, 412, "precondition-failed")
    assert (await client.get(_url(item), headers=auth)).json() == item


async def test_concurrent_writes_with_one_etag_let_exactly_one_win(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    item = await create_item(client, auth)
    statuses: list[int] = []

    async def write(name: str) -> None:
        answer = await client.patch(
            _url(item), json={"name": name}, headers={**auth, "If-Match": '"1"'}
        )
        statuses.append(answer.status_code)

    async with anyio.create_task_group() as group:
        for index in range(5):
            group.start_soon(write, f"writer {index}")
    assert sorted(statuses) == [200, 412, 412, 412, 412]
    assert (await client.get(_url(item), headers=auth)).json()["version"] == 2


# -- idempotency ------------------------------------------------------------------------------


async def test_same_key_and_body_returns_the_first_item_as_it_is_now(
    client: httpx.AsyncClient, auth: dict[str, str], app: FastAPI
) -> None:
    key = {"Idempotency-Key": f"key-{uuid.uuid4()}"}
    name = f"once-{uuid.uuid4().hex[:6]}"
    body = {"name": name, "price": 4}
    first = await client.post("/api/v1/items", json=body, headers={**auth, **key})
    assert first.status_code == 201
    await client.patch(_url(first.json()), json={"price": 5}, headers=auth)
    again = await client.post("/api/v1/items", json={**body, "tags": []}, headers={**auth, **key})
    assert again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["price"] == 5
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["etag"] == '"2"'
    assert await _count_items(app, name) == 1


async def test_same_key_other_body_is_422(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    key = {"Idempotency-Key": f"key-{uuid.uuid4()}"}
    first = await client.post(
        "/api/v1/items", json={"name": "a", "price": 1}, headers={**auth, **key}
    )
    assert first.status_code == 201
    answer = await client.post(
        "/api/v1/items", json={"name": "a", "price": 2}, headers={**auth, **key}
    )
    problem = assert_problem(answer, 422, "idempotency-key-reused")
    assert problem["title"] == "Idempotency key reused"


async def test_keys_belong_to_their_user(
    client: httpx.AsyncClient, auth: dict[str, str], app: FastAPI
) -> None:
    key = {"Idempotency-Key": f"key-{uuid.uuid4()}"}
    body = {"name": "shared key", "price": 1}
    mine = await client.post("/api/v1/items", json=body, headers={**auth, **key})
    other = await make_user(app)
    theirs = await client.post("/api/v1/items", json=body, headers={**other, **key})
    assert theirs.status_code == 201
    assert theirs.json()["id"] != mine.json()["id"]


async def test_concurrent_duplicates_make_one_item(
    client: httpx.AsyncClient, auth: dict[str, str], app: FastAPI
) -> None:
    key = {"Idempotency-Key": f"key-{uuid.uuid4()}"}
    name = f"race-{uuid.uuid4().hex[:6]}"
    body = {"name": name, "price": 1}
    answers: list[httpx.Response] = []

    async def post() -> None:
        answers.append(await client.post("/api/v1/items", json=body, headers={**auth, **key}))

    async with anyio.create_task_group() as group:
        for _ in range(6):
            group.start_soon(post)
    assert [answer.status_code for answer in answers] == [201] * 6
    assert len({answer.json()["id"] for answer in answers}) == 1
    assert await _count_items(app, name) == 1
    async with app.state.session_factory() as session:
        keys = await session.scalar(
            select(func.count()).where(IdempotencyKey.key == key["Idempotency-Key"])
        )
    assert keys == 1


# -- pagination and filters -------------------------------------------------------------------


async def test_pages_walk_every_item_oldest_first(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    created = [await create_item(client, auth, name=f"n{index}") for index in range(7)]
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/api/v1/items", params=params, headers=auth)).json()
        pages += 1
        seen.extend(item["id"] for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert "=" not in cursor
    assert seen == [item["id"] for item in created]
    assert pages == 3


async def test_default_limit_is_20(client: httpx.AsyncClient, app: FastAPI) -> None:
    auth = await make_user(app)
    for index in range(21):
        await create_item(client, auth, name=f"n{index}")
    page = (await client.get("/api/v1/items", headers=auth)).json()
    assert len(page["items"]) == 20
    assert page["next_cursor"] is not None


async def test_an_exact_last_page_has_no_cursor(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    for index in range(2):
        await create_item(client, auth, name=f"n{index}")
    page = (await client.get("/api/v1/items?limit=2", headers=auth)).json()
    assert len(page["items"]) == 2
    assert page["next_cursor"] is None


async def test_lists_hold_only_the_callers_items(
    client: httpx.AsyncClient, auth: dict[str, str], app: FastAPI
) -> None:
    mine = await create_item(client, auth)
    other = await make_user(app)
    await create_item(client, other)
    page = (await client.get("/api/v1/items", headers=auth)).json()
    assert [item["id"] for item in page["items"]] == [mine["id"]]


async def test_filter_by_exact_tag(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    wanted = await create_item(client, auth, tags=["red", "big"])
    await create_item(client, auth, tags=["reddish"])
    await create_item(client, auth, tags=["r_d"])
    page = (await client.get("/api/v1/items?tag=red", headers=auth)).json()
    assert [item["id"] for item in page["items"]] == [wanted["id"]]
    page = (await client.get("/api/v1/items?tag=r-d", headers=auth)).json()
    assert page["items"] == []


async def test_filter_by_name_substring_case_insensitively(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    lamp = await create_item(client, auth, name="Desk LAMP")
    await create_item(client, auth, name="chair")
    await create_item(client, auth, name="100% cotton")
    page = (await client.get("/api/v1/items", params={"q": "lamp"}, headers=auth)).json()
    assert [item["id"] for item in page["items"]] == [lamp["id"]]
    wildcard = (await client.get("/api/v1/items", params={"q": "_"}, headers=auth)).json()
    assert wildcard["items"] == []
    percent = (await client.get("/api/v1/items", params={"q": "%"}, headers=auth)).json()
    assert [item["name"] for item in percent["items"]] == ["100% cotton"]


async def test_name_filter_folds_case_beyond_ascii(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    wanted = await create_item(client, auth, name="Ärger im ÖLHAFEN")
    await create_item(client, auth, name="arger im olhafen")
    page = (await client.get("/api/v1/items", params={"q": "ärger im öl"}, headers=auth)).json()
    assert [item["id"] for item in page["items"]] == [wanted["id"]]


@pytest.mark.parametrize(
    "cursor", ["nope", "AAAAAAAAAAAAAAAAAAAAAA==", "AAAAAAAAAAAAAAAAAAAAA", "!" * 22]
)
async def test_cursors_we_did_not_make_are_422(
    client: httpx.AsyncClient, auth: dict[str, str], cursor: str
) -> None:
    answer = await client.get("/api/v1/items", params={"cursor": cursor}, headers=auth)
    assert_problem(answer, 422, "validation-error")
    assert locations(answer) == ["query.cursor"]


async def test_unknown_query_parameters_are_ignored(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    answer = await client.get("/api/v1/items?colour=blue", headers=auth)
    assert answer.status_code == 200
