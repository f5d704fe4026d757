"""The run_job task: report maths, imports in batches on a real database, redelivery without
duplicates, cancellation between batches, failures and retries, and one job through a real
`python -m fastapi_service.worker` on the embedded broker."""

from __future__ import annotations

import datetime as dt
import math
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import httpx
import pytest
from celery.exceptions import Retry
from fastapi import FastAPI
from sqlalchemy import Select, func, insert, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from fastapi_service import create_app
from fastapi_service.db import utcnow
from fastapi_service.jobs import tasks
from fastapi_service.jobs.service import items_report, percentile
from fastapi_service.jobs.tasks import JobContext, WorkerLoop, execute
from fastapi_service.models import Item, Job, User
from fastapi_service.settings import Settings
from helpers import make_user

JOBS = "/api/v1/jobs"


# --- report maths -------------------------------------------------------------------------


def test_percentile_interpolates_between_closest_ranks() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.95) == pytest.approx(3.85)
    assert percentile([0.0, 1.0, 2.0, 3.5, 10.0], 0.95) == pytest.approx(8.7)
    assert percentile([7.0], 0.5) == percentile([7.0], 0.95) == 7.0


def test_report_of_items() -> None:
    report = items_report([(3.0, ["a"]), (1.0, ["a", "b"]), (2.0, []), (0.1, ["b", "b"])])
    assert report["count"] == 4
    assert report["sum"] == math.fsum([0.1, 1.0, 2.0, 3.0])
    assert report["mean"] == report["sum"] / 4
    assert report["p50"] == 1.5
    assert report["p95"] == pytest.approx(2.0 + (3.0 - 2.0) * 0.85)
    assert report["per_tag"] == {"a": 2, "b": 2}  # an item counts once per tag


def test_report_of_nothing() -> None:
    assert items_report([]) == {
        "count": 0,
        "sum": 0.0,
        "mean": None,
        "p50": None,
        "p95": None,
        "per_tag": {},
    }


# --- the task body on a real database ---------------------------------------------------------


async def _new_job(app: FastAPI, kind: str, params: dict[str, Any], total: int) -> Job:
    async with app.state.session_factory() as session:
        user = User(email=f"{uuid.uuid4().hex}@example.test", password_hash="x")
        session.add(user)
        await session.flush()
        job = Job(owner_id=user.id, kind=kind, params=params, progress_total=total)
        session.add(job)
        await session.commit()
        return job


def _items(count: int) -> dict[str, Any]:
    return {
        "items": [
            {"name": f"n{i}", "description": "", "price": float(i), "tags": ["t"]}
            for i in range(count)
        ]
    }


async def _state(app: FastAPI, job: Job) -> tuple[Job, list[str]]:
    async with app.state.session_factory() as session:
        row = await session.get(Job, job.id, populate_existing=True)
        assert row is not None
        names = list(
            await session.scalars(
                select(Item.name).where(Item.owner_id == job.owner_id).order_by(Item.id)
            )
        )
        return row, names


def _context(app: FastAPI, settings: Settings, batch: int = 2) -> JobContext:
    return JobContext(
        settings.model_copy(update={"job_batch_size": batch}), app.state.session_factory, None
    )


@pytest.mark.anyio
async def test_import_runs_in_batches(app: FastAPI, settings: Settings) -> None:
    job = await _new_job(app, "import_items", _items(5), 5)
    await execute(_context(app, settings), job.id)
    row, names = await _state(app, job)
    assert names == [f"n{i}" for i in range(5)]
    assert row.status == "succeeded"
    assert row.result == {"created": 5}
    assert (row.progress_done, row.progress_total) == (5, 5)
    assert row.event_seq == 1 + 1 + 3 + 1  # queued, running, three batches, succeeded
    assert row.started_at is not None
    assert row.finished_at is not None
    # A redelivery of a finished job does nothing.
    await execute(_context(app, settings), job.id)
    again, names_again = await _state(app, job)
    assert names_again == names
    assert again.event_seq == row.event_seq


class Crash(Exception):
    """The worker 'dies' after a commit."""


@pytest.mark.anyio
async def test_redelivery_resumes_without_duplicates(
    app: FastAPI, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = await _new_job(app, "import_items", _items(5), 5)
    published: list[int] = []
    real_publish = tasks._publish

    async def publish_then_crash(ctx: JobContext, job_id: uuid.UUID, seq: int) -> None:
        published.append(seq)
        if len(published) == 2:  # running, then the first batch committed
            raise Crash()
        await real_publish(ctx, job_id, seq)

    monkeypatch.setattr(tasks, "_publish", publish_then_crash)
    with pytest.raises(Crash):
        await execute(_context(app, settings), job.id)
    half, names = await _state(app, job)
    assert (half.status, half.progress_done, names) == ("running", 2, ["n0", "n1"])
    monkeypatch.setattr(tasks, "_publish", real_publish)
    await execute(_context(app, settings), job.id)  # the message is delivered again
    row, names = await _state(app, job)
    assert names == [f"n{i}" for i in range(5)]  # no duplicates, none missing
    assert row.status == "succeeded"
    assert row.result == {"created": 5}


@pytest.mark.anyio
async def test_two_concurrent_deliveries_import_once(app: FastAPI, settings: Settings) -> None:
    job = await _new_job(app, "import_items", _items(7), 7)
    with anyio.fail_after(30):
        async with anyio.create_task_group() as group:
            group.start_soon(execute, _context(app, settings), job.id)
            group.start_soon(execute, _context(app, settings), job.id)
    row, names = await _state(app, job)
    assert sorted(names) == sorted(f"n{i}" for i in range(7))
    assert row.status == "succeeded"
    assert row.progress_done == 7


@pytest.mark.anyio
async def test_a_second_message_for_a_finished_job_does_nothing(
    app: FastAPI, settings: Settings
) -> None:
    for kind, params, total in (("import_items", _items(3), 3), ("items_report", {}, 0)):
        job = await _new_job(app, kind, params, total)
        await execute(_context(app, settings), job.id)
        first, names = await _state(app, job)
        await execute(_context(app, settings), job.id)  # the sweeper's duplicate, arriving late
        again, names_again = await _state(app, job)
        assert first.status == "succeeded"
        assert (again.status, again.event_seq, again.finished_at, again.result) == (
            first.status,
            first.event_seq,
            first.finished_at,
            first.result,
        )
        assert names_again == names


async def _set(app: FastAPI, job_id: uuid.UUID, **values: Any) -> None:
    async with app.state.session_factory() as session:
        await session.execute(update(Job).where(Job.id == job_id).values(**values))
        await session.commit()


@pytest.mark.anyio
async def test_claim_stale_takes_each_stale_queued_job_once(
    app: FastAPI, settings: Settings
) -> None:
    """Two sweepers claiming at once (two sessions): each stale `queued` job goes to exactly
    one of them; fresh and running jobs to neither; a claimed job is fresh again."""
    settings = settings.model_copy(update={"job_requeue_after_seconds": 30})
    stale = [(await _new_job(app, "items_report", {}, 0)).id for _ in range(6)]
    fresh = (await _new_job(app, "items_report", {}, 0)).id
    running = (await _new_job(app, "items_report", {}, 0)).id
    long_ago = utcnow() - dt.timedelta(seconds=60)
    for job_id in stale:
        await _set(app, job_id, updated_at=long_ago)
    await _set(app, running, status="running", updated_at=long_ago)
    claims: list[list[uuid.UUID]] = []

    async def sweep() -> None:
        claims.append(await tasks.claim_stale(app.state.session_factory, settings))

    with anyio.fail_after(30):
        async with anyio.create_task_group() as group:
            group.start_soon(sweep)
            group.start_soon(sweep)
    assert sorted(claims[0] + claims[1]) == sorted(stale)  # none twice, none missed
    assert await tasks.claim_stale(app.state.session_factory, settings) == []
    async with app.state.session_factory() as session:
        states = {job.id: job for job in await session.scalars(select(Job))}
    assert (states[fresh].status, states[running].status) == ("queued", "running")
    assert all(states[job_id].updated_at > long_ago for job_id in stale)


async def _plan(connection: AsyncConnection, statement: Select[Any]) -> str:
    """The backend's plan for `statement` as SQLAlchemy compiles it, values inlined."""
    sql = statement.compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True})
    explain = "EXPLAIN QUERY PLAN" if connection.dialect.name == "sqlite" else "EXPLAIN"
    return "\n".join(str(row[-1]) for row in await connection.exec_driver_sql(f"{explain} {sql}"))


@pytest.mark.anyio
async def test_the_sweep_reads_only_queued_jobs_through_their_index(app: FastAPI) -> None:
    """Among 5,000 finished jobs and 3 stale queued ones, the sweep's read (tasks.oldest_stale)
    goes through the partial index ix_jobs_queued_updated_at, not through every job. The
    migrated schema is what is explained (compare_metadata ignores index predicates). The
    rows, and on PostgreSQL the statistics ANALYZE takes of them, are rolled back."""
    long_ago = utcnow() - dt.timedelta(hours=1)
    async with app.state.engine.connect() as connection, connection.begin() as outer:
        owner = await connection.scalar(
            insert(User)
            .values(email=f"{uuid.uuid4().hex}@example.test", password_hash="x")
            .returning(User.id)
        )
        row = {"owner_id": owner, "kind": "items_report", "params": {}}
        await connection.execute(
            insert(Job),
            [{**row, "status": "succeeded", "updated_at": long_ago}] * 5000
            + [{**row, "status": "queued", "updated_at": long_ago}] * 3,
        )
        if connection.dialect.name == "postgresql":
            await connection.exec_driver_sql("ANALYZE jobs")
        plan = await _plan(connection, tasks.oldest_stale(utcnow() - dt.timedelta(seconds=60)))
        await outer.rollback()
    assert "ix_jobs_queued_updated_at" in plan, plan


@pytest.mark.anyio
async def test_cancel_between_batches_keeps_the_items_made(
    app: FastAPI, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = await _new_job(app, "import_items", _items(6), 6)
    published: list[int] = []
    real_publish = tasks._publish

    async def cancel_after_first_batch(ctx: JobContext, job_id: uuid.UUID, seq: int) -> None:
        published.append(seq)
        if len(published) == 2:
            async with app.state.session_factory() as session:
                await session.execute(
                    update(Job).where(Job.id == job_id).values(cancel_requested=True)
                )
                await session.commit()
        await real_publish(ctx, job_id, seq)

    monkeypatch.setattr(tasks, "_publish", cancel_after_first_batch)
    await execute(_context(app, settings), job.id)
    row, names = await _state(app, job)
    assert row.status == "cancelled"
    assert names == ["n0", "n1"]
    assert row.result is None
    assert row.finished_at is not None
    assert row.event_seq == published[-1] == 1 + 1 + 1 + 1  # queued, running, batch, cancelled


@pytest.mark.anyio
async def test_report_over_the_owners_items(
    app: FastAPI, client: httpx.AsyncClient, settings: Settings
) -> None:
    auth = await make_user(app)
    other = await make_user(app)
    for price, tags in ((4.0, ["red"]), (1.0, ["red", "big"]), (2.5, [])):
        body = {"name": "i", "price": price, "tags": tags}
        assert (await client.post("/api/v1/items", json=body, headers=auth)).status_code == 201
    await client.post("/api/v1/items", json={"name": "x", "price": 99}, headers=other)
    results: dict[str | None, Any] = {}
    requests: list[dict[str, Any]] = [
        {"kind": "items_report"},
        {"kind": "items_report", "tag": "red"},
    ]
    for request in requests:
        job = (await client.post(JOBS, json=request, headers=auth)).json()
        await execute(_context(app, settings), uuid.UUID(job["id"]))
        done = (await client.get(f"{JOBS}/{job['id']}", headers=auth)).json()
        assert done["status"] == "succeeded"
        results[request.get("tag")] = done
    everything: dict[str, Any] = results[None]
    assert everything["result"] == {
        "count": 3,
        "sum": 7.5,
        "mean": 2.5,
        "p50": 2.5,
        "p95": pytest.approx(2.5 + 1.5 * 0.9),
        "per_tag": {"big": 1, "red": 2},
    }
    assert everything["progress"] == {"done": 3, "total": 3}
    assert results["red"]["result"]["count"] == 2
    assert results["red"]["result"]["per_tag"] == {"big": 1, "red": 2}


@pytest.mark.anyio
async def test_a_queued_job_with_cancel_requested_is_cancelled(
    app: FastAPI, settings: Settings
) -> None:
    job = await _new_job(app, "items_report", {"tag": None}, 0)
    async with app.state.session_factory() as session:
        await session.execute(update(Job).where(Job.id == job.id).values(cancel_requested=True))
        await session.commit()
    await execute(_context(app, settings), job.id)
    row, _ = await _state(app, job)
    assert row.status == "cancelled"
    assert row.event_seq == 2


# --- failures: the Celery task wrapper on its own loop -----------------------------------------


class FakeTask:
    """Celery's bound-task surface run_job uses (request.retries and retry())."""

    def __init__(self, retries: int) -> None:
        self.request = SimpleNamespace(retries=retries)
        self.countdowns: list[float] = []

    def retry(self, countdown: float, exc: Exception) -> Retry:
        self.countdowns.append(countdown)
        return Retry(exc=exc)


@pytest.fixture
def worker_loop(migrated_settings: Settings) -> Iterator[WorkerLoop]:
    loop = WorkerLoop(migrated_settings)
    yield loop
    loop.close()


def _job_on(loop: WorkerLoop, kind: str, params: dict[str, Any]) -> uuid.UUID:
    async def create() -> uuid.UUID:
        async with loop.context().session_factory() as session:
            user = User(email=f"{uuid.uuid4().hex}@example.test", password_hash="x")
            session.add(user)
            await session.flush()
            job = Job(owner_id=user.id, kind=kind, params=params, progress_total=1)
            session.add(job)
            await session.commit()
            return job.id

    job_id: uuid.UUID = loop.run(create())
    return job_id


def _job_row(loop: WorkerLoop, job_id: uuid.UUID) -> Job:
    async def read() -> Job:
        async with loop.context().session_factory() as session:
            job = await session.get(Job, job_id)
            assert job is not None
            return job

    job: Job = loop.run(read())
    return job


def test_an_unexpected_error_fails_the_job_once(worker_loop: WorkerLoop) -> None:
    job_id = _job_on(worker_loop, "import_items", {"items": [{"no_such_column": 1}]})
    tasks.run_job(FakeTask(retries=0), worker_loop, str(job_id))  # does not raise
    job = _job_row(worker_loop, job_id)
    assert job.status == "failed"
    assert job.error == tasks.INTERNAL_ERROR
    assert job.finished_at is not None


def test_a_transient_error_retries_with_backoff_then_gives_up(
    worker_loop: WorkerLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = _job_on(worker_loop, "items_report", {"tag": None})

    async def locked(ctx: JobContext, job_id: uuid.UUID) -> None:
        raise OperationalError("SELECT 1", None, Exception("database is locked"))

    monkeypatch.setattr(tasks, "execute", locked)
    first = FakeTask(retries=0)
    with pytest.raises(Retry):
        tasks.run_job(first, worker_loop, str(job_id))
    assert 1 <= first.countdowns[0] <= 1.1
    fourth = FakeTask(retries=3)
    with pytest.raises(Retry):
        tasks.run_job(fourth, worker_loop, str(job_id))
    assert 8 <= fourth.countdowns[0] <= 8.8
    assert _job_row(worker_loop, job_id).status == "queued"
    last = FakeTask(retries=worker_loop.settings.job_max_retries)
    tasks.run_job(last, worker_loop, str(job_id))
    job = _job_row(worker_loop, job_id)
    assert last.countdowns == []
    assert job.status == "failed"
    assert job.error == tasks.unavailable_error(5)
    assert "gave up after 5 retries" in job.error["detail"]
    assert tasks.retry_delay(10) <= 30


# --- one job through a real worker process -------------------------------------------------


def _worker_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "VAR_DIR"}}
    env |= {
        "VAR_DIR": str(settings.var_dir),
        "CELERY_CONCURRENCY": "1",
        "JOB_BATCH_SIZE": "2",
        "JOB_REQUEUE_AFTER_SECONDS": str(settings.job_requeue_after_seconds),
        "LOG_LEVEL": "info",
    }
    if settings.database_url:
        env["DATABASE_URL"] = settings.database_url
    return env


@pytest.fixture
def worker_settings(
    migrated_settings: Settings, tmp_path: Path, request: pytest.FixtureRequest
) -> Settings:
    # Its own broker folder: other tests leave messages in the session's.
    changes = getattr(request, "param", {})
    return migrated_settings.model_copy(update={"var_dir": tmp_path / "var", **changes})


@pytest.fixture
def real_worker(worker_settings: Settings, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    with (tmp_path / "worker.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "fastapi_service.worker"],
            env=_worker_env(worker_settings),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    yield process
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.mark.anyio
async def test_a_job_through_a_real_worker(
    worker_settings: Settings, real_worker: subprocess.Popen[bytes]
) -> None:
    app = create_app(worker_settings)
    async with app.router.lifespan_context(app):
        auth = await make_user(app)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            body = {"kind": "import_items", "items": [{"name": f"w{i}", "price": i} for i in range(5)]}  # fmt: skip # noqa: E501
            job = (await client.post(JOBS, json=body, headers=auth)).json()
            with anyio.fail_after(30):
                answer = await client.get(f"{JOBS}/{job['id']}/events", headers=auth)
            assert "event: succeeded\nid: 6\n" in answer.text  # 1 + start + 3 batches + end
            items = (await client.get("/api/v1/items?limit=100", headers=auth)).json()["items"]
            assert [item["name"] for item in items] == [f"w{i}" for i in range(5)]
        async with app.state.session_factory() as session:
            count = await session.scalar(
                select(func.count()).select_from(Job).where(Job.id == uuid.UUID(job["id"]))
            )
        assert count == 1
    assert real_worker.poll() is None


@pytest.mark.anyio
@pytest.mark.parametrize("worker_settings", [{"job_requeue_after_seconds": 1}], indirect=True)
async def test_a_queued_job_whose_message_was_lost_runs_after_the_requeue_setting(
    worker_settings: Settings, real_worker: subprocess.Popen[bytes]
) -> None:
    """The job is stored `queued` but its message never reaches the broker (as when Redis
    loses a popped message): the worker's sweep publishes it again after
    JOB_REQUEUE_AFTER_SECONDS (1 s here) and it runs."""
    app = create_app(worker_settings)
    async with app.router.lifespan_context(app):
        job = await _new_job(app, "import_items", _items(3), 3)  # stored, never published
        with anyio.fail_after(20):
            while True:
                if (await _state(app, job))[0].status == "succeeded":
                    break
                await anyio.sleep(0.2)
        row, names = await _state(app, job)
        assert names == ["n0", "n1", "n2"]
        assert row.result == {"created": 3}
    assert real_worker.poll() is None


async def _eventually(check: Callable[[], bool], seconds: float = 20) -> None:
    with anyio.fail_after(seconds):
        while True:
            if check():
                return
            await anyio.sleep(0.1)


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()] if path.exists() else []


@pytest.mark.anyio
async def test_a_killed_worker_child_gives_the_job_back(
    worker_settings: Settings, real_worker: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    """The child running the task is SIGKILLed mid-task: the parent rejects the message with
    requeue (task_reject_on_worker_lost), the embedded broker writes it back, and a new child
    runs the job to its end, without duplicates."""
    app = create_app(worker_settings)
    async with app.router.lifespan_context(app):
        auth = await make_user(app)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            body = {"kind": "import_items", "items": [{"name": f"k{i}", "price": i} for i in range(3)]}  # fmt: skip # noqa: E501
            async with app.state.session_factory() as blocker:
                # Hold the job's row (SQLite: the write lock), so the task blocks in its start.
                job = (await client.post(JOBS, json=body, headers=auth)).json()
                await blocker.get(Job, uuid.UUID(job["id"]), with_for_update=True)
                log = tmp_path / "worker.log"
                await _eventually(lambda: f"run_job[{job['id']}] received" in log.read_text())
                await anyio.sleep(0.5)  # the child has started the task
                [child] = _children(real_worker.pid)
                os.kill(child, signal.SIGKILL)
                await _eventually(lambda: "exited with 'signal 9" in log.read_text())
                await blocker.rollback()
            with anyio.fail_after(30):
                while True:
                    answer = await client.get(f"{JOBS}/{job['id']}", headers=auth)
                    if answer.json()["status"] == "succeeded":
                        break
                    await anyio.sleep(0.2)
            items = (await client.get("/api/v1/items?limit=100", headers=auth)).json()["items"]
            assert [item["name"] for item in items] == ["k0", "k1", "k2"]
