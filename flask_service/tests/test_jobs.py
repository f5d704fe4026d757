"""Jobs: the API (validation, 202/404/409, pages), the event stream, the report's arithmetic
and the task body on a real database (SQLite, and PostgreSQL with TEST_DATABASE_URL)."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Connection, Select, create_engine, func, insert, select, text, update
from sqlalchemy import exc as sa_exc

from conftest import TEST_SECRET, StartWorker, User, data, locations, problem, quick_user
from flask_service import create_app, lifecycle
from flask_service.db import utcnow
from flask_service.deps import STATE_KEY
from flask_service.jobs import service, tasks
from flask_service.jobs.events import RECONNECT, Publisher
from flask_service.jobs.tasks import RUN_JOB_TASK, Runtime
from flask_service.models import Item, Job
from flask_service.settings import Settings
from flask_service.worker import make_celery

JOBS = "/api/v1/jobs"
JOB_FIELDS = {
    "id", "kind", "status", "progress", "result", "error",
    "created_at", "updated_at", "started_at", "finished_at",
}  # fmt: skip


def _items(count: int) -> list[dict[str, Any]]:
    return [{"name": f"item {n}", "price": float(n)} for n in range(count)]


def _import(client: FlaskClient, user: User, count: int = 3) -> dict[str, Any]:
    answer = client.post(
        JOBS, json={"kind": "import_items", "items": _items(count)}, headers=user.auth
    )
    assert answer.status_code == 202, answer.get_data(as_text=True)
    body: dict[str, Any] = data(answer)
    return body


def _report(client: FlaskClient, user: User, tag: str | None = None) -> dict[str, Any]:
    request: dict[str, Any] = {"kind": "items_report"} | ({"tag": tag} if tag else {})
    answer = client.post(JOBS, json=request, headers=user.auth)
    assert answer.status_code == 202, answer.get_data(as_text=True)
    body: dict[str, Any] = data(answer)
    return body


def _row(app: Flask, job_id: str | uuid.UUID) -> Job:
    with app.extensions[STATE_KEY].session_factory() as session:
        job: Job | None = session.get(Job, uuid.UUID(str(job_id)))
        assert job is not None
        return job


def _set(app: Flask, job_id: str | uuid.UUID, **values: Any) -> None:
    with app.extensions[STATE_KEY].session_factory() as session, session.begin():
        session.execute(update(Job).where(Job.id == uuid.UUID(str(job_id))).values(**values))


def _item_count(app: Flask, owner: str) -> int:
    with app.extensions[STATE_KEY].session_factory() as session:
        count = session.scalar(
            select(func.count()).select_from(Item).where(Item.owner_id == uuid.UUID(owner))
        )
        return int(count or 0)


# --- the API --------------------------------------------------------------------------------


def test_create_answers_202_with_the_queued_job(
    app: Flask, client: FlaskClient, user: User
) -> None:
    answer = client.post(
        JOBS, json={"kind": "import_items", "items": [{"name": "a", "price": 2}]}, headers=user.auth
    )
    assert answer.status_code == 202
    job = data(answer)
    assert set(job) == JOB_FIELDS
    assert answer.headers["Location"] == f"{JOBS}/{job['id']}"
    assert (job["kind"], job["status"]) == ("import_items", "queued")
    assert job["progress"] == {"done": 0, "total": 1}
    assert job["result"] is job["error"] is job["started_at"] is job["finished_at"] is None
    assert job["created_at"].endswith("+00:00")
    row = _row(app, job["id"])
    # The request minus `kind`, with ItemCreate's defaults applied; the first event is 1.
    assert row.params == {"items": [{"name": "a", "price": 2, "description": "", "tags": []}]}
    assert row.event_seq == 1
    report = _report(client, user, tag="kitchen")
    assert report["progress"] == {"done": 0, "total": 0}
    assert _row(app, report["id"]).params == {"tag": "kitchen"}


@pytest.mark.parametrize(
    ("body", "location"),
    [
        ({}, "body.kind"),
        ({"items": _items(1)}, "body.kind"),
        ({"kind": "launch_rockets"}, "body.kind"),
        ({"kind": "import_items"}, "body.items"),
        ({"kind": "import_items", "items": []}, "body.items"),
        ({"kind": "import_items", "items": [*_items(3), {"name": "x", "price": "1"}]},
         "body.items.3.price"),
        ({"kind": "import_items", "items": [{"price": 1}]}, "body.items.0.name"),
        ({"kind": "import_items", "items": _items(1), "owner_id": "x"}, "body.owner_id"),
        ({"kind": "items_report", "tag": "Not A Tag"}, "body.tag"),
        ({"kind": "items_report", "tag": None}, "body.tag"),
        ({"kind": "items_report", "items": _items(1)}, "body.items"),
        ([{"kind": "items_report"}], "body"),
    ],
)  # fmt: skip
def test_create_refusals_name_the_field(
    client: FlaskClient, user: User, body: Any, location: str
) -> None:
    answer = client.post(JOBS, json=body, headers=user.auth)
    problem(answer, 422, "validation-error")
    assert location in locations(answer)
    assert data(client.get(JOBS, headers=user.auth))["items"] == []


def test_import_accepts_at_most_10000_items(client: FlaskClient, user: User) -> None:
    items = [{"name": "x", "price": 1}] * 10_001
    answer = client.post(JOBS, json={"kind": "import_items", "items": items}, headers=user.auth)
    assert locations(answer) == ["body.items"]


def test_check_order_401_before_422(client: FlaskClient) -> None:
    problem(client.post(JOBS, json={}), 401, "unauthorized")
    problem(client.get(f"{JOBS}/not-a-uuid/events"), 401, "unauthorized")


def test_jobs_are_paged_oldest_first_and_private(
    client: FlaskClient, user: User, other_user: User
) -> None:
    created = [_report(client, user)["id"] for _ in range(3)]
    first = data(client.get(f"{JOBS}?limit=2", headers=user.auth))
    assert [job["id"] for job in first["items"]] == created[:2]
    second = data(client.get(f"{JOBS}?limit=2&cursor={first['next_cursor']}", headers=user.auth))
    assert [job["id"] for job in second["items"]] == created[2:]
    assert second["next_cursor"] is None
    assert data(client.get(JOBS, headers=other_user.auth))["items"] == []
    for method, suffix in (("get", ""), ("delete", ""), ("get", "/events")):
        answer = client.open(f"{JOBS}/{created[0]}{suffix}", method=method, headers=other_user.auth)
        problem(answer, 404, "not-found")
    problem(client.get(f"{JOBS}/{uuid.uuid4()}", headers=user.auth), 404, "not-found")
    assert locations(client.get(f"{JOBS}/nope", headers=user.auth)) == ["path.job_id"]
    assert locations(client.get(f"{JOBS}?limit=0", headers=user.auth)) == ["query.limit"]


def test_cancel_a_queued_job_then_409(app: Flask, client: FlaskClient, user: User) -> None:
    job = _import(client, user)
    answer = client.delete(f"{JOBS}/{job['id']}", headers=user.auth)
    assert answer.status_code == 202
    cancelled = data(answer)
    assert cancelled["status"] == "cancelled"
    assert cancelled["finished_at"] is not None
    assert _row(app, job["id"]).event_seq == 2
    again = problem(client.delete(f"{JOBS}/{job['id']}", headers=user.auth), 409, "job-finished")
    assert again["title"] == "Job already finished"
    assert data(client.get(f"{JOBS}/{job['id']}", headers=user.auth)) == cancelled


def test_cancel_a_running_job_asks_it_to_stop(app: Flask, client: FlaskClient, user: User) -> None:
    job = _import(client, user)
    _set(app, job["id"], status="running", event_seq=2)
    answer = client.delete(f"{JOBS}/{job['id']}", headers=user.auth)
    assert answer.status_code == 202
    assert data(answer)["status"] == "running"
    row = _row(app, job["id"])
    assert row.cancel_requested is True
    assert row.event_seq == 2  # nothing a stream shows changed yet


# --- the event stream -----------------------------------------------------------------------


def _events(text_body: str) -> list[dict[str, str]]:
    events = []
    for block in text_body.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            events.append(fields)
    return events


def test_stream_of_a_finished_job_sends_its_last_state_and_ends(
    client: FlaskClient, user: User
) -> None:
    job = _import(client, user)
    cancelled = data(client.delete(f"{JOBS}/{job['id']}", headers=user.auth))
    answer = client.get(f"{JOBS}/{job['id']}/events", headers=user.auth)
    assert answer.status_code == 200
    assert answer.mimetype == "text/event-stream"
    assert answer.headers["Cache-Control"] == "no-cache"
    assert answer.headers["X-Accel-Buffering"] == "no"
    text_body = answer.get_data(as_text=True)
    assert text_body.startswith("event: cancelled\nid: 2\ndata: {")
    [event] = _events(text_body)
    assert json.loads(event["data"]) == cancelled
    resumed = client.get(f"{JOBS}/{job['id']}/events", headers={**user.auth, "Last-Event-ID": "2"})
    assert resumed.status_code == 200
    assert resumed.get_data() == b""
    refused = client.get(f"{JOBS}/{job['id']}/events", headers={**user.auth, "Last-Event-ID": "x"})
    assert locations(refused) == ["header.Last-Event-ID"]


def _gauge(client: FlaskClient) -> float:
    for line in client.get("/metrics").get_data(as_text=True).splitlines():
        if line.startswith("job_event_streams_open "):
            return float(line.split()[1])
    raise AssertionError("job_event_streams_open is missing")


def test_stream_follows_the_job_with_heartbeats(
    make_app: Any, base_settings: Settings, password_hash: str
) -> None:
    app = make_app(sse_heartbeat_seconds=1)
    client = app.test_client()
    user = quick_user(app, password_hash)
    job = _report(client, user)
    answer = client.get(f"{JOBS}/{job['id']}/events", headers=user.auth, buffered=False)
    chunks = iter(answer.response)
    first = next(chunks)
    assert first.startswith(b"event: progress\nid: 1\n")
    assert _gauge(client) == 1
    started = time.monotonic()
    assert next(chunks) == b": heartbeat\n\n"
    assert 0.8 < time.monotonic() - started < 3
    # The worker runs the job meanwhile; the stream sends the state it finds (coalesced).
    runtime = Runtime.build(base_settings)
    try:
        tasks.execute(runtime, uuid.UUID(job["id"]))
    finally:
        runtime.close()
    rest = b"".join(chunks).decode()
    events = _events(rest)
    assert [event["event"] for event in events][-1] == "succeeded"
    assert [int(event["id"]) for event in events] == sorted({int(e["id"]) for e in events})
    assert int(events[-1]["id"]) == _row(app, job["id"]).event_seq
    answer.close()
    assert _gauge(client) == 0


def test_closing_a_stream_frees_it(make_app: Any, password_hash: str) -> None:
    app = make_app()
    client = app.test_client()
    user = quick_user(app, password_hash)
    job = _report(client, user)
    answer = client.get(f"{JOBS}/{job['id']}/events", headers=user.auth, buffered=False)
    assert next(iter(answer.response)).startswith(b"event: progress")
    assert _gauge(client) == 1
    answer.close()
    assert _gauge(client) == 0


# --- the report's arithmetic ----------------------------------------------------------------


def test_percentiles_interpolate_like_numpy() -> None:
    assert service.percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert service.percentile([1.0, 2.0, 3.0, 4.0], 0.95) == pytest.approx(3.85)
    assert service.percentile([7.0], 0.95) == 7.0
    assert service.percentile([], 0.5) is None
    ordered = [float(n) for n in range(1, 101)]
    assert service.percentile(ordered, 0.95) == pytest.approx(95.05)


def test_report_of_nothing_and_of_something() -> None:
    empty = service.items_report([])
    assert empty == {"count": 0, "sum": 0.0, "mean": None, "p50": None, "p95": None, "per_tag": {}}
    report = service.items_report([(4.0, ["a", "b"]), (1.0, ["a", "a"]), (10.0, [])])
    assert report["count"] == 3
    assert report["sum"] == 15.0
    assert report["mean"] == 5.0
    assert report["p50"] == 4.0
    assert report["p95"] == pytest.approx(9.4)
    assert report["per_tag"] == {"a": 2, "b": 1}  # items carrying the tag, not mentions
    # math.fsum over sorted prices: exact where a running sum drifts.
    assert service.items_report([(0.1, [])] * 10)["sum"] == 1.0


# --- the task body on a real database -------------------------------------------------------


@pytest.fixture
def runtime(base_settings: Settings) -> Iterator[Runtime]:
    built = Runtime.build(replace(base_settings, job_batch_size=2))
    yield built
    built.close()


class CancellingPublisher(Publisher):
    """No Redis; cancels the job (the API's own code path) once it has published `after`."""

    def __init__(self, runtime_ref: list[Runtime], owner: uuid.UUID, after: int) -> None:
        super().__init__(None)
        self.runtime_ref, self.owner, self.after = runtime_ref, owner, after
        self.seen: list[int] = []

    def publish(self, job_id: uuid.UUID, event_seq: int) -> None:
        self.seen.append(event_seq)
        if event_seq == self.after:
            with self.runtime_ref[0].session_factory() as session, session.begin():
                service.cancel_job(session, self.owner, job_id)


def _new_job(runtime: Runtime, owner: str, body: dict[str, Any]) -> uuid.UUID:
    with runtime.session_factory() as session, session.begin():
        return service.create_job(session, uuid.UUID(owner), body).id


def test_import_runs_in_batches_and_a_redelivery_does_nothing(
    app: Flask, runtime: Runtime, user: User
) -> None:
    job_id = _new_job(runtime, user.id, {"kind": "import_items", "items": _items(5)})
    tasks.execute(runtime, job_id)
    job = _row(app, job_id)
    assert (job.status, job.result, job.error) == ("succeeded", {"created": 5}, None)
    assert (job.progress_done, job.progress_total) == (5, 5)
    assert job.event_seq == 1 + 1 + 3 + 1  # queued, running, three batches, succeeded
    assert job.started_at is not None
    assert job.finished_at is not None
    assert _item_count(app, user.id) == 5
    tasks.execute(runtime, job_id)
    assert _row(app, job_id).event_seq == 6
    assert _item_count(app, user.id) == 5


def test_redelivery_resumes_after_the_last_committed_batch(
    app: Flask, runtime: Runtime, user: User
) -> None:
    items = _items(5)
    job_id = _new_job(runtime, user.id, {"kind": "import_items", "items": items})
    # A first delivery started, committed one batch, then its worker died.
    started = tasks._start(runtime, job_id)
    assert started is not None
    assert tasks._import_batch(runtime, started, items[:2], 0) == tasks.OK
    tasks.execute(runtime, job_id)  # the redelivery
    assert _row(app, job_id).status == "succeeded"
    assert _item_count(app, user.id) == 5
    # A delivery that is behind (it read progress 0) records nothing and inserts nothing.
    _set(app, job_id, status="running")
    assert tasks._import_batch(runtime, started, items[:2], 0) == tasks.LOST
    assert _item_count(app, user.id) == 5
    with runtime.session_factory() as session:
        names = session.scalars(
            select(Item.name).where(Item.owner_id == uuid.UUID(user.id)).order_by(Item.id)
        ).all()
    assert names == [item["name"] for item in items]


def test_cancel_stops_at_the_next_batch(app: Flask, runtime: Runtime, user: User) -> None:
    job_id = _new_job(runtime, user.id, {"kind": "import_items", "items": _items(5)})
    publisher = CancellingPublisher([runtime], uuid.UUID(user.id), after=3)  # first batch done
    tasks.execute(replace(runtime, publisher=publisher), job_id)
    job = _row(app, job_id)
    assert (job.status, job.result) == ("cancelled", None)
    assert job.finished_at is not None
    assert _item_count(app, user.id) == 2  # what was committed stays
    assert publisher.seen == [2, 3, 4]


def test_a_job_cancelled_while_queued_never_runs(
    app: Flask, client: FlaskClient, runtime: Runtime, user: User
) -> None:
    job = _import(client, user)
    client.delete(f"{JOBS}/{job['id']}", headers=user.auth)
    tasks.execute(runtime, uuid.UUID(job["id"]))
    assert _row(app, job["id"]).event_seq == 2
    assert _item_count(app, user.id) == 0


def test_report_over_the_owners_items(
    app: Flask, runtime: Runtime, user: User, other_user: User
) -> None:
    for owner, price, tags in (
        (user, 4.0, ["a", "b"]),
        (user, 1.0, ["a"]),
        (user, 10.0, []),
        (other_user, 99.0, ["a"]),
    ):
        with runtime.session_factory() as session, session.begin():
            session.add(
                Item(owner_id=uuid.UUID(owner.id), name="x", price=price, tags=tags, version=1)
            )
    everything = _new_job(runtime, user.id, {"kind": "items_report"})
    tagged = _new_job(runtime, user.id, {"kind": "items_report", "tag": "a"})
    nothing = _new_job(runtime, user.id, {"kind": "items_report", "tag": "zzz"})
    for job_id in (everything, tagged, nothing):
        tasks.execute(runtime, job_id)
    job = _row(app, everything)
    assert job.status == "succeeded"
    assert job.result == service.items_report([(4.0, ["a", "b"]), (1.0, ["a"]), (10.0, [])])
    assert (job.progress_done, job.progress_total) == (3, 3)
    # The design's formula, exactly: v[lo] + (v[hi] - v[lo]) * (pos - lo).
    assert _row(app, tagged).result == {
        "count": 2, "sum": 5.0, "mean": 2.5, "p50": 2.5, "p95": 1.0 + 3.0 * 0.95,
        "per_tag": {"a": 2, "b": 1},
    }  # fmt: skip
    assert _row(app, nothing).result == service.items_report([])


def test_claim_stale_takes_each_stale_queued_job_once(
    app: Flask, runtime: Runtime, user: User
) -> None:
    """Two sweepers claiming at once (two threads, two connections): each stale `queued` job
    goes to exactly one of them; fresh and running jobs to neither; a claimed job is fresh."""
    settings = replace(runtime.settings, job_requeue_after_seconds=30)
    body = {"kind": "import_items", "items": _items(1)}
    stale = {_new_job(runtime, user.id, body) for _ in range(6)}
    fresh, running = _new_job(runtime, user.id, body), _new_job(runtime, user.id, body)
    long_ago = utcnow() - dt.timedelta(seconds=60)
    for job_id in stale:
        _set(app, job_id, updated_at=long_ago)
    _set(app, running, status="running", updated_at=long_ago)
    start = threading.Barrier(2)
    claims: list[list[uuid.UUID]] = []

    def sweep() -> None:
        start.wait()
        claims.append(tasks.claim_stale(runtime.session_factory, settings))

    sweepers = [threading.Thread(target=sweep) for _ in range(2)]
    for thread in sweepers:
        thread.start()
    for thread in sweepers:
        thread.join(timeout=30)
    assert len(claims) == 2
    assert sorted(claims[0] + claims[1]) == sorted(stale)  # none twice, none missed
    assert tasks.claim_stale(runtime.session_factory, settings) == []
    assert (_row(app, fresh).status, _row(app, running).status) == ("queued", "running")
    assert all(_row(app, job_id).updated_at > long_ago for job_id in stale)


def _plan(connection: Connection, statement: Select[Any]) -> str:
    """The backend's plan for `statement` as SQLAlchemy compiles it, values inlined."""
    sql = statement.compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True})
    explain = "EXPLAIN QUERY PLAN" if connection.dialect.name == "sqlite" else "EXPLAIN"
    return "\n".join(str(row[-1]) for row in connection.exec_driver_sql(f"{explain} {sql}"))


def test_the_sweep_reads_only_queued_jobs_through_their_index(app: Flask, user: User) -> None:
    """Among 5,000 finished jobs and 3 stale queued ones, the sweep's read (tasks.oldest_stale)
    goes through the partial index ix_jobs_queued_updated_at, not through every job. The
    migrated schema is what is explained (compare_metadata ignores index predicates). The
    rows, and on PostgreSQL the statistics ANALYZE takes of them, are rolled back."""
    long_ago = utcnow() - dt.timedelta(hours=1)
    row = {"owner_id": uuid.UUID(user.id), "kind": "items_report", "params": {}}
    with app.extensions[STATE_KEY].engine.connect() as connection, connection.begin() as outer:
        connection.execute(
            insert(Job),
            [{**row, "status": "succeeded", "updated_at": long_ago}] * 5000
            + [{**row, "status": "queued", "updated_at": long_ago}] * 3,
        )
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql("ANALYZE jobs")
        plan = _plan(connection, tasks.oldest_stale(utcnow() - dt.timedelta(seconds=60)))
        outer.rollback()
    assert "ix_jobs_queued_updated_at" in plan, plan


def test_a_second_message_for_a_finished_report_does_nothing(
    app: Flask, runtime: Runtime, user: User
) -> None:
    job_id = _new_job(runtime, user.id, {"kind": "items_report"})
    tasks.execute(runtime, job_id)
    first = _row(app, job_id)
    tasks.execute(runtime, job_id)  # the sweeper's duplicate arrives after the original
    again = _row(app, job_id)
    assert first.status == "succeeded"
    assert (again.status, again.event_seq, again.finished_at, again.result) == (
        first.status,
        first.event_seq,
        first.finished_at,
        first.result,
    )


def test_an_unexpected_error_fails_the_job(app: Flask, base_settings: Settings, user: User) -> None:
    runtime = Runtime.build(base_settings)
    job_id = _new_job(runtime, user.id, {"kind": "import_items", "items": _items(1)})
    runtime.close()
    _set(app, job_id, params={"broken": True})  # the task body meets a KeyError
    celery = make_celery(base_settings)
    try:
        celery.tasks[RUN_JOB_TASK].apply(args=[str(job_id)])
    finally:
        tasks.reset_runtime()
        celery.close()
    job = _row(app, job_id)
    assert job.status == "failed"
    assert job.error == tasks.INTERNAL_ERROR


def test_transient_errors_are_told_apart(tmp_path: Path) -> None:
    engine = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    with pytest.raises(sa_exc.OperationalError) as refused:
        engine.connect()
    engine.dispose()
    assert tasks.is_transient(refused.value)
    assert not tasks.is_transient(KeyError("items"))
    sqlite = create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with sqlite.connect() as connection:
        connection.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
        with pytest.raises(sa_exc.IntegrityError) as conflict:
            connection.execute(text("INSERT INTO t VALUES (1), (1)"))
    sqlite.dispose()
    assert not tasks.is_transient(conflict.value)
    assert 1 <= tasks.backoff_seconds(0) <= 1.1
    assert 30 <= tasks.backoff_seconds(10) <= 33


# --- a real worker --------------------------------------------------------------------------


def test_a_job_through_a_real_worker(
    tmp_path: Path, start_worker: StartWorker, password_hash: str
) -> None:
    settings = Settings(var_dir=tmp_path / "var", jwt_secret=TEST_SECRET, log_level="warning")
    app = create_app(settings)  # migrates the SQLite file the worker will use too
    try:
        start_worker(replace(settings, job_batch_size=2))
        client = app.test_client()
        user = quick_user(app, password_hash)
        job = _import(client, user, count=5)
        deadline = time.monotonic() + 30
        while (current := data(client.get(f"{JOBS}/{job['id']}", headers=user.auth)))[
            "status"
        ] != "succeeded":
            assert current["status"] in {"queued", "running"}, current
            assert time.monotonic() < deadline, "the worker did not finish the job"
            time.sleep(0.2)
        assert current["result"] == {"created": 5}
        items = data(client.get("/api/v1/items?limit=100", headers=user.auth))["items"]
        assert sorted(item["name"] for item in items) == sorted(i["name"] for i in _items(5))
        stream = client.get(f"{JOBS}/{job['id']}/events", headers=user.auth).get_data(as_text=True)
        assert [event["event"] for event in _events(stream)] == ["succeeded"]
    finally:
        app.extensions[STATE_KEY].engine.dispose()


def test_a_queued_job_whose_message_was_lost_runs_after_the_requeue_setting(
    tmp_path: Path, start_worker: StartWorker, password_hash: str
) -> None:
    """The job is stored `queued` but its message never reaches the broker (as when Redis
    loses a popped message): the worker's sweep publishes it again after
    JOB_REQUEUE_AFTER_SECONDS and it runs."""
    settings = Settings(var_dir=tmp_path / "var", jwt_secret=TEST_SECRET, log_level="warning")
    app = create_app(settings)
    try:
        user = quick_user(app, password_hash)
        body = {"kind": "import_items", "items": _items(3)}
        with app.extensions[STATE_KEY].session_factory() as session, session.begin():
            job_id = service.create_job(session, uuid.UUID(user.id), body).id  # not published
        start_worker(replace(settings, job_requeue_after_seconds=1))
        _wait_until(lambda: _row(app, job_id).status == "succeeded", 30, "the job never ran")
        assert _item_count(app, user.id) == 3
    finally:
        app.extensions[STATE_KEY].engine.dispose()


def _children(pid: int) -> list[int]:
    """Child processes of `pid`, forked by any of its threads (Linux /proc)."""
    threads = Path(f"/proc/{pid}/task").iterdir()
    return sorted(
        int(child) for thread in threads for child in (thread / "children").read_text().split()
    )


def _wait_until(condition: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_a_killed_worker_child_gives_the_job_back(
    tmp_path: Path, start_worker: StartWorker, password_hash: str
) -> None:
    """Embedded broker: a pool child killed mid-job makes the parent reject the message with
    requeue (acks_late + reject_on_worker_lost); the message is written back to the queue
    folder, and the next child finishes the job exactly once."""
    settings = Settings(var_dir=tmp_path / "var", jwt_secret=TEST_SECRET, log_level="warning")
    app = create_app(settings)
    queue = settings.broker_dir / "queue"
    database = settings.var_dir / "flask_service.sqlite3"
    try:
        client = app.test_client()
        user = quick_user(app, password_hash)
        job = _import(client, user, count=3)  # queued; no worker runs yet
        # The test holds SQLite's write lock: the job's first transaction waits on it.
        blocker = sqlite3.connect(database, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            worker = start_worker(settings)
            _wait_until(lambda: not any(queue.iterdir()), 30, "the worker never took the job")
            [child] = _children(worker.pid)
            os.kill(child, signal.SIGKILL)
            # The pool replaces the child; the message it held comes back (it may be taken
            # again at once, so the folder is not a reliable witness; the job's end is).
            _wait_until(lambda: _children(worker.pid) not in ([], [child]), 15, "no new child")
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        _wait_until(
            lambda: (
                data(client.get(f"{JOBS}/{job['id']}", headers=user.auth))["status"] == "succeeded"
            ),
            30,
            "the redelivered job did not finish",
        )
        assert _item_count(app, user.id) == 3
    finally:
        app.extensions[STATE_KEY].engine.dispose()


# --- shutdown: streams end with a retry hint (lifecycle.py) -----------------------------------


@pytest.fixture
def shutdown() -> Iterator[None]:
    lifecycle.reset()
    yield
    lifecycle.reset()


def test_shutdown_ends_an_open_stream_with_a_retry_hint(
    make_app: Any, password_hash: str, shutdown: None
) -> None:
    app = make_app(sse_heartbeat_seconds=5)  # only the shutdown can end the wait sooner
    client = app.test_client()
    user = quick_user(app, password_hash)
    job = _report(client, user)  # no worker here: the job stays queued, the stream open
    answer = client.get(f"{JOBS}/{job['id']}/events", headers=user.auth, buffered=False)
    chunks = iter(answer.response)
    assert next(chunks).startswith(b"event: progress\nid: 1\n")
    started = time.monotonic() + 0.3
    threading.Timer(0.3, lifecycle.begin_shutdown).start()  # while the stream waits
    rest = b""
    for chunk in chunks:  # a heartbeat at least every 5 s: this loop cannot hang
        rest += chunk
        if time.monotonic() - started > 6:
            break
    assert time.monotonic() - started < 1, f"the stream went on: {rest!r}"
    assert rest.endswith(RECONNECT), rest
    assert rest.replace(b": heartbeat\n\n", b"") == RECONNECT
    assert RECONNECT == b": shutting down, reconnect\nretry: 1000\n\n"
    answer.close()
    assert _gauge(client) == 0
    # A stream opened during the shutdown sends the job as it is, then the same hint.
    again = client.get(f"{JOBS}/{job['id']}/events", headers=user.auth).get_data()
    assert again.startswith(b"event: progress\nid: 1\n")
    assert again.endswith(b"\n\n" + RECONNECT)


def test_shutdown_makes_readiness_fail_not_liveness(client: FlaskClient, shutdown: None) -> None:
    assert client.get("/readyz").status_code == 200
    lifecycle.begin_shutdown()
    body = problem(client.get("/readyz"), 503, "service-unavailable")
    assert body["detail"] == "Not ready: shutting down."
    assert client.get("/healthz").status_code == 200


def test_watch_signals_runs_before_the_servers_own_handler(shutdown: None) -> None:
    seen: list[tuple[int, bool]] = []
    previous = signal.signal(
        signal.SIGTERM, lambda sig, _: seen.append((sig, lifecycle.shutting_down()))
    )
    try:
        lifecycle.watch_signals()
        os.kill(os.getpid(), signal.SIGTERM)
        assert seen == [(signal.SIGTERM, True)]  # the server's handler still runs, after ours
    finally:
        signal.signal(signal.SIGTERM, previous)
