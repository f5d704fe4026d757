"""stream_job_events: Server-Sent Events of a job, resumable, with heartbeats, freed on disconnect.

Rows run with SSE_HEARTBEAT_SECONDS=1 (harness.ROW_SETTINGS), so a heartbeat is due after one
silent second. A job stays `queued` (silent) while the test pauses the worker (`queued_job`).
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from apiclient import Api, EventStream, SseComment, SseEvent, User
from checks import assert_job, assert_problem, media_type

if TYPE_CHECKING:
    from harness import Worker  # the `worker` fixture's type only

HEARTBEAT_SECONDS = 1.0  # harness.ROW_SETTINGS["SSE_HEARTBEAT_SECONDS"]
TERMINAL = ("succeeded", "failed", "cancelled")
GAUGE = re.compile(r"^job_event_streams_open(?:\{[^}]*\})? (\S+)$", re.MULTILINE)


def _import(api: Api, user: User, count: int) -> dict[str, Any]:
    items = [{"name": f"event {i}", "price": i} for i in range(count)]
    return api.import_items(user, items)


def assert_event_sequence(events: list[SseEvent], job_id: str) -> list[dict[str, Any]]:
    """progress... then one terminal event, last; ids increasing; data a Job matching the event."""
    assert events, "no event at all"
    jobs = []
    for event in events:
        job = assert_job(event.job(), id=job_id)
        expected = job["status"] if job["status"] in TERMINAL else "progress"
        assert event.event == expected, f"event {event.event!r} carries status {job['status']!r}"
        assert event.id is not None and event.id.isdigit(), f"event id {event.id!r}"
        assert "\n" not in event.data, "data is one line"
        jobs.append(job)
    ids = [int(event.id or 0) for event in events]
    assert ids == sorted(set(ids)), f"ids not strictly increasing: {ids}"
    assert [event.event for event in events[:-1]] == ["progress"] * (len(events) - 1)
    assert events[-1].event in TERMINAL, f"last event {events[-1].event!r} is not terminal"
    done = [job["progress"]["done"] for job in jobs]
    assert done == sorted(done), f"progress went back: {done}"
    return jobs


def assert_stream_headers(stream: EventStream) -> None:
    assert stream.status_code == 200, stream.body()
    assert media_type(stream.response) == "text/event-stream"
    assert stream.headers.get("cache-control") == "no-cache"
    assert stream.headers.get("x-accel-buffering") == "no"


def _watch_from_queued(
    api: Api,
    worker: Worker,
    user: User,
    count: int,
    stop: Callable[[SseEvent], bool] | None = None,
) -> tuple[dict[str, Any], list[SseEvent]]:
    """Import `count` items while the worker is paused, open the stream, then let the job run.

    The stream thus opens on a queued job whatever the row's speed (a small import can finish
    within the time it takes to open a stream). Reads until the stream ends, or until
    `stop(event)` is true.
    """
    with contextlib.ExitStack() as paused:
        paused.enter_context(worker.paused())
        job = _import(api, user, count)
        with api.events(user, job["id"], total_timeout=120) as stream:
            assert_stream_headers(stream)
            seen: list[SseEvent] = []
            for message in stream:
                if not isinstance(message, SseEvent):
                    continue
                seen.append(message)
                if len(seen) == 1:
                    assert message.job()["status"] == "queued", message
                    paused.close()  # the worker goes on
                if stop is not None and stop(message):
                    return job, seen
            assert stream.ended
    return job, seen


@pytest.fixture(scope="module")
def finished(api: Api, worker: Worker) -> tuple[User, dict[str, Any], list[SseEvent]]:
    """A user's 300-item import (6 batches), streamed from while it was queued to its end."""
    user = api.new_user()
    job, events = _watch_from_queued(api, worker, user, 300)
    return user, job, events


def test_events_are_progress_then_one_terminal_event(
    api: Api, finished: tuple[User, dict[str, Any], list[SseEvent]]
) -> None:
    user, job, events = finished
    jobs = assert_event_sequence(events, job["id"])
    assert events[-1].event == "succeeded"
    assert jobs[-1] == api.read_job(user, job["id"]), "the terminal event is the job as stored"
    assert jobs[-1]["progress"] == {"done": 300, "total": 300}
    assert jobs[0]["status"] == "queued"
    assert jobs[0]["progress"] == {"done": 0, "total": 300}


def test_a_finished_jobs_stream_is_its_terminal_event_and_ends(
    api: Api, finished: tuple[User, dict[str, Any], list[SseEvent]]
) -> None:
    user, job, events = finished
    started = time.monotonic()
    with api.events(user, job["id"]) as stream:
        assert_stream_headers(stream)
        again = stream.events()
    assert time.monotonic() - started < 5
    assert [(e.event, e.id, e.job()) for e in again] == [
        (events[-1].event, events[-1].id, events[-1].job())
    ]


def test_last_event_id_resumes_after_that_event(
    api: Api, finished: tuple[User, dict[str, Any], list[SseEvent]]
) -> None:
    user, job, events = finished
    terminal = events[-1]
    first_id = events[0].id
    assert first_id is not None
    with api.events(user, job["id"], last_event_id=first_id) as stream:
        assert_stream_headers(stream)
        later = stream.events()
    assert later, "events after the first one were skipped"
    assert all(int(e.id or 0) > int(first_id) for e in later)
    assert later[-1].id == terminal.id and later[-1].event == terminal.event

    for beyond in (terminal.id or "0", str(int(terminal.id or 0) + 1), "9" * 18):
        with api.events(user, job["id"], last_event_id=beyond) as stream:
            assert_stream_headers(stream)
            assert stream.events() == [], f"Last-Event-ID {beyond} is at or past the end"


def test_last_event_id_mid_stream_of_a_running_job(api: Api, user: User, worker: Worker) -> None:
    """Reconnect while the job runs, with the id of an event seen: only later events follow."""

    def running(event: SseEvent) -> bool:
        job = event.job()
        return job["status"] == "running" and int(job["progress"]["done"]) > 0

    job, seen = _watch_from_queued(api, worker, user, 10_000, stop=running)  # 200 batches
    assert seen[-1].event == "progress", "no progress event of the running job"
    resume = seen[-1].id or ""
    with api.events(user, job["id"], last_event_id=resume, total_timeout=120) as stream:
        assert_stream_headers(stream)
        rest = stream.events()
    assert rest, "no event after the resume point"
    assert int(rest[0].id or 0) > int(resume)
    assert_event_sequence([*seen, *rest], job["id"])
    assert rest[-1].event == "succeeded"


@pytest.mark.parametrize("header", ["abc", "-1", "1.5", "+1", "1" * 19, "0x10", "١٢"])
def test_a_malformed_last_event_id_is_422(
    api: Api, finished: tuple[User, dict[str, Any], list[SseEvent]], header: str
) -> None:
    user, job, _ = finished
    with api.events(user, job["id"], headers={"Last-Event-ID": header.encode()}) as stream:
        stream.body()
        assert_problem(stream.response, "validation-error", location="header.Last-Event-ID")


# -- a queued (silent) job: heartbeats, cancel, disconnect -----------------------------------


@contextlib.contextmanager
def queued_job(api: Api, worker: Worker) -> Iterator[tuple[User, dict[str, Any]]]:
    """An items_report job that stays queued (and silent) while the worker is paused."""
    user = api.new_user()
    with worker.paused():
        job = api.create_job(user, {"kind": "items_report"})
        try:
            yield user, job
        finally:
            if api.read_job(user, job["id"])["status"] not in TERMINAL:
                api.cancel_job(user, job["id"])


def test_heartbeats_while_silent_then_the_cancel_ends_the_stream(api: Api, worker: Worker) -> None:
    with queued_job(api, worker) as (user, job), api.events(user, job["id"]) as stream:
        assert_stream_headers(stream)
        messages = iter(stream)
        first = next(messages)
        assert isinstance(first, SseEvent) and first.event == "progress", first
        assert first.job()["status"] == "queued"
        heartbeat = next(messages)
        assert isinstance(heartbeat, SseComment), f"expected a heartbeat, got {heartbeat}"
        assert heartbeat.text == "heartbeat"
        assert heartbeat.at - first.at < 2 * HEARTBEAT_SECONDS + 0.5, "heartbeat too late"
        second = next(messages)
        assert isinstance(second, SseComment), second
        assert second.at - heartbeat.at < 2 * HEARTBEAT_SECONDS + 0.5, "heartbeats stopped"

        cancelled = api.cancel_job(user, job["id"])
        assert cancelled.status_code == 202, cancelled.text
        rest = [message for message in messages if isinstance(message, SseEvent)]
        assert stream.ended, "the stream did not end after the terminal event"
        assert [event.event for event in rest] == ["cancelled"]
        assert_event_sequence([first, *rest], job["id"])


def _open_streams(api: Api) -> float:
    answer = api.http.get("/metrics")
    assert answer.status_code == 200
    found = GAUGE.findall(answer.text)
    assert found, "no job_event_streams_open gauge in /metrics"
    return sum(float(value) for value in found)


def test_a_client_that_goes_away_frees_its_stream_within_a_second(api: Api, worker: Worker) -> None:
    with queued_job(api, worker) as (user, job):
        assert _open_streams(api) == 0
        with api.events(user, job["id"]) as stream:
            first = next(iter(stream))
            assert isinstance(first, SseEvent), first
            assert _open_streams(api) == 1
        closed = time.monotonic()
        while _open_streams(api) != 0:
            assert time.monotonic() - closed < 1.0, "the stream outlived its client by 1 s"
            time.sleep(0.05)
        # nothing stays behind: a new stream still works, and it ends with the job
        with api.events(user, job["id"]) as stream:
            assert isinstance(next(iter(stream)), SseEvent)
            assert api.cancel_job(user, job["id"]).status_code == 202
            assert [event.event for event in stream.events()] == ["cancelled"]
        assert _open_streams(api) == 0
