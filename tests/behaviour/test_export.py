"""export_items: every item of the caller as JSON Lines, streamed, equal to the paged list."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

from apiclient import Api, User
from checks import assert_item, assert_problem, media_type

EXPORT = "/api/v1/items/export"
COUNT = 300


@dataclass(frozen=True)
class Exporter:
    user: User
    ids: list[str]  # creation order = id order (UUIDv7)


@pytest.fixture(scope="module")
def exporter(api: Api) -> Exporter:
    """A user with a few hundred items, created in parallel (so ids interleave with nobody's)."""
    user = api.new_user()

    def create(i: int) -> str:
        item = api.create_item(user, name=f"export {i:03}", tags=["odd" if i % 2 else "even"])
        return str(item["id"])

    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = list(pool.map(create, range(COUNT)))
    return Exporter(user, sorted(ids))


def _export(api: Api, user: User, **params: Any) -> list[dict[str, Any]]:
    answer = api.http.get(EXPORT, params=params, headers=user.auth)
    assert answer.status_code == 200, answer.text
    assert media_type(answer) == "application/jsonl"
    assert answer.text == "" or answer.text.endswith("\n"), "a line without its newline"
    return [json.loads(line) for line in answer.text.split("\n")[:-1]]


def test_export_equals_the_paged_list_item_for_item(api: Api, exporter: Exporter) -> None:
    exported = _export(api, exporter.user)
    assert len(exported) == COUNT
    for item in exported:
        assert_item(item)
    assert [item["id"] for item in exported] == exporter.ids
    assert exported == api.items(exporter.user)


def test_export_filters_by_tag(api: Api, exporter: Exporter) -> None:
    even = _export(api, exporter.user, tag="even")
    assert len(even) == COUNT // 2
    assert all("even" in item["tags"] for item in even)
    assert even == api.items(exporter.user, tag="even")
    assert _export(api, exporter.user, tag="none-such") == []


def test_export_shows_only_the_callers_items(api: Api, exporter: Exporter, alice: User) -> None:
    mine = api.create_item(alice, name="alice's own")
    alices = [item["id"] for item in _export(api, alice)]
    assert mine["id"] in alices
    assert not set(alices) & set(exporter.ids)
    assert _export(api, api.new_user()) == []


def test_export_is_streamed_line_by_line(api: Api, exporter: Exporter) -> None:
    with api.http.stream("GET", EXPORT, headers=exporter.user.auth) as answer:
        assert answer.status_code == 200
        assert media_type(answer) == "application/jsonl"
        assert answer.headers.get("transfer-encoding") == "chunked"
        assert "content-length" not in answer.headers
        lines = answer.iter_lines()
        first = json.loads(next(lines))  # readable before the rest of the body is read
        assert first["id"] == exporter.ids[0]
        rest = [json.loads(line) for line in lines if line]
    assert [item["id"] for item in [first, *rest]] == exporter.ids


def test_export_needs_a_valid_token(api: Api) -> None:
    assert_problem(api.http.get(EXPORT), "unauthorized")
    forged = {"Authorization": f"Bearer {api.token('x', key='not-the-secret-' * 3)}"}
    assert_problem(api.http.get(EXPORT, headers=forged), "unauthorized")


@pytest.mark.parametrize("tag", ["", "UPPER", "a" * 33, "-lead", "sp ace"])
def test_export_refuses_a_bad_tag(api: Api, alice: User, tag: str) -> None:
    answer = api.http.get(EXPORT, params={"tag": tag}, headers=alice.auth)
    assert_problem(answer, "validation-error", location="query.tag")
