"""/api/v1/jobs: the signed-in user's background jobs and their Server-Sent Events."""

from __future__ import annotations

import logging
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Request, Response
from starlette.concurrency import run_in_threadpool

from ..deps import ContractRoute, CurrentUserId, LimitWrites, SessionDep, SettingsDep
from ..docs import headers, problems
from ..items.routes import Cursor, Limit
from ..pagination import decode_cursor, encode_cursor
from ..problems import ServiceUnavailable, ValidationFailed
from . import events, service, tasks
from .schemas import Job, JobCreate, JobEvent, JobPage

router = APIRouter(
    prefix="/api/v1/jobs",
    tags=["jobs"],
    route_class=ContractRoute,
)
logger = logging.getLogger(__name__)

JobId = Annotated[uuid.UUID, Path()]
LastEventId = Annotated[
    str | None,
    Header(
        alias="Last-Event-ID",
        pattern=r"^[0-9]{1,18}$",
        description="Resume after this event id (sent by EventSource on reconnect).",
    ),
]


@router.get(
    "",
    operation_id="list_jobs",
    response_model=JobPage,
    response_description="One page of jobs, oldest first.",
    responses=problems(401, 405, 422, 429, 503),
)
async def list_jobs(
    user_id: CurrentUserId, session: SessionDep, limit: Limit = 20, cursor: Cursor = None
) -> dict[str, Any]:
    """List the signed-in user's jobs"""
    try:
        after = decode_cursor(cursor) if cursor is not None else None
    except ValueError:
        raise ValidationFailed(
            [{"location": "query.cursor", "message": "Unknown cursor."}]
        ) from None
    jobs, last_id = await service.list_jobs(session, user_id, limit=limit, after=after)
    next_cursor = encode_cursor(last_id) if last_id is not None else None
    return {"items": [service.job_view(job) for job in jobs], "next_cursor": next_cursor}


@router.post(
    "",
    operation_id="create_job",
    dependencies=[LimitWrites],
    status_code=202,
    response_model=Job,
    response_description=(
        "The job was accepted and queued; it runs after the request has committed."
    ),
    responses={202: headers("Location"), **problems(400, 401, 405, 413, 415, 422, 429, 503)},
)
async def create_job(
    body: JobCreate,
    user_id: CurrentUserId,
    session: SessionDep,
    request: Request,
    response: Response,
) -> dict[str, Any]:
    """Start a background job"""
    job = await service.create_job(session, user_id, body.root)
    await session.commit()  # the row exists before a worker can look for it
    try:
        # Celery publishes synchronously; the broker's 1 s timeouts bound the wait.
        await run_in_threadpool(tasks.enqueue, request.app.state.celery, job.id)
    except Exception as exc:
        logger.warning("job %s: enqueue failed, the job is dropped: %r", job.id, exc)
        await service.delete_job(session, job.id)
        await session.commit()
        raise ServiceUnavailable("The job queue is unavailable.") from None
    response.headers["Location"] = f"{router.prefix}/{job.id}"
    return service.job_view(job)


@router.get(
    "/{job_id}",
    operation_id="read_job",
    response_model=Job,
    response_description="The job.",
    responses=problems(401, 404, 405, 422, 429, 503),
)
async def read_job(job_id: JobId, user_id: CurrentUserId, session: SessionDep) -> dict[str, Any]:
    """Read a job"""
    return service.job_view(await service.get_job(session, user_id, job_id))


@router.delete(
    "/{job_id}",
    operation_id="cancel_job",
    dependencies=[LimitWrites],
    status_code=202,
    response_model=Job,
    response_description=(
        "Cancellation was requested; a queued job is cancelled at once, a running job stops at "
        "its next batch boundary."
    ),
    responses=problems(401, 404, 405, 409, 422, 429, 503),
)
async def cancel_job(
    job_id: JobId, user_id: CurrentUserId, session: SessionDep, request: Request
) -> dict[str, Any]:
    """Cancel a queued or running job"""
    job = await service.cancel_job(session, user_id, job_id)
    await session.commit()  # streams are told only about committed changes
    await events.publish(request.app.state.redis, job.id, job.event_seq)
    return service.job_view(job)


@router.get(
    "/{job_id}/events",
    operation_id="stream_job_events",
    status_code=200,
    response_class=events.EventStream,
    response_description=(
        "`progress` events, then one terminal event (`succeeded`, `failed` or `cancelled`), "
        "then the stream ends. Each event carries an `id:`; a comment line is sent as a "
        "heartbeat at least every SSE_HEARTBEAT_SECONDS. The schema describes one event."
    ),
    responses={200: {"model": JobEvent}, **problems(401, 404, 405, 422, 429, 503)},
)
async def stream_job_events(
    job_id: JobId,
    user_id: CurrentUserId,
    session: SessionDep,
    settings: SettingsDep,
    request: Request,
    last_event_id: LastEventId = None,
) -> events.EventStream:
    """Stream a job's progress as Server-Sent Events"""
    # Checked here, so an unknown job is a 404 problem before any byte of the stream; the
    # session closes when this function returns (SessionDep), before the body streams.
    await service.get_job(session, user_id, job_id)
    state = request.app.state
    body = events.job_events(
        session_factory=state.session_factory,
        client=state.redis,
        streams_open=state.metrics.job_event_streams_open,
        owner_id=user_id,
        job_id=job_id,
        last_event_id=int(last_event_id or 0),
        heartbeat_seconds=settings.sse_heartbeat_seconds,
        read_timeout_seconds=events.read_timeout(settings),
    )
    return events.EventStream(body)
