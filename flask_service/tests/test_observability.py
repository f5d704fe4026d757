"""Request ids, security headers, CORS, JSON logs and the contract's metric names."""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient

from conftest import User
from flask_service.observability import (
    RequestIdFilter,
    json_formatter,
    request_id_var,
    route_template,
)

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
}


@pytest.mark.parametrize("incoming", ["abc-123", "A.b_c:d-9", "x" * 128])
def test_a_valid_request_id_is_echoed(client: FlaskClient, incoming: str) -> None:
    answer = client.get("/healthz", headers={"X-Request-ID": incoming})
    assert answer.headers["X-Request-ID"] == incoming


@pytest.mark.parametrize("incoming", ["", "x" * 129, "has space", "semi;colon", "ünï"])
def test_an_invalid_request_id_is_replaced(client: FlaskClient, incoming: str) -> None:
    headers = {"X-Request-ID": incoming.encode().decode("latin-1")}
    answer = client.get("/healthz", headers=headers)
    assert re.fullmatch(r"[0-9a-f]{32}", answer.headers["X-Request-ID"])


@pytest.mark.parametrize("path", ["/healthz", "/api/v1/items", "/nowhere", "/openapi.json"])
def test_every_response_carries_id_and_security_headers(client: FlaskClient, path: str) -> None:
    answer = client.get(path)
    assert answer.headers["X-Request-ID"]
    for name, value in SECURITY_HEADERS.items():
        assert answer.headers[name] == value


def test_cors_is_off_by_default(client: FlaskClient) -> None:
    answer = client.get("/healthz", headers={"Origin": "https://app.example"})
    assert "Access-Control-Allow-Origin" not in answer.headers


def test_cors_allows_listed_origins(make_app: Callable[..., Flask]) -> None:
    client = make_app(cors_origins=("https://app.example",)).test_client()
    answer = client.get("/healthz", headers={"Origin": "https://app.example"})
    assert answer.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "ETag" in answer.headers["Access-Control-Expose-Headers"]
    preflight = client.options(
        "/api/v1/items",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 204
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    stranger = client.get("/healthz", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in stranger.headers


def test_metrics_use_the_contracts_names_and_route_templates(
    client: FlaskClient, user: User
) -> None:
    client.get(f"/api/v1/items/{uuid.uuid4()}", headers=user.auth)
    client.get("/no/such/route")
    answer = client.get("/metrics")
    assert answer.status_code == 200
    assert answer.mimetype == "text/plain"
    text = answer.get_data(as_text=True)
    for name in (
        "http_requests_total",
        "http_request_duration_seconds_bucket",
        "http_requests_in_progress",
        "app_info",
    ):
        assert f"\n{name}{{" in text, name
    assert 'route="/api/v1/items/{item_id}",status="404"' in text
    assert 'route="unmatched",status="404"' in text
    assert 'app_info{service="flask_service",version="1.0.0"} 1.0' in text
    for bucket in ("0.005", "0.25", "2.5", "10.0", "+Inf"):
        assert f'le="{bucket}"' in text


def test_route_template_converts_flask_rules(app: Flask) -> None:
    rules = {rule.endpoint: rule for rule in app.url_map.iter_rules()}
    assert route_template(rules["items.ItemById"]) == "/api/v1/items/{item_id}"
    assert route_template(None) == "unmatched"


def test_log_lines_are_json_with_the_request_id() -> None:
    record = logging.LogRecord("flask_service.test", logging.INFO, __file__, 1, "hello", (), None)
    token = request_id_var.set("req-42")
    try:
        RequestIdFilter().filter(record)
    finally:
        request_id_var.reset(token)
    line = json.loads(json_formatter().format(record))
    assert line["message"] == "hello"
    assert line["request_id"] == "req-42"
    assert line["level"] == "INFO"
    assert line["logger"] == "flask_service.test"


def test_one_access_line_per_request(client: FlaskClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="flask_service.access"):
        client.get("/healthz", headers={"X-Request-ID": "trace-me"})
    lines = [r for r in caplog.records if r.name == "flask_service.access"]
    assert len(lines) == 1
    assert lines[0].__dict__["route"] == "/healthz"
    assert lines[0].__dict__["status"] == 200
