"""Production server settings and `main()`: uvicorn with uvloop and httptools.

HOST, PORT, WEB_CONCURRENCY, LOG_LEVEL and GRACEFUL_TIMEOUT_SECONDS come from Settings. On
SIGTERM uvicorn stops accepting, lets in-flight requests finish for up to
GRACEFUL_TIMEOUT_SECONDS (default 30; uvicorn's own default is unlimited), then exits; the
app's lifespan chains onto uvicorn's signal handler (lifecycle.py), so /readyz says 503 and
open event streams end with a `retry:` hint instead of holding shutdown until the timeout.
"""

from __future__ import annotations

import os
from pathlib import Path

import uvicorn

from .observability import configure_logging
from .settings import Settings

APP_IMPORT_STRING = "fastapi_service.main:app"
KEEP_ALIVE_SECONDS = 75  # above typical load-test think times and load-balancer idle timeouts
BACKLOG = 2048


def clear_multiprocess_metrics() -> None:
    """Stale files from an earlier run would be summed into this run's metrics."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink(missing_ok=True)


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level)
    clear_multiprocess_metrics()
    uvicorn.run(
        APP_IMPORT_STRING,
        host=settings.host,
        port=settings.port,
        workers=settings.web_concurrency,
        loop="uvloop",
        http="httptools",
        log_config=None,  # our JSON logging, configured in each process
        log_level=settings.log_level,
        access_log=False,  # the app logs one line per request itself
        proxy_headers=False,  # X-Forwarded-For is not trusted: the peer is the client (rate limits)
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        timeout_graceful_shutdown=settings.graceful_timeout_seconds,
        backlog=BACKLOG,
        server_header=False,
    )
