"""Celery app and `python -m fastapi_service.worker`: Redis when REDIS_URL is set, else embedded.

The embedded broker is kombu's `filesystem://` transport under VAR_DIR/broker with a SQLite
result backend, so a laptop needs no Redis. Celery's defaults acknowledge a task before it
runs; the settings below acknowledge after it finishes, so a worker that dies mid-task leaves
it to be delivered again (on Redis, once the visibility timeout has passed).
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

from .settings import SERVICE_NAME, Settings

PING_TASK = f"{SERVICE_NAME}.ping"
BROKER_CONNECT_TIMEOUT_SECONDS = 3  # a down Redis fails a publish in seconds, not minutes
DEFAULT_CONCURRENCY = 2
RESULT_BACKEND_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 1}


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


def make_celery(settings: Settings) -> Celery:
    """Build the Celery app for these settings and register its tasks."""
    if settings.redis_url:
        broker, backend = settings.redis_url, settings.redis_url
        options: dict[str, Any] = {"socket_connect_timeout": BROKER_CONNECT_TIMEOUT_SECONDS}
    else:
        broker, backend, options = _embedded_transport(settings)
    options["visibility_timeout"] = settings.celery_visibility_timeout
    app = Celery(SERVICE_NAME, broker=broker, backend=backend, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
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
    )
    app.task(name=PING_TASK)(ping)
    return app


def worker_argv(settings: Settings, concurrency: int) -> list[str]:
    """Arguments for `celery worker` with this app."""
    argv = ["worker", f"--concurrency={concurrency}", f"--loglevel={settings.log_level.upper()}"]
    if not settings.redis_url:
        # Gossip, mingle and heartbeat are broadcasts between workers; the file transport only
        # polls for them, so they would add start-up delay and pile up unread files.
        argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    return argv


def main() -> None:
    raw = os.environ.get("CELERY_CONCURRENCY", "").strip()
    concurrency = int(raw) if raw.isdigit() and int(raw) > 0 else DEFAULT_CONCURRENCY
    # The module-level app: building a second one here would read the settings twice.
    celery_app.worker_main(worker_argv(SETTINGS, concurrency))


SETTINGS = Settings()
celery_app = make_celery(SETTINGS)

if __name__ == "__main__":
    main()
