"""Job notifications and the Server-Sent Events stream, free of any web framework.

The worker publishes the new `event_seq` on the Redis channel `<SERVICE_NAME>:job:<id>` after
each commit. A stream subscribes first, then reads the job row, sends it when its `event_seq`
moved past the last one sent, and waits for a notification (or polls the row with backoff when
there is no Redis). While it waits it watches the client's socket, so a client that went away
frees the stream's thread or greenlet, its pubsub connection and its database use within a
second instead of at the next heartbeat write. When the process starts to shut down
(lifecycle.py) the stream ends within WATCH_SLICE_SECONDS with RECONNECT: a `retry:` hint and
no event, so the client reconnects with Last-Event-ID elsewhere and misses nothing.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import redis

from ..settings import SERVICE_NAME
from .service import event_name, is_terminal

logger = logging.getLogger(__name__)

WATCH_SLICE_SECONDS = 0.5  # the longest a stream waits without looking at its client
POLL_MIN_SECONDS = 0.05
POLL_MAX_SECONDS = 1.0
HEARTBEAT = b": heartbeat\n\n"
RECONNECT_MILLISECONDS = 1000
# A comment and the reconnection delay, then a blank line: no event is dispatched.
RECONNECT = f": shutting down, reconnect\nretry: {RECONNECT_MILLISECONDS}\n\n".encode()
PUBLISH_TIMEOUT_SECONDS = 1.0


def channel(job_id: uuid.UUID | str) -> str:
    return f"{SERVICE_NAME}:job:{job_id}"


class Publisher:
    """PUBLISH after each commit; a failure is a warning (streams re-read the row anyway)."""

    def __init__(self, client: redis.Redis | None) -> None:
        self.client = client

    @classmethod
    def from_url(cls, url: str | None) -> Publisher:
        if not url:
            return cls(None)
        return cls(
            redis.Redis.from_url(
                url,
                socket_timeout=PUBLISH_TIMEOUT_SECONDS,
                socket_connect_timeout=PUBLISH_TIMEOUT_SECONDS,
            )
        )

    def publish(self, job_id: uuid.UUID, event_seq: int) -> None:
        if self.client is None:
            return
        try:
            self.client.publish(channel(job_id), str(event_seq))
        except redis.RedisError as exc:
            logger.warning("could not publish job %s event %s: %s", job_id, event_seq, exc)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


@dataclass(frozen=True)
class Snapshot:
    """What a stream needs of the job row: its sequence, status and JSON document."""

    event_seq: int
    status: str
    document: str


def format_event(snapshot: Snapshot) -> bytes:
    name = event_name(snapshot.status)
    return f"event: {name}\nid: {snapshot.event_seq}\ndata: {snapshot.document}\n\n".encode()


class ClientWatch:
    """Tells whether the client closed its connection, without reading its bytes.

    The socket is gunicorn's (`gunicorn.socket`, or `gunicorn.sock` for gevent's pywsgi).
    Without one (a test client) the client is taken to be there and waits are plain sleeps.
    """

    def __init__(self, sock: socket.socket | None) -> None:
        self.sock = sock
        self.gone = False

    @classmethod
    def from_environ(cls, environ: dict[str, Any]) -> ClientWatch:
        sock = environ.get("gunicorn.socket") or environ.get("gunicorn.sock")
        return cls(sock if isinstance(sock, socket.socket) else None)

    def wait(self, seconds: float) -> bool:
        """Wait up to `seconds` (select is cooperative under gevent); True if the client left."""
        if self.sock is None:
            time.sleep(max(seconds, 0))
            return False
        try:
            readable, _, _ = select.select([self.sock], [], [], max(seconds, 0))
            if not readable:
                return False
            if self.sock.recv(1, socket.MSG_PEEK) == b"":
                self.gone = True
                return True
        except (OSError, ValueError):  # reset, or already closed (fileno -1)
            self.gone = True
            return True
        # The client sent bytes (a pipelined request): still there; do not spin on them.
        time.sleep(max(seconds, 0))
        return False


class Notifications:
    """Redis pub/sub for one job, or nothing (then the stream polls the row)."""

    def __init__(self, client: redis.Redis | None, job_id: uuid.UUID) -> None:
        self.pubsub: Any = None
        if client is None:
            return
        try:
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(channel(job_id))
            self.pubsub = pubsub
        except redis.RedisError as exc:
            logger.warning("job %s stream falls back to polling: %s", job_id, exc)
            self.close()

    @property
    def subscribed(self) -> bool:
        return self.pubsub is not None

    def wait(self, seconds: float) -> bool:
        """Wait up to `seconds` for a message; True if one came (or the connection broke)."""
        try:
            return self.pubsub.get_message(timeout=max(seconds, 0)) is not None
        except (redis.RedisError, OSError) as exc:
            logger.warning("job stream lost its subscription, polling instead: %s", exc)
            self.close()
            return True

    def close(self) -> None:
        pubsub, self.pubsub = self.pubsub, None
        if pubsub is not None:
            with contextlib.suppress(redis.RedisError, OSError):
                pubsub.close()


def stream_events(
    read: Callable[[], Snapshot | None],
    notifications: Notifications,
    client: ClientWatch,
    *,
    last_event_id: int,
    heartbeat_seconds: float,
    stopping: Callable[[], bool] = lambda: False,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[bytes]:
    """The SSE body: events past `last_event_id`, heartbeats, the end after the terminal event.

    Once `stopping()` says the process shuts down, the stream ends with RECONNECT.

    `read` runs a short transaction and releases its connection before returning (None: the
    job is gone, and so is the stream). The caller
    closes `notifications` (in its finally), whether the stream ended or the client left.
    """
    last = last_event_id
    last_write = clock()
    poll = POLL_MIN_SECONDS
    while True:
        snapshot = read()
        if snapshot is None:
            return
        if snapshot.event_seq > last:
            yield format_event(snapshot)
            last, last_write, poll = snapshot.event_seq, clock(), POLL_MIN_SECONDS
        if is_terminal(snapshot.status) and last >= snapshot.event_seq:
            return
        if stopping():
            yield RECONNECT
            return
        heartbeat_due = last_write + heartbeat_seconds
        if notifications.subscribed:
            wake_at = heartbeat_due  # a message, or the heartbeat, ends the wait
        else:
            wake_at = min(heartbeat_due, clock() + poll)
            poll = min(poll * 2, POLL_MAX_SECONDS)
        while True:
            remaining = wake_at - clock()
            if remaining <= 0:
                break
            slice_seconds = min(remaining, WATCH_SLICE_SECONDS)
            if notifications.subscribed:
                if notifications.wait(slice_seconds):
                    break
                if client.wait(0):
                    return
            elif client.wait(slice_seconds):
                return
            if stopping():
                break  # back to the top: the latest event, then RECONNECT
        if clock() >= heartbeat_due:
            yield HEARTBEAT
            last_write = clock()
