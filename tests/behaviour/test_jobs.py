"""Jobs: import_items and items_report run by the row's real Celery worker, lists, cancel, 422s.

Each row's worker runs with JOB_BATCH_SIZE=50 (harness.ROW_SETTINGS), so a 10,000-item import is
200 transactions: long enough to be seen running and cancelled midway. A job stays `queued` for
as long as the test pauses the worker (SIGSTOP, `worker.paused()`).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from typing import TYPE_CHECKING, Any

import pytest

from apiclient import JOBS, Api, User
from checks import assert_item, assert_job, assert_problem

if TYPE_CHECKING:
    from harness import Worker  # the `worker` fixture's type only

SOME_ID = "01900000-0000-7000-8000-000000000000"
TAGS = ("red", "green", "blue", "big", "small")


def sample_items(count: int, seed: int, prefix: str = "imported") -> list[dict[str, Any]]:
    """Items with varied prices, some tags, some descriptions and some fields left to defaults."""
    rng = random.Random(seed)
    items: list[dict[str, Any]] = []
    for i in range(count):
        item: dict[str, Any] = {"name": f"{prefix} {i:05}", "price": round(rng.uniform(0, 999), 2)}
        if i % 3:
            item["tags"] = rng.sample(TAGS, k=rng.randint(0, 3))
        if i % 4 == 0:
            item["description"] = f"row {i}"
        if i % 7 == 0:
            item["price"] = rng.randint(0, 50)  # integers too
        items.append(item)
    return items


def small_items(count: int) -> list[dict[str, Any]]:
    """Cheap items for large imports (a 10,000-item body stays far below MAX_BODY_BYTES)."""
    return [{"name": f"n{i}", "price": i % 100} for i in range(count)]


def _stored(item: dict[str, Any]) -> tuple[Any, ...]:
    """An item as the API stores it from an ItemCreate (defaults applied)."""
    return (item["name"], item.get("description", ""), item["price"], tuple(item.get("tags", [])))


# -- import_items -------------------------------------------------------------------------------


def test_import_items_runs_to_succeeded_and_creates_exactly_the_items(
    api: Api, user: User, bob: User
) -> None:
    given = sample_items(120, seed=1)  # three batches of 50
    answer = api.post_job(user, {"kind": "import_items", "items": given})
    assert answer.status_code == 202, answer.text
    job = assert_job(answer.json(), kind="import_items", status="queued", result=None, error=None)
    assert answer.headers["location"] == f"{JOBS}/{job['id']}"
    assert job["progress"] == {"done": 0, "total": 120}
    assert job["started_at"] is None and job["finished_at"] is None

    finished = api.wait_for_job(user, job["id"])
    assert_job(finished, id=job["id"], status="succeeded", created_at=job["created_at"])
    assert finished["result"] == {"created": 120}
    assert finished["progress"] == {"done": 120, "total": 120}
    assert finished["started_at"] is not None

    stored = api.items(user)
    for item in stored:
        assert_item(item)
        assert item["version"] == 1
    assert Counter(_stored(item) for item in stored) == Counter(_stored(item) for item in given)
    assert not {item["id"] for item in stored} & {item["id"] for item in api.items(bob)}
    assert_problem(api.http.get(f"{JOBS}/{job['id']}", headers=bob.auth), "not-found")


def test_a_second_users_items_and_jobs_stay_apart(api: Api) -> None:
    owner, other = api.new_user(), api.new_user()
    job = api.import_items(owner, sample_items(10, seed=2))
    assert api.wait_for_job(owner, job["id"])["status"] == "succeeded"
    assert len(api.items(owner)) == 10
    assert api.items(other) == []
    assert api.jobs(other) == []


# -- items_report ---------------------------------------------------------------------------------


def _percentile(ordered: list[float], q: float) -> float:
    position = (len(ordered) - 1) * q
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def expected_report(items: list[dict[str, Any]]) -> dict[str, Any]:
    prices = sorted(float(item["price"]) for item in items)
    if not prices:
        return {"count": 0, "sum": 0, "mean": None, "p50": None, "p95": None, "per_tag": {}}
    total = math.fsum(prices)
    per_tag = Counter(tag for item in items for tag in set(item["tags"]))
    return {
        "count": len(prices),
        "sum": total,
        "mean": total / len(prices),
        "p50": _percentile(prices, 0.5),
        "p95": _percentile(prices, 0.95),
        "per_tag": dict(per_tag),
    }


def assert_report(found: dict[str, Any], expected: dict[str, Any]) -> None:
    assert set(found) == set(expected), found
    assert found["count"] == expected["count"], (found, expected)
    assert found["per_tag"] == expected["per_tag"], (found, expected)
    for name in ("sum", "mean", "p50", "p95"):
        if expected[name] is None:
            assert found[name] is None, (name, found, expected)
        else:
            assert isinstance(found[name], int | float), (name, found)
            close = math.isclose(found[name], expected[name], rel_tol=1e-9, abs_tol=1e-12)
            assert close, f"{name}: {found[name]!r} != {expected[name]!r}"


def _run_report(api: Api, user: User, **params: Any) -> dict[str, Any]:
    job = api.create_job(user, {"kind": "items_report", **params})
    assert_job(job, kind="items_report", status="queued", result=None)
    assert job["progress"] == {"done": 0, "total": 0}
    finished = api.wait_for_job(user, job["id"])
    assert_job(finished, status="succeeded")
    count = finished["result"]["count"]
    assert finished["progress"] == {"done": count, "total": count}
    result: dict[str, Any] = finished["result"]
    return result


@pytest.fixture(scope="module")
def reported(api: Api) -> User:
    """A user with 37 known items (an odd count: percentiles fall between ranks)."""
    user = api.new_user()
    job = api.import_items(user, sample_items(37, seed=3, prefix="report"))
    assert api.wait_for_job(user, job["id"])["status"] == "succeeded"
    api.create_item(user, name="one by hand", price=0.1, tags=["red", "hand"])
    return user


def test_items_report_over_known_items(api: Api, reported: User) -> None:
    items = api.items(reported)
    assert len(items) == 38
    assert_report(_run_report(api, reported), expected_report(items))


def test_items_report_with_a_tag(api: Api, reported: User) -> None:
    tagged = api.items(reported, tag="red")
    assert tagged, "the sample has red items"
    result = _run_report(api, reported, tag="red")
    assert_report(result, expected_report(tagged))
    assert result["per_tag"]["red"] == len(tagged)


@pytest.mark.parametrize("params", [{}, {"tag": "none-such"}], ids=["no-items", "no-match"])
def test_items_report_over_nothing_is_nulls(api: Api, user: User, params: dict[str, Any]) -> None:
    if params:
        api.create_item(user, tags=["other"])
    result = _run_report(api, user, **params)
    assert result == {"count": 0, "sum": 0, "mean": None, "p50": None, "p95": None, "per_tag": {}}


# -- list_jobs ------------------------------------------------------------------------------------


def test_list_jobs_pages_oldest_first_and_owner_only(api: Api, user: User, bob: User) -> None:
    created = [api.create_job(user, {"kind": "items_report"})["id"] for _ in range(5)]
    api.create_job(bob, {"kind": "items_report"})

    walked: list[str] = []
    query: dict[str, Any] = {"limit": 2}
    sizes = []
    for _ in range(10):
        page = api.job_page(user, **query)
        for job in page["items"]:
            assert_job(job)
        sizes.append(len(page["items"]))
        walked += [job["id"] for job in page["items"]]
        if page["next_cursor"] is None:
            break
        query["cursor"] = page["next_cursor"]
    assert walked == created, "oldest first, each job once"
    assert sizes in ([2, 2, 1], [2, 2, 1, 0])
    assert [job["id"] for job in api.job_page(user)["items"]] == created  # default limit 20
    assert [job["id"] for job in api.jobs(user)] == created
    assert not set(created) & {job["id"] for job in api.jobs(bob)}
    for job_id in created:
        api.wait_for_job(user, job_id)


@pytest.mark.parametrize(
    ("query", "location"),
    [
        ({"limit": 0}, "query.limit"),
        ({"limit": 101}, "query.limit"),
        ({"cursor": "x"}, "query.cursor"),
    ],
)
def test_list_jobs_refuses_a_bad_query(
    api: Api, alice: User, query: dict[str, Any], location: str
) -> None:
    answer = api.http.get(JOBS, params=query, headers=alice.auth)
    assert_problem(answer, "validation-error", location=location)


def test_jobs_need_a_token(api: Api) -> None:
    assert_problem(api.http.get(JOBS), "unauthorized")
    assert_problem(api.http.post(JOBS, json={"kind": "items_report"}), "unauthorized")
    assert_problem(api.http.get(f"{JOBS}/{SOME_ID}"), "unauthorized")
    assert_problem(api.http.delete(f"{JOBS}/{SOME_ID}"), "unauthorized")
    assert_problem(api.http.get(f"{JOBS}/{SOME_ID}/events"), "unauthorized")


# -- ownership ------------------------------------------------------------------------------------


def test_someone_elses_job_and_unknown_ids_are_not_found(api: Api, alice: User, bob: User) -> None:
    job = api.create_job(alice, {"kind": "items_report"})
    for job_id in (job["id"], SOME_ID):
        assert_problem(api.http.get(f"{JOBS}/{job_id}", headers=bob.auth), "not-found")
        assert_problem(api.http.delete(f"{JOBS}/{job_id}", headers=bob.auth), "not-found")
        with api.events(bob, job_id) as stream:
            assert_problem(_read(stream), "not-found")
    # bob's DELETE changed nothing: alice's job runs to its end
    assert api.wait_for_job(alice, job["id"])["status"] == "succeeded"


def test_a_malformed_job_id_is_422(api: Api, alice: User) -> None:
    answer = api.http.get(f"{JOBS}/not-a-uuid", headers=alice.auth)
    assert_problem(answer, "validation-error", location="path.job_id")


def _read(stream: Any) -> Any:
    """A stream answer that is not a stream (a problem), as something assert_problem takes."""
    stream.body()
    return stream.response


# -- cancel ---------------------------------------------------------------------------------------


def test_cancel_a_queued_job(api: Api, user: User, worker: Worker) -> None:
    """A queued job is cancelled at once, and the worker that gets it later leaves it so."""
    with worker.paused():  # nobody takes the job while the test holds the worker
        job = api.import_items(user, small_items(100))
        answer = api.cancel_job(user, job["id"])
        assert answer.status_code == 202, answer.text
        cancelled = assert_job(answer.json(), id=job["id"], status="cancelled", result=None)
        assert cancelled["progress"] == {"done": 0, "total": 100}
        assert cancelled["started_at"] is None
        assert api.read_job(user, job["id"]) == cancelled
    # a later job of the same user has run: the worker has been through the queue since
    later = api.create_job(user, {"kind": "items_report"})
    assert api.wait_for_job(user, later["id"])["status"] == "succeeded"
    assert api.read_job(user, job["id"]) == cancelled
    assert api.count_items(user) == 0
    assert_problem(api.cancel_job(user, job["id"]), "job-finished")


def test_cancel_a_running_job_stops_it_at_a_batch_boundary(api: Api) -> None:
    """A running import stops early: fewer items than asked, exactly as many as `done` says.

    On a loaded machine a 200-batch import can finish between two polls; such a try proves
    nothing either way, so the test starts over with a new user (at most five tries) and fails
    only if it never catches the job running.
    """
    finished_first: list[str] = []
    for _ in range(5):
        user = api.new_user()
        job = api.import_items(user, small_items(10_000))  # 200 batches
        seen = api.wait_for_job(
            user,
            job["id"],
            until=lambda j: (
                j["status"] not in {"queued", "running"} or int(j["progress"]["done"]) > 0
            ),
            interval=0.01,
        )
        if seen["status"] != "running":
            finished_first.append(seen["status"])
            continue
        answer = api.cancel_job(user, job["id"])
        if answer.status_code == 409:  # it finished between the poll and the cancel
            assert_problem(answer, "job-finished")
            finished_first.append(api.read_job(user, job["id"])["status"])
            continue
        assert answer.status_code == 202, answer.text
        assert_job(answer.json(), id=job["id"], status="running")

        ended = api.wait_for_job(user, job["id"])
        assert_job(ended, status="cancelled", result=None)
        assert ended["progress"]["total"] == 10_000
        assert 0 < ended["progress"]["done"] < 10_000
        assert api.count_items(user) == ended["progress"]["done"]
        assert_problem(api.cancel_job(user, job["id"]), "job-finished")
        return
    raise AssertionError(f"never caught the import running: it ended first as {finished_first}")


def test_cancel_a_finished_job_is_409(api: Api, user: User) -> None:
    job = api.import_items(user, sample_items(3, seed=4))
    finished = api.wait_for_job(user, job["id"])
    assert finished["status"] == "succeeded"
    assert_problem(api.cancel_job(user, job["id"]), "job-finished")
    assert api.read_job(user, job["id"]) == finished


# -- validation ---------------------------------------------------------------------------------


def _good(count: int) -> list[dict[str, Any]]:
    return [{"name": f"ok {i}", "price": 1} for i in range(count)]


REFUSED = [
    ({}, "body.kind"),
    ({"kind": "nope"}, "body.kind"),
    ({"kind": None}, "body.kind"),
    ({"items": _good(1)}, "body.kind"),
    ({"kind": "import_items"}, "body.items"),
    ({"kind": "import_items", "items": []}, "body.items"),
    ({"kind": "import_items", "items": "x"}, "body.items"),
    ({"kind": "import_items", "items": [{"name": "x", "price": -1}]}, "body.items.0.price"),
    (
        {"kind": "import_items", "items": [*_good(3), {"name": "x", "price": "1"}]},
        "body.items.3.price",
    ),
    ({"kind": "import_items", "items": [*_good(2), {"price": 1}]}, "body.items.2.name"),
    ({"kind": "import_items", "items": _good(10_001)}, "body.items"),
    ({"kind": "import_items", "items": _good(1), "extra": 1}, "body.extra"),
    ({"kind": "items_report", "extra": 1}, "body.extra"),
    ({"kind": "items_report", "tag": "UPPER"}, "body.tag"),
    ({"kind": "items_report", "items": _good(1)}, "body.items"),
]


@pytest.mark.parametrize(
    ("body", "location"), REFUSED, ids=[f"{i}-{loc}" for i, (_, loc) in enumerate(REFUSED)]
)
def test_create_job_refuses_invalid_bodies_and_changes_nothing(
    api: Api, alice: User, body: dict[str, Any], location: str
) -> None:
    before_jobs, before_items = _job_ids(api, alice), api.count_items(alice)
    answer = api.post_job(alice, body)
    assert_problem(answer, "validation-error", location=location)
    assert "location" not in answer.headers
    assert _job_ids(api, alice) == before_jobs
    assert api.count_items(alice) == before_items


def test_create_job_refuses_a_body_that_is_not_an_object(api: Api, alice: User) -> None:
    before = _job_ids(api, alice)
    bodies: list[Any] = [[], "import_items", 3]
    for body in bodies:
        assert_problem(api.post_job(alice, body), "validation-error")
    assert _job_ids(api, alice) == before


def _job_ids(api: Api, user: User) -> list[str]:
    return [job["id"] for job in api.jobs(user)]
