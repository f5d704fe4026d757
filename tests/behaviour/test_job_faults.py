"""Jobs under faults: a worker child killed mid-import, and the Redis broker going away and back.

(a) SIGKILL of the worker's pool child running an import, midway: Celery's parent rejects the
    task with requeue (after billiard's ~10 s wait for the lost child), a new child gets it again,
    and the import resumes after its last committed batch: exactly N items (every row).
(b) Redis killed (postgresql rows; their own server, worker and `redis-server`): POST /jobs is a
    503 within 2 s and stores nothing, items still work, /readyz names the broker, /healthz stays
    up; once Redis is back, a new job is accepted and runs to the end.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import psutil
import pytest

from apiclient import Api, BrokerOutage, User
from checks import assert_job, assert_problem

if TYPE_CHECKING:
    from harness import Worker  # the `worker` fixture's type only

COUNT = 10_000  # 200 batches of JOB_BATCH_SIZE=50: a few seconds even on SQLite


KILL_ATTEMPTS = 3


def _items(count: int) -> list[dict[str, Any]]:
    return [{"name": f"survivor {i:05}", "price": i % 97} for i in range(count)]


def test_a_killed_worker_child_does_not_lose_or_double_items(
    api: Api, user: User, worker: Worker
) -> None:
    # A 10,000-item import lasts a few seconds at the rows' batch size; on a fast row it can still
    # end before the kill lands. Then the scenario is run again with a fresh user (at most
    # KILL_ATTEMPTS times): the assertions below only ever judge an import killed mid-way.
    for attempt in range(1, KILL_ATTEMPTS + 1):
        owner = user if attempt == 1 else api.new_user()
        job = api.import_items(owner, _items(COUNT))
        seen = api.wait_for_job(owner, job["id"], until=_midway_or_done, interval=0.01)
        if seen["status"] != "running":
            continue
        worker.expect_lost_children()
        busy = _busiest(worker.children())
        busy.kill()
        killed_at = api.read_job(owner, job["id"])
        if killed_at["status"] == "running" and killed_at["progress"]["done"] < COUNT:
            break
    else:
        pytest.fail(f"in {KILL_ATTEMPTS} attempts the import always finished before the kill")
    print(f"killed mid-import on attempt {attempt}, {killed_at['progress']} done")

    started = time.monotonic()
    finished = api.wait_for_job(owner, job["id"], timeout=120)
    assert_job(finished, status="succeeded", result={"created": COUNT})
    assert finished["progress"] == {"done": COUNT, "total": COUNT}
    names = [item["name"] for item in api.export(owner)]
    assert len(names) == COUNT, f"{len(names)} items for an import of {COUNT}"
    assert sorted(names) == sorted(item["name"] for item in _items(COUNT))
    assert busy.pid not in {child.pid for child in worker.children()}, "no child was replaced"
    print(f"resumed and finished {time.monotonic() - started:.1f}s after the kill")


def _midway_or_done(job: dict[str, Any]) -> bool:
    running = job["status"] == "running" and int(job["progress"]["done"]) > 0
    return running or job["status"] not in {"queued", "running"}


def _busiest(children: list[psutil.Process]) -> psutil.Process:
    """The pool child running the task: the one whose CPU time grows.

    Only that one is killed. An idle child of the classic prefork pool (the one used with the
    embedded filesystem broker) holds the shared task-queue lock while it waits for work; killing
    it too would leave that lock taken and the pool stuck, which is not the fault under test.
    """
    assert children, "the worker has no pool children"

    def cpu(child: psutil.Process) -> float:
        times = child.cpu_times()
        return float(times.user + times.system)

    before = {child.pid: cpu(child) for child in children}
    time.sleep(0.3)
    return max(children, key=lambda child: cpu(child) - before[child.pid])


def _retry_after(answer: Any) -> None:
    value = answer.headers.get("retry-after", "")
    assert value.isdigit(), f"Retry-After: {value!r}"


def test_redis_down_then_back(broker_outage: BrokerOutage) -> None:
    api = broker_outage.api
    user = api.new_user()
    warm = api.create_job(user, {"kind": "items_report"})  # the broker works before the outage
    assert api.wait_for_job(user, warm["id"])["status"] == "succeeded"

    broker_outage.kill_broker()
    try:
        body = {"kind": "import_items", "items": _items(5)}
        for _ in range(2):  # the first attempt finds a dead pooled connection, the second none
            started = time.monotonic()
            answer = api.post_job(user, body)
            elapsed = time.monotonic() - started
            assert_problem(answer, "service-unavailable")
            _retry_after(answer)
            assert elapsed < 2.0, f"POST /jobs took {elapsed:.2f}s to give up on the broker"
        assert [job["id"] for job in api.jobs(user)] == [warm["id"]], "a refused job stayed"
        assert api.count_items(user) == 0

        item = api.create_item(user, name="made while the broker is down")
        assert api.item(user, item["id"]) == item
        ready = api.http.get("/readyz")
        assert_problem(ready, "service-unavailable")
        assert "broker" in ready.text, f"/readyz does not name the broker: {ready.text}"
        assert api.http.get("/healthz").status_code == 200
    finally:
        broker_outage.start_broker()

    back = time.monotonic()
    accepted = None
    while accepted is None:
        answer = api.post_job(user, {"kind": "import_items", "items": _items(120)})
        if answer.status_code == 202:
            accepted = answer.json()
            break
        assert_problem(answer, "service-unavailable")
        assert time.monotonic() - back < 20, "no job accepted 20 s after Redis came back"
        time.sleep(0.5)
    finished = api.wait_for_job(user, accepted["id"], timeout=60)
    assert_job(finished, status="succeeded", result={"created": 120})
    assert api.count_items(user) == 121
    assert api.http.get("/readyz").status_code == 200
    print(f"a job ran to its end {time.monotonic() - back:.1f}s after Redis came back")
