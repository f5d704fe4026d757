"""/api/v1/jobs: creation (validation, enqueue, 503 when the broker is down), pages, reads,
cancellation and the Server-Sent Events stream (format, resume, heartbeat, release on
disconnect). The task body itself is covered in test_job_tasks.py."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Gauge
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from starlette.types import Message

from fastapi_service import create_app, lifecycle, security
from fastapi_service.db import database_url
from fastapi_service.jobs import events
from fastapi_service.jobs.tasks import JobContext, execute
from fastapi_service.models import Job
from fastapi_service.settings import Settings
from helpers import assert_problem, locations, make_user

pytestmark = pytest.mark.anyio
JOBS = "/api/v1/jobs"
TIMESTAMP = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|\+00:00)$"


def import_body(count: int = 3) -> dict[str, Any]:
    return {"kind": "import_items", "items": [{"name": f"n{i}", "price": i} for i in range(count)]}


async def create_job(
    client: httpx.AsyncClient, auth: dict[str, str], body: dict[str, Any] | None = None
) -> dict[str, Any]:
    answer = await client.post(JOBS, json=body or import_body(), headers=auth)
    assert answer.status_code == 202, answer.text
    job: dict[str, Any] = answer.json()
    return job


def queued_messages(settings: Settings) -> int:
    return len(list((settings.broker_dir / "queue").glob("*.msg")))


def _invalid_at(answer: httpx.Response) -> list[str]:
    assert_problem(answer, 422, "validation-error")
    return locations(answer)


def parse_events(text: str) -> list[dict[str, str]]:
    """The stream's blocks: {"event", "id", "data"} for events, {"comment"} for comments."""
    blocks = []
    for block in text.split("\n\n"):
        if not block:
            continue
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            name, _, value = line.partition(": ")
            fields["comment" if name == "" else name] = value
        blocks.append(fields)
    return blocks


async def test_create_import_job(
    client: httpx.AsyncClient, auth: dict[str, str], settings: Settings
) -> None:
    before = queued_messages(settings)
    answer = await client.post(JOBS, json=import_body(3), headers=auth)
    assert answer.status_code == 202, answer.text
    job = answer.json()
    assert answer.headers["location"] == f"{JOBS}/{job['id']}"
    assert job["kind"] == "import_items"
    assert job["status"] == "queued"
    assert job["progress"] == {"done": 0, "total": 3}
    assert job["result"] is None
    assert job["error"] is None
    assert job["started_at"] is None
    assert job["finished_at"] is None
    for name in ("created_at", "updated_at"):
        assert re.match(TIMESTAMP, job[name]), job[name]
    assert uuid.UUID(job["id"]).version == 7
    assert queued_messages(settings) == before + 1  # the task is on the embedded broker
    assert (await client.get(answer.headers["location"], headers=auth)).json() == job


async def test_created_job_stores_params_with_defaults(
    app: FastAPI, client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    imported = await create_job(client, auth, import_body(1))
    report = await create_job(client, auth, {"kind": "items_report"})
    tagged = await create_job(client, auth, {"kind": "items_report", "tag": "red"})
    async with app.state.session_factory() as session:
        rows = {job.id: job for job in await session.scalars(select(Job))}
    first = rows[uuid.UUID(imported["id"])]
    assert first.params == {"items": [{"name": "n0", "description": "", "price": 0, "tags": []}]}
    assert first.event_seq == 1
    assert first.cancel_requested is False
    assert rows[uuid.UUID(report["id"])].params == {"tag": None}
    assert rows[uuid.UUID(tagged["id"])].params == {"tag": "red"}
    assert report["progress"] == {"done": 0, "total": 0}


@pytest.mark.parametrize(
    ("body", "location"),
    [
        ({"kind": "import_items", "items": [{"name": "a", "price": 1}] * 3 + [{"name": "b", "price": "12.5"}]}, "body.items.3.price"),  # noqa: E501
        ({"kind": "import_items", "items": []}, "body.items"),
        ({"kind": "import_items"}, "body.items"),
        ({"kind": "import_items", "items": [{"name": "a", "price": 1, "id": "x"}]}, "body.items.0.id"),  # noqa: E501
        ({"kind": "rebuild"}, "body.kind"),
        ({"kind": 5}, "body.kind"),
        ({"items": []}, "body.kind"),
        ({}, "body.kind"),
        ({"kind": "items_report", "tag": "Not A Tag"}, "body.tag"),
        ({"kind": "items_report", "tag": None}, "body.tag"),
        ({"kind": "items_report", "status": "done"}, "body.status"),
        ([{"kind": "items_report"}], "body"),
    ],
)  # fmt: skip
async def test_invalid_bodies_name_the_field(
    client: httpx.AsyncClient, auth: dict[str, str], body: Any, location: str
) -> None:
    answer = await client.post(JOBS, json=body, headers=auth)
    assert_problem(answer, 422, "validation-error")
    assert location in locations(answer)
    assert (await client.get(JOBS, headers=auth)).json()["items"] == []  # nothing stored


async def test_too_many_items_is_a_422(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    body = {"kind": "import_items", "items": [{"name": "a", "price": 1}] * 10_001}
    app_limit = {"content-type": "application/json", **auth}
    answer = await client.post(JOBS, content=json.dumps(body), headers=app_limit)
    # 10 001 small items fit in 1 MiB, so this is validation, not the body limit.
    assert_problem(answer, 422, "validation-error")
    assert locations(answer) == ["body.items"]


async def test_checks_come_in_the_contract_order(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    assert_problem(await client.post(JOBS, content=b"{nope"), 401, "unauthorized")
    plain = {"content-type": "text/plain", **auth}
    wrong_type = await client.post(JOBS, content=b"{}", headers=plain)
    assert_problem(wrong_type, 415, "unsupported-media-type")
    json_type = {"content-type": "application/json", **auth}
    malformed = await client.post(JOBS, content=b"{nope", headers=json_type)
    assert_problem(malformed, 400, "malformed-request")
    for path in (JOBS, f"{JOBS}/{uuid.uuid4()}", f"{JOBS}/{uuid.uuid4()}/events"):
        assert_problem(await client.get(path), 401, "unauthorized")
    bad_id = await client.get(f"{JOBS}/not-a-uuid", headers=auth)
    assert _invalid_at(bad_id) == ["path.job_id"]
    put = await client.put(f"{JOBS}/{uuid.uuid4()}", headers=auth)
    assert_problem(put, 405, "method-not-allowed")
    assert put.headers["allow"] == "DELETE, GET"


async def test_someone_elses_job_is_not_found(
    app: FastAPI, client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    job = await create_job(client, auth)
    other = await make_user(app)
    for answer in (
        await client.get(f"{JOBS}/{job['id']}", headers=other),
        await client.delete(f"{JOBS}/{job['id']}", headers=other),
        await client.get(f"{JOBS}/{job['id']}/events", headers=other),
        await client.get(f"{JOBS}/{uuid.uuid4()}", headers=auth),
    ):
        assert_problem(answer, 404, "not-found")
    assert (await client.get(JOBS, headers=other)).json() == {"items": [], "next_cursor": None}


async def test_list_pages_oldest_first(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    made = [(await create_job(client, auth, {"kind": "items_report"}))["id"] for _ in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        query = f"?limit=2&cursor={cursor}" if cursor else "?limit=2"
        page = (await client.get(JOBS + query, headers=auth)).json()
        seen += [job["id"] for job in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == made
    for query, location in (("?limit=0", "query.limit"), ("?cursor=AAAAAAAAAAAAAAAAAAAAAB", "query.cursor")):  # fmt: skip # noqa: E501
        answer = await client.get(JOBS + query, headers=auth)
        assert _invalid_at(answer) == [location]


async def _set(app: FastAPI, job_id: str, **values: Any) -> None:
    async with app.state.session_factory() as session:
        await session.execute(update(Job).where(Job.id == uuid.UUID(job_id)).values(**values))
        await session.commit()


async def _row(app: FastAPI, job_id: str) -> Job:
    async with app.state.session_factory() as session:
        job: Job | None = await session.get(Job, uuid.UUID(job_id))
    assert job is not None
    return job


async def test_cancel_a_queued_job(
    app: FastAPI, client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    job = await create_job(client, auth)
    answer = await client.delete(f"{JOBS}/{job['id']}", headers=auth)
    assert answer.status_code == 202, answer.text
    cancelled = answer.json()
    assert cancelled["status"] == "cancelled"
    assert cancelled["finished_at"] is not None
    assert (await _row(app, job["id"])).event_seq == 2
    again = await client.delete(f"{JOBS}/{job['id']}", headers=auth)
    body = assert_problem(again, 409, "job-finished")
    assert body["title"] == "Job already finished"


async def test_cancel_a_running_job_only_asks(
    app: FastAPI, client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    job = await create_job(client, auth)
    await _set(app, job["id"], status="running", event_seq=2)
    answer = await client.delete(f"{JOBS}/{job['id']}", headers=auth)
    assert answer.status_code == 202
    assert answer.json()["status"] == "running"
    row = await _row(app, job["id"])
    assert row.cancel_requested is True
    assert row.event_seq == 2
    for status in ("succeeded", "failed"):
        await _set(app, job["id"], status=status)
        assert_problem(await client.delete(f"{JOBS}/{job['id']}", headers=auth), 409, "job-finished")  # fmt: skip # noqa: E501


def _dead_redis_url() -> str:
    with socket.socket() as probe:  # a port nothing listens on once the probe closes
        probe.bind(("127.0.0.1", 0))
        return f"redis://127.0.0.1:{probe.getsockname()[1]}/0"


async def test_broker_down_is_a_fast_503_that_stores_nothing(
    migrated_settings: Settings, tmp_path: Path
) -> None:
    settings = migrated_settings.model_copy(update={"redis_url": _dead_redis_url()})
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        auth = await make_user(app)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            started = time.monotonic()
            answer = await client.post(JOBS, json=import_body(), headers=auth)
            elapsed = time.monotonic() - started
            assert_problem(answer, 503, "service-unavailable")
            assert answer.headers["retry-after"] == "5"
            assert elapsed < 2
            assert (await client.get(JOBS, headers=auth)).json()["items"] == []


# --- the event stream ---------------------------------------------------------------------


async def test_a_finished_job_streams_its_terminal_event_and_ends(
    app: FastAPI, client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    job = await create_job(client, auth)
    await client.delete(f"{JOBS}/{job['id']}", headers=auth)
    answer = await client.get(f"{JOBS}/{job['id']}/events", headers=auth)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/event-stream")
    assert answer.headers["cache-control"] == "no-cache"
    assert answer.headers["x-accel-buffering"] == "no"
    assert answer.text.startswith("event: cancelled\nid: 2\ndata: {")
    [event] = parse_events(answer.text)
    assert event["event"] == "cancelled"
    assert event["id"] == "2"
    assert json.loads(event["data"]) == (await client.get(f"{JOBS}/{job['id']}", headers=auth)).json()  # fmt: skip # noqa: E501
    # Resumed at or after the terminal event: nothing more to say.
    for last in ("2", "7"):
        resumed = await client.get(f"{JOBS}/{job['id']}/events", headers={**auth, "Last-Event-ID": last})  # fmt: skip # noqa: E501
        assert resumed.status_code == 200
        assert resumed.text == ""
    resumed = await client.get(f"{JOBS}/{job['id']}/events", headers={**auth, "Last-Event-ID": "1"})
    assert [e["event"] for e in parse_events(resumed.text)] == ["cancelled"]


@pytest.mark.parametrize("value", ["abc", "-1", "1" * 19, "1.5"])
async def test_a_bad_last_event_id_is_a_422(
    client: httpx.AsyncClient, auth: dict[str, str], value: str
) -> None:
    job = await create_job(client, auth)
    answer = await client.get(
        f"{JOBS}/{job['id']}/events", headers={**auth, "Last-Event-ID": value}
    )
    assert _invalid_at(answer) == ["header.Last-Event-ID"]


async def test_the_stream_follows_a_running_job_to_its_end(
    app: FastAPI, client: httpx.AsyncClient, auth: dict[str, str], settings: Settings
) -> None:
    """Events while the task imports (polling, no Redis here), ids increasing, then the end."""
    job = await create_job(client, auth, import_body(6))
    ctx = JobContext(
        settings.model_copy(update={"job_batch_size": 2}), app.state.session_factory, None
    )
    texts: list[str] = []

    async def stream() -> None:
        answer = await client.get(f"{JOBS}/{job['id']}/events", headers=auth)
        texts.append(answer.text)

    with anyio.fail_after(20):
        async with anyio.create_task_group() as group:
            group.start_soon(stream)
            await anyio.sleep(0.3)
            await execute(ctx, uuid.UUID(job["id"]))
    blocks = [block for block in parse_events(texts[0]) if "comment" not in block]
    ids = [int(block["id"]) for block in blocks]
    assert ids == sorted(set(ids))
    assert ids[0] == 1
    assert ids[-1] == 6
    assert [block["event"] for block in blocks][-1] == "succeeded"
    assert {block["event"] for block in blocks[:-1]} == {"progress"}
    assert json.loads(blocks[-1]["data"])["result"] == {"created": 6}


def _scope(path: str, auth: dict[str, str]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), (b"authorization", auth["Authorization"].encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }


async def test_heartbeats_and_a_client_that_leaves_frees_the_stream(
    migrated_settings: Settings,
) -> None:
    """A queued job: its event, then `: heartbeat` comments; the client goes away while the
    stream waits, and within a second the gauge is back and no connection is held."""
    settings = migrated_settings.model_copy(update={"sse_heartbeat_seconds": 1})
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        auth = await make_user(app)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            job = await create_job(client, auth)
        gauge = app.state.metrics.job_event_streams_open
        pool = app.state.engine.sync_engine.pool
        bodies: list[bytes] = []
        gone = anyio.Event()
        requested = False
        left_at = 0.0

        async def receive() -> Message:
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            nonlocal left_at
            if message["type"] == "http.response.body" and message.get("body"):
                bodies.append(message["body"])
                assert gauge._value.get() == 1
                if b"".join(bodies).count(b": heartbeat\n\n") == 2:
                    left_at = time.monotonic()
                    gone.set()  # the client goes away while the stream waits

        with anyio.fail_after(10):
            await app(_scope(f"{JOBS}/{job['id']}/events", auth), receive, send)
        assert time.monotonic() - left_at < 1
        assert gauge._value.get() == 0
        assert pool.checkedout() == 0
        text = b"".join(bodies).decode()
        assert text.startswith("event: progress\nid: 1\ndata: ")
        assert text.endswith(": heartbeat\n\n")


async def test_without_redis_the_stream_polls_and_with_redis_it_subscribes(
    migrated_settings: Settings,
) -> None:
    """The notifier is a poller without REDIS_URL or when subscribing fails."""
    poller = await events.subscribe(None, uuid.uuid4())
    assert isinstance(poller, events.Poller)
    first = poller.delay
    await poller.wait(0.01)
    await poller.wait(0.01)
    assert poller.delay == first * 4
    poller.reset()
    assert poller.delay == events.POLL_FIRST_SECONDS
    for _ in range(10):
        poller.delay = min(poller.delay * 2, events.POLL_MAX_SECONDS)
    assert poller.delay == events.POLL_MAX_SECONDS
    import redis.asyncio as redis

    dead = redis.from_url(_dead_redis_url(), socket_connect_timeout=0.5)
    try:
        fallback = await events.subscribe(dead, uuid.uuid4())
    finally:
        await dead.aclose()
    assert isinstance(fallback, events.Poller)


async def test_a_user_deleted_while_streaming_ends_the_stream(
    app: FastAPI, client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    job = await create_job(client, auth)
    async with app.state.session_factory() as session:
        assert await session.scalar(select(func.count()).select_from(Job)) >= 1
    texts: list[str] = []

    async def stream() -> None:
        texts.append((await client.get(f"{JOBS}/{job['id']}/events", headers=auth)).text)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(stream)
            await anyio.sleep(0.3)
            async with app.state.session_factory() as session:
                row = await session.get(Job, uuid.UUID(job["id"]))
                assert row is not None
                await session.delete(row)
                await session.commit()
    assert [block["event"] for block in parse_events(texts[0])] == ["progress"]


TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/10")


async def test_with_redis_a_notification_wakes_the_stream(migrated_settings: Settings) -> None:
    """No polling on Redis: a change shows up when it is published, long before the next
    heartbeat; the subscription is gone once the stream ends."""
    import redis.asyncio as redis

    probe = redis.from_url(TEST_REDIS_URL, socket_connect_timeout=1)
    try:
        await probe.ping()
    except redis.RedisError as exc:
        await probe.aclose()
        pytest.skip(f"Redis at {TEST_REDIS_URL} does not answer ({exc})")
    settings = migrated_settings.model_copy(update={"redis_url": TEST_REDIS_URL})
    app = create_app(settings)  # heartbeat 15 s: only a notification can wake the stream
    try:
        async with app.router.lifespan_context(app):
            auth = await make_user(app)
            async with app.state.session_factory() as session:
                user_id = security.decode_access_token(auth["Authorization"][7:], settings)
                job = Job(owner_id=user_id, kind="items_report", params={"tag": None})
                session.add(job)
                await session.commit()
            channel = events.channel(job.id)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                texts: list[str] = []

                async def stream() -> None:
                    answer = await client.get(f"{JOBS}/{job.id}/events", headers=auth)
                    texts.append(answer.text)

                started = time.monotonic()
                with anyio.fail_after(10):
                    async with anyio.create_task_group() as group:
                        group.start_soon(stream)
                        while (await probe.pubsub_numsub(channel))[0][1] != 1:  # noqa: ASYNC110
                            await anyio.sleep(0.02)  # until the stream has subscribed
                        await _set(app, str(job.id), status="cancelled", event_seq=2)
                        await events.publish(app.state.redis, job.id, 2)
                assert time.monotonic() - started < 5
                assert [b["event"] for b in parse_events(texts[0])] == ["progress", "cancelled"]
                assert (await probe.pubsub_numsub(channel))[0][1] == 0
    finally:
        await probe.aclose()


# --- shutdown: streams end with a retry hint (lifecycle.py) -----------------------------------


@pytest.fixture
def shutdown() -> Iterator[None]:
    lifecycle.reset()
    yield
    lifecycle.reset()


async def test_shutdown_ends_an_open_stream_with_a_retry_hint(
    migrated_settings: Settings, shutdown: None
) -> None:
    """On Redis a queued job's stream waits for a notification or its heartbeat (15 s away);
    the shutdown wakes it at once, and it ends with the retry hint and no event."""
    import redis.asyncio as redis

    probe = redis.from_url(TEST_REDIS_URL, socket_connect_timeout=1)
    try:
        await probe.ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis at {TEST_REDIS_URL} does not answer ({exc})")
    finally:
        await probe.aclose()
    app = create_app(migrated_settings.model_copy(update={"redis_url": TEST_REDIS_URL}))
    async with app.router.lifespan_context(app):
        auth = await make_user(app)
        async with app.state.session_factory() as session:
            user_id = security.decode_access_token(auth["Authorization"][7:], app.state.settings)
            job = Job(owner_id=user_id, kind="items_report", params={"tag": None})
            session.add(job)
            await session.commit()
        bodies: list[bytes] = []
        shut_at = 0.0

        async def receive() -> Message:
            await anyio.sleep_forever()
            raise AssertionError

        def shut() -> None:
            nonlocal shut_at
            shut_at = time.monotonic()
            lifecycle.begin_shutdown()

        async def send(message: Message) -> None:
            if message["type"] == "http.response.body" and message.get("body"):
                bodies.append(message["body"])
                if len(bodies) == 1:  # the stream is waiting by the time this runs
                    asyncio.get_running_loop().call_later(0.3, shut)

        with anyio.fail_after(10):
            await app(_scope(f"{JOBS}/{job.id}/events", auth), receive, send)
        assert time.monotonic() - shut_at < 1
        assert bodies[0].startswith(b"event: progress\nid: 1\n")
        assert bodies[1:] == [events.RECONNECT]
        assert events.RECONNECT == b": shutting down, reconnect\nretry: 1000\n\n"
        assert app.state.metrics.job_event_streams_open._value.get() == 0
        # A stream opened during the shutdown sends the job as it is, then the same hint.
        bodies.clear()
        with anyio.fail_after(10):
            await app(_scope(f"{JOBS}/{job.id}/events", auth), receive, send)
        assert bodies[0].startswith(b"event: progress\nid: 1\n")
        assert bodies[1:] == [events.RECONNECT]


async def test_shutdown_makes_readiness_fail_not_liveness(
    client: httpx.AsyncClient, shutdown: None
) -> None:
    assert (await client.get("/readyz")).status_code == 200
    lifecycle.begin_shutdown()
    problem = assert_problem(await client.get("/readyz"), 503, "service-unavailable")
    assert problem["detail"] == "Not ready: shutting down."
    assert (await client.get("/healthz")).status_code == 200


async def test_watch_signals_runs_before_the_servers_own_handler(shutdown: None) -> None:
    seen: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda sig, _: seen.append(sig))
    try:
        restore = lifecycle.watch_signals()
        os.kill(os.getpid(), signal.SIGTERM)
        await anyio.sleep(0.05)  # the handler hands begin_shutdown to the event loop
        assert seen == [signal.SIGTERM]  # the server's handler still runs
        assert lifecycle.shutting_down()
        restore()  # the server's handler alone again
        lifecycle.reset()
        os.kill(os.getpid(), signal.SIGTERM)
        await anyio.sleep(0.05)
        assert seen == [signal.SIGTERM, signal.SIGTERM]
        assert not lifecycle.shutting_down()
    finally:
        signal.signal(signal.SIGTERM, previous)


async def test_a_database_lost_after_the_headers_ends_the_stream_quietly(tmp_path: Path) -> None:
    """The status line is sent before the body runs: a database error then cannot be a 503.

    The stream ends (EventSource resumes with Last-Event-ID) instead of raising into Starlette,
    which would drop the connection mid-response. A real engine whose file cannot be opened.
    """
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/missing/service.sqlite3")
    gauge = Gauge("streams", "open streams", registry=CollectorRegistry())
    body = events.job_events(
        session_factory=async_sessionmaker(engine),
        client=None,
        streams_open=gauge,
        owner_id=uuid.uuid4(),
        job_id=uuid.uuid4(),
        last_event_id=0,
        heartbeat_seconds=1,
        read_timeout_seconds=5,
    )
    try:
        assert [chunk async for chunk in body] == []
    finally:
        await engine.dispose()
    assert gauge._value.get() == 0


async def test_a_stream_read_waiting_for_a_busy_pool_goes_on(
    app: FastAPI, auth: dict[str, str], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A saturated pool is not a hung database: the read waits as a request would.

    The stream's only pooled connection is held for longer than QUERY_TIMEOUT_SECONDS (scaled
    down here); the read then gets it and the stream sends its event and ends.
    """
    monkeypatch.setattr(events, "QUERY_TIMEOUT_SECONDS", 0.3)
    assert events.read_timeout(settings) > settings.db_pool_timeout
    user_id = security.decode_access_token(auth["Authorization"][7:], settings)
    async with app.state.session_factory() as session:
        job = Job(owner_id=user_id, kind="items_report", params={"tag": None})
        job.status, job.event_seq = "succeeded", 1
        session.add(job)
        await session.commit()
    engine = create_async_engine(database_url(settings), pool_size=1, max_overflow=0)
    gauge = Gauge("streams", "open streams", registry=CollectorRegistry())
    body = events.job_events(
        session_factory=async_sessionmaker(engine),
        client=None,
        streams_open=gauge,
        owner_id=user_id,
        job_id=job.id,
        last_event_id=0,
        heartbeat_seconds=15,
        read_timeout_seconds=events.read_timeout(settings),
    )
    chunks: list[bytes] = []
    try:
        async with engine.connect() as holder, anyio.create_task_group() as group:

            async def release() -> None:
                await anyio.sleep(1)  # longer than the query alone may take
                await holder.close()

            group.start_soon(release)
            with anyio.fail_after(10):
                chunks = [chunk async for chunk in body]
    finally:
        await engine.dispose()
    assert [b["event"] for b in parse_events(b"".join(chunks).decode())] == ["succeeded"]
