"""Items CRUD: create_item, read_item, replace_item, update_item, delete_item."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from apiclient import Api, User
from checks import assert_item, assert_problem, assert_utc_timestamp, etag_of, media_type

ITEM_URL = "/api/v1/items/{}"


def _location_path(api: Api, location: str) -> str:
    return location[len(api.base_url) :] if location.startswith(api.base_url) else location


# -- create_item ------------------------------------------------------------------------------


def test_create_item_answers_201_with_location_etag_and_defaults(api: Api, alice: User) -> None:
    answer = api.http.post(
        "/api/v1/items", json={"name": "Lamp", "price": 12.5}, headers=alice.auth
    )
    assert answer.status_code == 201, answer.text
    item = assert_item(answer.json())
    assert item["name"] == "Lamp" and item["price"] == 12.5
    assert item["description"] == "" and item["tags"] == [] and item["version"] == 1
    assert uuid.UUID(item["id"]).version == 7
    assert item["created_at"] == item["updated_at"]
    assert _location_path(api, answer.headers["location"]) == ITEM_URL.format(item["id"])
    assert answer.headers["etag"] == '"1"'
    assert api.item(alice, item["id"]) == item


def test_create_item_keeps_every_field(api: Api, alice: User) -> None:
    body = {"name": "Desk ü 机", "description": "oak\nwide", "price": 250, "tags": ["wood", "b-2"]}
    item = api.create_item(alice, **body)
    assert {key: item[key] for key in body} == body
    assert api.item(alice, item["id"]) == item


@pytest.mark.parametrize("price", [0, 0.1, 12.345, 19.99, 1_000_000_000, 999_999_999.99])
def test_price_round_trips_exactly(api: Api, alice: User, price: float) -> None:
    item = api.create_item(alice, price=price)
    assert item["price"] == price
    stored = api.item(alice, item["id"])
    assert stored is not None and stored["price"] == price


def test_create_item_accepts_json_with_charset(api: Api, alice: User) -> None:
    answer = api.http.post(
        "/api/v1/items",
        content=b'{"name": "charset", "price": 1}',
        headers={**alice.auth, "Content-Type": "application/json; charset=utf-8"},
    )
    assert answer.status_code == 201, answer.text


def test_ids_are_time_ordered(api: Api, user: User) -> None:
    ids = [api.create_item(user, name=f"n{i}")["id"] for i in range(5)]
    assert ids == sorted(ids)
    assert [item["id"] for item in api.items(user)] == ids


# -- read_item and conditional GET ------------------------------------------------------------


def test_read_item_answers_etag(api: Api, alice: User) -> None:
    item = api.create_item(alice)
    answer = api.http.get(ITEM_URL.format(item["id"]), headers=alice.auth)
    assert answer.status_code == 200
    assert answer.headers["etag"] == etag_of(item)
    assert answer.json() == item


@pytest.mark.parametrize("header", ['"1"', 'W/"1"', "*", '"7", "1"', '"9",W/"1"'])
def test_if_none_match_with_current_tag_is_304(api: Api, alice: User, header: str) -> None:
    item = api.create_item(alice)
    answer = api.http.get(
        ITEM_URL.format(item["id"]), headers={**alice.auth, "If-None-Match": header}
    )
    assert answer.status_code == 304, answer.text
    assert answer.content == b""
    assert answer.headers["etag"] == '"1"'
    assert "x-request-id" in answer.headers


@pytest.mark.parametrize("header", ['"2"', 'W/"2"', '"10"', '"1'])
def test_if_none_match_with_other_tag_is_200(api: Api, alice: User, header: str) -> None:
    item = api.create_item(alice)
    answer = api.http.get(
        ITEM_URL.format(item["id"]), headers={**alice.auth, "If-None-Match": header}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == item


def test_read_unknown_item_is_404(api: Api, alice: User) -> None:
    answer = api.http.get(ITEM_URL.format(uuid.uuid4()), headers=alice.auth)
    assert_problem(answer, "not-found")


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
def test_malformed_item_id_is_422_at_path(api: Api, alice: User, method: str) -> None:
    before = api.items(alice)
    body = {"name": "x", "price": 1} if method in {"PUT", "PATCH"} else None
    answer = api.http.request(method, ITEM_URL.format("not-a-uuid"), json=body, headers=alice.auth)
    assert_problem(answer, "validation-error", location="path.item_id")
    assert api.items(alice) == before


# -- replace_item / update_item: versions, updated_at, If-Match ----------------------------------


def test_put_and_patch_bump_version_and_updated_at(api: Api, alice: User) -> None:
    item = api.create_item(alice, name="v1", tags=["a"], description="d")
    url = ITEM_URL.format(item["id"])
    time.sleep(0.01)
    put = api.http.put(url, json={"name": "v2", "price": 3}, headers=alice.auth)
    assert put.status_code == 200, put.text
    replaced = assert_item(put.json())
    # PUT replaces: absent optional fields return to their defaults.
    assert (replaced["name"], replaced["price"], replaced["tags"], replaced["description"]) == (
        "v2",
        3,
        [],
        "",
    )
    assert replaced["version"] == 2 and put.headers["etag"] == '"2"'
    assert replaced["created_at"] == item["created_at"]
    assert assert_utc_timestamp(replaced["updated_at"]) > assert_utc_timestamp(item["updated_at"])

    time.sleep(0.01)
    patch = api.http.patch(url, json={"tags": ["x", "y"]}, headers=alice.auth)
    assert patch.status_code == 200, patch.text
    patched = assert_item(patch.json())
    assert patched["tags"] == ["x", "y"] and patched["name"] == "v2" and patched["price"] == 3
    assert patched["version"] == 3 and patch.headers["etag"] == '"3"'
    assert assert_utc_timestamp(patched["updated_at"]) > assert_utc_timestamp(
        replaced["updated_at"]
    )

    time.sleep(0.01)
    empty = api.http.patch(url, json={}, headers=alice.auth)
    assert empty.status_code == 200, empty.text
    assert empty.json()["version"] == 4 and empty.headers["etag"] == '"4"'
    assert assert_utc_timestamp(empty.json()["updated_at"]) > assert_utc_timestamp(
        patched["updated_at"]
    )
    assert api.item(alice, item["id"]) == empty.json()


@pytest.mark.parametrize("header", ['"1"', "*", '"5", "1"'])
@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_if_match_current_tag_writes(api: Api, alice: User, method: str, header: str) -> None:
    item = api.create_item(alice)
    answer = api.http.request(
        method,
        ITEM_URL.format(item["id"]),
        json={"name": "matched", "price": 2},
        headers={**alice.auth, "If-Match": header},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["version"] == 2 and answer.json()["name"] == "matched"


@pytest.mark.parametrize("header", ['"2"', 'W/"1"', '"0"', '"11"', "garbage"])
@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_if_match_stale_tag_is_412_and_writes_nothing(
    api: Api, alice: User, method: str, header: str
) -> None:
    item = api.create_item(alice)
    body = None if method == "DELETE" else {"name": "stale", "price": 2}
    answer = api.http.request(
        method, ITEM_URL.format(item["id"]), json=body, headers={**alice.auth, "If-Match": header}
    )
    assert_problem(answer, "precondition-failed")
    assert api.item(alice, item["id"]) == item


def test_if_match_after_an_update_needs_the_new_tag(api: Api, alice: User) -> None:
    item = api.create_item(alice)
    url = ITEM_URL.format(item["id"])
    first = api.http.patch(url, json={"price": 5}, headers={**alice.auth, "If-Match": '"1"'})
    assert first.status_code == 200, first.text
    again = api.http.patch(url, json={"price": 6}, headers={**alice.auth, "If-Match": '"1"'})
    assert_problem(again, "precondition-failed")
    fresh = api.http.patch(
        url, json={"price": 6}, headers={**alice.auth, "If-Match": first.headers["etag"]}
    )
    assert fresh.status_code == 200 and fresh.json()["version"] == 3


@pytest.mark.parametrize(
    ("body", "location"),
    [
        ({"name": None}, "body.name"),
        ({"price": None}, "body.price"),
        ({"tags": None}, "body.tags"),
        ({"name": ""}, "body.name"),
        ({"price": -1}, "body.price"),
        ({"price": "12.5"}, "body.price"),
        ({"price": True}, "body.price"),
        ({"tags": ["ok", "Not OK"]}, "body.tags.1"),
        ({"tags": ["t"] * 11}, "body.tags"),
        ({"tags": "a"}, "body.tags"),
        ({"tags": ["ok", "t" * 33]}, "body.tags.1"),
        ({"description": "x" * 2001}, "body.description"),
    ],
    ids=[
        "null-name",
        "null-price",
        "null-tags",
        "empty-name",
        "negative-price",
        "string-price",
        "bool-price",
        "bad-tag",
        "too-many-tags",
        "tags-not-list",
        "long-tag",
        "long-description",
    ],
)
def test_update_item_rejects_invalid_fields(
    api: Api, alice: User, body: dict[str, Any], location: str
) -> None:
    item = api.create_item(alice, tags=["keep"])
    answer = api.http.patch(ITEM_URL.format(item["id"]), json=body, headers=alice.auth)
    assert_problem(answer, "validation-error", location=location)
    assert api.item(alice, item["id"]) == item


@pytest.mark.parametrize(
    ("body", "location"),
    [
        ({"price": 1}, "body.name"),
        ({"name": "no price"}, "body.price"),
        ({"name": "x" * 201, "price": 1}, "body.name"),
        ({"name": "x", "price": 1_000_000_001}, "body.price"),
        ({"name": "x", "price": 1, "tags": [1]}, "body.tags.0"),
    ],
    ids=["no-name", "no-price", "long-name", "price-too-high", "number-tag"],
)
def test_replace_item_rejects_invalid_bodies(
    api: Api, alice: User, body: dict[str, Any], location: str
) -> None:
    item = api.create_item(alice)
    answer = api.http.put(ITEM_URL.format(item["id"]), json=body, headers=alice.auth)
    assert_problem(answer, "validation-error", location=location)
    assert api.item(alice, item["id"]) == item


def test_write_to_unknown_item_is_404(api: Api, alice: User) -> None:
    before = api.items(alice)
    url = ITEM_URL.format(uuid.uuid4())
    for method, body in (("PUT", {"name": "x", "price": 1}), ("PATCH", {}), ("DELETE", None)):
        answer = api.http.request(method, url, json=body, headers=alice.auth)
        assert_problem(answer, "not-found")
    assert api.items(alice) == before


# -- delete_item ------------------------------------------------------------------------------


def test_delete_item_answers_204_then_404(api: Api, alice: User) -> None:
    item = api.create_item(alice)
    url = ITEM_URL.format(item["id"])
    answer = api.http.delete(url, headers={**alice.auth, "If-Match": '"1"'})
    assert answer.status_code == 204, answer.text
    assert answer.content == b""
    assert "content-type" not in answer.headers  # no body, so no media type (found by the diff run)
    assert_problem(api.http.get(url, headers=alice.auth), "not-found")
    assert_problem(api.http.delete(url, headers=alice.auth), "not-found")
    assert item["id"] not in [found["id"] for found in api.items(alice)]


# -- BOLA: someone else's item is "not found" --------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
def test_another_users_item_is_404_and_unchanged(
    api: Api, alice: User, bob: User, method: str
) -> None:
    item = api.create_item(alice, name="alice's", tags=["private"])
    bobs_before = api.items(bob)
    body = {"name": "bob was here", "price": 0} if method in {"PUT", "PATCH"} else None
    for if_match in (None, "*", '"1"'):
        headers = {**bob.auth, **({"If-Match": if_match} if if_match else {})}
        answer = api.http.request(method, ITEM_URL.format(item["id"]), json=body, headers=headers)
        assert_problem(answer, "not-found")
    assert api.item(alice, item["id"]) == item
    assert api.items(bob) == bobs_before
    assert item["id"] not in [found["id"] for found in api.items(bob, tag="private")]


def test_create_item_with_a_chunked_body(api: Api, alice: User) -> None:
    # The positive control for the chunked 413 tests: a small chunked body is read as usual.
    answer = api.raw(
        "POST",
        "/api/v1/items",
        b'{"name": "chunked", "price": 2}',
        {**alice.auth, "Content-Type": "application/json"},
        chunked=True,
    )
    assert answer.status_code == 201, answer.text
    assert api.item(alice, answer.json()["id"]) == answer.json()


@pytest.mark.parametrize("header", ["If-Match", "If-None-Match"])
def test_conditional_header_over_200_characters_is_422(api: Api, alice: User, header: str) -> None:
    item = api.create_item(alice)
    method = "GET" if header == "If-None-Match" else "PATCH"
    body = None if method == "GET" else {"name": "too long"}
    answer = api.http.request(
        method,
        ITEM_URL.format(item["id"]),
        json=body,
        headers={**alice.auth, header: '"1", ' + ", ".join(['"2"'] * 60)},
    )
    assert_problem(answer, "validation-error", location=f"header.{header}")
    assert api.item(alice, item["id"]) == item


def test_json_answers_say_application_json(api: Api, alice: User) -> None:
    item = api.create_item(alice)
    for answer in (
        api.http.get(ITEM_URL.format(item["id"]), headers=alice.auth),
        api.http.get("/api/v1/items", headers=alice.auth),
        api.http.get("/api/v1/users/me", headers=alice.auth),
    ):
        assert media_type(answer) == "application/json", answer.headers
