"""Jobs: create, list, read and cancel (the API's side), and the report's arithmetic.

Functions only flush; the view's transaction commits (deps.transactional), except where the
view must commit before it enqueues. Someone else's job is indistinguishable from a missing
one (404). Nothing here knows about Flask or Celery.
"""

from __future__ import annotations

import math
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from ..db import utcnow
from ..models import Job
from ..problems import JobFinished, NotFound
from .schemas import IMPORT_ITEMS

QUEUED, RUNNING = "queued", "running"
SUCCEEDED, FAILED, CANCELLED = "succeeded", "failed", "cancelled"
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})


def is_terminal(status: str) -> bool:
    return status in TERMINAL


def event_name(status: str) -> str:
    """The SSE `event:` for a job in this status."""
    return status if is_terminal(status) else "progress"


def job_params(body: Mapping[str, Any]) -> dict[str, Any]:
    """The stored request: the body without `kind` (ItemCreate defaults already applied)."""
    if body["kind"] == IMPORT_ITEMS:
        return {"items": [dict(item) for item in body["items"]]}
    return {"tag": body.get("tag")}


def create_job(session: Session, owner_id: uuid.UUID, body: Mapping[str, Any]) -> Job:
    params = job_params(body)
    total = len(params["items"]) if body["kind"] == IMPORT_ITEMS else 0
    now = utcnow()
    job = Job(
        owner_id=owner_id,
        kind=body["kind"],
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
    session.flush()
    return job


def forget_job(session: Session, job_id: uuid.UUID) -> None:
    """Remove a job that could not be enqueued (the broker refused it)."""
    session.execute(delete(Job).where(Job.id == job_id))
    session.flush()


def list_jobs(
    session: Session, owner_id: uuid.UUID, *, limit: int, after: uuid.UUID | None = None
) -> tuple[list[Job], uuid.UUID | None]:
    """One page, oldest first, and the last id if more follow (like the items list)."""
    query = select(Job).where(Job.owner_id == owner_id).order_by(Job.id).limit(limit + 1)
    if after is not None:
        query = query.where(Job.id > after)
    jobs = list(session.scalars(query))
    if len(jobs) > limit:
        return jobs[:limit], jobs[limit - 1].id
    return jobs, None


def get_job(
    session: Session, owner_id: uuid.UUID, job_id: uuid.UUID, *, for_update: bool = False
) -> Job:
    query = select(Job).where(Job.id == job_id)
    if for_update:
        # FOR UPDATE on PostgreSQL; SQLite ignores it, every transaction there being
        # BEGIN IMMEDIATE (db.py) already holds the database's write lock.
        query = query.with_for_update()
    job = session.scalars(query.execution_options(populate_existing=True)).one_or_none()
    if job is None or job.owner_id != owner_id:
        raise NotFound("No such job.")
    return job


def cancel_job(session: Session, owner_id: uuid.UUID, job_id: uuid.UUID) -> tuple[Job, bool]:
    """Cancel under a row lock: (the job as changed, whether a new event is to be published).

    Queued: cancelled at once. Running: `cancel_requested`, the task stops at its next batch
    boundary. Finished: 409 `job-finished`.
    """
    job = get_job(session, owner_id, job_id, for_update=True)
    if is_terminal(job.status):
        raise JobFinished(f"The job has already {job.status}.")
    now = utcnow()
    if job.status == QUEUED:
        job.status = CANCELLED
        job.finished_at = now
        job.event_seq += 1
        job.updated_at = now
        session.flush()
        return job, True
    job.cancel_requested = True
    job.updated_at = now
    session.flush()
    return job, False


def percentile(ordered: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default) on ascending values."""
    if not ordered:
        return None
    position = (len(ordered) - 1) * q
    lo, hi = math.floor(position), math.ceil(position)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (position - lo)


def items_report(rows: Iterable[tuple[float, Sequence[str]]]) -> dict[str, Any]:
    """count, sum, mean, p50, p95 of the prices and how many items carry each tag.

    The sum is math.fsum over the sorted prices, so both services agree to the last bit.
    """
    prices: list[float] = []
    per_tag: Counter[str] = Counter()
    for price, tags in rows:
        prices.append(float(price))
        per_tag.update(set(tags))
    prices.sort()
    count = len(prices)
    total = math.fsum(prices)
    return {
        "count": count,
        "sum": total,
        "mean": total / count if count else None,
        "p50": percentile(prices, 0.5),
        "p95": percentile(prices, 0.95),
        "per_tag": dict(sorted(per_tag.items())),
    }
