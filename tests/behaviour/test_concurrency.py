"""Idempotency, cursor walks and concurrent writers: what must hold when requests race."""

from __future__ import annotations

import secrets
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import httpx
import pytest

from apiclient import Api, User
from checks import assert_problem

T = TypeVar("T")


def _race(count: int, call: Callable[[int], T]) -> list[T]:
    """Run `call(i)` in `count` threads released together."""
    barrier = threading.Barrier(count)

    def run(index: int) -> T:
        barrier.wait(timeout=30)
        return call(index)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))


def _create(api: Api, user: User, body: dict[str, Any], key: str | None) -> httpx.Response:
    headers = {**user.auth, **({"Idempotency-Key": key} if key else {})}
    return api.http.post("/api/v1/items", json=body, headers=headers)


# -- Idempotency-Key --------------------------------------------------------------------------


def test_same_key_same_body_replays_the_first_item_as_it_is_now(api: Api, user: User) -> None:
    key = f"key-{secrets.token_hex(8)}"
    body = {"name": "once", "price": 3}
    first = _create(api, user, body, key)
    assert first.status_code == 201, first.text
    item = first.json()
    patched = api.http.patch(f"/api/v1/items/{item['id']}", json={"price": 4}, headers=user.auth)
    assert patched.status_code == 200, patched.text

    again = _create(api, user, body, key)
    assert again.status_code == 201, again.text
    assert again.json() == patched.json()  # the item as it is now, not as it was created
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["etag"] == '"2"'
    assert [found["id"] for found in api.items(user)] == [item["id"]]


def test_same_key_with_defaults_spelled_out_is_the_same_body(api: Api, user: User) -> None:
    key = f"key-{secrets.token_hex(8)}"
    first = _create(api, user, {"name": "dflt", "price": 1}, key)
    spelled = _create(api, user, {"name": "dflt", "price": 1, "description": "", "tags": []}, key)
    assert first.status_code == 201 and spelled.status_code == 201, spelled.text
    assert spelled.json()["id"] == first.json()["id"]
    assert len(api.items(user)) == 1


def test_same_key_other_body_is_422_and_creates_nothing(api: Api, user: User) -> None:
    key = f"key-{secrets.token_hex(8)}"
    first = _create(api, user, {"name": "first", "price": 1}, key)
    assert first.status_code == 201, first.text
    before = api.items(user)
    other = _create(api, user, {"name": "second", "price": 1}, key)
    assert_problem(other, "idempotency-key-reused")
    assert api.items(user) == before


def test_a_rejected_create_does_not_use_up_its_key(api: Api, user: User) -> None:
    key = f"key-{secrets.token_hex(8)}"
    rejected = _create(api, user, {"name": "", "price": 1}, key)
    assert_problem(rejected, "validation-error", location="body.name")
    created = _create(api, user, {"name": "valid now", "price": 1}, key)
    assert created.status_code == 201, created.text
    assert [item["id"] for item in api.items(user)] == [created.json()["id"]]


def test_keys_are_scoped_to_the_user(api: Api, user: User, bob: User) -> None:
    key = f"shared-{secrets.token_hex(8)}"
    mine = _create(api, user, {"name": "mine", "price": 1}, key)
    theirs = _create(api, bob, {"name": "theirs", "price": 2}, key)
    assert mine.status_code == 201 and theirs.status_code == 201, theirs.text
    assert mine.json()["id"] != theirs.json()["id"]
    assert theirs.json()["name"] == "theirs"


@pytest.mark.parametrize("key", ["has space", "x" * 201, "tab\tkey", "ünicode"], ids=repr)
def test_invalid_idempotency_key_is_422_at_header(api: Api, user: User, key: str) -> None:
    headers = [(name.encode(), value.encode()) for name, value in user.auth.items()]
    headers.append((b"Idempotency-Key", key.encode("utf-8")))
    answer = api.http.post("/api/v1/items", json={"name": "k", "price": 1}, headers=headers)
    assert_problem(answer, "validation-error", location="header.Idempotency-Key")
    assert api.items(user) == []


def test_twenty_concurrent_creates_with_one_key_make_one_item(api: Api, user: User) -> None:
    key = f"race-{secrets.token_hex(8)}"
    body = {"name": "raced", "price": 7, "tags": ["race"]}
    answers = _race(20, lambda _: _create(api, user, body, key))
    statuses = Counter(answer.status_code for answer in answers)
    assert statuses == {201: 20}, [answer.text for answer in answers if answer.status_code != 201]
    assert len({answer.json()["id"] for answer in answers}) == 1
    assert len({answer.headers["location"] for answer in answers}) == 1
    assert len(api.items(user)) == 1


def test_concurrent_creates_with_distinct_keys_all_succeed(api: Api, user: User) -> None:
    answers = _race(
        10,
        lambda i: _create(
            api, user, {"name": f"d{i}", "price": i}, f"k-{i}-{secrets.token_hex(4)}"
        ),
    )
    assert [answer.status_code for answer in answers] == [201] * 10
    assert len(api.items(user)) == 10


def test_concurrent_registrations_of_one_email_make_one_user(api: Api) -> None:
    email = f"race-{secrets.token_hex(6)}@example.test"
    answers = _race(
        8,
        lambda i: api.http.post(
            "/api/v1/users", json={"email": email, "password": f"pass-{i}-xyz"}
        ),
    )
    statuses = Counter(answer.status_code for answer in answers)
    assert statuses == {201: 1, 409: 7}, statuses
    for answer in answers:
        if answer.status_code == 409:
            assert_problem(answer, "email-taken")
    winner = next(i for i, answer in enumerate(answers) if answer.status_code == 201)
    api.login(email, f"pass-{winner}-xyz")


# -- optimistic concurrency -------------------------------------------------------------------


@pytest.mark.parametrize("method", ["PATCH", "PUT"])
def test_concurrent_writes_with_one_if_match_let_exactly_one_win(
    api: Api, user: User, method: str
) -> None:
    for round_ in range(5):
        item = api.create_item(user, name=f"contended {round_}")
        url = f"/api/v1/items/{item['id']}"
        headers = {**user.auth, "If-Match": '"1"'}

        def write(i: int, url: str = url, headers: dict[str, str] = headers) -> httpx.Response:
            return api.http.request(
                method, url, json={"name": f"writer {i}", "price": i}, headers=headers
            )

        answers = _race(2, write)
        statuses = sorted(answer.status_code for answer in answers)
        assert statuses == [200, 412], [answer.text for answer in answers]
        loser = next(answer for answer in answers if answer.status_code == 412)
        winner = next(answer for answer in answers if answer.status_code == 200)
        assert_problem(loser, "precondition-failed")
        final = api.item(user, item["id"])
        assert final is not None and final["version"] == 2
        assert final == winner.json()


def test_concurrent_unconditional_patches_lose_no_update(api: Api, user: User) -> None:
    # Without If-Match the contract does not promise every racer wins, but no write may be lost:
    # the version counts exactly the successful writes, and a loser gets a problem, not a 500.
    item = api.create_item(user)
    url = f"/api/v1/items/{item['id']}"
    answers = _race(8, lambda i: api.http.patch(url, json={"price": i}, headers=user.auth))
    won = [answer for answer in answers if answer.status_code == 200]
    for answer in answers:
        if answer.status_code != 200:
            assert_problem(answer, "precondition-failed")
    assert won, "no concurrent PATCH succeeded"
    versions = sorted(answer.json()["version"] for answer in won)
    assert versions == list(range(2, 2 + len(won)))
    final = api.item(user, item["id"])
    assert final is not None and final["version"] == 1 + len(won)


# -- cursor walk over 250 items ---------------------------------------------------------------


@pytest.fixture
def two_hundred_fifty(api: Api, user: User) -> list[str]:
    def create(i: int) -> str:
        item = api.create_item(user, name=f"walk {i:03}", tags=["odd" if i % 2 else "even"])
        return str(item["id"])

    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = list(pool.map(create, range(250)))
    return sorted(ids)


@pytest.mark.parametrize("limit", [7, 100])
def test_cursor_walk_has_no_duplicate_and_no_gap(
    api: Api, user: User, two_hundred_fifty: list[str], limit: int
) -> None:
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        answer = api.http.get("/api/v1/items", params=params, headers=user.auth)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        assert len(page["items"]) <= limit
        seen += [item["id"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert pages < 1000
    assert len(seen) == len(set(seen)), "a cursor walk returned an item twice"
    assert seen == two_hundred_fifty, "a cursor walk skipped items or left creation order"
    assert pages in {-(-250 // limit), -(-250 // limit) + 1}


def test_cursor_walk_with_a_filter_and_writes_in_between(
    api: Api, user: User, two_hundred_fifty: list[str]
) -> None:
    even = [item["id"] for item in api.items(user, tag="even")]
    assert len(even) == 125
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {
            "limit": 10,
            "tag": "even",
            **({"cursor": cursor} if cursor else {}),
        }
        page = api.http.get("/api/v1/items", params=params, headers=user.auth).json()
        seen += [item["id"] for item in page["items"]]
        api.create_item(user, name="late", tags=["odd"])  # writes elsewhere must not disturb
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == even
