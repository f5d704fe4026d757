"""Listing items: list_items pages, cursors, filters and query validation."""

from __future__ import annotations

from typing import Any

import pytest

from apiclient import Api, User
from checks import assert_item, assert_problem


def test_list_items_pages_oldest_first_with_default_limit(api: Api, user: User) -> None:
    created = [api.create_item(user, name=f"item {i:02}") for i in range(23)]
    first = api.http.get("/api/v1/items", headers=user.auth)
    assert first.status_code == 200, first.text
    page = first.json()
    assert set(page) == {"items", "next_cursor"}
    assert [item["id"] for item in page["items"]] == [item["id"] for item in created[:20]]
    for item in page["items"]:
        assert_item(item)
    assert isinstance(page["next_cursor"], str)
    assert "=" not in page["next_cursor"]
    second = api.http.get(
        "/api/v1/items", params={"cursor": page["next_cursor"]}, headers=user.auth
    ).json()
    assert [item["id"] for item in second["items"]] == [item["id"] for item in created[20:]]
    assert second["next_cursor"] is None


def test_list_items_empty(api: Api, user: User) -> None:
    answer = api.http.get("/api/v1/items", headers=user.auth)
    assert answer.status_code == 200
    assert answer.json() == {"items": [], "next_cursor": None}


def test_list_items_exact_page_ends_with_null_cursor_eventually(api: Api, user: User) -> None:
    for i in range(4):
        api.create_item(user, name=f"n{i}")
    first = api.http.get("/api/v1/items", params={"limit": 2}, headers=user.auth).json()
    second = api.http.get(
        "/api/v1/items", params={"limit": 2, "cursor": first["next_cursor"]}, headers=user.auth
    ).json()
    assert len(first["items"]) == 2 and len(second["items"]) == 2
    if second["next_cursor"] is not None:
        third = api.http.get(
            "/api/v1/items",
            params={"limit": 2, "cursor": second["next_cursor"]},
            headers=user.auth,
        ).json()
        assert third == {"items": [], "next_cursor": None}


def test_list_items_filters_by_tag_and_name(api: Api, user: User) -> None:
    red_lamp = api.create_item(user, name="Red LAMP", tags=["red", "light"])
    blue_lamp = api.create_item(user, name="blue lamp", tags=["blue", "light"])
    red_chair = api.create_item(user, name="red chair", tags=["red"])
    api.create_item(user, name="lampshade-less", tags=["reddish"])

    def ids(**params: Any) -> list[str]:
        return [item["id"] for item in api.items(user, **params)]

    assert ids(tag="red") == [red_lamp["id"], red_chair["id"]]
    assert ids(tag="light") == [red_lamp["id"], blue_lamp["id"]]
    assert ids(q="LAMP") == [red_lamp["id"], blue_lamp["id"], *ids(q="lampshade")]
    assert ids(q="lamp", tag="red") == [red_lamp["id"]]
    assert ids(q="chair", tag="blue") == []
    assert ids(q="%") == [] and ids(q="_") == []  # no LIKE wildcards leak through


def test_list_items_filter_paginates(api: Api, user: User) -> None:
    wanted = [api.create_item(user, name=f"w{i}", tags=["w"])["id"] for i in range(5)]
    for i in range(5):
        api.create_item(user, name=f"o{i}", tags=["o"])
    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 2, "tag": "w", **({"cursor": cursor} if cursor else {})}
        page = api.http.get("/api/v1/items", params=params, headers=user.auth).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == wanted


def test_list_items_ignores_unknown_query_parameters(api: Api, user: User) -> None:
    api.create_item(user)
    answer = api.http.get("/api/v1/items", params={"color": "red", "x": ""}, headers=user.auth)
    assert answer.status_code == 200 and len(answer.json()["items"]) == 1


@pytest.mark.parametrize(
    "params",
    [
        {"tag": "Not A Tag"},
        {"tag": ""},
        {"q": ""},
        {"q": "x" * 201},
        {"q": "a\u0000b"},
        {"limit": "ten"},
        {"limit": "1.5"},
        {"limit": "-1"},
    ],
    ids=[
        "bad-tag",
        "empty-tag",
        "empty-q",
        "long-q",
        "nul-q",
        "word-limit",
        "float-limit",
        "negative-limit",
    ],
)
def test_list_items_rejects_invalid_query(api: Api, alice: User, params: dict[str, str]) -> None:
    answer = api.http.get("/api/v1/items", params=params, headers=alice.auth)
    assert_problem(answer, "validation-error", location=f"query.{next(iter(params))}")


def test_list_items_without_token_is_401(api: Api) -> None:
    assert_problem(api.http.get("/api/v1/items"), "unauthorized")


@pytest.mark.parametrize("limit", [1, 100])
def test_list_items_accepts_the_limit_bounds(api: Api, alice: User, limit: int) -> None:
    api.create_item(alice)
    answer = api.http.get("/api/v1/items", params={"limit": limit}, headers=alice.auth)
    assert answer.status_code == 200, answer.text
    assert 1 <= len(answer.json()["items"]) <= limit


def test_name_filter_is_case_insensitive_beyond_ascii(api: Api, user: User) -> None:
    wanted = api.create_item(user, name="Ärger im ÖLHAFEN")
    api.create_item(user, name="arger im olhafen")
    found = [item["id"] for item in api.items(user, q="ärger im öl")]
    assert found == [wanted["id"]]
