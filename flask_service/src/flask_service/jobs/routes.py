"""/api/v1/jobs: background jobs (import, report), their cancellation and their event stream."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from flask import Response, current_app, request
from flask.views import MethodView

from .. import lifecycle
from ..db import SNAPSHOT_READ
from ..deps import SIGNED_IN, AppState, Blueprint, app_state, current_user_id, get_session
from ..deps import path_uuid as _path_uuid
from ..docs import headers, problems
from ..errors import is_unavailable
from ..models import Job as JobRow
from ..pagination import encode_cursor
from ..problems import ServiceUnavailable
from ..worker import enqueue_job
from . import service
from .events import ClientWatch, Notifications, Publisher, Snapshot, stream_events
from .schemas import (
    JOB_CREATE_DOC,
    JOB_EVENT_DOC,
    ImportItemsJobCreate,
    ImportItemsResult,
    ItemsReportJobCreate,
    ItemsReportResult,
    Job,
    JobCreate,
    JobEvent,
    JobListArgs,
    JobPage,
    LastEventIdHeader,
)

EVENT_STREAM_MEDIA_TYPE = "text/event-stream"
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
logger = logging.getLogger(__name__)


class JobsBlueprint(Blueprint):
    """Documents what marshmallow cannot: JobCreate's `oneOf` and JobEvent's JSON string."""

    def register_views_in_doc(self, api: Any, app: Any, spec: Any, **kwargs: Any) -> None:
        super().register_views_in_doc(api, app, spec, **kwargs)
        for schema in (
            ImportItemsJobCreate,
            ItemsReportJobCreate,
            ImportItemsResult,
            ItemsReportResult,
        ):
            spec.components.schema(schema.__name__, schema=schema)
        spec.components.schemas["JobCreate"] = JOB_CREATE_DOC
        spec.components.schemas["JobEvent"] = JOB_EVENT_DOC


blp = JobsBlueprint("jobs", __name__, url_prefix="/api/v1/jobs")

JOB_ID = {
    "in": "path",
    "name": "job_id",
    "required": True,
    "schema": {"type": "string", "format": "uuid"},
}


def path_uuid(job_id: str) -> uuid.UUID:
    return _path_uuid("job_id", job_id)


def _location(job: JobRow) -> dict[str, str]:
    return {"Location": f"{blp.url_prefix}/{job.id}"}


@blp.route("")
class Jobs(MethodView):
    decorators = SIGNED_IN

    @blp.doc(operationId="list_jobs", responses=problems(401, 405, 422, 429, 503))
    @blp.arguments(JobListArgs(), location="query")
    @blp.response(200, JobPage, description="One page of jobs, oldest first.")
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """List the signed-in user's jobs"""
        jobs, last_id = service.list_jobs(
            get_session(), current_user_id(), limit=args["limit"], after=args.get("cursor")
        )
        next_cursor = encode_cursor(last_id) if last_id is not None else None
        return {"items": jobs, "next_cursor": next_cursor}

    @blp.doc(operationId="create_job", responses=problems(400, 401, 405, 413, 415, 422, 429, 503))
    @blp.arguments(JobCreate())
    @blp.response(
        202,
        Job,
        description="The job was accepted and queued; it runs after the request has committed.",
        headers=headers("Location"),
    )
    def post(self, body: dict[str, Any]) -> Any:
        """Start a background job"""
        session = get_session()
        job = service.create_job(session, current_user_id(), body)
        # Committed before it is enqueued: a worker must find the row it is told about.
        session.commit()
        try:
            enqueue_job(app_state().celery, str(job.id))
        except Exception as exc:  # any broker failure: refused, timed out, misconfigured
            logger.warning("could not enqueue job %s: %s", job.id, exc)
            service.forget_job(session, job.id)
            session.commit()
            raise ServiceUnavailable("The job queue is unavailable.") from None
        return job, _location(job)


@blp.route("/<job_id>", parameters=[JOB_ID])
class JobById(MethodView):
    decorators = SIGNED_IN

    @blp.doc(operationId="read_job", responses=problems(401, 404, 405, 422, 429, 503))
    @blp.response(200, Job, description="The job.")
    def get(self, job_id: str) -> JobRow:
        """Read a job"""
        return service.get_job(get_session(), current_user_id(), path_uuid(job_id))

    @blp.doc(operationId="cancel_job", responses=problems(401, 404, 405, 409, 422, 429, 503))
    @blp.response(
        202,
        Job,
        description=(
            "Cancellation was requested; a queued job is cancelled at once, a running job stops "
            "at its next batch boundary."
        ),
    )
    def delete(self, job_id: str) -> JobRow:
        """Cancel a queued or running job"""
        session = get_session()
        job, changed = service.cancel_job(session, current_user_id(), path_uuid(job_id))
        session.commit()  # published only once committed: streams re-read the row
        if changed:
            Publisher(app_state().redis).publish(job.id, job.event_seq)
        return job


def _reader(state: AppState, job_id: uuid.UUID, dumps: Callable[..., str]) -> Callable[[], Any]:
    schema = Job()

    def read() -> Snapshot | None:
        # A short read-only transaction (a WAL snapshot on SQLite, never the write lock);
        # the connection goes back to the pool before the stream waits.
        with state.session_factory() as session:
            session.connection(execution_options=SNAPSHOT_READ)
            job = session.get(JobRow, job_id)
            if job is None:
                return None
            document = dumps(schema.dump(job), separators=(",", ":"))
            return Snapshot(job.event_seq, job.status, document)

    return read


def _event_stream(
    state: AppState,
    job_id: uuid.UUID,
    last_event_id: int,
    client: ClientWatch,
    dumps: Callable[..., str],
) -> Iterator[bytes]:
    gauge = state.metrics.job_event_streams
    gauge.inc()
    notifications: Notifications | None = None
    try:
        notifications = Notifications(state.redis, job_id)  # subscribed before the first read
        yield from stream_events(
            _reader(state, job_id, dumps),
            notifications,
            client,
            last_event_id=last_event_id,
            heartbeat_seconds=state.settings.sse_heartbeat_seconds,
            stopping=lifecycle.shutting_down,
        )
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        # The headers are gone already: end the stream; EventSource resumes with Last-Event-ID.
        logger.warning("job %s stream ended, database unavailable: %s", job_id, exc)
    finally:
        if notifications is not None:
            notifications.close()
        gauge.dec()


@blp.route("/<job_id>/events", parameters=[JOB_ID])
class JobEvents(MethodView):
    decorators = SIGNED_IN

    @blp.doc(operationId="stream_job_events", responses=problems(401, 404, 405, 422, 429, 503))
    @blp.arguments(LastEventIdHeader(), location="headers")
    @blp.response(
        200,
        JobEvent,
        content_type=EVENT_STREAM_MEDIA_TYPE,
        description=(
            "`progress` events, then one terminal event (`succeeded`, `failed` or `cancelled`), "
            "then the stream ends. Each event carries an `id:`; a comment line is sent as a "
            "heartbeat at least every 15 seconds. The schema describes one event."
        ),
    )
    def get(self, header: dict[str, Any], job_id: str) -> Response:
        """Stream a job's progress as Server-Sent Events"""
        ident = path_uuid(job_id)
        service.get_job(get_session(), current_user_id(), ident)  # 404 before the stream
        body = _event_stream(
            app_state(),
            ident,
            int(header.get("last_event_id") or 0),
            ClientWatch.from_environ(request.environ),
            current_app.json.dumps,
        )
        return Response(body, mimetype=EVENT_STREAM_MEDIA_TYPE, headers=STREAM_HEADERS)
