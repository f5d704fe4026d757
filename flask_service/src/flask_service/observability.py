"""Request ids, JSON logs and Prometheus metrics in request hooks; security headers in a WSGI
middleware."""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
import time
import uuid
from collections.abc import Iterable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, g, request
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
from werkzeug.datastructures import Headers
from werkzeug.routing import Rule

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

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
_SECURITY_HEADERS = [(name.lower(), (name, value)) for name, value in SECURITY_HEADERS.items()]
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
UNMATCHED_ROUTE = "unmatched"
_KNOWN_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
_RULE_ARGUMENT = re.compile(r"<(?:[^<>:]+:)?([^<>]+)>")

access_logger = logging.getLogger("flask_service.access")


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


def json_formatter() -> JsonFormatter:
    return JsonFormatter(
        "{asctime}{levelname}{name}{message}{request_id}",
        style="{",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
    )


def configure_logging(level: str) -> None:
    """JSON lines on stdout for every logger (gunicorn's included), each with its request_id."""
    # No line names the calling file, thread or process: skip looking them up for every record
    # (the logging HOWTO's "Optimization" switches).
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(json_formatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("gunicorn", "gunicorn.error", "gunicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


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
        self.job_event_streams = Gauge(
            "job_event_streams_open",
            "Job event streams (SSE) open now.",
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


def route_template(rule: Rule | None) -> str:
    """Flask's `/api/v1/items/<item_id>` as the contract's `/api/v1/items/{item_id}`."""
    if rule is None:
        return UNMATCHED_ROUTE
    return _template(rule.rule)


@functools.cache  # one entry per URL rule
def _template(rule: str) -> str:
    return _RULE_ARGUMENT.sub(r"{\1}", rule)


class SecurityHeaders:
    """WSGI middleware: the security headers on every response that has not set its own (the
    docs pages bring their own CSP), appended to the header list as it is sent."""

    def __init__(self, wsgi_app: WSGIApplication) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            present = {name.lower() for name, _ in headers}
            missing = [header for key, header in _SECURITY_HEADERS if key not in present]
            return start_response(status, headers + missing, exc_info)

        return self.wsgi_app(environ, start)


class ObservabilityHooks:
    """Request id, metrics and one access-log line for every request; the security headers
    for every response (SecurityHeaders around the app).

    Its hooks are registered before any other, so the request id is set before anything
    can log or fail, and (after_request hooks run in reverse) its header is added last.
    """

    def __init__(self, app: Flask, metrics: Metrics) -> None:
        self.metrics = metrics
        app.before_request(self.start)
        app.after_request(self.finish)
        app.teardown_request(self.end)
        app.wsgi_app = SecurityHeaders(app.wsgi_app)  # type: ignore[method-assign]

    @staticmethod
    def _method() -> str:
        # Arbitrary method names must not become unbounded label values.
        method = request.method
        return method if method in _KNOWN_METHODS else "OTHER"

    def start(self) -> None:
        g.request_id = request_id_from(request.headers)
        g.request_id_token = request_id_var.set(g.request_id)
        g.request_started = time.perf_counter()
        self.metrics.in_progress_of(self._method()).inc()

    def finish(self, response: Response) -> Response:
        response.headers[REQUEST_ID_HEADER] = g.get("request_id") or request_id_from(
            request.headers
        )
        elapsed = time.perf_counter() - g.get("request_started", time.perf_counter())
        method, template = self._method(), route_template(request.url_rule)
        status = response.status_code
        self.metrics.finished(method, template, status, elapsed)
        if access_logger.isEnabledFor(logging.INFO):
            path = request.path
            access_logger.info(
                "%s %s %s",
                request.method,
                path,
                status,
                extra={
                    "method": request.method,
                    "path": path,
                    "route": template,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 3),
                },
            )
        return response

    def end(self, _exc: BaseException | None = None) -> None:
        token = g.pop("request_id_token", None)
        if token is None:
            return
        self.metrics.in_progress_of(self._method()).dec()
        request_id_var.reset(token)
