"""Celery app and `python -m fastapi_service.worker`: Redis when REDIS_URL is set, else embedded.

The embedded broker is kombu's `filesystem://` transport under VAR_DIR/broker with a SQLite
result backend, so a laptop needs no Redis. Celery's defaults acknowledge a task before it
runs; the settings below acknowledge after it finishes, so a worker that dies mid-task leaves
it to be delivered again (on Redis, once the visibility timeout has passed).
"""

from __future__ import annotations

from typing import Any

import redis
from celery import Celery
from celery.signals import worker_process_shutdown
from kombu.transport import redis as kombu_redis

from .jobs import tasks
from .settings import SERVICE_NAME, Settings

PING_TASK = f"{SERVICE_NAME}.ping"
RUN_JOB_TASK = tasks.RUN_JOB_TASK
BROKER_CONNECT_TIMEOUT_SECONDS = 1  # a down Redis fails a publish in about a second
BROKER_SOCKET_TIMEOUT_SECONDS = 1  # the API's publishes only
RESTORE_SWEEP_MAX_SECONDS = 60
RESULT_BACKEND_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 1}


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
    return app


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
