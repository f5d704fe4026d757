"""The `run_job` task body, run by the Celery worker (worker.py registers it).

Each worker child process builds its own engine, sessions and Redis client on first use
(`worker_runtime`); worker.py drops anything inherited across fork (`reset_runtime`).
Exactly-once import under redelivery: a batch of items and the progress that records it
commit together, and the progress UPDATE only matches the progress it started from.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Engine, Select, insert, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker

from ..db import SNAPSHOT_READ, create_engine, create_session_factory, utcnow
from ..items.service import tag_filter
from ..models import Item, Job, new_id
from ..settings import SERVICE_NAME, Settings
from . import service
from .events import Publisher
from .schemas import IMPORT_ITEMS

RUN_JOB_TASK = f"{SERVICE_NAME}.run_job"
SETTINGS_KEY = "service_settings"  # the Celery app's conf entry holding the Settings
OK, CANCELLED, LOST = "ok", "cancelled", "lost"
MAX_BACKOFF_SECONDS = 30
REQUEUE_BATCH = 100  # stale jobs claimed per sweep, at most
logger = logging.getLogger(__name__)


def unavailable_error(retries: int) -> dict[str, Any]:
    return {
        "type": "urn:problem:service-unavailable",
        "title": "Service unavailable",
        "status": 503,
        "detail": f"The database stayed unavailable; the job gave up after {retries} retries.",
    }


INTERNAL_ERROR = {
    "type": "urn:problem:internal-error",
    "title": "Internal server error",
    "status": 500,
    "detail": "The job failed unexpectedly.",
}


@dataclass
class Runtime:
    """What the task body uses: settings, a session factory and the event publisher."""

    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    publisher: Publisher

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        engine = create_engine(settings)
        return cls(
            settings, engine, create_session_factory(engine), Publisher.from_url(settings.redis_url)
        )

    def close(self) -> None:
        self.engine.dispose()
        self.publisher.close()


_runtime: Runtime | None = None


def worker_runtime(settings: Settings) -> Runtime:
    """This process's runtime, built on first use (after the fork, in a worker child)."""
    global _runtime
    if _runtime is None or _runtime.settings != settings:
        _runtime = Runtime.build(settings)
    return _runtime


def reset_runtime() -> None:
    """After fork: forget the parent's runtime without closing the parent's connections."""
    global _runtime
    if _runtime is not None:
        _runtime.engine.dispose(close=False)
    _runtime = None


def is_transient(exc: BaseException) -> bool:
    """A database that is down, restarting, or (SQLite) locked: worth a retry.

    SQLite's "database is locked" (busy_timeout ran out) arrives as an OperationalError too.
    """
    if isinstance(exc, sa_exc.DBAPIError):
        return exc.connection_invalidated or isinstance(
            exc, sa_exc.OperationalError | sa_exc.InterfaceError
        )
    return isinstance(exc, sa_exc.TimeoutError | sa_exc.DisconnectionError)


def backoff_seconds(retries: int) -> float:
    """1, 2, 4, ... seconds (at most 30), with up to 10 % jitter."""
    base = min(2**retries, MAX_BACKOFF_SECONDS)
    return float(base + random.uniform(0, base / 10))  # noqa: S311 - jitter, not secrecy


def _finish(
    runtime: Runtime, job_id: uuid.UUID, status: str, *, only_if_running: bool = True, **values: Any
) -> bool:
    """Set a terminal status (and values) in one transaction; publish; False if nothing matched."""
    now = utcnow()
    statement = (
        update(Job)
        .where(Job.id == job_id)
        .values(
            status=status,
            finished_at=now,
            updated_at=now,
            event_seq=Job.event_seq + 1,
            **values,
        )
        .returning(Job.event_seq)
    )
    if only_if_running:
        statement = statement.where(Job.status == service.RUNNING)
    else:
        statement = statement.where(Job.status.not_in(service.TERMINAL))
    with runtime.session_factory() as session, session.begin():
        seq = session.scalar(statement)
    if seq is None:
        return False
    runtime.publisher.publish(job_id, seq)
    return True


def _start(runtime: Runtime, job_id: uuid.UUID) -> Job | None:
    """Step 1: the job to run, now `running`; None when there is nothing (more) to do."""
    with runtime.session_factory() as session, session.begin():
        job = session.scalars(select(Job).where(Job.id == job_id).with_for_update()).one_or_none()
        if job is None or service.is_terminal(job.status):
            return None  # deleted, or a redelivery of a finished job
        now = utcnow()
        if job.cancel_requested:
            job.status, job.finished_at = service.CANCELLED, now
        else:
            job.status = service.RUNNING
            job.started_at = job.started_at or now
        job.event_seq += 1
        job.updated_at = now
        session.flush()
        seq, status = job.event_seq, job.status
    runtime.publisher.publish(job_id, seq)
    return job if status == service.RUNNING else None


class _LostRace(Exception):
    """Another delivery of the same job recorded this batch first."""


def _import_batch(runtime: Runtime, job: Job, rows: list[dict[str, Any]], done: int) -> str:
    """One batch in one transaction: OK, CANCELLED or LOST (another delivery is ahead)."""
    try:
        return _import_batch_once(runtime, job, rows, done)
    except _LostRace:
        return LOST


def _import_batch_once(runtime: Runtime, job: Job, rows: list[dict[str, Any]], done: int) -> str:
    with runtime.session_factory() as session, session.begin():
        state = session.execute(
            select(Job.status, Job.cancel_requested, Job.progress_done).where(Job.id == job.id)
        ).one_or_none()
        if state is None or state.status != service.RUNNING or state.progress_done != done:
            return LOST
        if state.cancel_requested:
            return CANCELLED
        now = utcnow()
        session.execute(
            insert(Item),
            [
                {
                    "id": new_id(),
                    "owner_id": job.owner_id,
                    "name": row["name"],
                    "description": row.get("description", ""),
                    "price": row["price"],
                    "tags": row.get("tags", []),
                    "created_at": now,
                    "updated_at": now,
                    "version": 1,
                }
                for row in rows
            ],
        )
        seq = session.scalar(
            update(Job)
            .where(Job.id == job.id, Job.progress_done == done)
            .values(progress_done=done + len(rows), event_seq=Job.event_seq + 1, updated_at=now)
            .returning(Job.event_seq)
        )
        if seq is None:
            raise _LostRace  # rolls the batch back
    runtime.publisher.publish(job.id, seq)
    return OK


def _run_import(runtime: Runtime, job: Job) -> None:
    items: list[dict[str, Any]] = job.params["items"]
    size = runtime.settings.job_batch_size
    done = job.progress_done
    while done < len(items):
        batch = items[done : done + size]
        outcome = _import_batch(runtime, job, batch, done)
        if outcome == LOST:
            return
        if outcome == CANCELLED:
            _finish(runtime, job.id, service.CANCELLED)
            return
        done += len(batch)
    _finish(
        runtime,
        job.id,
        service.SUCCEEDED,
        result={"created": len(items)},
        progress_done=len(items),
        progress_total=len(items),
    )


def _run_report(runtime: Runtime, job: Job) -> None:
    tag = job.params.get("tag")
    with runtime.session_factory() as session, session.begin():
        query = select(Item.price, Item.tags).where(Item.owner_id == job.owner_id)
        if tag is not None:
            query = query.where(tag_filter(session, tag))
        report = service.items_report(
            (price, tags) for price, tags in session.execute(query.order_by(Item.id))
        )
        cancel = session.scalar(select(Job.cancel_requested).where(Job.id == job.id))
    if cancel:
        _finish(runtime, job.id, service.CANCELLED)
        return
    _finish(
        runtime,
        job.id,
        service.SUCCEEDED,
        result=report,
        progress_done=report["count"],
        progress_total=report["count"],
    )


def execute(runtime: Runtime, job_id: uuid.UUID) -> None:
    """The job's work from wherever it stands; database errors propagate to `run_job`."""
    job = _start(runtime, job_id)
    if job is None:
        return
    if job.kind == IMPORT_ITEMS:
        _run_import(runtime, job)
    else:
        _run_report(runtime, job)


def fail(runtime: Runtime, job_id: uuid.UUID, error: dict[str, Any]) -> None:
    """Mark the job failed (unless it already finished); a failure here is only logged."""
    try:
        _finish(runtime, job_id, service.FAILED, only_if_running=False, error=error)
    except Exception:
        logger.exception("could not mark job %s failed", job_id)


def run_job(task: Any, job_id: str) -> None:
    """Celery task `<SERVICE_NAME>.run_job` (bound): retries transient database errors."""
    settings: Settings = task.app.conf[SETTINGS_KEY]
    runtime = worker_runtime(settings)
    ident = uuid.UUID(job_id)
    try:
        execute(runtime, ident)
    except Exception as exc:
        if is_transient(exc):
            retries = task.request.retries
            if retries < settings.job_max_retries:
                logger.warning("job %s: database unavailable, retry %s", job_id, retries + 1)
                raise task.retry(
                    countdown=backoff_seconds(retries), max_retries=settings.job_max_retries
                ) from exc
            fail(runtime, ident, unavailable_error(retries))
            return
        logger.exception("job %s failed", job_id)
        fail(runtime, ident, INTERNAL_ERROR)


def _stale(cutoff: dt.datetime) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    return Job.status == service.QUEUED, Job.updated_at < cutoff


def oldest_stale(cutoff: dt.datetime) -> Select[uuid.UUID]:
    """The sweep's read: jobs still `queued` since before `cutoff`, oldest first, at most
    REQUEUE_BATCH; the partial index ix_jobs_queued_updated_at answers it (models.py)."""
    return select(Job.id).where(*_stale(cutoff)).order_by(Job.updated_at).limit(REQUEUE_BATCH)


def claim_stale(session_factory: sessionmaker[Session], settings: Settings) -> list[uuid.UUID]:
    """Jobs `queued` for longer than JOB_REQUEUE_AFTER_SECONDS, claimed for a re-publish.

    A read finds them (most sweeps find none and take no write lock); one UPDATE ... RETURNING
    (PostgreSQL; SQLite >= 3.35) then moves their `updated_at` to now, re-checking status and
    `updated_at`, so each stale job is claimed by one sweeper of several replicas (on PostgreSQL
    a concurrent claim waits for the row and then no longer matches), and claimed again only
    after another JOB_REQUEUE_AFTER_SECONDS.
    """
    now = utcnow()
    cutoff = now - dt.timedelta(seconds=settings.job_requeue_after_seconds)
    stale = _stale(cutoff)
    with session_factory() as session:
        session.connection(execution_options=SNAPSHOT_READ)  # SQLite: no write lock
        found = list(session.scalars(oldest_stale(cutoff)))
    if not found:
        return []
    with session_factory() as session, session.begin():
        claimed = session.scalars(
            update(Job).where(Job.id.in_(found), *stale).values(updated_at=now).returning(Job.id)
        )
        return list(claimed)
