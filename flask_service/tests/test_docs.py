"""/openapi.json, /docs and /redoc, served without any CDN, and DOCS_ENABLED=false."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient

from conftest import data, problem

OPERATIONS = {
    ("/api/v1/users", "post"): "create_user",
    ("/api/v1/users/me", "get"): "read_me",
    ("/api/v1/auth/token", "post"): "create_token",
    ("/api/v1/items", "get"): "list_items",
    ("/api/v1/items", "post"): "create_item",
    ("/api/v1/items/export", "get"): "export_items",
    ("/api/v1/items/{item_id}", "get"): "read_item",
    ("/api/v1/items/{item_id}", "put"): "replace_item",
    ("/api/v1/items/{item_id}", "patch"): "update_item",
    ("/api/v1/items/{item_id}", "delete"): "delete_item",
    ("/api/v1/jobs", "get"): "list_jobs",
    ("/api/v1/jobs", "post"): "create_job",
    ("/api/v1/jobs/{job_id}", "get"): "read_job",
    ("/api/v1/jobs/{job_id}", "delete"): "cancel_job",
    ("/api/v1/jobs/{job_id}/events", "get"): "stream_job_events",
    ("/healthz", "get"): "liveness",
    ("/readyz", "get"): "readiness",
    ("/metrics", "get"): "metrics",
}
PUBLIC = {"create_user", "create_token", "liveness", "readiness", "metrics"}


def test_openapi_document_has_the_contracts_operations(client: FlaskClient) -> None:
    document = data(client.get("/openapi.json"))
    assert document["openapi"] == "3.1.0"
    assert document["info"]["title"] == "Items service"
    assert document["security"] == [{"bearerAuth": []}]
    found = {
        (path, method): operation["operationId"]
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method != "parameters"
    }
    assert found == OPERATIONS
    for (path, method), operation_id in OPERATIONS.items():
        operation = document["paths"][path][method]
        assert (operation.get("security") == []) == (operation_id in PUBLIC), operation_id
        assert "405" in operation["responses"]


def test_openapi_document_uses_the_contracts_components(client: FlaskClient) -> None:
    document = data(client.get("/openapi.json"))
    components = document["components"]
    for name in ("Item", "ItemCreate", "ItemUpdate", "ItemPage", "UserCreate", "UserPublic",
                 "TokenRequest", "Token", "Health", "Problem", "ValidationIssue"):  # fmt: skip
        assert name in components["schemas"], name
    assert "PaginationMetadata" not in components["schemas"]
    assert "Error" not in components["schemas"]
    assert components["schemas"]["ItemCreate"]["additionalProperties"] is False
    assert set(components["headers"]) >= {"X-Request-ID", "ETag", "Location", "Retry-After"}
    read = document["paths"]["/api/v1/items/{item_id}"]
    assert read["parameters"][0]["schema"] == {"type": "string", "format": "uuid"}
    assert set(read["get"]["responses"]) == {"200", "304", "401", "404", "405", "422", "429", "503"}


@pytest.mark.parametrize(
    ("page", "script"),
    [
        ("/docs", "/static/swagger-ui/swagger-ui-bundle.js"),
        ("/redoc", "/static/redoc/redoc.standalone.js"),
    ],
)
def test_ui_pages_load_only_local_assets(client: FlaskClient, page: str, script: str) -> None:
    answer = client.get(page)
    assert answer.status_code == 200
    html = answer.get_data(as_text=True)
    assert "http://" not in html
    assert "https://" not in html
    csp = answer.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    for asset in re.findall(r'(?:src|href)="([^"]+)"', html):
        assert client.get(asset).status_code == 200, asset
    asset = client.get(script)
    assert asset.status_code == 200
    assert len(asset.get_data()) > 100_000


def test_docs_can_be_turned_off(make_app: Callable[..., Flask]) -> None:
    client = make_app(docs_enabled=False).test_client()
    for path in ("/docs", "/redoc", "/openapi.json", "/static/swagger-ui/swagger-ui.css"):
        problem(client.get(path), 404, "not-found")
