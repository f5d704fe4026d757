"""Request ids, security headers, CORS, Prometheus metrics and JSON log lines."""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from fastapi_service import create_app
from fastapi_service.observability import configure_logging
from fastapi_service.settings import Settings

pytestmark = pytest.mark.anyio

SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-resource-policy": "same-origin",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
}


@pytest.mark.parametrize("given", ["abc-123", "trace.id:7_x", "a" * 128])
async def test_a_safe_request_id_is_echoed(client: httpx.AsyncClient, given: str) -> None:
    answer = await client.get("/healthz", headers={"X-Request-ID": given})
    assert answer.headers["x-request-id"] == given


@pytest.mark.parametrize("given", [None, "", "a" * 129, "has space", "semi;colon", "ü"])
async def test_other_request_ids_are_replaced(client: httpx.AsyncClient, given: str | None) -> None:
    headers = [(b"X-Request-ID", given.encode())] if given is not None else []
    answer = await client.get("/healthz", headers=headers)
    assert re.fullmatch(r"[0-9a-f]{32}", answer.headers["x-request-id"])


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/healthz"), ("GET", "/nope"), ("PUT", "/healthz"), ("GET", "/api/v1/items")],
)
async def test_every_response_has_the_security_headers(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    answer = await client.request(method, path)
    for name, value in SECURITY_HEADERS.items():
        assert answer.headers[name] == value
    assert answer.headers["x-request-id"]


async def test_cors_is_off_by_default(client: httpx.AsyncClient) -> None:
    answer = await client.get("/healthz", headers={"Origin": "https://app.example"})
    assert "access-control-allow-origin" not in answer.headers


async def test_cors_allows_the_configured_origins(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"cors_origins": ("https://app.example",)}))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        allowed = await http.get("/healthz", headers={"Origin": "https://app.example"})
        other = await http.get("/healthz", headers={"Origin": "https://evil.example"})
        preflight = await http.options(
            "/api/v1/items",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
    await app.state.engine.dispose()
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-origin" not in other.headers
    assert preflight.status_code == 200
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert preflight.headers["x-request-id"]


def _samples(text: str, name: str) -> dict[str, float]:
    found = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, value = line.rsplit(" ", 1)
            found[labels[len(name) :]] = float(value)
    return found


async def test_metrics_use_the_contracts_names_and_route_templates(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    await client.get("/api/v1/items/0190a000-0000-7000-8000-000000000000", headers=auth)
    await client.get("/no/such/route")
    answer = await client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    text = answer.text
    requests = _samples(text, "http_requests_total")
    template = 'method="GET",route="/api/v1/items/{item_id}",status="404"'
    assert requests["{" + template + "}"] == 1
    assert requests['{method="GET",route="unmatched",status="404"}'] == 1
    assert "# TYPE http_request_duration_seconds histogram" in text
    buckets = re.findall(r'http_request_duration_seconds_bucket\{le="([^"]+)"', text)
    expected = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0"]
    assert buckets[:11] == [*expected, "10.0"]
    assert "# TYPE http_requests_in_progress gauge" in text
    assert _samples(text, "http_requests_in_progress")['{method="GET"}'] == 1  # this request
    assert _samples(text, "app_info") == {'{service="fastapi_service",version="1.0.0"}': 1.0}


@contextlib.contextmanager
def json_logging() -> Iterator[None]:
    """The service's logging, on pytest's captured stdout, for the length of a test body."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    configure_logging("info")
    try:
        yield
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def _log_lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]


async def test_logs_are_json_lines_with_the_request_id(
    client: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    with json_logging():
        await client.get("/healthz", headers={"X-Request-ID": "log-me-1"})
    lines = _log_lines(capsys)
    access = [line for line in lines if line["logger"] == "fastapi_service.access"]
    assert len(access) == 1
    assert access[0]["request_id"] == "log-me-1"
    assert access[0]["route"] == "/healthz"
    assert access[0]["status"] == 200
    assert {"time", "level", "message", "duration_ms"} <= set(access[0])


async def test_errors_are_logged_with_their_stack_and_request_id(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    app = create_app(settings)

    @app.get("/explode")
    async def explode() -> None:
        raise ValueError("kaboom")

    transport = httpx.ASGITransport(app=app)
    with json_logging():
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            answer = await http.get("/explode", headers={"X-Request-ID": "log-me-2"})
    await app.state.engine.dispose()
    assert answer.status_code == 500
    assert "kaboom" not in answer.text
    lines = _log_lines(capsys)
    errors = [line for line in lines if line["level"] == "ERROR"]
    assert len(errors) == 1
    assert errors[0]["request_id"] == "log-me-2"
    assert "ValueError: kaboom" in errors[0]["exc_info"]
