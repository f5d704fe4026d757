"""Job notifications (Redis pub/sub) and the Server-Sent Events stream of one job.

Whoever commits a change to a job publishes its new `event_seq` on `<SERVICE_NAME>:job:<id>`.
A stream subscribes first, then re-reads the row on each message (and when its heartbeat is
due); without Redis it polls the row with backoff. The row is the truth, messages are only
hints, so a lost message delays an event until the next heartbeat but never loses it. When
the process starts to shut down (lifecycle.py) the stream's wait is interrupted and it ends
with RECONNECT: a `retry:` hint and no event, so the client reconnects with Last-Event-ID
elsewhere and misses nothing.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Protocol

import anyio
import redis.asyncio as redis
from prometheus_client import Gauge
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.responses import StreamingResponse

from .. import lifecycle
from ..db import SNAPSHOT_READ
from ..errors import is_unavailable
from ..models import Job
from ..settings import SERVICE_NAME, Settings
from .schemas import TERMINAL
from .schemas import Job as JobSchema
from .service import event_name, job_view

logger = logging.getLogger(__name__)

HEARTBEAT = b": heartbeat\n\n"
RECONNECT_MILLISECONDS = 1000
# A comment and the reconnection delay, then a blank line: no event is dispatched.
RECONNECT = f": shutting down, reconnect\nretry: {RECONNECT_MILLISECONDS}\n\n".encode()
POLL_FIRST_SECONDS = 0.05
POLL_MAX_SECONDS = 1.0
SUBSCRIBE_TIMEOUT_SECONDS = 1.0
CLEANUP_TIMEOUT_SECONDS = 1.0
# The query of a stream's read, once it has its connection; the wait for the connection is
# bounded like any request's (read_timeout).
QUERY_TIMEOUT_SECONDS = 5.0


class EventStream(StreamingResponse):
    """A `text/event-stream` response whose body is already encoded (see README: not
    FastAPI's EventSourceResponse, which encodes the yields of a generator endpoint itself)."""

    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[bytes]) -> None:
        # no-cache: every event is news; X-Accel-Buffering: nginx must not hold events back.
        super().__init__(content, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def channel(job_id: uuid.UUID) -> str:
    return f"{SERVICE_NAME}:job:{job_id}"


async def publish(client: redis.Redis | None, job_id: uuid.UUID, event_seq: int) -> None:
    """Tell the job's streams to re-read it; a failure only delays them (never raised)."""
    if client is None:
        return
    try:
        await client.publish(channel(job_id), str(event_seq))
    except Exception as exc:  # a lost hint: streams re-read on their heartbeat anyway
        logger.warning("could not publish job %s event %s: %s", job_id, event_seq, exc)


def format_event(job: Job) -> bytes:
    """One event: `event:`, `id:` (the job's event_seq), `data:` (the Job, one JSON line)."""
    data = JobSchema.model_validate(job_view(job)).model_dump_json()
    return f"event: {event_name(job)}\nid: {job.event_seq}\ndata: {data}\n\n".encode()


class Notifier(Protocol):
    async def wait(self, seconds: float) -> None:
        """Return on a notification, or after `seconds` at the latest."""

    def reset(self) -> None:
        """An event was just sent."""

    async def aclose(self) -> None: ...


class Poller:
    """No Redis: wake up to re-read after 0.05 s, doubling to 1 s, back to 0.05 after a change."""

    def __init__(self) -> None:
        self.delay = POLL_FIRST_SECONDS

    async def wait(self, seconds: float) -> None:
        await anyio.sleep(min(self.delay, seconds))
        self.delay = min(self.delay * 2, POLL_MAX_SECONDS)

    def reset(self) -> None:
        self.delay = POLL_FIRST_SECONDS

    async def aclose(self) -> None:
        return None


class Subscription:
    """A Redis pub/sub subscription to one job's channel."""

    def __init__(self, pubsub: Any) -> None:
        self.pubsub = pubsub

    async def wait(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            message = await self.pubsub.get_message(
                ignore_subscribe_messages=True, timeout=remaining
            )
            if message is not None:
                return

    def reset(self) -> None:
        return None

    async def aclose(self) -> None:
        await self.pubsub.aclose()  # drops the pub/sub connection


async def subscribe(client: redis.Redis | None, job_id: uuid.UUID) -> Notifier:
    """A subscription to the job's channel, or a poller without Redis or when it fails."""
    if client is None:
        return Poller()
    pubsub = client.pubsub()
    try:
        with anyio.fail_after(SUBSCRIBE_TIMEOUT_SECONDS):
            await pubsub.subscribe(channel(job_id))
    except Exception as exc:
        logger.warning("job %s: subscribing failed, polling instead: %s", job_id, exc)
        with anyio.move_on_after(CLEANUP_TIMEOUT_SECONDS, shield=True):
            await pubsub.aclose()
        return Poller()
    return Subscription(pubsub)


def read_timeout(settings: Settings) -> float:
    """What bounds one read of a stream: the waits that bound a request (a pooled connection
    within DB_POOL_TIMEOUT, a new one within DB_CONNECT_TIMEOUT) plus the query's own time.

    A saturated pool is not a database that hangs: at 1,000 users a stream's read waited over
    5 s for a connection, and a 5 s bound ended one SSE stream in nine (loadtests/README.md).
    """
    return settings.db_pool_timeout + settings.db_connect_timeout + QUERY_TIMEOUT_SECONDS


async def _read(
    session_factory: async_sessionmaker[AsyncSession], job_id: uuid.UUID, bound_seconds: float
) -> Job | None:
    """The job's row in a short read-only transaction; the connection goes back at once.

    Shielded: a client that leaves mid-read cancels the stream only once the read is over, so
    the connection returns to the pool instead of being torn down mid-query (which, on
    aiosqlite, leaves a close task behind that never finishes). `bound_seconds` (read_timeout)
    bounds the wait for a database that hangs.
    """
    with anyio.CancelScope(shield=True), anyio.fail_after(bound_seconds):
        async with session_factory() as session:
            await session.connection(execution_options=SNAPSHOT_READ)
            job = await session.get(Job, job_id)
    return job


async def job_events(
    *,
    session_factory: async_sessionmaker[AsyncSession],
    client: redis.Redis | None,
    streams_open: Gauge,
    owner_id: uuid.UUID,
    job_id: uuid.UUID,
    last_event_id: int,
    heartbeat_seconds: float,
    read_timeout_seconds: float,
) -> AsyncIterator[bytes]:
    """The stream's body: an event per change seen, heartbeats between, ends after terminal.

    Once the process shuts down (lifecycle.py), the stream ends with RECONNECT.

    A client that goes away cancels this generator while it waits; the `finally` then drops
    the subscription (shielded, as the surrounding scope is cancelled) and the gauge.
    """
    streams_open.inc()
    notifier: Notifier | None = None
    try:
        notifier = await subscribe(client, job_id)  # before the first read: no change missed
        last = last_event_id
        last_write = time.monotonic()
        while True:
            job = await _read(session_factory, job_id, read_timeout_seconds)
            if job is None or job.owner_id != owner_id:
                return  # deleted meanwhile (its owner was)
            if job.event_seq > last:
                yield format_event(job)
                last, last_write = job.event_seq, time.monotonic()
                notifier.reset()
            if job.status in TERMINAL and last >= job.event_seq:
                return
            if lifecycle.shutting_down():
                yield RECONNECT
                return
            remaining = last_write + heartbeat_seconds - time.monotonic()
            if remaining <= 0:
                yield HEARTBEAT
                last_write = time.monotonic()
                continue
            with lifecycle.interruptible():
                await notifier.wait(remaining)
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        # The headers are gone already: end the stream; EventSource resumes with Last-Event-ID.
        logger.warning("job %s stream ended, database unavailable: %s", job_id, exc)
    finally:
        if notifier is not None:
            with anyio.move_on_after(CLEANUP_TIMEOUT_SECONDS, shield=True):
                try:
                    await notifier.aclose()
                except Exception as exc:
                    logger.warning("job %s: closing the subscription failed: %s", job_id, exc)
        streams_open.dec()
