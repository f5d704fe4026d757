"""Production server settings and `main()`: gunicorn, configured by this very module.

`main()` execs `gunicorn -c python:flask_service.server flask_service.main:app`; gunicorn
then reads the lower-case names below as its settings. HOST, PORT, WEB_CONCURRENCY and
LOG_LEVEL come from Settings; GUNICORN_WORKER_CLASS (default gevent), GUNICORN_THREADS
(default 8) and GUNICORN_WORKER_CONNECTIONS (default 1000) tune the workers. On SIGTERM
gunicorn stops accepting, lets in-flight requests finish for up to graceful_timeout
(GRACEFUL_TIMEOUT_SECONDS, default 30), then exits; the `post_worker_init` hook tells the app
too (lifecycle.py), so /readyz says 503 and open event streams end with a `retry:` hint
instead of holding the worker until the timeout cuts them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from . import lifecycle
from .settings import Settings

APP_IMPORT_STRING = "flask_service.main:app"
KEEP_ALIVE_SECONDS = 75  # above typical load-test think times and load-balancer idle timeouts
BACKLOG = 2048

_settings = Settings.from_env()


def _bind_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# gunicorn settings (read by gunicorn from this module: `-c python:flask_service.server`)
bind = [_bind_address(_settings.host, _settings.port)]
workers = _settings.web_concurrency
# gevent by default: an open event stream costs a greenlet, not one of a few threads
# (measured: README "gunicorn worker class"). GUNICORN_THREADS only matters for gthread.
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gevent")
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
worker_connections = int(os.environ.get("GUNICORN_WORKER_CONNECTIONS", "1000"))
keepalive = KEEP_ALIVE_SECONDS
graceful_timeout = _settings.graceful_timeout_seconds
timeout = 60  # a worker silent this long is restarted (its heartbeat runs between requests)
backlog = BACKLOG
loglevel = _settings.log_level
accesslog = None  # the app logs one JSON line per request itself
errorlog = "-"
proc_name = "flask_service"
# gunicorn 27's control socket lives at one path per user: two servers would fight over it.
control_socket_disable = True
# gunicorn's own lines (master and workers) as JSON too, from its very first line.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "flask_service.observability.RequestIdFilter"}},
    "formatters": {"json": {"()": "flask_service.observability.json_formatter"}},
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
            "formatter": "json",
            "filters": ["request_id"],
        }
    },
    "root": {"level": _settings.log_level.upper(), "handlers": ["stdout"]},
    "loggers": {
        "gunicorn.error": {"handlers": [], "propagate": True},
        # The app writes the access line (with request id and route); gunicorn's would repeat it.
        "gunicorn.access": {"handlers": [], "propagate": False, "level": "CRITICAL"},
    },
}


def clear_multiprocess_metrics() -> None:
    """Stale files from an earlier run would be summed into this run's metrics."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink(missing_ok=True)


def on_starting(server: Any) -> None:
    """gunicorn hook (master, once, before any worker exists)."""
    clear_multiprocess_metrics()


def post_worker_init(worker: Any) -> None:
    """gunicorn hook (each worker, its signal handlers set): SIGTERM also reaches the app."""
    lifecycle.watch_signals()


def child_exit(server: Any, worker: Any) -> None:
    """gunicorn hook (master): a dead worker's live gauges must stop counting."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def main() -> None:
    argv = [sys.executable, "-m", "gunicorn", "--config", f"python:{__name__}", APP_IMPORT_STRING]
    os.execv(sys.executable, argv)  # noqa: S606 - a fixed argv; gunicorn takes over this pid
