"""Jobs: create, list, read and cancel the caller's jobs; the report's maths.

Functions only flush; the caller commits (the request's session, or the task's own
transactions). Someone else's job is indistinguishable from a missing one (404).
"""

from __future__ import annotations

import math
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from ..db import utcnow
from ..models import Job
from ..problems import JobFinished, NotFound
from .schemas import TERMINAL, ImportItemsJobCreate, ItemsReportJobCreate

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = (
    "queued",
    "running",
    "succeeded",
    "failed",
    "cancelled",
)


def job_view(job: Job) -> dict[str, Any]:
    """The contract's Job: what GET /jobs/{id} answers and what an event's `data` carries."""
    return {
        "id": job.id,
        "kind": job.kind,
        "status": job.status,
        "progress": {"done": job.progress_done, "total": job.progress_total},
        "result": job.result,
        "error": job.error,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
    }


def event_name(job: Job) -> str:
    """`progress` while the job is queued or running, else its terminal status."""
    return job.status if job.status in TERMINAL else "progress"


async def create_job(
    session: AsyncSession, owner_id: uuid.UUID, body: ImportItemsJobCreate | ItemsReportJobCreate
) -> Job:
    """A queued job; its params are the request minus `kind`, with ItemCreate defaults applied."""
    if isinstance(body, ImportItemsJobCreate):
        params: dict[str, Any] = {"items": [item.model_dump() for item in body.items]}
        total = len(body.items)
    else:
        params = {"tag": body.model_dump().get("tag")}
        total = 0
    now = utcnow()
    job = Job(
        owner_id=owner_id,
        kind=body.kind,
        status=QUEUED,
        params=params,
        progress_done=0,
        progress_total=total,
        cancel_requested=False,
        event_seq=1,
        created_at=now,
        updated_at=now,
    )
    session.add(job)
    await session.flush()
    return job


async def delete_job(session: AsyncSession, job_id: uuid.UUID) -> None:
    """Undo a creation whose task could not be enqueued."""
    await session.execute(delete(Job).where(Job.id == job_id))


async def list_jobs(
    session: AsyncSession, owner_id: uuid.UUID, *, limit: int, after: uuid.UUID | None = None
) -> tuple[list[Job], uuid.UUID | None]:
    """One page, oldest first (UUIDv7 ids sort by creation), and the last id if more follow."""
    query = select(Job).where(Job.owner_id == owner_id).order_by(Job.id).limit(limit + 1)
    if after is not None:
        query = query.where(Job.id > after)
    jobs = list(await session.scalars(query))
    if len(jobs) > limit:
        return jobs[:limit], jobs[limit - 1].id
    return jobs, None


async def get_job(
    session: AsyncSession, owner_id: uuid.UUID, job_id: uuid.UUID, *, for_update: bool = False
) -> Job:
    query = select(Job).where(Job.id == job_id).execution_options(populate_existing=True)
    if for_update:
        # FOR UPDATE on PostgreSQL; SQLite renders nothing, its BEGIN IMMEDIATE already holds
        # the database's write lock for the whole transaction.
        query = query.with_for_update()
    job = await session.scalar(query)
    if job is None or job.owner_id != owner_id:
        raise NotFound("No such job.")
    return job


async def cancel_job(session: AsyncSession, owner_id: uuid.UUID, job_id: uuid.UUID) -> Job:
    """Cancel a queued job at once; ask a running one to stop at its next batch boundary."""
    job = await get_job(session, owner_id, job_id, for_update=True)
    if job.status in TERMINAL:
        raise JobFinished(f"The job has finished ({job.status}); it cannot be cancelled.")
    now = utcnow()
    if job.status == QUEUED:
        job.status = CANCELLED
        job.finished_at = now
        job.event_seq += 1
    else:
        job.cancel_requested = True
    job.updated_at = now
    await session.flush()
    return job


def percentile(ascending: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default) on sorted values."""
    position = (len(ascending) - 1) * q
    lo, hi = math.floor(position), math.ceil(position)
    return ascending[lo] + (ascending[hi] - ascending[lo]) * (position - lo)


def items_report(items: Iterable[tuple[float, Sequence[str]]]) -> dict[str, Any]:
    """count, sum, mean, p50, p95 of the prices and the number of items carrying each tag."""
    rows = list(items)
    if not rows:
        return {"count": 0, "sum": 0.0, "mean": None, "p50": None, "p95": None, "per_tag": {}}
    prices = sorted(float(price) for price, _tags in rows)
    per_tag: Counter[str] = Counter()
    for _price, tags in rows:
        per_tag.update(set(tags))
    total = math.fsum(prices)
    return {
        "count": len(prices),
        "sum": total,
        "mean": total / len(prices),
        "p50": percentile(prices, 0.5),
        "p95": percentile(prices, 0.95),
        "per_tag": dict(sorted(per_tag.items())),
    }
