"""Celery app and `python -m fastapi_service.worker`: Redis when REDIS_URL is set, else embedded.

The embedded broker is kombu's `filesystem://` transport under VAR_DIR/broker with a SQLite
result backend, so a laptop needs no Redis. Celery's defaults acknowledge a task before it
runs; the settings below acknowledge after it finishes, so a worker that dies mid-task leaves
it to be delivered again (on Redis, once the visibility timeout has passed).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import redis
from celery import Celery, bootsteps
from celery.signals import worker_process_shutdown
from kombu.transport import redis as kombu_redis

from .jobs import tasks
from .settings import SERVICE_NAME, Settings

PING_TASK = f"{SERVICE_NAME}.ping"
RUN_JOB_TASK = tasks.RUN_JOB_TASK
BROKER_CONNECT_TIMEOUT_SECONDS = 1  # a down Redis fails a publish in about a second
BROKER_SOCKET_TIMEOUT_SECONDS = 1  # the API's publishes only
RESTORE_SWEEP_MAX_SECONDS = 60
REQUEUE_SWEEP_MAX_SECONDS = 60
RESULT_BACKEND_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 1}
logger = logging.getLogger(__name__)
# On the embedded broker the sweep runs on Celery's timer thread while the pool may fork a
# child (at start, or to replace one): a fork in mid-sweep copies the locks the sweep holds
# (the driver's, logging's) into the child, which then hangs on its first task. The sweep
# holds this lock and a fork waits for it (`_hold_forks_while_sweeping`).
_SWEEP_LOCK = threading.Lock()
_fork_hook_registered = False


class RedisChannel(kombu_redis.Channel):
    """kombu's Redis channel, failing as a lost connection once its connection is closed.

    When the broker goes away, Celery 5.7.0 closes the consumer's connection (kombu drops the
    transport's link to it) while the channel lives on: a task still running then has its
    acknowledgement, or the channel's give-back of unacknowledged messages, build a new Redis
    pool from a connection that is gone, and the AttributeError ends the worker ("Unrecoverable
    error"): no job would run after Redis comes back. As a connection error it is what kombu and
    Celery already handle: logged, and the message stays unacknowledged in Redis, to be delivered
    again after CELERY_VISIBILITY_TIMEOUT (a redelivered job resumes, or finds itself finished).
    """

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        if self.connection is None or self.connection.client is None:
            raise redis.exceptions.ConnectionError("the broker connection was closed")
        params: dict[str, Any] = super()._connparams(asynchronous=asynchronous)
        return params


class RedisTransport(kombu_redis.Transport):
    Channel = RedisChannel


def ping() -> str:
    """Answer "pong": proves a worker consumes the queue and results come back."""
    return "pong"


def _embedded_transport(settings: Settings) -> tuple[str, str, dict[str, Any]]:
    broker = settings.broker_dir.resolve()
    queue, control = broker / "queue", broker / "control"
    for folder in (queue, control):
        folder.mkdir(parents=True, exist_ok=True)
    # Producers write to data_folder_out and consumers read data_folder_in: one shared folder.
    options = {
        "data_folder_in": str(queue),
        "data_folder_out": str(queue),
        "control_folder": str(control),
    }
    results = f"db+sqlite:///{settings.var_dir.resolve() / 'celery-results.sqlite3'}"
    return "filesystem://", results, options


def make_celery(settings: Settings, *, publisher: bool = False) -> Celery:
    """Build the Celery app for these settings and register its tasks (`publisher`: the
    API's app, which only sends tasks and must fail fast when the broker is down)."""
    if settings.redis_url:
        broker, backend = settings.redis_url, settings.redis_url
        transport: str | None = f"{__name__}:RedisTransport"  # see RedisChannel
        options: dict[str, Any] = {"socket_connect_timeout": BROKER_CONNECT_TIMEOUT_SECONDS}
        if publisher:
            # The API's publish: a Redis that is down or hangs fails it within about a second
            # (POST /jobs then answers 503 in < 2 s). Not for the worker, whose BRPOP waits.
            options |= {"socket_timeout": BROKER_SOCKET_TIMEOUT_SECONDS, "max_retries": 0}
    else:
        broker, backend, options = _embedded_transport(settings)
        transport = None
    options["visibility_timeout"] = settings.celery_visibility_timeout
    if settings.redis_url:
        # kombu looks for unacknowledged messages past the visibility timeout only every
        # 10 s x 10 calls (about 100 s) by default; look every quarter of the timeout instead
        # (at most once a minute: one ZRANGE), so a task whose worker died is delivered again
        # within about 1.25 x CELERY_VISIBILITY_TIMEOUT.
        sweep = min(RESTORE_SWEEP_MAX_SECONDS, max(1, settings.celery_visibility_timeout // 4))
        options |= {"unacked_restore_interval": sweep, "unacked_restore_throttle": 1}
    app = Celery(SERVICE_NAME, broker=broker, backend=backend, set_as_current=False)
    if transport is not None:
        app.conf.broker_transport = transport
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # A child that dies mid-task (OOM, SIGKILL): give its message back after 2 s, not 10.
        worker_lost_wait=2.0,
        worker_prefetch_multiplier=1,
        broker_transport_options=options,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=BROKER_CONNECT_TIMEOUT_SECONDS,
        redis_socket_connect_timeout=BROKER_CONNECT_TIMEOUT_SECONDS,
        # The Redis result backend otherwise retries a lost connection 20 times, a second apart.
        result_backend_transport_options={"retry_policy": RESULT_BACKEND_RETRY_POLICY},
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        enable_utc=True,
        task_default_queue=SERVICE_NAME,  # both services may share one Redis
    )
    app.task(name=PING_TASK)(ping)
    loop = tasks.WorkerLoop(settings)

    # Job state lives in the database, so there is no result to store.
    @app.task(name=RUN_JOB_TASK, bind=True, ignore_result=True)
    def run_job(task: Any, job_id: str) -> None:
        tasks.run_job(task, loop, job_id)

    app.job_loop = loop
    app.steps["worker"].add(RequeueStaleJobs)
    return app


def _settings(app: Celery) -> Settings:
    settings: Settings = app.job_loop.settings
    return settings


def requeue_stale(app: Celery) -> int:
    """Claim the jobs `queued` too long and publish each again; how many were published.

    Its own loop, engine and client, closed after: the sweep runs in the worker's main process,
    whose pool children are forked from it, so it keeps no connection open between sweeps.
    Errors are logged, not raised (the timer would stop): a job claimed but not published is
    claimed again after another JOB_REQUEUE_AFTER_SECONDS.
    """
    with _SWEEP_LOCK:
        return _requeue_stale(app)


def _requeue_stale(app: Celery) -> int:
    settings = _settings(app)
    published = 0
    try:
        loop = tasks.WorkerLoop(settings)
        try:
            claimed = loop.run(tasks.claim_stale(loop.context().session_factory, settings))
        finally:
            loop.close()
        for job_id in claimed:
            tasks.enqueue(app, job_id)
            published += 1
    except Exception as exc:
        logger.warning("re-queueing stale jobs failed after %d: %r", published, exc)
    if published:
        logger.warning(
            "re-queued %d job(s) still queued after %d s",
            published,
            settings.job_requeue_after_seconds,
        )
    return published


def requeue_interval(settings: Settings) -> int:
    """Seconds between sweeps: a quarter of JOB_REQUEUE_AFTER_SECONDS, 1 to 60."""
    return min(REQUEUE_SWEEP_MAX_SECONDS, max(1, settings.job_requeue_after_seconds // 4))


def _hold_forks_while_sweeping() -> None:
    """Make a fork of this process wait for a sweep in progress (see _SWEEP_LOCK); once."""
    global _fork_hook_registered
    if not _fork_hook_registered:
        os.register_at_fork(
            before=_SWEEP_LOCK.acquire,
            after_in_parent=_SWEEP_LOCK.release,
            after_in_child=_SWEEP_LOCK.release,
        )
        _fork_hook_registered = True


class RequeueStaleJobs(bootsteps.StartStopStep):
    """Worker bootstep: sweep for lost jobs at start, then every `requeue_interval`.

    A job is stored `queued` before its message is published, and a message can still be lost
    after the 202 (kombu's Redis transport pops it with BRPOP and records it as unacknowledged
    in a second command: a Redis that stops in between loses it). A job still `queued` after
    JOB_REQUEUE_AFTER_SECONDS is published again with the same task id. One that only waited
    in a long queue gets a second message, which finds it running or finished and does nothing.
    The sweep runs in the worker's main process on the worker's own timer (the event loop's on
    Redis, a timer thread on the embedded broker): no beat process, any number of replicas.
    """

    # After the pool: its first children are forked before the first sweep.
    requires = ("celery.worker.components:Timer", "celery.worker.components:Pool")

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.timers: list[Any] = []

    def start(self, parent: Any) -> None:
        _hold_forks_while_sweeping()
        interval = requeue_interval(_settings(parent.app))
        self.timers = [
            parent.timer.call_after(0, requeue_stale, (parent.app,)),
            parent.timer.call_repeatedly(interval, requeue_stale, (parent.app,)),
        ]

    def stop(self, parent: Any) -> None:
        for timer in self.timers:
            timer.cancel()
        self.timers = []


@worker_process_shutdown.connect
def _close_job_loop(**_kwargs: Any) -> None:
    """A worker child is exiting: dispose of its engine and Redis client, close its loop."""
    if _celery_app is not None:
        _celery_app.job_loop.close()


def worker_argv(settings: Settings, concurrency: int | None = None) -> list[str]:
    """Arguments for `celery worker` with this app."""
    concurrency = concurrency or settings.celery_concurrency
    argv = ["worker", f"--concurrency={concurrency}", f"--loglevel={settings.log_level.upper()}"]
    # Gossip and mingle are broadcasts between workers (clock sync, revoked-task exchange at
    # start); job state lives in the database, so they only add start-up delay and broker
    # traffic (and gossip logs an error each time Redis comes back after an outage).
    argv += ["--without-gossip", "--without-mingle"]
    if not settings.redis_url:
        # Heartbeats are event broadcasts too; the file transport only polls for them, so they
        # would pile up unread files.
        argv.append("--without-heartbeat")
    return argv


_celery_app: Celery | None = None


def get_celery_app() -> Celery:
    """The worker's app, built from the environment on first use (not at import: the API
    imports make_celery from here and must not read the environment a second time)."""
    global _celery_app
    if _celery_app is None:
        _celery_app = make_celery(Settings())
    return _celery_app


def __getattr__(name: str) -> Any:
    # `celery_app` stays a module attribute (`celery -A fastapi_service.worker`), built lazily.
    if name == "celery_app":
        return get_celery_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    app = get_celery_app()
    app.worker_main(worker_argv(app.job_loop.settings))


if __name__ == "__main__":
    main()
