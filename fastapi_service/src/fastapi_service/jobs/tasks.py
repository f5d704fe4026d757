"""The `run_job` task: the body (async, on the service's own db layer) and how it is sent.

Celery tasks are synchronous and the database layer is async, so each worker child process
runs task bodies on one `asyncio.Runner`, created lazily after the fork and reused by every
task, so the engine's pooled connections live on the loop they were made on
(`worker.py` closes it on `worker_process_shutdown`).

Exactly-once import under redelivery: a batch's items and the progress that records them
commit in one transaction, whose UPDATE only matches while `progress_done` is still the value
the batch started from. A second delivery resumes from the committed progress, and of two
concurrent deliveries only one can move it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
import uuid
from dataclasses import dataclass
from typing import Any

import redis.asyncio as redis
from sqlalchemy import ColumnElement, Select, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from ..db import SNAPSHOT_READ, create_engine, create_session_factory, utcnow
from ..errors import is_unavailable
from ..models import Item, Job
from ..settings import SERVICE_NAME, Settings
from . import events
from .schemas import TERMINAL
from .service import CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED, items_report

logger = logging.getLogger(__name__)

RUN_JOB_TASK = f"{SERVICE_NAME}.run_job"
PUBLISH_TIMEOUT_SECONDS = 1.0
MAX_RETRY_DELAY_SECONDS = 30.0
REQUEUE_BATCH = 100  # stale jobs claimed per sweep, at most
INTERNAL_ERROR = {
    "type": "urn:problem:internal-error",
    "title": "Internal server error",
    "status": 500,
    "detail": "The job failed unexpectedly.",
}


def unavailable_error(retries: int) -> dict[str, Any]:
    return {
        "type": "urn:problem:service-unavailable",
        "title": "Service unavailable",
        "status": 503,
        "detail": f"The database stayed unavailable; the job gave up after {retries} retries.",
    }


def retry_delay(retries: int) -> float:
    """1, 2, 4, ... seconds (at most 30), plus up to 10 % jitter."""
    base = min(MAX_RETRY_DELAY_SECONDS, 2.0**retries)
    return min(MAX_RETRY_DELAY_SECONDS, base + random.uniform(0, base / 10))  # noqa: S311


def enqueue(celery: Any, job_id: uuid.UUID) -> None:
    """Publish `run_job(job_id)` (blocking; raises on any broker error, without retrying)."""
    celery.send_task(
        RUN_JOB_TASK, args=[str(job_id)], task_id=str(job_id), retry=False, ignore_result=True
    )


@dataclass
class JobContext:
    """What a task body needs: settings, the session factory and the notification client."""

    settings: Settings
    session_factory: async_sessionmaker[AsyncSession]
    redis: redis.Redis | None


async def _publish(ctx: JobContext, job_id: uuid.UUID, event_seq: int) -> None:
    await events.publish(ctx.redis, job_id, event_seq)


async def _finish(ctx: JobContext, job_id: uuid.UUID, status: str, **values: Any) -> bool:
    """Move a job that is not terminal yet to `status` (one transaction); False if it was."""
    async with ctx.session_factory() as session:
        job = await session.get(Job, job_id, with_for_update=True, populate_existing=True)
        if job is None or job.status in TERMINAL:
            return False
        now = utcnow()
        job.status = status
        job.finished_at = now
        job.updated_at = now
        job.event_seq += 1
        for name, value in values.items():
            setattr(job, name, value)
        seq = job.event_seq
        await session.commit()
    await _publish(ctx, job_id, seq)
    return True


async def _start(ctx: JobContext, job_id: uuid.UUID) -> Job | None:
    """Mark the job running; None when there is nothing (more) to do."""
    async with ctx.session_factory() as session:
        job = await session.get(Job, job_id, with_for_update=True, populate_existing=True)
        if job is None or job.status in TERMINAL:
            return None  # a redelivery of a finished (or deleted) job does nothing
        if job.status == QUEUED and job.cancel_requested:
            await session.rollback()
            await _finish(ctx, job_id, CANCELLED)
            return None
        now = utcnow()
        job.status = RUNNING
        job.started_at = job.started_at or now
        job.updated_at = now
        job.event_seq += 1
        seq = job.event_seq
        await session.commit()
    await _publish(ctx, job_id, seq)
    return job


async def _import_items(ctx: JobContext, job: Job) -> None:
    items: list[dict[str, Any]] = job.params["items"]
    total = len(items)
    size = ctx.settings.job_batch_size
    while True:
        async with ctx.session_factory() as session:
            state = (
                await session.execute(
                    select(Job.status, Job.cancel_requested, Job.progress_done).where(
                        Job.id == job.id
                    )
                )
            ).one_or_none()
            if state is None or state.status in TERMINAL:
                return
            if state.cancel_requested:
                await session.rollback()
                await _finish(ctx, job.id, CANCELLED)
                return
            done = state.progress_done
            if done >= total:
                break
            batch = items[done : done + size]
            now = utcnow()
            # The progress first: on PostgreSQL it locks the row, so a concurrent delivery
            # waits here and then finds progress_done moved (0 rows) instead of inserting.
            seq = await session.scalar(
                update(Job)
                .where(Job.id == job.id, Job.progress_done == done)
                .values(
                    progress_done=done + len(batch), event_seq=Job.event_seq + 1, updated_at=now
                )
                .returning(Job.event_seq)
            )
            if seq is None:
                await session.rollback()
                return  # another delivery of this job got there first
            session.add_all(
                Item(owner_id=job.owner_id, created_at=now, updated_at=now, **fields)
                for fields in batch
            )
            await session.commit()
        await _publish(ctx, job.id, seq)
    await _finish(
        ctx, job.id, SUCCEEDED, result={"created": total}, progress_done=total, progress_total=total
    )


async def _items_report(ctx: JobContext, job: Job) -> None:
    tag: str | None = job.params.get("tag")
    async with ctx.session_factory() as session:
        rows = (
            await session.execute(
                select(Item.price, Item.tags).where(Item.owner_id == job.owner_id).order_by(Item.id)
            )
        ).all()
    report = items_report(
        (price, tags) for price, tags in rows if tag is None or tag in (tags or [])
    )
    count = report["count"]
    await _finish(ctx, job.id, SUCCEEDED, result=report, progress_done=count, progress_total=count)


async def execute(ctx: JobContext, job_id: uuid.UUID) -> None:
    """Run one job to its end (or until cancelled); database errors propagate."""
    job = await _start(ctx, job_id)
    if job is None:
        return
    if job.kind == "import_items":
        await _import_items(ctx, job)
    else:
        await _items_report(ctx, job)


async def fail(ctx: JobContext, job_id: uuid.UUID, error: dict[str, Any]) -> None:
    """Mark the job failed with this problem, if the database lets us."""
    try:
        await _finish(ctx, job_id, FAILED, error=error)
    except Exception:
        logger.exception("job %s: could not record its failure", job_id)


class WorkerLoop:
    """One event loop per worker process, with the engine and Redis client living on it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._runner: asyncio.Runner | None = None
        self._engine: AsyncEngine | None = None
        self._context: JobContext | None = None

    def context(self) -> JobContext:
        if self._context is None:
            self._engine = create_engine(self.settings)
            client = (
                redis.from_url(
                    self.settings.redis_url,
                    socket_timeout=PUBLISH_TIMEOUT_SECONDS,
                    socket_connect_timeout=PUBLISH_TIMEOUT_SECONDS,
                )
                if self.settings.redis_url
                else None
            )
            self._context = JobContext(self.settings, create_session_factory(self._engine), client)
        return self._context

    def run(self, coroutine: Any) -> Any:
        if self._runner is None:
            self._runner = asyncio.Runner()  # created lazily: after the fork, in the child
        return self._runner.run(coroutine)

    def close(self) -> None:
        """Dispose of the pool and the client on their own loop, then close the loop."""
        if self._runner is None:
            return
        context, engine = self._context, self._engine
        try:
            if context is not None and context.redis is not None:
                self._runner.run(context.redis.aclose())
            if engine is not None:
                self._runner.run(engine.dispose())
        finally:
            self._runner.close()
            self._runner, self._engine, self._context = None, None, None


def run_job(task: Any, loop: WorkerLoop, job_id: str) -> None:
    """The Celery task body: transient database errors retry, anything else fails the job."""
    job_uuid = uuid.UUID(job_id)
    ctx = loop.context()
    try:
        loop.run(execute(ctx, job_uuid))
    except Exception as exc:
        if is_unavailable(exc):
            retries = task.request.retries
            if retries < loop.settings.job_max_retries:
                logger.warning("job %s: database unavailable, retry %d", job_id, retries + 1)
                raise task.retry(countdown=retry_delay(retries), exc=exc) from exc
            loop.run(fail(ctx, job_uuid, unavailable_error(retries)))
            return
        logger.exception("job %s failed", job_id)
        loop.run(fail(ctx, job_uuid, INTERNAL_ERROR))


def _stale(cutoff: dt.datetime) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    return Job.status == QUEUED, Job.updated_at < cutoff


def oldest_stale(cutoff: dt.datetime) -> Select[uuid.UUID]:
    """The sweep's read: jobs still `queued` since before `cutoff`, oldest first, at most
    REQUEUE_BATCH; the partial index ix_jobs_queued_updated_at answers it (models.py)."""
    return select(Job.id).where(*_stale(cutoff)).order_by(Job.updated_at).limit(REQUEUE_BATCH)


async def claim_stale(
    session_factory: async_sessionmaker[AsyncSession], settings: Settings
) -> list[uuid.UUID]:
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
    async with session_factory() as session:
        await session.connection(execution_options=SNAPSHOT_READ)  # SQLite: no write lock
        found = list(await session.scalars(oldest_stale(cutoff)))
    if not found:
        return []
    async with session_factory() as session, session.begin():
        claimed = await session.scalars(
            update(Job).where(Job.id.in_(found), *stale).values(updated_at=now).returning(Job.id)
        )
        return list(claimed)
