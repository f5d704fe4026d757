"""A Celery worker SIGKILLed mid-job under load (issue 7, item 4), on Redis.

While the clients do the CRUD mix, a user imports IMPORT_COUNT items (JOB_BATCH_SIZE 50 per
transaction) and, once the import is running and part-way through:
(b) the whole worker (main process and pool children, its process group) is SIGKILLed and a new
    worker started: the message was never acknowledged (acks_late), so Redis delivers it again
    once the visibility timeout (CELERY_VISIBILITY_TIMEOUT=10 on the fault stack) has passed,
    and the new worker resumes after the last committed batch;
(a) full variant only: one pool child (the one running the import) is SIGKILLed: the worker
    gives the message back at once (task_reject_on_worker_lost). Without load this runs on every
    row in tests/behaviour/test_job_faults.py; here it runs under load.
Either way: the job succeeds with `created` = IMPORT_COUNT, the user has exactly those items
(each name once: the side effect happened exactly once), and the CRUD mix saw 0 non-2xx.

Redis rows only: with the embedded filesystem transport (sqlite rows) a whole-worker kill loses
the in-flight message (kombu's filesystem transport has no visibility timeout: a message taken
from the folder is gone) and the job stays `running`; that is a known limit of the embedded
broker, documented in tests/README.md.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import httpx
import psutil
import pytest

from faults.conftest import Profile, Stack
from faults.workload import Workload, register
from harness import Worker

IMPORT_COUNT = 5000  # 100 batches of 50: long enough to kill mid-way, short enough to finish
KILL_ATTEMPTS = 3
REDELIVERY_BOUND = 60.0  # visibility timeout (10 s) + kombu's restore check + the import itself


def _items(count: int) -> list[dict[str, Any]]:
    return [{"name": f"survivor {i:05}", "price": i % 97} for i in range(count)]


def _job(http: httpx.Client, auth: dict[str, str], job_id: str) -> dict[str, Any]:
    answer = http.get(f"/api/v1/jobs/{job_id}", headers=auth)
    assert answer.status_code == 200, f"read_job: {answer.status_code} {answer.text}"
    job: dict[str, Any] = answer.json()
    return job


def _start_import_midway(
    http: httpx.Client, auth: dict[str, str]
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Submit the import and wait until it is running part-way; None if it finished first."""
    body = {"kind": "import_items", "items": _items(IMPORT_COUNT)}
    answer = http.post("/api/v1/jobs", json=body, headers=auth)
    assert answer.status_code == 202, f"create_job: {answer.status_code} {answer.text}"
    job = answer.json()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        seen = _job(http, auth, job["id"])
        if seen["status"] == "running" and 0 < seen["progress"]["done"] < IMPORT_COUNT:
            return job, seen
        if seen["status"] not in {"queued", "running"}:
            return None
        time.sleep(0.01)
    raise AssertionError(f"the import never started running: {seen}")


def _kill_worker(stack: Stack) -> Worker:
    """SIGKILL the worker's whole process group; start a new worker; return it."""
    old = stack.server.worker
    assert old is not None and old.process is not None
    os.killpg(old.pid, signal.SIGKILL)
    old.process.wait(timeout=10)
    old.process = None
    workdir = stack.server.workdir / f"worker-{time.monotonic_ns()}"
    workdir.mkdir()
    new = Worker(stack.row, workdir, old.environment)
    new.expected = list(old.expected)
    new.start()
    new.wait_ready()
    stack.server.worker = new  # stopped (and its log judged) with the server
    return new


def _kill_child(stack: Stack) -> None:
    """SIGKILL the pool child that is running the import (its CPU time grows)."""
    worker = stack.server.worker
    assert worker is not None
    worker.expect_lost_children()
    children = worker.children()
    before = {child.pid: sum(child.cpu_times()[:2]) for child in children}
    time.sleep(0.3)
    busy = max(children, key=lambda child: sum(child.cpu_times()[:2]) - before[child.pid])
    busy.kill()
    psutil.wait_procs([busy], timeout=10)


def _run(stack: Stack, profile: Profile, what: str) -> None:
    load = Workload(
        stack.base_url, clients=profile.clients, accounts=stack.accounts(profile.clients)
    )
    with httpx.Client(base_url=stack.base_url, timeout=30.0) as http, load.running():
        time.sleep(profile.warmup)
        for attempt in range(1, KILL_ATTEMPTS + 1):
            attempts = attempt
            account = register(http, "importer")
            started = _start_import_midway(http, account.auth)
            if started is None:
                continue
            job, seen = started
            load.mark("fault")
            if what == "worker":
                _kill_worker(stack)
            else:
                _kill_child(stack)
            load.mark("back")
            killed_at = _job(http, account.auth, job["id"])
            if killed_at["status"] == "running":
                break
        else:
            pytest.fail(f"in {KILL_ATTEMPTS} attempts the import always ended before the kill")
        deadline = time.monotonic() + REDELIVERY_BOUND
        finished = _job(http, account.auth, job["id"])
        while finished["status"] in {"queued", "running"} and time.monotonic() < deadline:
            time.sleep(0.2)
            finished = _job(http, account.auth, job["id"])
        done_after = load.now() - load.marks["fault"]
        time.sleep(profile.after)
    names = []
    params: dict[str, Any] = {"limit": 100}
    with httpx.Client(base_url=stack.base_url, timeout=30.0) as http:
        while True:
            page = http.get("/api/v1/items", params=params, headers=account.auth).json()
            names += [item["name"] for item in page["items"]]
            if page["next_cursor"] is None:
                break
            params["cursor"] = page["next_cursor"]
    verdict = load.check()
    crud_failed = load.failures()
    figures = load.figures(
        f"{stack.row.id}: Celery {what} SIGKILLed mid-import under load",
        verdict,
        extra={
            "killed at (attempt)": f"{seen['progress']['done']}/{IMPORT_COUNT} ({attempts})",
            "job finished after the kill": f"{done_after:.1f} s, {finished['status']}",
            "items created by the import": f"{len(names)} ({len(set(names))} distinct)",
        },
    )
    figures.publish()
    table = figures.table()

    assert finished["status"] == "succeeded", f"{finished}\n{table}"
    assert finished["result"] == {"created": IMPORT_COUNT}, f"{finished}\n{table}"
    assert finished["progress"] == {"done": IMPORT_COUNT, "total": IMPORT_COUNT}
    assert len(names) == IMPORT_COUNT, f"{len(names)} items for {IMPORT_COUNT}\n{table}"
    assert sorted(names) == sorted(item["name"] for item in _items(IMPORT_COUNT)), table
    assert not crud_failed, f"CRUD failed while the worker died: {crud_failed[:5]}\n{table}"
    assert not load.anomalies, f"{load.anomalies[:5]}\n{table}"
    assert verdict.clean, table


def test_whole_worker_killed_mid_import(stack: Stack, profile: Profile) -> None:
    _run(stack, profile, "worker")


def test_worker_child_killed_mid_import(stack: Stack, profile: Profile) -> None:
    if not profile.full:
        pytest.skip(
            "full variant only (make faults); tests/behaviour/test_job_faults.py kills a"
            " child without load on every row"
        )
    _run(stack, profile, "pool child")
