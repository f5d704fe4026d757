"""Request ids, JSON logs, Prometheus metrics and security headers, in one ASGI middleware."""

from __future__ import annotations

import logging
import os
import re
import sys
import time
import uuid
from contextvars import ContextVar
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector
from pythonjsonlogger.json import JsonFormatter
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import errors

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,128}")
request_id_var: ContextVar[str] = ContextVar("request_id", default="-")

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
}
_SECURITY_HEADERS = [
    (name.lower().encode("latin-1"), (name.lower().encode("latin-1"), value.encode("latin-1")))
    for name, value in SECURITY_HEADERS.items()
]
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
UNMATCHED_ROUTE = "unmatched"

access_logger = logging.getLogger("fastapi_service.access")


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


def configure_logging(level: str) -> None:
    """JSON lines on stdout for every logger (uvicorn's included), each with its request_id."""
    # No line names the calling file, thread or process: skip looking them up for every record
    # (the logging HOWTO's "Optimization" switches).
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(_RequestIdFilter())
    handler.setFormatter(
        JsonFormatter(
            "{asctime}{levelname}{name}{message}{request_id}",
            style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # The middleware writes the access line (with route and duration); uvicorn's would repeat it.
    logging.getLogger("uvicorn.access").disabled = True


def request_id_from(headers: Headers) -> str:
    """The client's id when it is safe to echo, else a fresh one."""
    candidate = headers.get(REQUEST_ID_HEADER, "")
    return candidate if _REQUEST_ID_PATTERN.fullmatch(candidate) else uuid.uuid4().hex


class Metrics:
    """The contract's metric names; one registry per app, or all workers' when multi-process."""

    def __init__(self, service: str, version: str) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "http_requests_total",
            "HTTP requests by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "http_request_duration_seconds",
            "HTTP request duration in seconds.",
            ["method", "route"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.in_progress = Gauge(
            "http_requests_in_progress",
            "HTTP requests being served.",
            ["method"],
            multiprocess_mode="livesum",
            registry=self.registry,
        )
        # +1 when an event stream's body starts, -1 when it ends (or its client goes away).
        self.job_event_streams_open = Gauge(
            "job_event_streams_open",
            "Job event streams (Server-Sent Events) open.",
            multiprocess_mode="livesum",
            registry=self.registry,
        )
        info = Gauge(
            "app_info",
            "The service and its version.",
            ["service", "version"],
            multiprocess_mode="max",
            registry=self.registry,
        )
        info.labels(service, version).set(1)
        # The children per label values, looked up once: labels() costs more than the update.
        self._in_progress: dict[str, Gauge] = {}
        self._finished: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def in_progress_of(self, method: str) -> Gauge:
        gauge = self._in_progress.get(method)
        if gauge is None:
            gauge = self._in_progress[method] = self.in_progress.labels(method)
        return gauge

    def finished(self, method: str, route: str, status: int, seconds: float) -> None:
        """One answered request: counted, and its duration observed."""
        children = self._finished.get((method, route, status))
        if children is None:
            children = self._finished[(method, route, status)] = (
                self.requests.labels(method, route, str(status)),
                self.duration.labels(method, route),
            )
        children[0].inc()
        children[1].observe(seconds)

    def exposition(self) -> tuple[bytes, str]:
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if not directory:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)
        return generate_latest(registry), CONTENT_TYPE_LATEST


class ObservabilityMiddleware:
    """Request id, security headers, metrics and one access-log line for every request.

    It is the outermost layer of the app, so it also renders the generic 500 for an error
    nothing else handled: that response then still carries the request id and the headers.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(Headers(scope=scope))
        token = request_id_var.set(request_id)
        method = scope["method"]
        status = 500
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers[REQUEST_ID_HEADER] = request_id
                present = {name.lower() for name, _ in headers.raw}  # docs pages bring a CSP
                headers.raw.extend(pair for key, pair in _SECURITY_HEADERS if key not in present)
            await send(message)

        in_progress = self.metrics.in_progress_of(method)
        in_progress.inc()
        start = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_headers)
        except Exception as exc:
            if started:
                raise
            response = await errors.unhandled_error_handler(Request(scope), exc)
            await response(scope, receive, send_with_headers)
        finally:
            elapsed = time.perf_counter() - start
            in_progress.dec()
            self._record(scope, method, status, elapsed)
            request_id_var.reset(token)

    def _record(self, scope: Scope, method: str, status: int, elapsed: float) -> None:
        route: Any = scope.get("route")
        # path_format: `{item_id}`, without the `:item_id` convertor the route path carries.
        template = getattr(route, "path_format", None) or UNMATCHED_ROUTE
        self.metrics.finished(method, template, status, elapsed)
        if access_logger.isEnabledFor(logging.INFO):
            access_logger.info(
                "%s %s %s",
                method,
                scope.get("path", ""),
                status,
                extra={
                    "method": method,
                    "path": scope.get("path", ""),
                    "route": template,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 3),
                },
            )
